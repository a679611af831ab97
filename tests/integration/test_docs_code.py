"""The ```python blocks of the docs site run, as a reader would paste them.

Each block of ``docs/**/*.md`` runs in a fresh namespace from the repository
root. An HTML comment on the line before a fence (invisible on the site) changes that:

- ``<!-- docs-test: skip (why) -->``: the block cannot run here (a real Ollama, an
  API key, a GPU server); the test is reported as skipped with that reason.
- ``<!-- docs-test: continue -->``: the block runs in the namespace of the
  previous block of the same page, as one example (reported under the first block).

Run it on its own: ``.venv/bin/python -m pytest tests/integration/test_docs_code.py -q``.
"""

from __future__ import annotations

import gc
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<body>.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip\s*\((?P<reason>.+)\)$")


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    code: str
    marker: str | None  # the text after "docs-test:", or None


@dataclass
class Example:
    """One block, or a block and the ``continue`` blocks after it."""

    blocks: list[Block] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.blocks[0].page}:{self.blocks[0].line}"

    @property
    def skip_reason(self) -> str | None:
        marker = self.blocks[0].marker
        match = SKIP.match(marker) if marker else None
        return match.group("reason") if match else None


def python_blocks(path: Path) -> list[Block]:
    """Every fenced ``python`` block of a page, with the marker on the line before it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    page = path.relative_to(DOCS).as_posix()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, end = opening.group("indent"), i + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if opening.group("lang") in ("python", "py"):
            before = next((line for line in reversed(lines[:i]) if line.strip()), "")
            marker = MARKER.match(before)
            body = [line.removeprefix(indent) for line in lines[i + 1 : end]]
            blocks.append(
                Block(page, i + 1, "\n".join(body) + "\n", marker.group("body") if marker else None)
            )
        i = end + 1
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def examples() -> list[Example]:
    found: list[Example] = []
    for path in pages():
        page: list[Example] = []
        for block in python_blocks(path):
            if block.marker == "continue" and page:
                page[-1].blocks.append(block)
            else:
                page.append(Example([block]))
        found += page
    return found


def test_markers_are_well_formed() -> None:
    """A typo in a marker must not turn a skip into a run, or a run into nothing."""
    problems = []
    for path in pages():
        text = path.read_text(encoding="utf-8")
        comments = [
            (number, line)
            for number, line in enumerate(text.splitlines(), 1)
            if line.lstrip().startswith("<!--") and "docs-test" in line
        ]
        for number, line in comments:
            marker = MARKER.match(line)
            body = marker.group("body") if marker else ""
            if not (body == "continue" or SKIP.match(body)):
                problems.append(f"{path.relative_to(DOCS)}:{number}: {line.strip()!r}")
        blocks = python_blocks(path)
        for block in blocks:
            if block.marker == "continue" and block is blocks[0]:
                problems.append(f"{block.page}:{block.line}: 'continue' on the page's first block")
        marked = sum(1 for block in blocks if block.marker is not None)
        if marked != len(comments):
            problems.append(f"{path.relative_to(DOCS)}: a marker is not right before a ```python")
    assert not problems, "malformed docs-test markers (use 'skip (why)' or 'continue'):\n" + (
        "\n".join(problems)
    )


def test_the_docs_have_code_to_run() -> None:
    runnable = [example for example in examples() if example.skip_reason is None]
    assert len(runnable) >= 5, [example.id for example in examples()]


@pytest.mark.parametrize("example", examples(), ids=lambda example: example.id)
def test_docs_code_block_runs(example: Example, monkeypatch: pytest.MonkeyPatch) -> None:
    if example.skip_reason is not None:
        pytest.skip(f"{example.id}: {example.skip_reason}")
    monkeypatch.chdir(ROOT)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    try:
        for block in example.blocks:
            # Line numbers in a traceback point into the Markdown file.
            code = compile("\n" * block.line + block.code, str(DOCS / block.page), "exec")
            exec(code, namespace)
    finally:
        namespace.clear()
        gc.collect()  # free the models the block loaded before the next one loads its own

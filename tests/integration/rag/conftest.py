"""Helpers for the ``confidence-router rag`` tests: run the command, build document folders."""

from __future__ import annotations

import io
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from confidence_router_rag.cli import main

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_DOCS = REPO / "examples" / "docs"
EXAMPLE_QUESTIONS = REPO / "examples" / "questions.txt"


@dataclass(frozen=True)
class Run:
    """What one invocation of the command did."""

    code: int
    out: str
    err: str


RunRag = Callable[..., Run]


@pytest.fixture
def run_rag(capsys: pytest.CaptureFixture[str]) -> RunRag:
    """``run_rag(*argv, stdin="")`` calls ``main`` in process and captures its output.

    Unless a test names its models (or passes ``default_pair=True``), it runs on
    the fast tiny pair (SmolLM2-135M answers, Gemma 3 270M takes over): the Qwen
    pair, the command's default, is several times slower and is tested on its own.
    A test that gives ``--slm`` (once, or repeated for a ladder) keeps its SLMs as
    given; only a missing ``--fallback`` is added.
    """

    def run(*argv: str | Path, stdin: str = "", default_pair: bool = False) -> Run:
        args = [str(a) for a in argv]
        if not default_pair and "--tiny" not in args:
            if "--slm" not in args:
                args += ["--slm", "embedded:smollm2"]
            if "--fallback" not in args:
                args += ["--fallback", "embedded:gemma3"]
        capsys.readouterr()
        code = main(args, stdin=io.StringIO(stdin))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def example_docs() -> Path:
    return EXAMPLE_DOCS


@pytest.fixture
def dead_host() -> str:
    """A URL on 127.0.0.1 where nothing listens (a port just freed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def make_pdf() -> Callable[[str], bytes]:
    return minimal_pdf


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF showing ``text`` in Helvetica, built by hand (no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    body = b"%PDF-1.4\n"
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    body += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return body

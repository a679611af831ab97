"""docs/reference/cli.md is exactly what the commands' ``--help`` prints today."""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "cli_reference", ROOT / "scripts" / "cli_reference.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_the_commands_help() -> None:
    script = _script()
    committed = script.OUTPUT.read_text(encoding="utf-8")
    made_with = re.search(r"with Python (\d+)\.(\d+)", committed)
    assert made_with, "docs/reference/cli.md lacks its 'generated with Python X.Y' header"
    if tuple(map(int, made_with.groups())) != sys.version_info[:2]:
        pytest.skip(
            f"docs/reference/cli.md was generated with Python {made_with.group(1)}."
            f"{made_with.group(2)}; argparse formats --help differently in "
            f"{sys.version_info.major}.{sys.version_info.minor}"
        )
    current = script.render()
    if current != committed:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    current.splitlines(keepends=True),
                    "docs/reference/cli.md (committed)",
                    "--help today",
                )
            )[:60]
        )
        pytest.fail(
            "docs/reference/cli.md is out of date with the commands' --help: run "
            f"`{script.REGENERATE}` and commit the result.\n{diff}",
            pytrace=False,
        )

"""The RAG app's package: it needs the ``rag`` extra, and it alone touches langchain-community."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from confidence_router.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "confidence_router",
    "langchain_confidence_router",
    "llamaindex_confidence_router",
    "confidence_router_rag",
)


def test_rag_without_its_extra_names_the_missing_module_and_the_extra(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "confidence_router_rag"]:
        monkeypatch.delitem(sys.modules, name)  # imported afresh, restored afterwards
    monkeypatch.setitem(sys.modules, "rank_bm25", None)  # as if not installed
    assert main(["rag", "--help"]) == 2
    err = capsys.readouterr().err
    assert "missing dependency (rank_bm25)" in err
    assert "pip install 'confidence-router[rag]'" in err


def test_the_app_imports_langchain_community_in_one_module_only() -> None:
    importers = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = (
                    [node.module or ""]
                    if isinstance(node, ast.ImportFrom)
                    else [a.name for a in node.names]
                    if isinstance(node, ast.Import)
                    else []
                )
                if any(n.split(".")[0] == "langchain_community" for n in names):
                    importers.append(path.relative_to(ROOT).as_posix())
    assert sorted(set(importers)) == ["confidence_router_rag/_community.py"]

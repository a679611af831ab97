"""The three examples run as a user runs them: a fresh interpreter, the real models, offline.

Each example is executed as a script in a subprocess (so its imports, its
argument parsing and its printed report are what a user sees) on fewer
questions where it takes a count, and its output is checked for what it
promises: every question answered with a route and a reason, and the ledger.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def run_example(*args: str) -> str:
    """Run ``python examples/<args>`` from the repository root; its stdout, after exit 0."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}  # a sunset notice is not a failure
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done.stdout


def test_langchain_swap_example_runs_the_chain_before_and_after_the_swap() -> None:
    pytest.importorskip("langchain_community")
    out = run_example("examples/langchain_swap_llm.py")
    before, after = out.split("== after:", 1)
    assert before.count("Q: ") == 4 and "route=" not in before
    routes = re.findall(r"route=(slm|llm) \(([^)]+)\); (.+)", after)
    assert len(routes) == 4, after
    assert {model for _, model, _ in routes} <= {"smollm2-135m", "gemma-3-270m-q4_k_m"}
    ledger = re.search(r"queries 4: (\d+) answered by the SLM, (\d+) escalated", after)
    assert ledger is not None, after
    kept, escalated = int(ledger[1]), int(ledger[2])
    assert kept + escalated == 4
    assert kept == sum(route == "slm" for route, _, _ in routes)


def test_llamaindex_example_answers_through_a_query_engine() -> None:
    pytest.importorskip("llama_index.retrievers.bm25")
    out = run_example("examples/llamaindex_query_engine.py", "-n", "2")
    assert out.count("Q: ") == 2 and out.count("   why: ") == 2, out
    assert re.search(r"route: (slm|llm)", out), out
    assert re.search(r"\d+ LLM calls: \d+ kept by the SLM, \d+ escalated", out), out
    assert "saved $" in out


def test_rag_example_answers_a_questions_file_over_the_documents(tmp_path: Path) -> None:
    pytest.importorskip("langchain_community")
    questions = tmp_path / "questions.txt"
    questions.write_text(
        "# two of examples/questions.txt\nIn what country is Normandy located?\n\n"
        "What is the Rhine called in Dutch?\n",
        encoding="utf-8",
    )
    out = run_example("examples/rag_local_docs.py", str(EXAMPLES / "docs"), str(questions))
    answers = re.findall(r"Q: (.+)\nA: (.*)\n   (SLM|fallback) \(([^)]+)\), (.+)", out)
    assert [q for q, *_ in answers] == [
        "In what country is Normandy located?",
        "What is the Rhine called in Dutch?",
    ], out
    assert re.search(r"2 questions, \d+ answered locally, \d+ fallback calls avoided", out), out

"""``confidence-router rag`` picks the shipped policy of its SLM, names it, and counts the
right answers of each model when expected answers exist (real embedded models)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.filterwarnings("ignore:.*langchain-community.*:DeprecationWarning")

RunRag = Callable[..., Any]
LATIN = "What is the Latin name for Black Death?"
RHINE = "What is the Rhine called in Dutch?"


def test_gemma_slm_gets_its_calibrated_policy_and_the_summary_counts_right_answers(
    run_rag: RunRag, example_docs: Path, tmp_path: Path
) -> None:
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({LATIN: ["atra mors"], RHINE: ["Rijn"]}))
    run = run_rag(
        example_docs, "--slm", "embedded:gemma3", "-q", LATIN, "-q", RHINE,
        "--expected", expected, "--max-tokens", "16", "--no-progress",
    )  # fmt: skip
    assert run.code == 0, run.err
    words = " ".join(run.out.split())  # rich wraps long lines at the console width
    assert "policy gemma3-270m/extractive-qa (fitted on this SLM) default for gemma3-270m" in words
    assert "right (expected answers)" in words

    report_path = tmp_path / "report.json"
    run = run_rag(
        example_docs, "--slm", "embedded:gemma3", "-q", LATIN, "-q", RHINE,
        "--expected", expected, "--max-tokens", "16", "--json", "--output", report_path,
    )  # fmt: skip
    assert run.code == 0, run.err
    report = json.loads(report_path.read_text())
    assert report["models"]["policy"] == "gemma3-270m/extractive-qa"
    assert report["models"]["policy_provenance"] == "fitted"
    assert report["models"]["policy_type"] == "AveragePolicy"
    answers, summary = report["answers"], report["summary"]
    for item in answers:
        assert isinstance(item["right"], bool)
        assert 0.0 <= item["score"] <= 1.0  # a probability, from the calibrated policy
        assert "context_span" in item["signals"]
    kept = [a for a in answers if a["route"] == "slm"]
    escalated = [a for a in answers if a["route"] == "llm"]
    assert summary["slm_judged"] == len(kept)
    assert summary["slm_right"] == sum(a["right"] for a in kept)
    assert summary["fallback_judged"] == len(escalated)
    assert summary["fallback_right"] == sum(a["right"] for a in escalated)


def test_a_builtin_policy_by_name_and_an_unknown_name(run_rag: RunRag, example_docs: Path) -> None:
    run = run_rag(
        example_docs, "-q", LATIN, "--policy", "seed-thresholds", "--json", "--max-tokens", "8",
    )  # fmt: skip
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert report["models"]["policy"] == "seed-thresholds"
    assert report["summary"]["slm_judged"] == report["summary"]["fallback_judged"] == 0
    run = run_rag(example_docs, "-q", LATIN, "--policy", "gemma3-270m/poetry")
    assert run.code == 2
    assert "not a built-in policy" in run.err and "gemma3-270m/extractive-qa" in run.err

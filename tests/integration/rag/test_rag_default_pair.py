"""The command's default pair: Qwen2.5-Coder 0.5B answers, Qwen2.5-Coder 1.5B takes over.

Few and short on purpose (the pair is several times slower than the tiny one):
one run of two questions, one of which the documents cannot answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

RunRag = Callable[..., Any]  # the run_rag fixture: (*argv, stdin="", default_pair=False) -> Run

LATIN = "What is the Latin name for Black Death?"
NOT_IN_DOCS = "How long is the Rhine in kilometres?"


@pytest.mark.disable_socket  # offline: both models run in process
def test_the_default_pair_is_the_qwen_pair_in_chat_format_and_judges_abstention(
    run_rag: RunRag, example_docs: Path, tmp_path: Path
) -> None:
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({LATIN: ["atra mors"], NOT_IN_DOCS: []}))
    run = run_rag(
        example_docs, "--json", "-q", LATIN, "-q", NOT_IN_DOCS, "--expected", expected,
        "--threshold", "1000", default_pair=True,
    )  # fmt: skip
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert report["models"]["slm"] == "qwen2.5-coder-0.5b"
    assert "qwen2.5-coder-1.5b" in report["models"]["fallback"]
    latin, missing = report["answers"]
    # --threshold 1000 escalates both: these are the 1.5B's answers, in its chat template
    assert [a["route"] for a in (latin, missing)] == ["llm", "llm"]
    assert "qwen2.5-coder-1.5b" in latin["answered_by"]
    assert "atra mors" in latin["answer"].lower() and latin["right"] is True
    # the documents say nothing of the Rhine's length: the right answer says so
    assert missing["right"] is (missing["answer"].strip(" .").lower() == "not in the documents")
    # the SLM's own answers were scored first (its signals are in the record)
    assert {"mean_logprob", "abstention"} <= set(latin["signals"])
    summary = report["summary"]
    assert (summary["fallback_judged"], summary["slm_judged"]) == (2, 0)
    assert summary["fallback_right"] == 1 + int(missing["right"])


def test_tiny_chooses_both_models_and_refuses_to_be_mixed(
    run_rag: RunRag, example_docs: Path
) -> None:
    run = run_rag(example_docs, "-q", LATIN, "--tiny", "--slm", "embedded:gemma3")
    assert run.code == 2
    assert "--tiny chooses both models" in run.err
    report = json.loads(
        run_rag(example_docs, "--json", "-q", LATIN, "--tiny", "--threshold", "-1000").out
    )
    assert report["models"]["slm"] == "smollm2-135m"
    assert "gemma" in report["models"]["fallback"]

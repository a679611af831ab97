"""``confidence-router rag`` with a ladder: ``--slm`` repeated, lowest first (real embedded
models: SmolLM2-135M, then Gemma 3 270M, then Gemma 3 270M as the fallback).

``--threshold`` repeated forces each stage's route (+1000 escalates, -1000 keeps), so a
test knows which stage must answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confidence_router_rag.cli import Exit

pytestmark = pytest.mark.filterwarnings("ignore:.*langchain-community.*:DeprecationWarning")

RunRag = Callable[..., Any]
NORMANDY = "In what country is Normandy located?"  # both SLMs answer it in a few words
LADDER = ("--slm", "embedded:smollm2", "--slm", "embedded:gemma3", "--fallback", "embedded:gemma3")
KEEP, ESCALATE = "-1000", "1000"
FORCE = {1: (KEEP,), 2: (ESCALATE, KEEP), 3: (ESCALATE, ESCALATE)}


@pytest.mark.parametrize("answered", [1, 2, 3])
def test_a_repeated_slm_runs_a_ladder_and_each_answer_names_its_stage(
    run_rag: RunRag, example_docs: Path, tmp_path: Path, answered: int
) -> None:
    thresholds = [arg for value in FORCE[answered] for arg in ("--threshold", value)]
    report_path = tmp_path / "report.json"
    run = run_rag(
        example_docs, *LADDER, *thresholds, "-q", NORMANDY, "--max-tokens", "48",
        "--no-progress", "--output", report_path,
    )  # fmt: skip
    assert run.code == 0, run.err
    report = json.loads(report_path.read_text())

    models = report["models"]
    assert models["slm"] == "smollm2-135m"
    ladder = models["stages"]
    assert [s["model"] for s in ladder] == ["smollm2-135m", "gemma3-270m"]
    for stage in ladder:
        assert {"policy", "policy_provenance", "policy_type", "policy_about"} <= set(stage)
        assert stage["policy"] == f"{stage['model']}/extractive-qa"  # each its own default
    (item,) = report["answers"]
    assert item["answered_stage"] == answered
    outcomes = ["escalated"] * (answered - 1) + ["answered" if answered == 3 else "kept"]
    assert [s["outcome"] for s in item["stages"]] == outcomes
    assert [s["model"] for s in item["stages"]][:2] == ["smollm2-135m", "gemma3-270m"][:answered]
    assert item["route"] == ("llm" if answered == 3 else "slm")
    assert item["answer"]
    assert item["input_tokens"] == sum(s["usage"]["prompt_tokens"] for s in item["stages"])
    assert item["output_tokens"] == sum(s["usage"]["completion_tokens"] for s in item["stages"])
    summary = report["summary"]
    assert summary["stage_models"][:2] == ["smollm2-135m", "gemma3-270m"]
    assert summary["answered_by_stage"] == [int(i + 1 == answered) for i in range(3)]
    assert summary["answered_locally"] == int(answered < 3)
    assert summary["fallback_calls_avoided"] == int(answered < 3)

    # the human output names the ladder, each stage's policy, the answering stage, the counts
    words = " ".join(run.out.split())
    fallback = summary["stage_models"][2]
    assert f"Ladder smollm2-135m -> gemma3-270m -> {fallback}" in words
    assert "stage 1 smollm2-135m policy smollm2-135m/extractive-qa" in words
    assert "stage 2 gemma3-270m policy gemma3-270m/extractive-qa" in words
    assert f"(stage {answered})" in words
    assert f"stage {answered}: {['smollm2-135m', 'gemma3-270m', fallback][answered - 1]}" in words


def test_one_slm_keeps_the_pair_report(run_rag: RunRag, example_docs: Path) -> None:
    run = run_rag(example_docs, "--json", "-q", NORMANDY, "--threshold", ESCALATE)
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert "stages" not in report["models"]
    assert "stages" not in report["answers"][0] and "answered_stage" not in report["answers"][0]
    assert "answered_by_stage" not in report["summary"]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("--tiny", "--slm", "embedded:smollm2", "--slm", "embedded:gemma3"), "--tiny"),
        ((*LADDER, "--policy", "a", "--policy", "b", "--policy", "c"),
         "--policy is given 3 times for 2 SLM(s)"),
        ((*LADDER, "--threshold", "1", "--threshold", "2", "--threshold", "3"),
         "--threshold is given 3 times"),
        ((*LADDER, "--shadow-rate", "0.5"), "--trace and --shadow-rate"),
        (("--slm", "embedded:smollm2", "--slm", "nonsense"), "--slm"),
    ],
)  # fmt: skip
def test_a_bad_ladder_is_a_usage_error(
    run_rag: RunRag, example_docs: Path, argv: tuple[str, ...], words: str
) -> None:
    run = run_rag(example_docs, "-q", NORMANDY, *argv)
    assert run.code == Exit.USAGE
    assert words in " ".join(run.err.split())


def test_the_demo_ladder_gemma_then_the_qwen_pair(run_rag: RunRag, example_docs: Path) -> None:
    """The three-step ladder of the demo (slow: the Qwen models), on one question."""
    run = run_rag(
        example_docs, "--json", "-q", NORMANDY, "--max-tokens", "16",
        "--slm", "embedded:gemma3", "--slm", "embedded", "--fallback", "embedded",
    )  # fmt: skip
    assert run.code == 0, run.err
    report = json.loads(run.out)
    assert [s["model"] for s in report["models"]["stages"]] == [
        "gemma3-270m",
        "qwen2.5-coder-0.5b",
    ]
    assert len(report["summary"]["stage_models"]) == 3
    assert "1.5b" in report["summary"]["stage_models"][2].lower()
    (item,) = report["answers"]
    assert item["stages"][0]["model"] == "gemma3-270m"
    assert item["answered_stage"] == len(item["stages"])
    assert sum(report["summary"]["answered_by_stage"]) == 1

"""Trace files: cached, resumable, never mixing configurations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from confidence_router.backends.llama_cpp import LlamaCppSLM
from confidence_router.eval.data import QAExample
from confidence_router.eval.traces import (
    PERFECT,
    TraceConfigError,
    load_traces,
    perfect_record,
    prompt_messages,
    run_traces,
    slm_record,
)
from confidence_router.types import Generation, Usage

EXAMPLE = QAExample(
    id="q1", kind="squad_v2", question="Who?", context="Rollo led them.", answers=()
)


class _NoCallsAllowed:
    """Stands where an SLM would: the cache must answer without calling it."""

    model = "gemma3-270m"
    top_logprobs = 5

    async def agenerate(self, *args: object, **kwargs: object) -> Generation:
        raise AssertionError("the cache should have answered without a model call")


def _record(
    config: dict[str, object], fallbacks: tuple[str, ...] = (PERFECT,)
) -> dict[str, object]:
    return {
        "id": "q1",
        "dataset": "squad_v2",
        "config": config,
        "slm": {"prompt_tokens": 10},
        "fallbacks": {name: {} for name in fallbacks},
    }


CONFIG = {"slm": "gemma3-270m", "prompt": "qa-v1", "top_k": 5, "max_tokens": 32}


def test_slm_record_keeps_tokens_logprobs_signals_and_official_scores() -> None:
    gen = Generation(
        text=" unanswerable",
        model="gemma3-270m",
        token_logprobs=np.array([-0.5, -0.1]),
        top_logprobs=np.array([[-0.5, -1.5], [-0.1, -np.inf]]),
        tokens=(" unans", "werable"),
        usage=Usage(12, 2),
        latency_s=0.25,
        finish_reason="stop",
        has_logprobs=True,
    )
    record = slm_record(EXAMPLE, gen, None)
    assert record["answer"] == "" and record["f1"] == 1.0  # abstaining on an unanswerable question
    assert record["top_logprobs"] == [[-0.5, -1.5], [-0.1, None]]  # -inf padding is JSON null
    assert record["signals"]["min_logprob"] == pytest.approx(-0.5)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (12, 2)
    json.dumps(record, allow_nan=False)


def test_perfect_fallback_answers_gold_or_abstains() -> None:
    assert perfect_record(EXAMPLE, 10)["answer"] == ""
    answerable = QAExample("q2", "squad_v1", "Where?", "In France.", ("France", "Normandy"))
    record = perfect_record(answerable, 10)
    assert (record["answer"], record["f1"], record["latency_s"]) == ("France", 1.0, None)


def test_finished_questions_are_not_asked_again(tmp_path: Path) -> None:
    path = tmp_path / "squad_v2.jsonl"
    path.write_text(json.dumps(_record(CONFIG)) + "\n")
    summary = run_traces([EXAMPLE], _NoCallsAllowed(), path, progress=False)
    assert (summary.skipped, summary.slm_calls) == (1, 0)
    assert len(load_traces(path)) == 1


def test_a_trace_of_another_configuration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "squad_v2.jsonl"
    path.write_text(json.dumps(_record({**CONFIG, "top_k": 20})) + "\n")
    with pytest.raises(TraceConfigError, match="write to another file"):
        run_traces([EXAMPLE], _NoCallsAllowed(), path, progress=False)


def test_a_partial_last_line_from_a_killed_run_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(_record(CONFIG)) + '\n{"id": "q2", "slm')
    assert [r["id"] for r in load_traces(path)] == ["q1"]
    path.write_text('{"id": "q2", "slm\n' + json.dumps(_record(CONFIG)) + "\n")
    with pytest.raises(TraceConfigError, match=r"t\.jsonl:1"):
        load_traces(path)


def test_a_run_with_the_rag_prompt_records_it_and_is_not_mixed_with_qa_v1(
    tmp_path: Path, smollm2_slm: LlamaCppSLM
) -> None:
    """The real SmolLM2 answers the rag command's prompt; the trace says which prompt it was."""
    example = QAExample(
        id="q2",
        kind="squad_v1",
        question="Who did Rollo sign the treaty with?",
        context="In 911 Rollo signed the treaty of Saint-Clair-sur-Epte with King Charles III.",
        answers=("King Charles III",),
    )
    path = tmp_path / "t.jsonl"
    run_traces([example], smollm2_slm, path, prompt="rag-v1", max_tokens=24, progress=False)
    (record,) = load_traces(path)
    assert record["config"]["prompt"] == "rag-v1"
    expected = smollm2_slm.generate(
        prompt_messages(example, "rag-v1"), stop=["\n"], max_tokens=24
    ).text
    assert record["slm"]["raw"] == expected
    with pytest.raises(TraceConfigError, match="made with"):
        run_traces([example], _NoCallsAllowed(), path, progress=False)  # qa-v1 is another config
    with pytest.raises(TraceConfigError, match="unknown prompt 'x'"):
        run_traces([example], _NoCallsAllowed(), tmp_path / "u.jsonl", prompt="x", progress=False)

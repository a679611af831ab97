"""Context signals added to recorded answers are measured against their own data set's prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confidence_router.eval.data import load_examples
from confidence_router.eval.prompts import RAG_PROMPT_VERSION
from confidence_router.eval.traces import (
    TraceConfigError,
    add_context_signals,
    load_traces,
    prompt_messages,
)
from confidence_router.signals.context import context_signals

ROOT = Path(__file__).resolve().parents[3]
V1 = ROOT / "data" / "squad_v1_dev_sample500.jsonl"
V2 = ROOT / "data" / "squad_v2_dev_sample500.jsonl"


def test_a_question_id_shared_by_two_data_sets_gets_its_own_prompt() -> None:
    v1, v2 = load_examples(V1, "squad_v1"), load_examples(V2, "squad_v2")
    shared = sorted({e.id for e in v1} & {e.id for e in v2})
    assert shared, "the SQuAD 2.0 sample reuses some v1.1 question ids"
    records = [r for r in load_traces(ROOT / "bench/results/traces/squad_v1.jsonl")]
    record = next(r for r in records if r["id"] == shared[0])
    original = json.loads(json.dumps(record))
    record["slm"]["signals"] = {
        k: v for k, v in record["slm"]["signals"].items() if k in ("length", "sum_logprob")
    }
    assert add_context_signals([record], [*v1, *v2]) == 1  # both data sets given, v2 last
    example = next(e for e in v1 if e.id == shared[0])
    expected = context_signals(prompt_messages(example), record["slm"]["raw"])
    stored = original["slm"]["signals"]
    assert len(stored) >= 19  # a trace recorded before the two question signals existed
    for name, value in expected.items():
        assert record["slm"]["signals"][name] == value
        if name in stored:
            assert stored[name] == value  # the committed trace agrees on what it holds
    assert record["slm"]["signals"]["sum_logprob"] == original["slm"]["signals"]["sum_logprob"]


def test_a_record_without_its_data_set_is_refused() -> None:
    record = load_traces(ROOT / "bench/results/traces/squad_v1.jsonl")[0]
    with pytest.raises(TraceConfigError, match="not in the squad_v1 data given"):
        add_context_signals([record], load_examples(V2, "squad_v2"))


def test_the_rag_prompt_version_is_what_the_rag_command_sends() -> None:
    """Policies calibrated on ``rag-v2`` traces see exactly the rag command's chat prompt."""
    from confidence_router_rag.chain import rag_prompt

    example = load_examples(V1, "squad_v1")[0]
    system, user = prompt_messages(example, RAG_PROMPT_VERSION)
    rendered = rag_prompt().format_messages(context=example.context, question=example.question)
    assert [(system.role, system.content), (user.role, user.content)] == [
        ("system", rendered[0].content),
        ("user", rendered[1].content),
    ]
    assert prompt_messages(example) != prompt_messages(example, "rag-v1")
    with pytest.raises(ValueError, match="unknown prompt version 'rag-v9'"):
        prompt_messages(example, "rag-v9")


def test_context_signals_are_rebuilt_with_the_prompt_a_record_was_made_with() -> None:
    record = load_traces(ROOT / "bench/results/traces/squad_v1.jsonl")[0]
    record["config"]["prompt"] = "rag-v1"
    example = next(e for e in load_examples(V1, "squad_v1") if e.id == record["id"])
    assert add_context_signals([record], [example]) == 1
    expected = context_signals(prompt_messages(example, "rag-v1"), record["slm"]["raw"])
    assert {k: record["slm"]["signals"][k] for k in expected} == expected
    record["config"]["prompt"] = "qa-v0"
    with pytest.raises(TraceConfigError, match="'qa-v0', not one of qa-v1, rag-v1"):
        add_context_signals([record], [example])

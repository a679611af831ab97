"""The Router measures the context signals against the messages, and never keeps a cut-off
answer; on the real embedded models."""

from __future__ import annotations

import pytest

from confidence_router import (
    Bound,
    LlamaCppSLM,
    Message,
    Router,
    Signals,
    ThresholdPolicy,
    load_builtin_policy,
)
from confidence_router.signals.context import context_signals

KEEP_ALL = ThresholdPolicy((Bound("length", max=1e9),))
RAG = [
    Message("system", "Answer the question in a few words, using only the context."),
    Message(
        "user",
        "Context: The Eiffel Tower was finished in 1889 for the World's Fair in Paris.\n"
        "Question: When was the Eiffel Tower finished?\nAnswer:",
    ),
]


def test_an_answer_cut_off_by_the_token_limit_escalates_with_that_reason(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    router = Router(smollm2_slm, gemma3_slm, policy=KEEP_ALL)
    story = [Message("user", "Write a long story about a dragon who learns to cook.")]
    result = router.invoke(story, max_tokens=3)
    assert result.slm is not None and result.slm.finish_reason == "length"
    assert result.route == "llm"
    assert result.decision.reason.startswith("escalated: the SLM's answer was cut off")
    assert "finish_reason 'length'" in result.decision.reason
    assert result.decision.score is not None  # the policy still scored it
    assert router.stats.escalations == 1
    # the same policy keeps an answer that ended by itself
    kept = router.invoke(RAG, max_tokens=24)
    assert kept.slm is not None and kept.slm.finish_reason == "stop"
    assert kept.route == "slm"


@pytest.mark.parametrize("mode", ["invoke", "stream"])
def test_the_decision_carries_the_context_signals_of_the_prompt(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM, mode: str
) -> None:
    policy = load_builtin_policy("gemma3-270m/extractive-qa")
    router = Router(smollm2_slm, gemma3_slm, policy=policy)
    if mode == "invoke":
        result = router.invoke(RAG, max_tokens=24)
    else:
        chunks = list(router.stream(RAG, max_tokens=24))
        assert chunks[0].decision is not None and chunks[-1].result is not None
        result = chunks[-1].result
        assert chunks[0].decision == result.decision
    assert result.slm is not None
    signals = result.decision.signals
    assert signals["context_words"] > 2  # the passage was found in the user message
    expected = context_signals(RAG, result.slm.text)
    for name, value in expected.items():
        assert signals[name] == value, name
    assert result.decision.policy == "average"
    assert result.decision.score == pytest.approx(policy.score(Signals(**signals)))

"""The Router end to end on the real embedded models (llama.cpp in process)."""

from __future__ import annotations

import asyncio

import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    FallbackError,
    Generation,
    InvalidInputError,
    LlamaCppSLM,
    Message,
    Price,
    Router,
    ThresholdPolicy,
)

CONFIDENT_Q = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
UNSURE_Q = [Message("user", "Invent a long, strange word and explain its meaning.")]
QUERIES = [CONFIDENT_Q, UNSURE_Q, "Who wrote Hamlet?", "Name a prime number larger than 1000."]


@pytest.fixture(scope="module")
def router(smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM) -> Router:
    return Router(
        smollm2_slm,
        gemma3_slm,
        slm_price=Price(0.0, 0.0),
        fallback_price=Price(1.0, 2.0),
    )


def test_confident_answer_stays_with_the_slm(router: Router) -> None:
    result = router.invoke(CONFIDENT_Q, max_tokens=24)
    assert result.route == "slm"
    assert "Paris" in result.text
    assert result.fallback is None
    assert result.decision.reason.startswith("confident")
    assert result.decision.signals["length"] == len(result.slm.token_logprobs)
    assert result.answered_by.model == "smollm2-135m"


def test_uncertain_answer_escalates_with_reason_and_signals(router: Router) -> None:
    result = router.invoke(UNSURE_Q, max_tokens=24)
    assert result.route == "llm"
    assert result.decision.reason.startswith("unsure")
    assert result.decision.score is not None and result.decision.score < 0
    assert set(result.decision.signals) >= {"length", "mean_entropy", "min_logprob"}
    assert result.slm is not None and result.fallback is not None
    assert result.answered_by.model == "gemma3-270m"
    assert result.text == result.fallback.text
    # both calls are paid for, and the ledger knows both models
    assert set(result.usage_by_model) == {"smollm2-135m", "gemma3-270m"}
    assert result.cost == pytest.approx(Price(1.0, 2.0).cost(result.fallback.usage))


def _same_decisions(results: list, expected: list) -> None:
    assert [r.decision.route for r in results] == [r.decision.route for r in expected]
    for got, want in zip(results, expected):
        assert got.decision.score == pytest.approx(want.decision.score, abs=1e-9)
        assert got.text == want.text


def _collect(chunks: list) -> tuple[str, object, object]:
    assert chunks[0].decision is not None
    assert all(c.decision is None for c in chunks[1:])
    assert chunks[-1].done and chunks[-1].result is not None
    return "".join(c.text for c in chunks), chunks[0].decision, chunks[-1].result


async def test_sync_async_batch_and_stream_make_the_same_decisions(router: Router) -> None:
    expected = [router.invoke(q, max_tokens=24) for q in QUERIES]
    assert {r.route for r in expected} == {"slm", "llm"}  # both paths are exercised

    async_results = [await router.ainvoke(q, max_tokens=24) for q in QUERIES]
    batch_results = router.batch(QUERIES, max_tokens=24, max_concurrency=3)
    abatch_results = await router.abatch(QUERIES, max_tokens=24, max_concurrency=3)
    for other in (async_results, batch_results, abatch_results):
        _same_decisions(other, expected)

    for query, want in zip(QUERIES, expected):
        text, decision, result = _collect(list(router.stream(query, max_tokens=24)))
        _same_decisions([result], [want])
        assert decision.route == want.route
        assert text == want.text == result.text
        chunks = [c async for c in router.astream(query, max_tokens=24)]
        text, decision, result = _collect(chunks)
        assert decision.route == want.route and text == want.text


def test_stream_replays_the_slm_answer_token_by_token(router: Router) -> None:
    chunks = list(router.stream(CONFIDENT_Q, max_tokens=24))
    assert len(chunks) > 2  # several tokens, then the closing chunk
    assert all(c.route == "slm" for c in chunks)
    assert chunks[0].token_logprobs.shape == (1,)


def test_ledger_counts_queries_escalations_and_tokens(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    router = Router(smollm2_slm, gemma3_slm, fallback_price=Price(1.0, 1.0))
    results = router.batch([CONFIDENT_Q, UNSURE_Q], max_tokens=16)
    stats = router.stats
    assert stats.queries == 2
    assert stats.answered_by_slm == 1 and stats.escalations == 1
    assert stats.fallback_calls_avoided == 1
    slm_tokens = sum(r.slm.usage.total_tokens for r in results)
    assert stats.tokens_by_model["smollm2-135m"].total_tokens == slm_tokens
    assert stats.saved > 0  # the confident answer avoided a paid call


async def test_plain_callables_work_as_fallbacks(smollm2_slm: LlamaCppSLM) -> None:
    always = ThresholdPolicy((Bound("length", max=0),))  # every real answer escalates
    seen: list[list[Message]] = []

    def sync_fallback(messages: list[Message]) -> str:
        seen.append(messages)
        return "from the sync fallback"

    async def async_fallback(messages: list[Message]) -> Generation:
        await asyncio.sleep(0)
        return Generation.without_logprobs("from the async fallback", "async-llm")

    sync_router = Router(smollm2_slm, sync_fallback, always)
    assert sync_router.invoke("Hi", max_tokens=4).text == "from the sync fallback"
    assert (await sync_router.ainvoke("Hi", max_tokens=4)).text == "from the sync fallback"
    assert seen[0] == [Message("user", "Hi")]
    async_router = Router(smollm2_slm, async_fallback, always)
    result = await async_router.ainvoke("Hi", max_tokens=4)
    assert result.text == "from the async fallback"
    assert result.answered_by.model == "async-llm"


async def test_a_failing_fallback_raises_and_is_counted(smollm2_slm: LlamaCppSLM) -> None:
    always = ThresholdPolicy((Bound("length", max=0),))

    def broken(messages: list[Message]) -> str:
        raise TimeoutError("the large model took too long")

    router = Router(smollm2_slm, broken, always)
    with pytest.raises(FallbackError, match="took too long"):
        router.invoke("Hi", max_tokens=4)
    with pytest.raises(FallbackError, match="TimeoutError"):
        await router.ainvoke("Hi", max_tokens=4)
    with pytest.raises(FallbackError):
        list(router.stream("Hi", max_tokens=4))
    assert router.stats.errors == 3
    assert router.stats.answered_by_slm == 0


def test_empty_input_is_rejected_before_any_model_call(router: Router) -> None:
    before = router.stats.queries
    with pytest.raises(InvalidInputError, match="empty"):
        router.invoke([])
    with pytest.raises(InvalidInputError, match="empty"):
        router.invoke("   ")
    assert router.stats.queries == before


def test_invalid_router_configuration_names_the_field(smollm2_slm: LlamaCppSLM) -> None:
    with pytest.raises(ConfigurationError, match="^slm:"):
        Router("smollm2", lambda m: "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="^fallback:"):
        Router(smollm2_slm, 42)
    with pytest.raises(ConfigurationError, match="^policy:"):
        Router(smollm2_slm, lambda m: "x", policy="strict")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="^max_concurrency:"):
        Router(smollm2_slm, lambda m: "x", max_concurrency=0)
    with pytest.raises(ConfigurationError, match="^strict:"):
        Router(smollm2_slm, lambda m: "x", strict="yes")  # type: ignore[arg-type]


def test_context_window_overflow_escalates_with_reason(gemma3_slm: LlamaCppSLM) -> None:
    small = LlamaCppSLM.smollm2(n_ctx=64)
    router = Router(small, gemma3_slm)
    result = router.invoke("word " * 200, max_tokens=4)
    assert result.route == "llm"
    assert "context_window_exceeded" in result.decision.reason
    assert result.slm is None and result.slm_error is not None
    assert router.stats.slm_failures == 1


def test_a_named_default_policy_labels_every_decision_and_the_repr(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    from dataclasses import replace

    from confidence_router import choose_policy

    choice = choose_policy(smollm2_slm.model)
    assert choice.provenance == "fitted"
    keep_all = choice.policy.with_threshold(-1.0)  # a probability is never below -1
    kept = Router(smollm2_slm, gemma3_slm, replace(choice, policy=keep_all))
    result = kept.invoke("What is the capital of France?", max_tokens=32)
    assert result.decision.policy == "smollm2-135m/extractive-qa (fitted on this SLM)"
    assert "policy=smollm2-135m/extractive-qa (fitted on this SLM)" in repr(kept)
    plain = Router(smollm2_slm, gemma3_slm, keep_all)  # not named: the type is shown
    decision = plain.invoke("What is the capital of France?", max_tokens=32).decision
    assert decision.policy == "average"  # the shipped SmolLM2 policy is an AveragePolicy

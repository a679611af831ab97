"""The N-stage cascade end to end on real models.

Three stages: SmolLM2 in process (stage 1), SmolLM2 through the Ollama-compatible
test server with our ``OllamaSLM`` (stage 2, so its faults can be switched on),
and Gemma 3 in process as the top model (stage 3, the fallback). Routes are
forced with extreme thresholds so each test knows which stage must answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from confidence_router import (
    Bound,
    Cascade,
    CascadeResult,
    FallbackError,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    Price,
    RouteChunk,
    Router,
    SLMError,
    Stage,
    ThresholdPolicy,
)
from tests.support.faults import Fault
from tests.support.leaks import await_until
from tests.support.ollama_server import OllamaTestServer

SERVED = "smollm2:135m"
QUESTION = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
TOKENS = 24
KEEP = ThresholdPolicy((Bound("length", max=100),))
ESCALATE = ThresholdPolicy((Bound("length", max=100),), threshold=1e6)
PRICES = (Price(0.1, 0.2), Price(0.5, 1.0), Price(2.0, 4.0))
MODES = ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"]


def _policies(answered: int) -> tuple[ThresholdPolicy, ThresholdPolicy]:
    """Policies that make stage ``answered`` (1, 2, or 3 = the fallback) answer."""
    return (KEEP if answered == 1 else ESCALATE, KEEP if answered == 2 else ESCALATE)


@pytest.fixture
def middle(ollama_server: OllamaTestServer) -> OllamaSLM:
    return OllamaSLM(SERVED, host=ollama_server.host, max_tokens=TOKENS, timeout=30)


def _ladder(
    smollm2: LlamaCppSLM, middle: OllamaSLM, gemma3: LlamaCppSLM, answered: int, **kw: Any
) -> Cascade:
    low, mid = _policies(answered)
    strict = kw.pop("strict_middle", False)
    return Cascade(
        [Stage(smollm2, low, price=PRICES[0]), Stage(middle, mid, price=PRICES[1], strict=strict)],
        gemma3,
        fallback_price=PRICES[2],
        **kw,
    )


async def _run(cascade: Cascade, mode: str) -> tuple[CascadeResult, list[RouteChunk]]:
    """One query in the given mode; the chunks too for the streaming modes."""
    chunks: list[RouteChunk] = []
    if mode == "invoke":
        return await asyncio.to_thread(cascade.invoke, QUESTION, max_tokens=TOKENS), chunks
    if mode == "ainvoke":
        return await cascade.ainvoke(QUESTION, max_tokens=TOKENS), chunks
    if mode == "batch":
        (result,) = await asyncio.to_thread(cascade.batch, [QUESTION], max_tokens=TOKENS)
        return result, chunks
    if mode == "abatch":
        (result,) = await cascade.abatch([QUESTION], max_tokens=TOKENS)
        return result, chunks
    if mode == "stream":

        def consume() -> list[RouteChunk]:
            return list(cascade.stream(QUESTION, max_tokens=TOKENS))

        chunks = await asyncio.to_thread(consume)
    else:
        chunks = [c async for c in cascade.astream(QUESTION, max_tokens=TOKENS)]
    assert chunks[-1].done and isinstance(chunks[-1].result, CascadeResult)
    return chunks[-1].result, chunks


@pytest.mark.parametrize("answered", [1, 2, 3])
def test_the_query_climbs_until_a_stage_keeps_its_answer(
    smollm2_slm: LlamaCppSLM, middle: OllamaSLM, gemma3_slm: LlamaCppSLM, answered: int
) -> None:
    cascade = _ladder(smollm2_slm, middle, gemma3_slm, answered)
    result = cascade.invoke(QUESTION, max_tokens=TOKENS)
    models = ["smollm2-135m", SERVED, "gemma3-270m"]
    assert isinstance(result, CascadeResult)
    assert result.answered_stage == answered
    assert [s.model for s in result.stages] == models[:answered]
    expected = ["escalated"] * (answered - 1) + ["answered" if answered == 3 else "kept"]
    assert [s.outcome for s in result.stages] == expected
    assert result.route == ("llm" if answered == 3 else "slm")
    assert result.answered_by.model == models[answered - 1]
    assert result.text == result.stages[-1].generation.text  # type: ignore[union-attr]
    assert result.text.strip()
    for record in result.stages[: min(answered, 2)]:
        assert record.score is not None and record.threshold in (0.0, 1e6)
        assert record.reason and record.usage.completion_tokens > 0 and record.latency_s > 0
        assert record.error is None
    if answered == 3:
        assert result.stages[-1].score is None and result.fallback is not None
    # every model that ran is paid for, under its own name, and nothing else
    assert set(result.usage_by_model) == set(models[:answered])
    assert result.cost == pytest.approx(sum(s.cost for s in result.stages))
    assert result.cost == pytest.approx(sum(p.cost(s.usage) for p, s in zip(PRICES, result.stages)))
    assert sum(s.latency_s for s in result.stages) <= result.latency_s + 1e-6
    # the deciding stage's own Decision is the result's Decision
    assert result.decision is result.stages[min(answered, 2) - 1].decision
    data = result.to_dict()
    assert data["answered_stage"] == answered and len(data["stages"]) == answered  # type: ignore[arg-type]


def test_one_stage_cascade_is_the_two_model_router(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    for policy in (KEEP, ESCALATE):
        router = Router(smollm2_slm, gemma3_slm, policy, fallback_price=PRICES[2])
        cascade = Cascade([(smollm2_slm, policy)], gemma3_slm, fallback_price=PRICES[2])
        assert cascade.routers[0].fallback is router.fallback
        expected = router.invoke(QUESTION, max_tokens=TOKENS)
        got = cascade.invoke(QUESTION, max_tokens=TOKENS)
        assert got.text == expected.text and got.route == expected.route
        assert got.decision.to_dict() == expected.decision.to_dict()
        assert got.models == expected.models
        assert dict(got.usage_by_model) == dict(expected.usage_by_model)
        assert got.cost == pytest.approx(expected.cost)
        assert got.slm_error == expected.slm_error
        stats, mine = router.stats, cascade.routers[0].stats
        assert (mine.queries, mine.answered_by_slm, mine.escalations) == (
            stats.queries,
            stats.answered_by_slm,
            stats.escalations,
        )
        assert cascade.stats.saved == pytest.approx(stats.saved)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answered", [2, 3])
async def test_every_call_mode_gives_the_same_answer_and_record(
    smollm2_slm: LlamaCppSLM,
    middle: OllamaSLM,
    gemma3_slm: LlamaCppSLM,
    mode: str,
    answered: int,
) -> None:
    cascade = _ladder(smollm2_slm, middle, gemma3_slm, answered)
    reference = await asyncio.to_thread(cascade.invoke, QUESTION, max_tokens=TOKENS)
    result, chunks = await _run(cascade, mode)
    assert result.text == reference.text
    assert [s.outcome for s in result.stages] == [s.outcome for s in reference.stages]
    assert [s.model for s in result.stages] == [s.model for s in reference.stages]
    assert [s.score for s in result.stages] == [s.score for s in reference.stages]
    assert set(result.usage_by_model) == set(reference.usage_by_model)
    if chunks:
        first = chunks[0]
        # the deciding stage's decision and the answering model before any text
        assert first.decision is not None and first.models is not None
        assert first.decision.route == result.route
        assert first.decision.score == result.decision.score
        assert first.models["answered_by"] == result.answered_model
        assert all(c.decision is None for c in chunks[1:])
        assert all(c.route == result.route for c in chunks)
        assert "".join(c.text for c in chunks) == result.text
    stats = cascade.stats
    assert stats.queries == 2 and stats.answered_by_stage[answered - 1] == 2
    assert [s.reached for s in stats.stages] == [2] * answered + [0] * (3 - answered)
    assert [r.stats.queries for r in cascade.routers] == [2, 2]


@pytest.mark.parametrize("mode", MODES)
async def test_a_failing_middle_stage_escalates_to_the_next_with_its_reason(
    smollm2_slm: LlamaCppSLM,
    middle: OllamaSLM,
    gemma3_slm: LlamaCppSLM,
    ollama_server: OllamaTestServer,
    mode: str,
) -> None:
    cascade = _ladder(smollm2_slm, middle, gemma3_slm, answered=2)  # stage 2 would keep
    fault = ollama_server.faults.set("status", status=500, model=SERVED)
    result, _ = await _run(cascade, mode)
    assert fault.hits >= 1
    assert result.answered_stage == 3 and result.route == "llm"
    failed = result.stages[1]
    assert failed.outcome == "escalated" and failed.score is None
    assert failed.error is not None and failed.error.startswith("slm_")
    assert "500" in failed.error
    assert "SLM failed" in failed.reason
    assert result.slm_error is not None and "stage 2" in result.slm_error
    assert SERVED not in result.usage_by_model  # no answer, no tokens
    stats = cascade.stats
    assert stats.stages[1].failures == 1 and stats.stages[1].escalated == 1
    assert cascade.routers[1].stats.slm_failures == 1


async def test_a_strict_middle_stage_raises_its_typed_error(
    smollm2_slm: LlamaCppSLM,
    middle: OllamaSLM,
    gemma3_slm: LlamaCppSLM,
    ollama_server: OllamaTestServer,
) -> None:
    cascade = _ladder(smollm2_slm, middle, gemma3_slm, answered=2, strict_middle=True)
    ollama_server.faults.set("status", status=500, model=SERVED)
    with pytest.raises(SLMError) as info:
        await cascade.ainvoke(QUESTION, max_tokens=TOKENS)
    assert getattr(info.value, "model", None) == SERVED  # the stage's own error, unwrapped
    with pytest.raises(SLMError):
        for _ in cascade.stream(QUESTION, max_tokens=TOKENS):
            pass
    assert (cascade.stats.queries, cascade.stats.errors, cascade.stats.answered) == (2, 2, 0)
    assert [r.stats.errors for r in cascade.routers] == [2, 2]


async def test_a_failing_top_model_raises_the_top_models_fallback_error(
    smollm2_slm: LlamaCppSLM, middle: OllamaSLM
) -> None:
    def broken(messages: list[Message]) -> str:
        raise RuntimeError("the top model is down")

    cascade = Cascade([(smollm2_slm, ESCALATE), (middle, ESCALATE)], broken)
    with pytest.raises(FallbackError) as info:
        await cascade.ainvoke(QUESTION, max_tokens=TOKENS)
    assert "the top model is down" in str(info.value)
    assert "stage" not in str(info.value).split(":")[0]  # the top's own error, not a wrapper
    rescuing = Cascade(
        [(smollm2_slm, ESCALATE), (middle, ESCALATE)], broken, on_fallback_error="return_slm"
    )
    result = rescuing.invoke(QUESTION, max_tokens=TOKENS)
    assert result.answered_stage == 2 and result.route == "slm"
    assert result.fallback_error is not None and "top model is down" in result.fallback_error
    assert rescuing.stats.top_calls_avoided == 0  # the top was called, and failed


@pytest.fixture
def stalled_middle(ollama_server: OllamaTestServer) -> Iterator[Fault]:
    yield ollama_server.faults.set("stall", seconds=60, model=SERVED)
    ollama_server.faults.clear()


async def test_cancelling_ainvoke_cancels_the_stage_in_flight_and_counts_once(
    smollm2_slm: LlamaCppSLM,
    middle: OllamaSLM,
    gemma3_slm: LlamaCppSLM,
    stalled_middle: Fault,
) -> None:
    cascade = _ladder(smollm2_slm, middle, gemma3_slm, answered=2)
    task = asyncio.ensure_future(cascade.ainvoke(QUESTION, max_tokens=TOKENS))
    # stage 1 answered and escalated; stage 2 is waiting on the stalled server
    assert await await_until(lambda: stalled_middle.hits >= 1, within=30)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = cascade.stats
    assert (stats.queries, stats.cancelled) == (0, 1)
    assert [r.stats.cancelled for r in cascade.routers] == [1, 1]
    assert [r.stats.queries for r in cascade.routers] == [0, 0]


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_stream_closed_after_its_first_chunk_counts_as_cancelled_at_every_stage(
    smollm2_slm: LlamaCppSLM, middle: OllamaSLM, gemma3_slm: LlamaCppSLM, mode: str
) -> None:
    cascade = _ladder(smollm2_slm, middle, gemma3_slm, answered=3)
    if mode == "stream":

        def first() -> RouteChunk:
            chunks = cascade.stream(QUESTION, max_tokens=TOKENS)
            chunk = next(chunks)
            chunks.close()
            return chunk

        chunk = await asyncio.to_thread(first)
    else:
        achunks = cascade.astream(QUESTION, max_tokens=TOKENS)
        chunk = await achunks.__anext__()
        await achunks.aclose()
    assert chunk.decision is not None and chunk.models is not None
    assert chunk.models["answered_by"] == "gemma3-270m"
    stats = cascade.stats
    assert (stats.queries, stats.cancelled) == (0, 1)
    assert [r.stats.cancelled for r in cascade.routers] == [1, 1]
    assert [r.stats.queries for r in cascade.routers] == [0, 0]


async def test_the_ledger_counts_each_query_once_per_stage(
    smollm2_slm: LlamaCppSLM, middle: OllamaSLM, gemma3_slm: LlamaCppSLM
) -> None:
    ladders = {
        answered: _ladder(smollm2_slm, middle, gemma3_slm, answered) for answered in (1, 2, 3)
    }
    results: dict[int, list[CascadeResult]] = {}
    for answered, cascade in ladders.items():
        got = await cascade.abatch([QUESTION] * 2, max_tokens=TOKENS)
        got += await asyncio.to_thread(cascade.batch, [QUESTION] * 2, max_tokens=TOKENS)
        results[answered] = got
    for answered, cascade in ladders.items():
        stats = cascade.stats
        assert stats.queries == stats.answered == 4 and stats.errors == 0
        assert list(stats.answered_by_stage) == [4 if s == answered else 0 for s in (1, 2, 3)]
        assert [s.reached for s in stats.stages] == [4 if s <= answered else 0 for s in (1, 2, 3)]
        assert [s.escalated for s in stats.stages] == [4 if s < answered else 0 for s in (1, 2, 3)]
        # calls avoided: every answered query that never called that stage
        assert [s.calls_avoided for s in stats.stages] == [
            4 if s > answered else 0 for s in (1, 2, 3)
        ]
        assert stats.top_calls_avoided == (0 if answered == 3 else 4)
        # each stage router saw each query that reached it exactly once
        assert [r.stats.queries for r in cascade.routers] == [
            4 if s <= answered else 0 for s in (1, 2)
        ]
        # tokens and cost per model are the sums over the results
        for model in {m for r in results[answered] for m in r.usage_by_model}:
            used = [r.usage_by_model.get(model) for r in results[answered]]
            total = sum(u.total_tokens for u in used if u is not None)
            assert stats.tokens_by_model[model].total_tokens == total
        assert stats.cost == pytest.approx(sum(r.cost for r in results[answered]))
        assert sum(stats.cost_by_model.values()) == pytest.approx(stats.cost)
        # top model only: its own bill when it answered, else the answer's tokens at its price
        answers = [r.stages[-1].usage for r in results[answered]]
        assert stats.baseline_cost == pytest.approx(sum(PRICES[2].cost(u) for u in answers))
        if answered < 3:
            assert stats.saved > 0
        else:
            assert stats.saved < 0  # the two small models were paid for in vain

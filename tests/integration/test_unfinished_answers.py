"""Never keep an answer a model did not finish; unknown token counts are not zero.

Real parts: SmolLM2 (the SLM) over HTTP through ``OllamaSLM`` and
``OpenAICompatibleSLM``, Gemma 3 as the fallback (in process, or over HTTP when
the fallback itself is the one cut), the test server's ``truncate`` (a clean
close without Ollama's ``done: true`` / OpenAI's ``finish_reason``, after
``after`` tokens) and ``partial_logprobs`` switches. The router's policy here
keeps every whole answer (``KEEP``), so an unfinished answer that slipped
through would come back as ``route: "slm"``: each test fails if the promise
breaks. Every call mode: ``invoke``, ``ainvoke``, ``stream``, ``astream``,
``batch``, ``abatch``.

When a query is counted (``Pipeline.count`` in ``routing/_pipeline.py``): once, when it
ends, in every mode; a query cancelled or abandoned before its end counts in ``cancelled``
instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from confidence_router import (
    Bound,
    FallbackError,
    Hedge,
    IncompleteResponseError,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    OpenAICompatibleSLM,
    RoutedResult,
    Router,
    ThresholdPolicy,
)
from tests.support.leaks import await_until
from tests.support.ollama_server import OllamaTestServer

pytest.importorskip("openai")

SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"
QUESTION = [Message("user", "What is the capital of France? Answer in a few words.")]
SLM_TOKENS = 32  # the whole answer ends by itself (a cut-off answer escalates anyway)
FALLBACK_TOKENS = 3
KEEP = ThresholdPolicy((Bound("length", max=1000),))  # every whole answer is kept
ALWAYS_LLM = ThresholdPolicy((Bound("length", max=0),))
MODES = ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"]
PROTOCOLS = ["ollama", "openai"]

Served = OllamaSLM | OpenAICompatibleSLM


def served(protocol: str, host: str, model: str = SMOLLM2, **options: Any) -> Served:
    """SmolLM2 (or ``model``) over HTTP through one of the two served backends."""
    if protocol == "ollama":
        if model == GEMMA3:
            options.setdefault("prompt_format", "completion")
        return OllamaSLM(model, host=host, timeout=60, **options)
    if model == GEMMA3:
        options.setdefault("prompt_format", "completion")
    return OpenAICompatibleSLM(model, base_url=f"{host}/v1", timeout=60, **options)


async def route(router: Router, mode: str, max_tokens: int | None = None) -> RoutedResult:
    """One query in one mode; a stream must end with its closing chunk and result."""
    if mode == "invoke":
        return router.invoke(QUESTION, max_tokens=max_tokens)
    if mode == "ainvoke":
        return await router.ainvoke(QUESTION, max_tokens=max_tokens)
    if mode == "batch":
        return router.batch([QUESTION], max_tokens=max_tokens)[0]  # type: ignore[no-any-return]
    if mode == "abatch":
        return (await router.abatch([QUESTION], max_tokens=max_tokens))[0]  # type: ignore[no-any-return]
    if mode == "stream":
        chunks = list(router.stream(QUESTION, max_tokens=max_tokens))
    else:
        chunks = [c async for c in router.astream(QUESTION, max_tokens=max_tokens)]
    assert chunks[0].decision is not None
    assert chunks[-1].done and chunks[-1].result is not None
    assert sum(c.done for c in chunks) == 1
    return chunks[-1].result


def counts(router: Router) -> tuple[int, int, int, int, int]:
    s = router.stats
    return (s.queries, s.answered_by_slm, s.escalations, s.errors, s.slm_failures)


@pytest.fixture
def slms(ollama_host: str) -> Iterator[dict[str, Served]]:
    made = {p: served(p, ollama_host, max_tokens=SLM_TOKENS) for p in PROTOCOLS}
    yield made
    for slm in made.values():
        slm.close()


# -- the SLM's answer is unfinished: escalate with the reason, or raise when strict ------------


@pytest.mark.parametrize("after", [0, 2], ids=["empty_body", "after_2_tokens"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unfinished_slm_answer_escalates_with_its_reason(
    protocol: str,
    mode: str,
    after: int,
    ollama_server: OllamaTestServer,
    slms: dict[str, Served],
    gemma3_slm: LlamaCppSLM,
) -> None:
    fault = ollama_server.faults.set("truncate", after=after, model=SMOLLM2)
    router = Router(slms[protocol], gemma3_slm, KEEP)
    result = await route(router, mode)
    assert fault.hits == 1
    assert result.route == "llm" and result.slm is None and result.decision.score is None
    assert "escalated because the SLM failed (slm_incomplete)" in result.decision.reason
    assert result.slm_error is not None and result.slm_error.startswith("slm_incomplete: ")
    if after == 0:
        assert "closed the stream" in result.slm_error
        assert "without sending anything" in result.slm_error
        assert "empty answer" not in result.decision.reason
    else:
        assert f"after {after} token(s)" in result.slm_error
    assert counts(router) == (1, 0, 1, 0, 1)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_strict_router_raises_the_unfinished_answer(
    protocol: str,
    mode: str,
    ollama_server: OllamaTestServer,
    slms: dict[str, Served],
    gemma3_slm: LlamaCppSLM,
) -> None:
    ollama_server.faults.set("truncate", after=2, model=SMOLLM2)
    router = Router(slms[protocol], gemma3_slm, KEEP, strict=True)
    with pytest.raises(IncompleteResponseError) as info:
        await route(router, mode)
    assert info.value.tokens_received == 2 and info.value.model == SMOLLM2
    assert info.value.reason_code == "slm_incomplete"
    assert counts(router) == (1, 0, 0, 1, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_backends_say_the_server_sent_nothing_for_an_empty_stream(
    protocol: str, ollama_server: OllamaTestServer, slms: dict[str, Served]
) -> None:
    fault = ollama_server.faults.set("truncate", after=0, model=SMOLLM2)
    slm = slms[protocol]
    with pytest.raises(IncompleteResponseError, match="without sending anything") as sync_info:
        list(slm.stream(QUESTION))
    with pytest.raises(IncompleteResponseError, match="without sending anything"):
        [c async for c in slm.astream(QUESTION)]
    assert sync_info.value.tokens_received == 0
    assert "closed the stream" in str(sync_info.value)
    assert fault.hits == 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_text_without_its_logprobs_inside_a_stream_escalates(
    protocol: str,
    mode: str,
    ollama_server: OllamaTestServer,
    slms: dict[str, Served],
    gemma3_slm: LlamaCppSLM,
) -> None:
    fault = ollama_server.faults.set("partial_logprobs", model=SMOLLM2)
    router = Router(slms[protocol], gemma3_slm, KEEP)
    result = await route(router, mode)
    assert fault.hits >= 1
    assert result.route == "llm" and result.slm is None
    assert "(missing_logprobs)" in result.decision.reason
    assert result.slm_error is not None and "without logprobs" in result.slm_error
    assert counts(router) == (1, 0, 1, 0, 1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unfinished_slm_answer_is_never_returned_by_return_slm(
    protocol: str, ollama_server: OllamaTestServer, slms: dict[str, Served]
) -> None:
    ollama_server.faults.set("truncate", after=2, model=SMOLLM2)
    ollama_server.faults.set("status", model=GEMMA3, message="overloaded")
    fallback = served("ollama", ollama_server.host, GEMMA3, max_tokens=FALLBACK_TOKENS)
    router = Router(slms[protocol], fallback, KEEP, on_fallback_error="return_slm")
    for mode in ("invoke", "astream"):
        with pytest.raises(FallbackError, match=r"the SLM had failed too: slm_incomplete"):
            await route(router, mode)
    assert counts(router) == (2, 0, 0, 2, 2)
    fallback.close()


async def test_hedging_never_keeps_an_unfinished_answer(
    ollama_server: OllamaTestServer, slms: dict[str, Served], gemma3_slm: LlamaCppSLM
) -> None:
    fault = ollama_server.faults.set("truncate", after=2, model=SMOLLM2)
    hedged = Router(slms["ollama"], gemma3_slm, KEEP, hedge=Hedge(after_tokens=1))
    for mode in ("ainvoke", "astream", "abatch"):
        result = await route(hedged, mode, max_tokens=FALLBACK_TOKENS)
        assert result.route == "llm" and "slm_incomplete" in result.decision.reason
    assert fault.hits == 3
    assert counts(hedged) == (3, 0, 3, 0, 3)


# -- the fallback's answer is unfinished: raise from every mode --------------------------------


@pytest.mark.parametrize("hedge", [False, True], ids=["plain", "hedged"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_an_unfinished_fallback_answer_raises_from_every_mode(
    protocol: str,
    mode: str,
    hedge: bool,
    ollama_server: OllamaTestServer,
    smollm2_slm: LlamaCppSLM,
) -> None:
    if hedge and mode not in ("ainvoke", "astream", "abatch"):
        pytest.skip("only the async modes hedge")
    fault = ollama_server.faults.set("truncate", after=1, model=GEMMA3)
    fallback = served(protocol, ollama_server.host, GEMMA3, max_tokens=FALLBACK_TOKENS)
    router = Router(
        smollm2_slm,
        fallback,
        ALWAYS_LLM,
        on_fallback_error="return_slm",  # a stopped SLM answer is never returned either
        early_abort=True,
        hedge=Hedge(after_tokens=1) if hedge else None,
    )
    chunks: list[Any] = []
    with pytest.raises(FallbackError, match="'gemma3:270m' failed after escalation") as info:
        if mode == "stream":
            chunks.extend(router.stream(QUESTION, max_tokens=4))
        elif mode == "astream":
            chunks.extend([c async for c in router.astream(QUESTION, max_tokens=4)])
        else:
            await route(router, mode, max_tokens=4)
    assert isinstance(info.value.__cause__, IncompleteResponseError), repr(info.value.__cause__)
    assert "incomplete" in str(info.value)
    assert not any(c.done or c.result is not None for c in chunks), "no end was announced"
    assert fault.hits == 1
    assert counts(router) == (1, 0, 0, 1, 0)
    fallback.close()


# -- unknown token counts are not zero -----------------------------------------------------------


async def test_a_stream_without_usage_leaves_the_prompt_unknown_not_zero(
    ollama_host: str, gemma3_slm: LlamaCppSLM
) -> None:
    """As llama-cpp-python's server: no usage chunk in streams. The completion count comes
    from the logprob entries; the prompt's is unknown, everywhere it is shown."""
    slm = served("openai", ollama_host, max_tokens=SLM_TOKENS, stream_usage=False)
    router = Router(slm, gemma3_slm, KEEP)
    result = await route(router, "astream")
    assert result.route == "slm" and result.slm is not None
    usage = result.usage_by_model[result.slm.model]
    assert usage.prompt_unknown_calls == 1 and usage.prompt_tokens == 0
    assert usage.completion_tokens == len(result.slm.token_logprobs) > 0
    assert not usage.exact
    meta = result.to_dict()
    assert meta["usage"][SMOLLM2]["prompt_tokens"] is None  # type: ignore[index]
    assert meta["usage"][SMOLLM2]["completion_tokens"] == usage.completion_tokens  # type: ignore[index]
    assert meta["cost_exact"] is False
    stats = router.stats
    assert stats.tokens_by_model[SMOLLM2].prompt_unknown_calls == 1
    assert not stats.costs_exact and stats.unknown_token_calls == 1
    shown = stats.to_dict()
    assert shown["tokens_by_model"][SMOLLM2]["prompt_tokens"] is None  # type: ignore[index]
    assert shown["tokens_by_model"][SMOLLM2]["prompt_unknown_calls"] == 1  # type: ignore[index]
    assert shown["costs_exact"] is False
    assert "unknown prompt" in usage.describe()
    slm.close()


async def test_an_ollama_stream_stopped_early_leaves_its_prompt_unknown(
    ollama_host: str, gemma3_slm: LlamaCppSLM
) -> None:
    slm = served("ollama", ollama_host, max_tokens=SLM_TOKENS)
    router = Router(slm, gemma3_slm, ThresholdPolicy((Bound("length", max=2),)))
    result = await route(router, "ainvoke", max_tokens=FALLBACK_TOKENS)
    assert result.route == "llm" and result.slm is not None
    assert result.slm.finish_reason == "early_abort"
    usage = result.usage_by_model[result.slm.model]
    assert (usage.prompt_tokens, usage.prompt_unknown_calls) == (0, 1)
    assert usage.completion_tokens == len(result.slm.token_logprobs) == 3
    assert result.to_dict()["usage"][SMOLLM2]["prompt_tokens"] is None  # type: ignore[index]
    fallback_usage = result.usage_by_model[gemma3_slm.model]
    assert fallback_usage.exact and fallback_usage.prompt_tokens > 0  # llama.cpp counts its own
    slm.close()


# -- exact-once counting for streams -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_finished_query_counts_once_in_every_mode(
    mode: str, slms: dict[str, Served], gemma3_slm: LlamaCppSLM
) -> None:
    for policy, outcome in ((KEEP, (1, 1, 0, 0, 0)), (ALWAYS_LLM, (1, 0, 1, 0, 0))):
        router = Router(slms["ollama"], gemma3_slm, policy)
        await route(router, mode, max_tokens=FALLBACK_TOKENS if policy is ALWAYS_LLM else None)
        assert counts(router) == outcome, mode
        assert router.stats.cancelled == 0


@pytest.mark.parametrize("policy", ["kept", "escalated"])
@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_stream_abandoned_after_its_first_chunk_counts_as_cancelled(
    mode: str, policy: str, slms: dict[str, Served], gemma3_slm: LlamaCppSLM
) -> None:
    router = Router(slms["ollama"], gemma3_slm, KEEP if policy == "kept" else ALWAYS_LLM)
    if mode == "stream":
        sync_stream = router.stream(QUESTION, max_tokens=SLM_TOKENS)
        first = next(sync_stream)
        assert router.stats.queries == 0, "not counted before its end"
        sync_stream.close()
    else:
        async_stream = router.astream(QUESTION, max_tokens=SLM_TOKENS)
        first = await async_stream.__anext__()
        assert router.stats.queries == 0, "not counted before its end"
        await async_stream.aclose()
    expected = "slm" if policy == "kept" else "llm"
    assert first.decision is not None and first.decision.route == expected
    assert counts(router) == (0, 0, 0, 0, 0)
    assert router.stats.cancelled == 1


@pytest.mark.parametrize("mode", ["ainvoke", "astream", "abatch"])
async def test_a_cancelled_query_counts_once_as_cancelled(
    mode: str, ollama_server: OllamaTestServer, slms: dict[str, Served], gemma3_slm: LlamaCppSLM
) -> None:
    fault = ollama_server.faults.set("stall", seconds=60, model=SMOLLM2)
    router = Router(slms["ollama"], gemma3_slm, KEEP)

    async def drain() -> None:
        [c async for c in router.astream(QUESTION)]

    call: Any
    if mode == "ainvoke":
        call = router.ainvoke(QUESTION)
    elif mode == "abatch":
        call = router.abatch([QUESTION])
    else:
        call = drain()
    task = asyncio.ensure_future(call)
    assert await await_until(lambda: fault.hits == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counts(router) == (0, 0, 0, 0, 0)
    assert router.stats.cancelled == 1


# -- the property: an unfinished stream is never kept, each query counted once ----------------


@settings(
    max_examples=24,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    protocol=st.sampled_from(PROTOCOLS),
    mode=st.sampled_from(MODES),
    cut=st.one_of(st.none(), st.integers(min_value=0, max_value=12)),
    early_abort=st.booleans(),
)
async def test_property_a_cut_stream_is_never_kept_and_each_query_counts_once(
    protocol: str,
    mode: str,
    cut: int | None,
    early_abort: bool,
    ollama_server: OllamaTestServer,
    slms: dict[str, Served],
    gemma3_slm: LlamaCppSLM,
) -> None:
    """Real streams of SmolLM2 cut after ``cut`` tokens (None: not cut), in any mode."""
    ollama_server.faults.clear()
    if cut is not None:
        ollama_server.faults.set("truncate", after=cut, model=SMOLLM2)
    router = Router(slms[protocol], gemma3_slm, KEEP, early_abort=early_abort)
    result = await route(router, mode, max_tokens=SLM_TOKENS)
    if cut is not None:
        assert result.route == "llm", f"an answer cut after {cut} tokens was kept"
        assert result.slm is None and result.slm_error is not None
        assert "slm_incomplete" in result.slm_error
    else:
        assert result.route == "slm" and result.slm is not None
    stats = router.stats
    assert stats.queries == 1 and stats.cancelled == 0
    assert stats.answered_by_slm + stats.escalations + stats.errors == 1
    ollama_server.faults.clear()


# -- unknown counts through the faces ------------------------------------------------------------


async def test_the_faces_never_show_an_unreported_count_as_zero(ollama_host: str) -> None:
    """A kept answer from a server that sends no usage in streams (llama-cpp-python's)."""
    from langchain_ollama import ChatOllama
    from llama_index.core.base.llms.types import ChatMessage

    from langchain_confidence_router import ConfidenceRouterChat
    from llamaindex_confidence_router import ConfidenceRouterLLM
    from tests.support.fallbacks import llamaindex_gemma

    slm = served("openai", ollama_host, max_tokens=SLM_TOKENS, stream_usage=False)
    fallback = ChatOllama(model=GEMMA3, base_url=ollama_host, num_predict=FALLBACK_TOKENS)
    chat = ConfidenceRouterChat(slm=slm, fallback=fallback, policy=KEEP)
    chunks = [c async for c in chat.astream(QUESTION[0].content)]
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    routing = merged.response_metadata["routing"]
    assert routing["route"] == "slm"
    assert routing["usage"][SMOLLM2]["prompt_tokens"] is None
    assert routing["usage"][SMOLLM2]["completion_tokens"] > 0
    assert routing["cost_exact"] is False
    assert merged.usage_metadata is None, "LangChain cannot say unknown: no usage, not 0"
    llm = ConfidenceRouterLLM(slm, llamaindex_gemma(ollama_host, FALLBACK_TOKENS), policy=KEEP)
    response = await llm.achat([ChatMessage(role="user", content=QUESTION[0].content)])
    usage = response.raw["usage"]
    assert "prompt_tokens" not in usage and "total_tokens" not in usage
    assert usage["prompt_unknown_calls"] == 1 and usage["completion_tokens"] > 0
    assert chat.stats.tokens_by_model[SMOLLM2].prompt_unknown_calls == 1
    slm.close()

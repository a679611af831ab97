"""Hedged escalation when something fails: each query counted exactly once in the ledger.

SmolLM2 (SLM) and Gemma 3 (fallback) on the test server through the real
``ollama`` client, the hedge started after the first SLM token. The ledger
columns are (q, slm, esc, err, fail), as in the README's table.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from confidence_router import (
    Bound,
    FallbackError,
    FallbackTimeoutError,
    Hedge,
    Message,
    OllamaSLM,
    RoutedResult,
    Router,
    ThresholdPolicy,
)
from tests.support.leaks import await_until, opened_since, other_tasks, settled_client_ports
from tests.support.ollama_server import OllamaTestServer

SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"
QUESTION = [Message("user", "What is the capital of France? Answer in a few words.")]
KEEP = ThresholdPolicy((Bound("length", max=100),))
SHORT = ThresholdPolicy((Bound("length", max=2),))  # stopped at the 3rd token: escalated
EVERYTHING = Hedge(after_tokens=1)
MODES = ["ainvoke", "astream"]


@pytest.fixture
async def models(ollama_host: str) -> AsyncIterator[tuple[OllamaSLM, OllamaSLM]]:
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=32, timeout=120)
    fallback = OllamaSLM(
        GEMMA3, host=ollama_host, prompt_format="completion", max_tokens=16, timeout=120
    )
    for model in (slm, fallback):  # both loaded before the race starts
        await model.agenerate(QUESTION, max_tokens=1)
    yield slm, fallback
    for model in (slm, fallback):
        model.close()
        await model.aclose()


def counts(router: Router) -> tuple[int, int, int, int, int]:
    s = router.stats
    return (s.queries, s.answered_by_slm, s.escalations, s.errors, s.slm_failures)


async def run(router: Router, mode: str) -> tuple[RoutedResult, list[Any]]:
    if mode == "ainvoke":
        return await router.ainvoke(QUESTION), []
    chunks = [c async for c in router.astream(QUESTION)]
    assert [c.done for c in chunks].count(True) == 1
    result = chunks[-1].result
    assert result is not None
    return result, chunks


@pytest.mark.parametrize("mode", MODES)
async def test_the_slm_failing_after_the_hedge_started_is_answered_by_the_hedged_call(
    mode: str, ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    slm, fallback = models
    expected = (await fallback.agenerate(QUESTION)).text
    broken = ollama_server.faults.set("error_line", after=3, model=SMOLLM2, message="runner died")
    started = ollama_server.faults.set("stall", seconds=0.5, model=GEMMA3)  # counts its start
    router = Router(slm, fallback, KEEP, hedge=EVERYTHING)
    result, chunks = await run(router, mode)
    assert broken.hits == 1 and started.hits == 1  # the fallback was asked once: the hedge
    assert result.route == "llm" and result.text == expected
    assert result.slm_error is not None and "runner died" in result.slm_error
    assert result.slm_error.startswith("slm_response_error")
    assert "hedged: the fallback was started after 1 SLM tokens" in result.decision.reason
    if chunks:
        assert {c.route for c in chunks} == {"llm"} and "".join(c.text for c in chunks) == expected
    assert counts(router) == (1, 0, 1, 0, 1)


@pytest.mark.parametrize("mode", MODES)
async def test_a_failed_hedged_fallback_raises_and_counts_one_error(
    mode: str, ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    slm, fallback = models
    fault = ollama_server.faults.set("status", model=GEMMA3, message="fallback overloaded")
    router = Router(slm, fallback, SHORT, hedge=EVERYTHING)
    chunks: list[Any] = []
    with pytest.raises(FallbackError) as info:
        if mode == "ainvoke":
            await router.ainvoke(QUESTION)
        else:
            async for chunk in router.astream(QUESTION):
                chunks.append(chunk)
    assert not isinstance(info.value, FallbackTimeoutError)
    assert "fallback overloaded" in str(info.value) and fault.hits == 1
    assert not any(c.text or c.done for c in chunks), "no text before a failed fallback"
    assert counts(router) == (1, 0, 0, 1, 0)
    assert router.stats.tokens_by_model[SMOLLM2].completion_tokens == 3  # the SLM's, counted


@pytest.mark.parametrize("mode", MODES)
async def test_a_hedged_fallback_past_fallback_timeout_raises_and_counts_one_error(
    mode: str, ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    slm, fallback = models
    hang = ollama_server.faults.set("stall", seconds=120, model=GEMMA3)
    router = Router(slm, fallback, SHORT, hedge=EVERYTHING, fallback_timeout=5)
    began = time.monotonic()
    with pytest.raises(FallbackTimeoutError, match="fallback_timeout=5"):
        if mode == "ainvoke":
            await router.ainvoke(QUESTION)
        else:
            async for _ in router.astream(QUESTION):
                pass
    assert time.monotonic() - began < 60 and hang.hits == 1
    assert counts(router) == (1, 0, 0, 1, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_cancelling_a_hedged_query_counts_nothing_and_closes_both_calls(
    mode: str, ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    port = ollama_server.port
    before, tasks = settled_client_ports(port), other_tasks()
    # fresh clients (the fixture's loaded the models): their connections are this test's own
    slm = OllamaSLM(SMOLLM2, host=ollama_server.host, max_tokens=32, timeout=120)
    fallback = OllamaSLM(
        GEMMA3, host=ollama_server.host, prompt_format="completion", max_tokens=16, timeout=120
    )
    slm_pause = ollama_server.faults.set("stall_mid", after=3, seconds=120, model=SMOLLM2)
    hang = ollama_server.faults.set("stall", seconds=120, model=GEMMA3)
    router = Router(slm, fallback, KEEP, hedge=EVERYTHING)

    async def query() -> None:
        await run(router, mode)

    task = asyncio.create_task(query())
    assert await await_until(lambda: slm_pause.hits == 1 and hang.hits == 1, within=60)
    assert opened_since(port, before) == 2  # the SLM's call and the hedged fallback's
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert counts(router) == (0, 0, 0, 0, 0)  # README: a cancelled query counts nothing
    assert await await_until(lambda: opened_since(port, before) == 0, within=10)
    assert other_tasks() == tasks
    for model in (slm, fallback):
        await model.aclose()

"""Hedged escalation on real models over HTTP: the fallback starts while the SLM still talks.

SmolLM2 (SLM) and Gemma 3 (fallback) on the test server, through the real
``ollama`` client. Mid-stream stalls make the race deterministic: the SLM
pauses 10 s after 3 tokens, long enough (even on a busy machine) for the
hedged fallback to send its first 2 tokens and then hang, so a cancelled
loser has exactly 2 tokens to count.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    Hedge,
    Message,
    OllamaSLM,
    Router,
    ThresholdPolicy,
    TraceRecorder,
)
from tests.support.leaks import (
    await_until,
    opened_since,
    other_tasks,
    settled_client_ports,
)
from tests.support.ollama_server import OllamaTestServer

SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"
# A short whole answer (7 tokens from SmolLM2): a kept answer must end by itself, since an
# answer cut off by the token limit escalates whatever the policy.
QUESTION = [Message("user", "What is the capital of France? Answer in a few words.")]
KEEP = ThresholdPolicy((Bound("length", max=100),))  # every answer here is kept
SHORT = ThresholdPolicy((Bound("length", max=2),))  # stopped at the 3rd token: escalated
EVERYTHING = Hedge(after_tokens=1)  # the grey zone is the whole score range


@pytest.fixture
async def models(ollama_host: str) -> AsyncIterator[tuple[OllamaSLM, OllamaSLM]]:
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=32, timeout=120)
    fallback = OllamaSLM(
        GEMMA3, host=ollama_host, prompt_format="completion", max_tokens=16, timeout=120
    )
    # both models loaded by the server before the race starts
    for model in (slm, fallback):
        await model.agenerate(QUESTION, max_tokens=1)
    yield slm, fallback
    for model in (slm, fallback):
        model.close()
        await model.aclose()


@pytest.mark.parametrize("mode", ["ainvoke", "astream"])
async def test_a_kept_answer_cancels_the_hedged_fallback_and_counts_its_tokens(
    mode: str, ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    slm, fallback = models
    port = ollama_server.port
    before, tasks = settled_client_ports(port), other_tasks()
    slm_pause = ollama_server.faults.set("stall_mid", after=3, seconds=10, model=SMOLLM2)
    hang = ollama_server.faults.set("stall_mid", after=2, seconds=120, model=GEMMA3)
    router = Router(slm, fallback, KEEP, hedge=EVERYTHING)
    started = time.monotonic()
    if mode == "ainvoke":
        result = await router.ainvoke(QUESTION)
    else:
        chunks = [c async for c in router.astream(QUESTION)]
        assert {c.route for c in chunks} == {"slm"}  # not one token of the fallback's text
        assert chunks[0].decision is not None and chunks[-1].result is not None
        result = chunks[-1].result
        assert "".join(c.text for c in chunks) == result.text
    assert time.monotonic() - started < 60  # not held by the hanging fallback
    assert slm_pause.hits == 1 and hang.hits == 1
    assert result.route == "slm" and result.fallback is None
    assert "hedged: the fallback was started after 1 SLM tokens and cancelled" in (
        result.decision.reason
    )
    assert "(2 of its tokens counted)" in result.decision.reason
    assert result.usage_by_model[GEMMA3].completion_tokens == 2
    assert router.stats.tokens_by_model[GEMMA3].completion_tokens == 2
    assert router.stats.answered_by_slm == 1
    # the fallback's connection is closed; the SLM's finished one stays pooled for reuse
    assert await await_until(lambda: opened_since(port, before) <= 1)
    assert other_tasks() == tasks


@pytest.mark.parametrize("mode", ["ainvoke", "astream"])
async def test_an_escalated_answer_uses_the_hedged_fallback(
    mode: str, ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    slm, fallback = models
    tasks = other_tasks()
    expected = (await fallback.agenerate(QUESTION)).text
    router = Router(slm, fallback, SHORT, hedge=EVERYTHING)
    if mode == "ainvoke":
        result = await router.ainvoke(QUESTION)
    else:
        chunks = [c async for c in router.astream(QUESTION)]
        assert {c.route for c in chunks} == {"llm"}
        assert chunks[0].decision is not None and chunks[0].models is not None
        result = chunks[-1].result
        assert result is not None and "".join(c.text for c in chunks) == result.text
    assert result.route == "llm" and result.text == expected
    assert "early abort after 3 SLM tokens" in result.decision.reason
    assert "hedged: the fallback was started after 1 SLM tokens" in result.decision.reason
    assert router.stats.tokens_by_model[SMOLLM2].completion_tokens == 3
    assert router.stats.escalations == 1
    assert other_tasks() == tasks


async def test_outside_the_grey_zone_nothing_is_hedged(
    ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    slm, fallback = models
    router = Router(slm, fallback, KEEP, hedge=Hedge(after_tokens=1, low=-10.0, high=-5.0))
    result = await router.ainvoke(QUESTION)
    assert result.route == "slm" and "hedged" not in result.decision.reason
    assert GEMMA3 not in router.stats.tokens_by_model
    with pytest.raises(ConfigurationError, match="^hedge:"):
        Router(slm, fallback, KEEP, hedge=Hedge(after_tokens=1, low=1.0, high=0.0))
    with pytest.raises(ConfigurationError, match="^hedge:"):
        Router(slm, fallback, KEEP, hedge=3)  # type: ignore[arg-type]


async def test_a_hedged_query_is_traced_with_its_messages_and_shadow_checked(
    tmp_path: Path, ollama_server: OllamaTestServer, models: tuple[OllamaSLM, OllamaSLM]
) -> None:
    slm, fallback = models
    path = tmp_path / "traces.jsonl"
    router = Router(
        slm,
        fallback,
        KEEP,
        hedge=EVERYTHING,
        trace=TraceRecorder(path, store_text=True),
        shadow_rate=1.0,
    )
    result = await router.ainvoke(QUESTION)
    assert result.route == "slm" and "hedged" in result.decision.reason
    assert router.monitor is not None and router.monitor.wait(120)
    assert router.stats.shadow_checks == 1
    await router.aclose()
    (record,) = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert record["label"]["shadow"] == "done" and record["label"]["f1"] is not None
    assert record["meta"]["messages"] == [{"role": "user", "content": QUESTION[0].content}]

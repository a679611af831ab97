"""Early abort on real models: the SLM is stopped at the first token that settles the decision.

SmolLM2 answers in process (llama.cpp) or over HTTP through the real ``ollama``
client and the test server; Gemma 3 is the fallback. Each test checks what the
caller sees (route, reason, text), what the ledger counts, and that the SLM
really stopped: the HTTP connection is closed (the server's handler ends) and
no llama.cpp token loop keeps running in a thread.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from confidence_router import (
    Bound,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    RoutedResult,
    Router,
    ThresholdPolicy,
)
from confidence_router.routing.early_exit import ABORTED
from tests.support.leaks import (
    await_until,
    client_connections,
    opened_since,
    other_tasks,
    settled_client_connections,
    settled_client_ports,
    wait_until,
)
from tests.support.models import shared_slm
from tests.support.ollama_server import OllamaTestServer

LONG_Q = [Message("user", "Write a long story about a dragon who learns to cook. Begin now.")]
CONFIDENT_Q = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
UNSURE_Q = [Message("user", "Invent a long, strange word and explain its meaning.")]
TOKENS = 48
#: The story runs far past 3 tokens: length > 3 can only get worse, so the SLM is stopped at 4.
SHORT = ThresholdPolicy((Bound("length", max=3),))
MODES = ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"]
SMOLLM2 = "smollm2:135m"
GEMMA3 = "gemma3:270m"


async def route(router: Router, mode: str, messages: Any, max_tokens: int = TOKENS) -> Any:
    """One query in one mode: the result, and the stream's chunks (or None)."""
    if mode == "invoke":
        return router.invoke(messages, max_tokens=max_tokens), None
    if mode == "ainvoke":
        return await router.ainvoke(messages, max_tokens=max_tokens), None
    if mode == "batch":
        return router.batch([messages], max_tokens=max_tokens)[0], None
    if mode == "abatch":
        return (await router.abatch([messages], max_tokens=max_tokens))[0], None
    if mode == "stream":
        chunks = list(router.stream(messages, max_tokens=max_tokens))
    else:
        chunks = [c async for c in router.astream(messages, max_tokens=max_tokens)]
    assert chunks[0].decision is not None and chunks[0].models is not None
    assert all(c.decision is None for c in chunks[1:])
    assert chunks[-1].done and chunks[-1].result is not None
    assert "".join(c.text for c in chunks) == chunks[-1].result.text
    assert {c.route for c in chunks} == {chunks[-1].result.route}  # never two models' text
    return chunks[-1].result, chunks


def token_loops_running() -> list[str]:
    """Threads whose stack is inside llama.cpp's token loop right now."""
    running = []
    for ident, frame in sys._current_frames().items():
        f: Any = frame
        while f is not None:
            if f.f_code.co_name == "_token_loop":
                running.append(str(ident))
                break
            f = f.f_back
    return running


@pytest.fixture
def gemma_fallback(ollama_host: str) -> Iterator[OllamaSLM]:
    fallback = OllamaSLM(
        GEMMA3, host=ollama_host, prompt_format="completion", max_tokens=8, timeout=120
    )
    yield fallback
    fallback.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_bound_that_only_gets_worse_stops_the_slm_at_the_first_violation(
    mode: str, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    router = Router(smollm2_slm, gemma3_slm, SHORT)
    result, _ = await route(router, mode, LONG_Q, max_tokens=8)
    assert result.route == "llm" and result.fallback is not None
    assert result.slm.finish_reason == ABORTED
    assert len(result.slm.token_logprobs) == 4  # 3 tokens pass, the 4th violates length <= 3
    assert result.slm.usage.completion_tokens == 4 and result.slm.usage.prompt_tokens > 0
    reason = result.decision.reason
    assert reason.startswith("unsure: length 4 > 3")
    assert "early abort after 4 SLM tokens" in reason
    assert result.decision.signals["length"] == 4
    assert result.text == result.fallback.text
    stats = router.stats
    assert stats.tokens_by_model["smollm2-135m"].completion_tokens == 4  # generated, not 8
    assert (stats.queries, stats.escalations) == (1, 1)
    assert await await_until(lambda: not token_loops_running())


async def test_early_abort_makes_the_same_decisions_as_whole_answers_in_every_mode(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    # min_logprob under -3 or more than 16 tokens: both only get worse as the answer grows
    policy = ThresholdPolicy.seed(max_length=16, max_entropy=None, min_logprob=-3.0)
    queries = [CONFIDENT_Q, UNSURE_Q, LONG_Q, "Who wrote Hamlet?"]
    whole = Router(smollm2_slm, gemma3_slm, policy, early_abort=False)
    early = Router(smollm2_slm, gemma3_slm, policy)
    expected = [whole.invoke(q, max_tokens=24) for q in queries]
    assert {r.route for r in expected} == {"slm", "llm"}
    aborted = 0
    for mode in MODES:
        for query, want in zip(queries, expected):
            got, _ = await route(early, mode, query, max_tokens=24)
            assert got.route == want.route, (mode, query)
            if want.route == "slm":  # a kept answer is the whole answer, unchanged
                assert got.text == want.text and got.decision == want.decision
                continue
            assert got.slm.text == want.slm.text[: len(got.slm.text)]
            assert len(got.slm.token_logprobs) <= len(want.slm.token_logprobs)
            if got.slm.finish_reason == ABORTED:
                aborted += 1
                assert "early abort after" in got.decision.reason
    assert aborted >= len(MODES), "no answer was stopped early: the test shows nothing"
    assert early.stats.tokens_by_model["smollm2-135m"].completion_tokens < len(MODES) * sum(
        r.slm.usage.completion_tokens for r in expected
    )


@pytest.mark.parametrize("mode", MODES)
async def test_aborting_closes_the_ollama_stream(
    mode: str,
    ollama_server: OllamaTestServer,
    ollama_host: str,
    gemma3_slm: LlamaCppSLM,
) -> None:
    port = ollama_server.port
    baseline_connections = settled_client_connections(port)
    baseline_handlers = len(ollama_server.connection_threads())
    tasks = other_tasks()
    served = shared_slm("smollm2")
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=200, timeout=120)
    try:
        router = Router(slm, gemma3_slm, SHORT)
        result, _ = await route(router, mode, LONG_Q, max_tokens=200)
        assert result.route == "llm" and result.slm.finish_reason == ABORTED
        assert len(result.slm.token_logprobs) == 4
        assert "early abort after 4 SLM tokens" in result.decision.reason
        # the client closed its end; the server saw it, stopped generating and ended its handler
        assert await await_until(lambda: client_connections(port) <= baseline_connections)
        assert await await_until(
            lambda: len(ollama_server.connection_threads()) <= baseline_handlers
        )
        assert await await_until(lambda: not served._lock.locked())
        assert other_tasks() == tasks
        assert router.stats.tokens_by_model[SMOLLM2].completion_tokens == 4
    finally:
        slm.close()
        await slm.aclose()


def test_a_whole_answer_keeps_its_connection_for_reuse(
    ollama_server: OllamaTestServer, ollama_host: str, gemma3_slm: LlamaCppSLM
) -> None:
    """The counterpart of the test above: without an abort the pooled connection stays open,
    so a closed connection there is the abort's doing."""
    port = ollama_server.port
    before = settled_client_ports(port)
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=6, timeout=120)
    try:
        router = Router(slm, gemma3_slm, ThresholdPolicy((Bound("length", max=100),)))
        result = router.invoke(LONG_Q)  # decoded to its token limit (then escalated as cut off)
        assert result.slm is not None and result.slm.finish_reason == "length"
        assert "early abort" not in result.decision.reason
        assert opened_since(port, before) == 1
    finally:
        slm.close()
    assert wait_until(lambda: opened_since(port, before) == 0)


async def test_astream_abort_of_the_embedded_slm_leaves_no_thread_running(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    tasks = other_tasks()
    threads = set(threading.enumerate())
    router = Router(smollm2_slm, gemma3_slm, SHORT)
    result, chunks = await route(router, "astream", LONG_Q, max_tokens=200)
    assert result.slm.finish_reason == ABORTED
    assert chunks[0].decision.reason == result.decision.reason
    assert "early abort after 4 SLM tokens" in chunks[0].decision.reason
    assert await await_until(lambda: not token_loops_running())
    assert await await_until(lambda: not smollm2_slm._lock.locked())
    assert other_tasks() == tasks
    # worker threads of the event loop's pool may stay idle; none is busy with the SLM
    assert not [t for t in set(threading.enumerate()) - threads if "llama" in t.name.lower()]


async def test_return_slm_keeps_whole_answers_by_default(
    smollm2_slm: LlamaCppSLM,
) -> None:
    """The rescue answer must be a whole SLM answer, so return_slm turns early abort off."""

    def broken(messages: list[Message]) -> str:
        raise RuntimeError("the large model is down")

    router = Router(smollm2_slm, broken, SHORT, on_fallback_error="return_slm")
    result: RoutedResult = router.invoke(LONG_Q, max_tokens=8)
    assert result.route == "slm" and result.slm.finish_reason != ABORTED
    assert len(result.slm.token_logprobs) == 8
    forced = Router(smollm2_slm, broken, SHORT, on_fallback_error="return_slm", early_abort=True)
    with pytest.raises(Exception, match="the large model is down"):
        forced.invoke(LONG_Q, max_tokens=8)  # a stopped answer is never handed out
    assert forced.stats.errors == 1
    assert forced.stats.tokens_by_model["smollm2-135m"].completion_tokens == 4

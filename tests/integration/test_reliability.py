"""Reliability of the core beyond the SLM's own faults: deadlines, the fallback failing,
both models failing, bad input, cancellation, and what gets logged.

Real parts only: SmolLM2 in process or over HTTP, Gemma 3 over HTTP through the
real ``ollama`` client, the Ollama-compatible test server's fault switches. Every
test that relies on a fault checks that the fault really fired.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import ollama
import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    FallbackError,
    FallbackTimeoutError,
    InvalidInputError,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    RoutedResult,
    Router,
    SLMResponseError,
    SLMTimeoutError,
    SLMUnavailableError,
    ThresholdPolicy,
)
from confidence_router.types import as_messages
from tests.support.leaks import (
    await_until,
    client_connections,
    client_ports,
    listening_addresses,
    opened_since,
    other_tasks,
    settled_client_connections,
    settled_client_ports,
    wait_until,
)
from tests.support.ollama_server import OllamaTestServer

QUESTION = [Message("user", "What is the capital of France?")]
TOKENS = 4
SMOLLM2 = "smollm2:135m"
GEMMA3 = "gemma3:270m"
#: Every real answer escalates (no answer has length <= 0): the SLM answers, then the fallback.
ALWAYS_LLM = ThresholdPolicy((Bound("length", max=0),))
MODES = ["invoke", "ainvoke", "stream", "astream"]


# -- helpers -------------------------------------------------------------------------------


async def route(router: Router, mode: str, messages: Any = QUESTION) -> RoutedResult:
    """One query in one of the four modes; streams are checked to end with a result."""
    if mode == "invoke":
        return router.invoke(messages, max_tokens=TOKENS)
    if mode == "ainvoke":
        return await router.ainvoke(messages, max_tokens=TOKENS)
    if mode == "stream":
        chunks = list(router.stream(messages, max_tokens=TOKENS))
    else:
        chunks = [c async for c in router.astream(messages, max_tokens=TOKENS)]
    assert chunks[0].decision is not None
    assert chunks[-1].done and chunks[-1].result is not None
    assert "".join(c.text for c in chunks) == chunks[-1].result.text
    return chunks[-1].result


async def slm_call(slm: OllamaSLM, mode: str) -> None:
    if mode == "invoke":
        slm.generate(QUESTION)
    elif mode == "ainvoke":
        await slm.agenerate(QUESTION)
    elif mode == "stream":
        list(slm.stream(QUESTION))
    else:
        [c async for c in slm.astream(QUESTION)]


def counts(router: Router) -> tuple[int, int, int, int, int]:
    s = router.stats
    return (s.queries, s.answered_by_slm, s.escalations, s.errors, s.slm_failures)


@pytest.fixture
def gemma_fallback(ollama_host: str) -> Iterator[OllamaSLM]:
    """A real model over HTTP as the fallback, with its own generous timeout; its own client."""
    fallback = OllamaSLM(
        GEMMA3, host=ollama_host, prompt_format="completion", max_tokens=TOKENS, timeout=60
    )
    yield fallback
    fallback.close()


@pytest.fixture
def smollm2_http(ollama_host: str) -> Iterator[OllamaSLM]:
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=TOKENS, timeout=60)
    yield slm
    slm.close()


# -- the SLM's timeout bounds the whole request --------------------------------------------


@dataclass
class SlowTwice:
    """A stall before the first byte and another one in the middle of the answer.

    ``gap`` is measured: about three times the time an answer takes on this machine
    right now, so one gap plus the generation fits inside a per-read timeout of
    ``2 * gap`` while the whole answer (two gaps plus the generation) does not;
    ``deadline`` (1.5 gaps) is shorter than the whole answer.
    """

    before: Any
    middle: Any
    gap: float

    @property
    def deadline(self) -> float:
        return round(1.5 * self.gap, 1)


@pytest.fixture
def slow_twice(ollama_server: OllamaTestServer, ollama_host: str) -> SlowTwice:
    warm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=TOKENS)
    warm.generate(QUESTION)  # the session's first answer may load the model: not timed
    started = time.monotonic()
    warm.generate(QUESTION)
    gap = round(max(1.5, 3 * (time.monotonic() - started) + 0.5), 1)
    warm.close()
    before = ollama_server.faults.set("stall", seconds=gap, model=SMOLLM2)
    middle = ollama_server.faults.set("stall_mid", seconds=gap, after=1, model=SMOLLM2)
    return SlowTwice(before, middle, gap)


def test_a_per_read_timeout_alone_lets_the_slow_answer_through(
    slow_twice: SlowTwice, ollama_host: str
) -> None:
    """The control: the raw client with a per-read timeout of two gaps waits for all of it."""
    started = time.monotonic()
    client = ollama.Client(host=ollama_host, timeout=2 * slow_twice.gap)
    answer = client.chat(
        SMOLLM2,
        messages=[{"role": "user", "content": "Hi"}],
        stream=False,
        options={"num_predict": TOKENS},
    )
    assert answer.done and time.monotonic() - started > 2 * slow_twice.gap
    assert slow_twice.before.hits == 1 and slow_twice.middle.hits == 1


@pytest.mark.parametrize("mode", MODES)
async def test_the_slm_timeout_is_a_deadline_for_the_whole_request(
    mode: str, slow_twice: SlowTwice, ollama_host: str, ollama_server: OllamaTestServer
) -> None:
    deadline = slow_twice.deadline
    slm = OllamaSLM(SMOLLM2, host=ollama_host, timeout=deadline, max_tokens=TOKENS)
    baseline = settled_client_connections(ollama_server.port)
    started = time.monotonic()
    with pytest.raises(SLMTimeoutError, match=f"within {deadline:g}s") as info:
        await slm_call(slm, mode)
    elapsed = time.monotonic() - started
    assert deadline - 0.1 <= elapsed < deadline + 1.0, elapsed
    assert info.value.model == SMOLLM2
    # (the second gap too, unless this machine got much slower since the gap was measured)
    assert slow_twice.before.hits == 1
    # the connection was cut at the deadline, not left to the server's stall
    assert client_connections(ollama_server.port) <= baseline
    slm.close()
    await slm.aclose()


# -- Router(fallback_timeout=...) ----------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_fallback_timeout_ends_a_stalled_fallback(
    mode: str,
    ollama_server: OllamaTestServer,
    smollm2_slm: LlamaCppSLM,
    gemma_fallback: OllamaSLM,
) -> None:
    port = ollama_server.port
    before = settled_client_ports(port)
    fault = ollama_server.faults.set("stall", seconds=120, model=GEMMA3)
    router = Router(smollm2_slm, gemma_fallback, ALWAYS_LLM, fallback_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(FallbackTimeoutError, match=r"fallback_timeout=1s") as info:
        await route(router, mode)
    # the SLM's answer (slow on a busy machine) plus about 1 s, far from the 120 s stall
    assert time.monotonic() - started < 30.0
    assert fault.hits == 1 and isinstance(info.value, FallbackError)
    assert "gemma3:270m" in str(info.value)
    assert counts(router) == (1, 0, 0, 1, 0)
    assert router.stats.tokens_by_model["smollm2-135m"].completion_tokens > 0
    if mode in ("ainvoke", "astream"):
        # cancelled at the deadline: the connection is closed at once
        assert "background" not in str(info.value)
        assert await await_until(lambda: opened_since(port, before) == 0, within=2.0)
    else:
        # a blocking call cannot be interrupted: it goes on until its own end
        assert "may still be running in the background" in str(info.value)
        assert opened_since(port, before) == 1
        ollama_server.faults.clear()  # the stalled answer ends: so does the worker thread
        assert await await_until(lambda: opened_since(port, before) == 0, within=5.0)


async def test_fallback_timeout_covers_the_whole_fallback_stream(
    ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, gemma_fallback: OllamaSLM
) -> None:
    """Tokens arrive, then the stream stalls: the deadline still ends it, with a raise."""
    await gemma_fallback.agenerate(QUESTION, max_tokens=1)  # loaded before the 1.5 s deadline
    ollama_server.faults.set("stall_mid", seconds=30, after=1, model=GEMMA3)
    router = Router(smollm2_slm, gemma_fallback, ALWAYS_LLM, fallback_timeout=1.5)
    for astream in (False, True):
        chunks: list[Any] = []
        with pytest.raises(FallbackTimeoutError):
            if astream:
                async for chunk in router.astream(QUESTION, max_tokens=TOKENS):
                    chunks.append(chunk)
            else:
                for chunk in router.stream(QUESTION, max_tokens=TOKENS):
                    chunks.append(chunk)
        assert chunks and chunks[0].route == "llm" and chunks[0].decision is not None
        assert not any(c.done or c.result is not None for c in chunks)
    assert counts(router) == (2, 0, 0, 2, 0)


# -- the fallback fails, or both models fail -----------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("both", "policy"),
    # With return_slm and an SLM that answered, nothing is raised: the return_slm tests below.
    [(False, "raise"), (True, "raise"), (True, "return_slm")],
    ids=["fallback_fails-raise", "both_fail-raise", "both_fail-return_slm"],
)
async def test_a_failed_fallback_raises_fallback_error_with_its_cause(
    mode: str,
    both: bool,
    policy: str,
    ollama_server: OllamaTestServer,
    smollm2_http: OllamaSLM,
    gemma_fallback: OllamaSLM,
) -> None:
    hangup = ollama_server.faults.set("hangup", model=GEMMA3)
    broken = ollama_server.faults.set("status", model=SMOLLM2) if both else None
    router = Router(smollm2_http, gemma_fallback, ALWAYS_LLM, on_fallback_error=policy)
    with pytest.raises(FallbackError) as info:
        await route(router, mode)
    assert not isinstance(info.value, FallbackTimeoutError)
    assert isinstance(info.value.__cause__, SLMUnavailableError)
    assert "'gemma3:270m' failed after escalation" in str(info.value)
    assert hangup.hits == 1
    if both:
        assert broken is not None and broken.hits == 1
        assert "the SLM had failed too: slm_response_error" in str(info.value)
        assert counts(router) == (1, 0, 0, 1, 1)
    else:
        assert counts(router) == (1, 0, 0, 1, 0)
        assert router.stats.tokens_by_model[SMOLLM2].completion_tokens > 0


@pytest.mark.parametrize("mode", MODES)
async def test_return_slm_answers_with_the_flagged_slm_answer(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, gemma_fallback: OllamaSLM
) -> None:
    fault = ollama_server.faults.set("status", model=GEMMA3, message="overloaded")
    router = Router(smollm2_slm, gemma_fallback, ALWAYS_LLM, on_fallback_error="return_slm")
    result = await route(router, mode)
    assert fault.hits == 1
    assert result.route == "slm" and result.fallback is None and result.slm is not None
    assert result.text == result.slm.text and result.text.strip()
    reason = result.decision.reason
    assert reason.startswith("fallback failed (FallbackError)")
    assert "the policy had found unsure: unsure: length" in reason
    assert result.decision.score is not None and result.decision.score < 0
    assert result.fallback_error is not None and "overloaded" in result.fallback_error
    meta = result.to_dict()
    assert meta["fallback_error"] == result.fallback_error and meta["route"] == "slm"
    assert meta["models"] == {"slm": "smollm2-135m", "llm": None, "answered_by": "smollm2-135m"}
    stats = router.stats
    assert counts(router) == (1, 1, 0, 0, 0)
    assert stats.fallback_calls_avoided == 0, "the fallback was called; it failed"


async def test_return_slm_never_completes_a_half_sent_fallback_answer(
    ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, gemma_fallback: OllamaSLM
) -> None:
    ollama_server.faults.set("drop_mid", after=1, model=GEMMA3)
    router = Router(smollm2_slm, gemma_fallback, ALWAYS_LLM, on_fallback_error="return_slm")
    chunks: list[Any] = []
    with pytest.raises(FallbackError):
        async for chunk in router.astream(QUESTION, max_tokens=TOKENS):
            chunks.append(chunk)
    assert chunks and all(c.route == "llm" for c in chunks)
    assert not any(c.done for c in chunks)
    assert counts(router) == (1, 0, 0, 1, 0)


# -- a fallback stream that dies half-way: raise, never a half answer as complete -----------


MID_STREAM = {
    "drop_mid": ({"after": 1}, SLMUnavailableError),
    "error_line": ({"after": 1, "message": "runner crashed"}, SLMResponseError),
    "malformed_json": ({"after": 1}, SLMResponseError),
    "stall_mid": ({"after": 1, "seconds": 30}, None),
}


@pytest.mark.parametrize("kind", list(MID_STREAM))
@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_fallback_stream_that_dies_midway_raises_after_partial_text(
    kind: str,
    mode: str,
    ollama_server: OllamaTestServer,
    smollm2_slm: LlamaCppSLM,
    gemma_fallback: OllamaSLM,
) -> None:
    params, cause = MID_STREAM[kind]
    fault = ollama_server.faults.set(kind, model=GEMMA3, **params)
    router = Router(smollm2_slm, gemma_fallback, ALWAYS_LLM, fallback_timeout=1.5)
    chunks: list[Any] = []
    with pytest.raises(FallbackError) as info:
        if mode == "stream":
            for chunk in router.stream(QUESTION, max_tokens=TOKENS):
                chunks.append(chunk)
        else:
            async for chunk in router.astream(QUESTION, max_tokens=TOKENS):
                chunks.append(chunk)
    assert fault.hits == 1
    assert "".join(c.text for c in chunks), "some text had been sent before the fault"
    assert chunks[0].decision is not None and chunks[0].route == "llm"
    assert not any(c.done or c.result is not None for c in chunks), "no end was announced"
    if cause is None:
        assert isinstance(info.value, FallbackTimeoutError)
    else:
        assert isinstance(info.value.__cause__, cause)
    assert counts(router) == (1, 0, 0, 1, 0)


# -- invalid configuration and empty input -------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fallback_timeout": 0}, "fallback_timeout"),
        ({"fallback_timeout": -1.0}, "fallback_timeout"),
        ({"fallback_timeout": math.nan}, "fallback_timeout"),
        ({"fallback_timeout": True}, "fallback_timeout"),
        ({"fallback_timeout": "5"}, "fallback_timeout"),
        ({"on_fallback_error": "ignore"}, "on_fallback_error"),
        ({"strict": "yes"}, "strict"),
        ({"max_concurrency": 0}, "max_concurrency"),
    ],
)
def test_invalid_router_settings_fail_at_construction_naming_the_field(
    kwargs: dict[str, Any], field: str, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Router(smollm2_slm, gemma3_slm, **kwargs)
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")


@pytest.mark.parametrize("timeout", [0, -2, math.inf, math.nan, True, "60"])
def test_invalid_slm_timeout_fails_at_construction(timeout: Any) -> None:
    with pytest.raises(ConfigurationError, match="^timeout: ") as info:
        OllamaSLM(SMOLLM2, host="http://127.0.0.1:9", timeout=timeout)
    assert info.value.field == "timeout"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "messages",
    [[], "", [Message("user", "  "), Message("system", "")]],
    ids=["no_messages", "empty_prompt", "blank_messages"],
)
async def test_empty_input_raises_before_any_model_call(
    mode: str,
    messages: Any,
    ollama_server: OllamaTestServer,
    smollm2_http: OllamaSLM,
    gemma_fallback: OllamaSLM,
) -> None:
    tripwire = ollama_server.faults.set("status", endpoints="*")  # any request would hit it
    router = Router(smollm2_http, gemma_fallback)
    with pytest.raises(InvalidInputError, match="empty"):
        await route(router, mode, messages)
    assert tripwire.hits == 0
    assert counts(router) == (0, 0, 0, 0, 0), "not a query: nothing is recorded"


def test_non_text_content_raises_the_same_typed_error_as_the_faces() -> None:
    with pytest.raises(InvalidInputError, match=r"Message.content must be a str, got list"):
        Message("user", [{"type": "image_url", "image_url": "data:image/png;base64,AAAA"}])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"Message.role must be one of"):
        Message("robot", "hi")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=r"got an item of type dict"):
        as_messages([{"role": "user", "content": "hi"}])  # type: ignore[list-item]


# -- cancellation ----------------------------------------------------------------------------


async def test_cancelling_ainvoke_cancels_the_slm_request(
    ollama_server: OllamaTestServer, smollm2_http: OllamaSLM, gemma_fallback: OllamaSLM
) -> None:
    port = ollama_server.port
    before, tasks = settled_client_ports(port), other_tasks()
    fault = ollama_server.faults.set("stall", seconds=60, model=SMOLLM2)
    router = Router(smollm2_http, gemma_fallback)
    task = asyncio.ensure_future(router.ainvoke(QUESTION, max_tokens=TOKENS))
    assert await await_until(lambda: fault.hits == 1)
    assert opened_since(port, before) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await await_until(lambda: opened_since(port, before) == 0, within=1.0)
    assert other_tasks() == tasks
    assert counts(router) == (0, 0, 0, 0, 0), "a cancelled query has no outcome to record"


async def test_cancelling_ainvoke_cancels_the_fallback_request(
    ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, gemma_fallback: OllamaSLM
) -> None:
    port = ollama_server.port
    baseline, tasks = settled_client_connections(port), other_tasks()
    fault = ollama_server.faults.set("stall", seconds=60, model=GEMMA3)
    router = Router(smollm2_slm, gemma_fallback, ALWAYS_LLM, fallback_timeout=30)
    task = asyncio.ensure_future(router.ainvoke(QUESTION, max_tokens=TOKENS))
    assert await await_until(lambda: fault.hits == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await await_until(lambda: client_connections(port) <= baseline, within=1.0)
    assert other_tasks() == tasks


async def test_leaving_an_astream_midway_closes_the_fallback_stream(
    ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, gemma_fallback: OllamaSLM
) -> None:
    port = ollama_server.port
    baseline, tasks = settled_client_connections(port), other_tasks()
    ollama_server.faults.set("stall_mid", seconds=60, after=1, model=GEMMA3)
    router = Router(smollm2_slm, gemma_fallback, ALWAYS_LLM)
    stream = router.astream(QUESTION, max_tokens=TOKENS)
    first = await stream.__anext__()
    assert first.route == "llm" and first.text
    reader = asyncio.ensure_future(stream.__anext__())  # blocked on the stalled stream
    await asyncio.sleep(0.2)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await stream.aclose()
    assert await await_until(lambda: client_connections(port) <= baseline, within=1.0)
    assert other_tasks() == tasks


async def test_cancelling_abatch_leaves_no_task_or_connection(
    ollama_server: OllamaTestServer, smollm2_http: OllamaSLM, gemma_fallback: OllamaSLM
) -> None:
    port = ollama_server.port
    baseline, tasks = settled_client_connections(port), other_tasks()
    fault = ollama_server.faults.set("stall", seconds=60, model=SMOLLM2)
    router = Router(smollm2_http, gemma_fallback, max_concurrency=3)
    batch = asyncio.ensure_future(router.abatch([QUESTION] * 8, max_tokens=TOKENS))
    assert await await_until(lambda: fault.hits == 3)
    batch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await batch
    assert await await_until(lambda: client_connections(port) <= baseline, within=1.0)
    assert await await_until(lambda: other_tasks() == tasks, within=1.0)
    assert fault.hits == 3, "the queued queries never started"


LONG_ANSWER = [Message("user", "Write a very long story about a dragon and a knight.")]


async def test_cancelling_an_embedded_slm_stops_its_token_loop(smollm2_slm: LlamaCppSLM) -> None:
    """LlamaCppSLM: the worker thread stops at the next token and frees the model's lock."""
    router = Router(smollm2_slm, lambda messages: "unused")
    started = time.monotonic()
    full = smollm2_slm.generate(LONG_ANSWER, max_tokens=64)
    per_token = (time.monotonic() - started) / max(full.usage.completion_tokens, 1)
    task = asyncio.ensure_future(router.ainvoke(LONG_ANSWER, max_tokens=2000))
    lock = smollm2_slm._lock
    assert await await_until(lock.locked)
    await asyncio.sleep(0.1)
    task.cancel()
    cancelled = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await await_until(lambda: not lock.locked(), within=1.0 + 20 * per_token)
    assert time.monotonic() - cancelled < 1.0 + 20 * per_token
    assert lock.acquire(timeout=0.1)
    lock.release()


async def test_leaving_an_embedded_fallback_stream_frees_its_model(
    gemma3_slm: LlamaCppSLM,
) -> None:
    unreachable = OllamaSLM(SMOLLM2, host=f"http://127.0.0.1:{_free_port()}", timeout=5)
    router = Router(unreachable, gemma3_slm)  # the SLM fails at once: straight to Gemma
    stream = router.astream(LONG_ANSWER, max_tokens=2000)
    started = time.monotonic()
    async for chunk in stream:
        if chunk.text:
            break
    await stream.aclose()
    assert await await_until(lambda: not gemma3_slm._lock.locked(), within=2.0)
    assert time.monotonic() - started < 10, "the 2000-token answer was not run to its end"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- hygiene: logs and the test server's address ------------------------------------------

SECRET_PROMPT = "Zanzibar-4471 asks: what is the capital of France?"


async def test_logs_carry_no_prompt_and_no_answer(
    caplog: pytest.LogCaptureFixture,
    ollama_server: OllamaTestServer,
    smollm2_http: OllamaSLM,
    gemma_fallback: OllamaSLM,
) -> None:
    caplog.set_level(logging.DEBUG, logger="confidence_router")
    messages = [Message("user", SECRET_PROMPT)]
    answers: list[str] = []
    router = Router(smollm2_http, gemma_fallback, on_fallback_error="return_slm")
    escalating = Router(smollm2_http, gemma_fallback, ALWAYS_LLM, on_fallback_error="return_slm")
    answers.append(router.invoke(messages, max_tokens=TOKENS).text)
    answers.append((await escalating.ainvoke(messages, max_tokens=TOKENS)).text)
    with ollama_server.faults.inject("status", model=SMOLLM2):  # SLM fails: escalation
        answers.append((await router.ainvoke(messages, max_tokens=TOKENS)).text)
    with ollama_server.faults.inject("status", model=GEMMA3):  # fallback fails: SLM answer
        answers.append(escalating.invoke(messages, max_tokens=TOKENS).text)
    with ollama_server.faults.inject("status"), pytest.raises(FallbackError):
        list(router.stream(messages, max_tokens=TOKENS))
    records = [r for r in caplog.records if r.name.startswith("confidence_router")]
    assert len(records) >= 4, "the router did log: the check below is not vacuous"
    logged = "\n".join(r.getMessage() for r in records)
    assert "Zanzibar" not in logged and "capital of France" not in logged
    for answer in answers:
        if len(answer.strip()) >= 4:
            assert answer.strip() not in logged


def test_the_test_server_listens_on_127_0_0_1_only(ollama_server: OllamaTestServer) -> None:
    assert ollama_server.host.startswith("http://127.0.0.1:")
    assert listening_addresses(ollama_server.port) == ["0100007F"]  # 127.0.0.1, nothing else
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.settimeout(2)
        probe.connect(("127.0.0.2", ollama_server.port))  # loopback, but not the bound address
    with socket.create_connection(("127.0.0.1", ollama_server.port), timeout=2):
        pass


# -- the counting helper itself ----------------------------------------------------------------


def test_client_connection_counting_sees_a_real_connection(
    ollama_server: OllamaTestServer,
) -> None:
    port = ollama_server.port
    before = settled_client_ports(port)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
        mine = connection.getsockname()[1]
        assert wait_until(lambda: mine in client_ports(port) and opened_since(port, before) == 1)
    assert wait_until(lambda: mine not in client_ports(port))

"""The failure contract of an SLM backend over HTTP, against the fault-injecting test server.

One row per fault: the backend raises the documented typed error with a clear message
(sync, async, streaming), the ``Router`` escalates to a real fallback with that reason
by default and raises the typed error when ``strict=True``, and the ledger counts what
happened. A stream that stalls midway times out, and a cancelled stream closes its
connection. Subclass ``BackendFailureContract`` with ``make_slm`` and the backend's own
hint words (``hints``); ``tests/integration/test_failures.py`` runs it for Ollama,
``test_openai_failures.py`` for the OpenAI-compatible backend.
"""

from __future__ import annotations

import asyncio
import math
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest

from confidence_router import (
    ContextWindowExceededError,
    Generation,
    IncompleteResponseError,
    LlamaCppSLM,
    Message,
    MissingLogprobsError,
    ModelNotFoundError,
    Router,
    SLMError,
    SLMResponseError,
    SLMTimeoutError,
    SLMUnavailableError,
)
from tests.support.faults import Fault
from tests.support.leaks import (
    await_until,
    client_connections,
    settled_client_connections,
    wait_until,
)
from tests.support.ollama_server import OllamaTestServer

QUESTION = [Message("user", "What is the capital of France?")]
LONG_QUESTION = [Message("user", "Please answer this. " * 40)]
FALLBACK_TOKENS = 3
SLM_TOKENS = 3
SMOLLM2 = "smollm2:135m"


@dataclass(frozen=True)
class Case:
    """One failure: how to provoke it, which error it must raise, what it must say.

    ``words`` hold for every backend; a backend adds its own hints by case id.
    """

    id: str
    error: type[SLMError]
    words: tuple[str, ...]
    fault: tuple[str, dict[str, Any]] | None = None
    model: str = SMOLLM2
    dead_host: bool = False
    timeout: float = 30.0
    num_ctx: int | None = None
    messages: tuple[Message, ...] = tuple(QUESTION)


CASES = [
    Case("not_listening", SLMUnavailableError, ("cannot reach",), dead_host=True),
    Case("refused", SLMUnavailableError, ("cannot reach",), fault=("refuse", {})),
    Case("hangup", SLMUnavailableError, ("closed the connection",), fault=("hangup", {})),
    Case("unknown_model", ModelNotFoundError, ("nope:1b",), model="nope:1b"),
    Case("not_found", ModelNotFoundError, (SMOLLM2,), fault=("not_found", {})),
    Case("status_500", SLMResponseError, ("500", "injected fault"), fault=("status", {})),
    Case("status_503", SLMResponseError, ("503",), fault=("status", {"status": 503})),
    Case("no_logprobs", MissingLogprobsError, ("without logprobs",), fault=("no_logprobs", {})),
    Case(
        "partial_logprobs",
        MissingLogprobsError,
        ("without logprobs",),
        fault=("partial_logprobs", {}),
    ),
    Case(
        "truncated_mid_answer",
        IncompleteResponseError,
        ("incomplete", "after 2 token(s)"),
        fault=("truncate", {"after": 2}),
    ),
    Case(
        "stall_before_first_byte",
        SLMTimeoutError,
        ("no answer", "within 1s"),
        fault=("stall", {"seconds": 60}),
        timeout=1.0,
    ),
    Case(
        "dropped_mid_stream",
        SLMUnavailableError,
        ("closed the connection",),
        fault=("drop_mid", {"after": 2}),
    ),
    Case(
        "error_line_mid_stream",
        SLMResponseError,
        ("runner crashed",),
        fault=("error_line", {"after": 2, "message": "runner crashed"}),
    ),
    Case(
        "nan_logprob",
        SLMResponseError,
        ("invalid log-probabilities", "nan"),
        fault=("bad_logprobs", {"index": 1}),
    ),
    Case(
        "minus_inf_logprob",
        SLMResponseError,
        ("invalid log-probabilities",),
        fault=("bad_logprobs", {"value": -math.inf}),
    ),
    Case(
        "positive_logprob",
        SLMResponseError,
        ("invalid log-probabilities",),
        fault=("bad_logprobs", {"value": 0.5}),
    ),
    Case(
        "malformed_json", SLMResponseError, ("malformed",), fault=("malformed_json", {"after": 2})
    ),
    Case(
        "blank_line",
        SLMResponseError,
        ("malformed",),
        fault=("malformed_json", {"after": 2, "text": ""}),
    ),
    Case(
        "json_not_an_object",
        SLMResponseError,
        ("malformed",),
        fault=("malformed_json", {"after": 1, "text": "[1, 2]"}),
    ),
    Case(
        "context_window_exceeded",
        ContextWindowExceededError,
        ("context length",),
        num_ctx=64,
        messages=tuple(LONG_QUESTION),
    ),
]


def dead_host() -> str:
    """A base URL on 127.0.0.1 where nobody listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def fired(fault: Fault, within: float = 5.0) -> bool:
    """Whether the server applied the fault (a stalled handler may count it a bit late)."""
    deadline = time.monotonic() + within
    while fault.hits == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    return fault.hits > 0


@dataclass
class Setup:
    """One case against one backend: its SLM, the fault switched on, the words to find."""

    slm: Any
    fault: Fault | None
    case: Case
    words: tuple[str, ...]

    def check(self, error: BaseException) -> None:
        """The typed error, a message with the key words, and a fault that really fired."""
        assert isinstance(error, self.case.error), f"{type(error).__name__}: {error}"
        message = str(error).lower()
        for word in self.words:
            assert word.lower() in message, f"{word!r} not in {message!r}"
        assert getattr(error, "model", None) == self.case.model
        if self.fault is not None and self.fault.kind != "refuse":
            assert fired(self.fault), "the fault never fired: the test proved nothing"

    def check_reason(self, text: str | None) -> None:
        assert text is not None and self.case.error.reason_code in text
        for word in self.words:
            assert word.lower() in text.lower(), f"{word!r} not in {text!r}"


@dataclass
class Escalation:
    """A Router over the failing SLM and the real fallback, and what the fallback answers."""

    router: Router
    setup: Setup
    expected_text: str

    @property
    def messages(self) -> list[Message]:
        return list(self.setup.case.messages)

    def check(self, result: Any) -> None:
        """Escalated with the SLM's reason, answered by the fallback, counted once."""
        assert result.route == "llm"
        assert result.decision.score is None
        assert result.decision.reason.startswith("escalated because the SLM failed")
        self.setup.check_reason(result.decision.reason)
        self.setup.check_reason(result.slm_error)
        assert result.slm is None
        assert isinstance(result.fallback, Generation) and result.fallback.model == "gemma3-270m"
        assert result.text == self.expected_text
        assert result.to_dict()["slm_error"] == result.slm_error
        stats = self.router.stats
        assert (stats.queries, stats.escalations, stats.slm_failures, stats.errors) == (1, 1, 1, 0)


def _check_timeout(error: BaseException, slm: Any) -> None:
    assert isinstance(error, SLMTimeoutError), f"{type(error).__name__}: {error}"
    assert f"within {slm.timeout:g}s" in str(error) and "no answer" in str(error)


class BackendFailureContract:
    """The tests every SLM backend over HTTP passes; a subclass says how to build one."""

    #: The backend's own words in the message, by case id (its hint on what to do).
    hints: ClassVar[dict[str, tuple[str, ...]]] = {}

    def make_slm(
        self, model: str, host: str, *, timeout: float = 30.0, num_ctx: int | None = None
    ) -> Any:
        """The backend for ``model`` on the server at ``host`` (no ``/v1``), SLM_TOKENS long;
        ``num_ctx`` sets the server's context window for this request."""
        raise NotImplementedError

    @pytest.fixture(params=CASES, ids=[case.id for case in CASES])
    def setup(
        self, request: pytest.FixtureRequest, ollama_server: OllamaTestServer
    ) -> Iterator[Setup]:
        case: Case = request.param
        host = dead_host() if case.dead_host else ollama_server.host
        slm = self.make_slm(case.model, host, timeout=case.timeout, num_ctx=case.num_ctx)
        fault = None
        if case.fault is not None:
            kind, params = case.fault
            fault = ollama_server.faults.set(kind, **params)
        yield Setup(slm, fault, case, case.words + self.hints.get(case.id, ()))
        ollama_server.faults.clear()
        slm.close()

    @pytest.fixture(scope="class")
    @classmethod
    def fallback_text(cls, gemma3_slm: LlamaCppSLM) -> dict[tuple[Message, ...], str]:
        return {
            tuple(m): gemma3_slm.generate(list(m), max_tokens=FALLBACK_TOKENS).text
            for m in (QUESTION, LONG_QUESTION)
        }

    # -- the backend raises the typed error ------------------------------------------------

    def test_generate_raises_the_typed_error(self, setup: Setup) -> None:
        with pytest.raises(SLMError) as info:
            setup.slm.generate(list(setup.case.messages))
        setup.check(info.value)

    async def test_agenerate_raises_the_typed_error(self, setup: Setup) -> None:
        with pytest.raises(SLMError) as info:
            await setup.slm.agenerate(list(setup.case.messages))
        setup.check(info.value)

    def test_stream_raises_the_typed_error(self, setup: Setup) -> None:
        with pytest.raises(SLMError) as info:
            for _ in setup.slm.stream(list(setup.case.messages)):
                pass
        setup.check(info.value)

    async def test_astream_raises_the_typed_error(self, setup: Setup) -> None:
        with pytest.raises(SLMError) as info:
            async for _ in setup.slm.astream(list(setup.case.messages)):
                pass
        setup.check(info.value)

    # -- the Router escalates with the reason, or raises when strict ----------------------

    @pytest.fixture
    def escalation(
        self,
        setup: Setup,
        gemma3_slm: LlamaCppSLM,
        fallback_text: dict[tuple[Message, ...], str],
    ) -> Escalation:
        router = Router(setup.slm, gemma3_slm)
        return Escalation(router, setup, fallback_text[setup.case.messages])

    def test_router_escalates_with_the_reason(self, escalation: Escalation) -> None:
        e = escalation
        e.check(e.router.invoke(e.messages, max_tokens=FALLBACK_TOKENS))

    async def test_router_ainvoke_escalates_with_the_reason(self, escalation: Escalation) -> None:
        e = escalation
        e.check(await e.router.ainvoke(e.messages, max_tokens=FALLBACK_TOKENS))

    def test_router_stream_escalates_before_any_text(self, escalation: Escalation) -> None:
        e = escalation
        chunks = list(e.router.stream(e.messages, max_tokens=FALLBACK_TOKENS))
        assert chunks[0].decision is not None and chunks[0].route == "llm"
        e.setup.check_reason(chunks[0].decision.reason)
        assert chunks[-1].done and chunks[-1].result is not None
        assert "".join(c.text for c in chunks) == chunks[-1].result.text
        e.check(chunks[-1].result)

    async def test_router_astream_escalates_before_any_text(self, escalation: Escalation) -> None:
        e = escalation
        chunks = [c async for c in e.router.astream(e.messages, max_tokens=FALLBACK_TOKENS)]
        assert chunks[0].decision is not None and chunks[0].route == "llm"
        assert all(c.route == "llm" for c in chunks)
        e.check(chunks[-1].result)

    async def test_strict_router_raises_the_typed_error(
        self, setup: Setup, gemma3_slm: LlamaCppSLM
    ) -> None:
        router = Router(setup.slm, gemma3_slm, strict=True)
        messages = list(setup.case.messages)
        with pytest.raises(SLMError) as sync_info:
            router.invoke(messages, max_tokens=FALLBACK_TOKENS)
        setup.check(sync_info.value)
        with pytest.raises(SLMError) as async_info:
            await router.ainvoke(messages, max_tokens=FALLBACK_TOKENS)
        setup.check(async_info.value)
        with pytest.raises(SLMError) as stream_info:
            list(router.stream(messages, max_tokens=FALLBACK_TOKENS))
        setup.check(stream_info.value)
        stats = router.stats
        assert (stats.queries, stats.errors, stats.escalations, stats.answered_by_slm) == (
            3,
            3,
            0,
            0,
        )

    # -- a stall in the middle of a stream ------------------------------------------------

    @pytest.fixture
    def mid_stream_stall(self, ollama_server: OllamaTestServer) -> Iterator[Any]:
        """An SLM whose timeout outlasts a normal answer, facing a stream that stalls for good.

        The client's timeout counts from the last byte received, so it must exceed the
        wait for the first tokens on this (shared, busy) machine, or the client would
        give up before the stream even reached the stall: measure that wait first.
        """
        started = time.monotonic()
        probe = self.make_slm(SMOLLM2, ollama_server.host)
        probe.generate(QUESTION)
        probe.close()
        timeout = round(2 * (time.monotonic() - started) + 1.0, 1)
        slm = self.make_slm(SMOLLM2, ollama_server.host, timeout=timeout)
        ollama_server.faults.set("stall_mid", seconds=120, after=1)
        yield slm
        ollama_server.faults.clear()
        slm.close()

    async def test_a_stream_that_stalls_midway_times_out(
        self, mid_stream_stall: Any, ollama_server: OllamaTestServer
    ) -> None:
        slm = mid_stream_stall
        received = []
        with pytest.raises(SLMTimeoutError) as info:
            for chunk in slm.stream(QUESTION):
                received.append(chunk)
        _check_timeout(info.value, slm)
        assert len(received) == 1, "the first token arrived, then the stream stalled"
        with pytest.raises(SLMTimeoutError) as info:
            slm.generate(QUESTION)  # the non-streaming body stalls half-way: a watchdog cuts it
        _check_timeout(info.value, slm)
        with pytest.raises(SLMTimeoutError) as info:
            await slm.agenerate(QUESTION)
        _check_timeout(info.value, slm)
        areceived = []
        with pytest.raises(SLMTimeoutError) as info:
            async for chunk in slm.astream(QUESTION):
                areceived.append(chunk)
        _check_timeout(info.value, slm)
        assert len(areceived) == 1
        assert ollama_server.faults.active[0].hits == 4

    async def test_router_escalates_or_raises_on_a_mid_stream_stall(
        self,
        mid_stream_stall: Any,
        gemma3_slm: LlamaCppSLM,
        fallback_text: dict[tuple[Message, ...], str],
    ) -> None:
        router = Router(mid_stream_stall, gemma3_slm)
        chunks = [c async for c in router.astream(QUESTION, max_tokens=FALLBACK_TOKENS)]
        result = chunks[-1].result
        assert result is not None and result.route == "llm"
        assert "slm_timeout" in result.decision.reason and result.slm_error is not None
        assert result.text == fallback_text[tuple(QUESTION)]
        assert router.stats.slm_failures == 1
        strict = Router(mid_stream_stall, gemma3_slm, strict=True)
        with pytest.raises(SLMTimeoutError):
            strict.invoke(QUESTION, max_tokens=FALLBACK_TOKENS)
        assert strict.stats.errors == 1

    # -- the caller cancels ----------------------------------------------------------------

    async def test_cancelling_a_stream_closes_its_connection(
        self, ollama_server: OllamaTestServer
    ) -> None:
        """The failure table's last row: the in-flight request is cancelled, its socket closed."""
        slm = self.make_slm(SMOLLM2, ollama_server.host, timeout=300)
        port = ollama_server.port
        before = settled_client_connections(port)
        fault = ollama_server.faults.set("stall_mid", seconds=300, after=1)
        received: list[Any] = []

        async def consume() -> None:
            async for chunk in slm.astream(QUESTION):
                received.append(chunk)

        task = asyncio.create_task(consume())
        assert await await_until(lambda: fault.hits == 1 and len(received) == 1, within=120)
        assert client_connections(port) == before + 1, "the stalled stream holds one connection"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await await_until(lambda: client_connections(port) == before, within=10)
        before = settled_client_connections(port)
        sync = slm.stream(QUESTION)  # a sync consumer that walks away closes it too
        assert next(sync).tokens
        assert wait_until(lambda: client_connections(port) == before + 1, within=10)
        sync.close()
        assert wait_until(lambda: client_connections(port) == before, within=10)
        slm.close()

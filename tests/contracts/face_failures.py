"""The failure contract of a face (LangChain, LlamaIndex): what its user sees when parts fail.

Real parts: the SLM over HTTP (``OllamaSLM``) or in process (SmolLM2), the fallback the
framework's own Ollama model (Gemma 3 270M) on the Ollama-compatible test server, faults
scoped to one model so the other keeps working. The rows: a failing SLM escalates with
the reason or raises when strict; a failing, cut, stalled or mid-stream-dying fallback
raises ``FallbackError`` and never looks complete; ``on_fallback_error="return_slm"``
answers with the flagged SLM answer; bad settings and bad input fail before any model
call; cancelling closes connections; no key, prompt or answer reaches a log or a repr.

Every row runs through the face's sync, async, streaming and async-streaming calls
(the ``call`` fixture, ids ``sync``, ``async``, ``stream``, ``astream``). Subclass
``FaceFailureContract`` and fill in how the face is built, called and read;
``tests/integration/langchain/test_lc_failures.py`` and
``tests/integration/llamaindex/test_li_failures.py`` do, and add their own rows.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import ollama
import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    ContextWindowExceededError,
    FallbackError,
    FallbackTimeoutError,
    IncompleteResponseError,
    InvalidInputError,
    LlamaCppSLM,
    Message,
    MissingLogprobsError,
    ModelNotFoundError,
    OllamaSLM,
    SLMError,
    SLMResponseError,
    SLMTimeoutError,
    SLMUnavailableError,
    ThresholdPolicy,
)
from tests.support.leaks import (
    await_until,
    client_connections,
    opened_since,
    other_tasks,
    settled_client_connections,
    settled_client_ports,
)
from tests.support.ollama_server import OllamaTestServer

TOKENS = 4
SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"
QUESTION = "What is the capital of France?"
LONG_QUESTION = "Please answer this. " * 40
ALWAYS_LLM = ThresholdPolicy((Bound("length", max=0),))
SECRET = "sk-test-SECRET-4242"
KINDS = ("sync", "async", "stream", "astream")


def dead_host() -> str:
    """A base URL on 127.0.0.1 where nobody listens."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@dataclass(frozen=True)
class Reply:
    """A face's whole answer, read the same way for every face."""

    text: str
    routing: dict[str, Any]
    model: str | None  # the model the face says answered
    logprobs: list[Any] | None  # the SLM's token logprobs, when it answered
    native: Any  # the face's own object


# -- the SLM fails -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SLMCase:
    error: type[SLMError]
    fault: tuple[str, dict[str, Any]] | None = None
    dead_host: bool = False
    timeout: float = 30.0
    options: dict[str, Any] = field(default_factory=dict)
    question: str = QUESTION


SLM_CASES = {
    "not_listening": SLMCase(SLMUnavailableError, dead_host=True),
    "hangup": SLMCase(SLMUnavailableError, ("hangup", {})),
    "status_500": SLMCase(SLMResponseError, ("status", {})),
    "not_found": SLMCase(ModelNotFoundError, ("not_found", {})),
    "stall": SLMCase(SLMTimeoutError, ("stall", {"seconds": 30}), timeout=1.0),
    "stall_mid": SLMCase(SLMTimeoutError, ("stall_mid", {"seconds": 30, "after": 1}), timeout=2.0),
    "drop_mid": SLMCase(SLMUnavailableError, ("drop_mid", {"after": 1})),
    "error_line": SLMCase(SLMResponseError, ("error_line", {"after": 1})),
    "no_logprobs": SLMCase(MissingLogprobsError, ("no_logprobs", {})),
    "nan_logprobs": SLMCase(SLMResponseError, ("bad_logprobs", {"index": 1})),
    "minus_inf_logprobs": SLMCase(SLMResponseError, ("bad_logprobs", {"value": -float("inf")})),
    "malformed_json": SLMCase(SLMResponseError, ("malformed_json", {"after": 1})),
    "truncated": SLMCase(IncompleteResponseError, ("truncate", {"after": 1})),
    "empty_200_stream": SLMCase(IncompleteResponseError, ("truncate", {"after": 0})),
    "partial_logprobs": SLMCase(MissingLogprobsError, ("partial_logprobs", {})),
    "context_window": SLMCase(
        ContextWindowExceededError, options={"num_ctx": 64}, question=LONG_QUESTION
    ),
}

MID_STREAM: dict[str, dict[str, Any]] = {
    "drop_mid": {"after": 1},
    "error_line": {"after": 1, "message": "runner crashed"},
    "stall_mid": {"after": 1, "seconds": 30},
}

INVALID_SETTINGS = [
    ({"fallback_timeout": 0}, "fallback_timeout"),
    ({"fallback_timeout": -3}, "fallback_timeout"),
    ({"on_fallback_error": "ignore"}, "on_fallback_error"),
    ({"strict": "yes"}, "strict"),
    ({"fallbak_timeout": 3}, "fallbak_timeout"),
]


def everything_said(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + repr(error.__cause__)


class FaceFailureContract:
    """The failure rows every face passes; a subclass says how it is built, called and read."""

    #: The face's sync, async, streaming and async-streaming calls, by method name.
    calls: ClassVar[tuple[str, str, str, str]]
    #: The sync and async streams a fallback dies in the middle of.
    mid_stream_calls: ClassVar[tuple[str, str]]
    #: The logs row's calls: an answer, an async and a streamed escalation, an async failure.
    log_calls: ClassVar[tuple[str, str, str, str]]
    #: A message with an image block the face must refuse, and words of the refusal.
    image_input: ClassVar[Any]
    image_words: ClassVar[str]
    #: The face's loggers, watched for secrets and prompts.
    loggers: ClassVar[tuple[str, ...]]

    # -- what a subclass fills in -------------------------------------------------------------

    @classmethod
    def make_fallback(cls, host: str) -> Any:
        """The framework's own Ollama model for Gemma 3 on ``host``, greedy, TOKENS long."""
        raise NotImplementedError

    @classmethod
    def fallback_answer(cls, fallback: Any, question: str) -> str:
        """The fallback's own answer to ``question``, called directly."""
        raise NotImplementedError

    def make(self, slm: Any, fallback: Any, **settings: Any) -> Any:
        """The face over ``slm`` and ``fallback`` with a TOKENS budget (``settings`` win)."""
        raise NotImplementedError

    def by_name(self, model: str, fallback: Any, *, timeout: float) -> Any:
        """The face with an SLM it builds from a model name, with that request timeout."""
        raise NotImplementedError

    async def ask(self, llm: Any, call: str, question: Any) -> Reply:
        """One call (a method name); a stream must end with its final chunk, merged whole."""
        raise NotImplementedError

    async def collect(self, llm: Any, call: str, question: Any, into: list[Any]) -> None:
        """Stream with ``call``, appending each chunk to ``into`` as it arrives."""
        raise NotImplementedError

    async def open_astream(self, llm: Any, question: Any) -> AsyncGenerator[Any, None]:
        """The async stream of ``question``, not yet read."""
        raise NotImplementedError

    def chunk_text(self, chunk: Any) -> str:
        raise NotImplementedError

    def chunk_routing(self, chunk: Any) -> dict[str, Any]:
        raise NotImplementedError

    def closes(self, chunk: Any) -> bool:
        """Whether a chunk announces a complete answer (the last chunk, usage)."""
        raise NotImplementedError

    def keyed_fallback(self, secret: str, host: str) -> Any:
        """A fallback holding ``secret`` as its API key, calling ``host`` (which refuses)."""
        raise NotImplementedError

    def key_of(self, keyed: Any) -> str:
        raise NotImplementedError

    @property
    def refusal(self) -> type[BaseException]:
        """What the keyed fallback raises when its host refuses the connection."""
        raise NotImplementedError

    def shown(self, llm: Any) -> list[str]:
        """Every way the face shows itself (repr, str, dumps, metadata)."""
        raise NotImplementedError

    # -- fixtures -----------------------------------------------------------------------------

    @pytest.fixture(params=range(4), ids=KINDS)
    def call(self, request: pytest.FixtureRequest) -> str:
        return self.calls[request.param]

    @pytest.fixture(params=range(2), ids=KINDS[2:])
    def mid_stream_call(self, request: pytest.FixtureRequest) -> str:
        return self.mid_stream_calls[request.param]

    @pytest.fixture(scope="class")
    @classmethod
    def fallback(cls, ollama_host: str) -> Any:
        return cls.make_fallback(ollama_host)

    @pytest.fixture(scope="class")
    @classmethod
    def fallback_text(cls, fallback: Any) -> dict[str, str]:
        """What the fallback alone answers: an escalated answer must be exactly this."""
        return {q: cls.fallback_answer(fallback, q) for q in (QUESTION, LONG_QUESTION)}

    @pytest.fixture
    def slm_http(self, ollama_host: str) -> Iterator[OllamaSLM]:
        slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=TOKENS, timeout=60)
        yield slm
        slm.close()

    # -- the SLM fails: escalation with the reason, or the typed error when strict ----------

    @pytest.mark.parametrize("case_id", list(SLM_CASES))
    async def test_a_failing_slm_escalates_with_the_reason_or_raises_when_strict(
        self,
        case_id: str,
        ollama_server: OllamaTestServer,
        fallback: Any,
        fallback_text: dict[str, str],
    ) -> None:
        case = SLM_CASES[case_id]
        host = dead_host() if case.dead_host else ollama_server.host
        slm = OllamaSLM(SMOLLM2, host=host, timeout=case.timeout, max_tokens=TOKENS, **case.options)
        fault = None
        if case.fault is not None:
            kind, params = case.fault
            fault = ollama_server.faults.set(kind, model=SMOLLM2, **params)
        llm = self.make(slm, fallback)
        code = case.error.reason_code
        # A stall costs its whole timeout per call: two calls (one sync, one async) suffice there.
        calls = self.calls if case.timeout >= 30 else (self.calls[0], self.calls[3])
        for call in calls:
            reply = await self.ask(llm, call, case.question)
            meta = reply.routing
            assert meta["route"] == "llm" and meta["score"] is None, call
            assert f"escalated because the SLM failed ({code})" in meta["reason"]
            assert meta["slm_error"].startswith(f"{code}: ")
            assert meta["models"] == {"slm": None, "llm": GEMMA3, "answered_by": GEMMA3}
            assert reply.text == fallback_text[case.question]
            assert reply.logprobs is None  # the fallback's answer carries no SLM logprobs
        n = len(calls)
        assert (llm.stats.queries, llm.stats.escalations, llm.stats.slm_failures) == (n, n, n)
        strict = self.make(slm, fallback, strict=True)
        strict_calls = (self.calls[0], self.calls[3]) if case.timeout >= 30 else (self.calls[3],)
        for call in strict_calls:
            with pytest.raises(case.error) as info:
                await self.ask(strict, call, case.question)
            assert info.value.model == SMOLLM2
        m = len(strict_calls)
        assert (strict.stats.queries, strict.stats.errors, strict.stats.slm_failures) == (m, m, m)
        if fault is not None:
            assert fault.hits >= 1, "the fault never fired"
        slm.close()

    # -- the fallback fails ---------------------------------------------------------------------

    async def test_a_failing_fallback_surfaces_as_fallback_error(
        self, call: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Any
    ) -> None:
        fault = ollama_server.faults.set("status", model=GEMMA3, message="upstream overloaded")
        llm = self.make(smollm2_slm, fallback, policy=ALWAYS_LLM)
        with pytest.raises(FallbackError, match="'gemma3:270m' failed after escalation") as info:
            await self.ask(llm, call, QUESTION)
        assert isinstance(info.value.__cause__, ollama.ResponseError)
        assert "upstream overloaded" in str(info.value)
        assert fault.hits == 1
        s = llm.stats
        assert (s.queries, s.errors, s.escalations, s.slm_failures) == (1, 1, 0, 0)

    async def check_a_cut_answer_raises(
        self, call: str, fallback: Any, ollama_server: OllamaTestServer, slm: LlamaCppSLM
    ) -> None:
        """A fallback answering without its end (Ollama's ``done``, OpenAI's
        ``finish_reason``): the half answer raises, with no closing chunk and no usage."""
        fault = ollama_server.faults.set("truncate", after=1, model=GEMMA3)
        llm = self.make(slm, fallback, policy=ALWAYS_LLM)
        chunks: list[Any] = []
        with pytest.raises(FallbackError, match="'gemma3:270m' failed after escalation") as info:
            if call in self.calls[2:]:
                await self.collect(llm, call, QUESTION, chunks)
            else:
                await self.ask(llm, call, QUESTION)
        assert isinstance(info.value.__cause__, IncompleteResponseError)
        assert "incomplete" in str(info.value)
        assert not any(self.closes(c) for c in chunks)
        assert fault.hits == 1
        s = llm.stats
        assert (s.queries, s.errors, s.escalations, s.slm_failures) == (1, 1, 0, 0)

    async def test_a_fallback_answer_cut_without_its_end_raises(
        self, call: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Any
    ) -> None:
        await self.check_a_cut_answer_raises(call, fallback, ollama_server, smollm2_slm)

    async def test_a_stalled_fallback_ends_at_fallback_timeout(
        self, call: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Any
    ) -> None:
        fault = ollama_server.faults.set("stall", seconds=30, model=GEMMA3)
        llm = self.make(smollm2_slm, fallback, policy=ALWAYS_LLM, fallback_timeout=1.0)
        with pytest.raises(FallbackTimeoutError, match=r"timed out.*fallback_timeout=1s"):
            await self.ask(llm, call, QUESTION)
        assert fault.hits == 1
        assert (llm.stats.queries, llm.stats.errors) == (1, 1)

    async def test_both_models_failing_raise_fallback_error_naming_both(
        self, call: str, ollama_server: OllamaTestServer, slm_http: OllamaSLM, fallback: Any
    ) -> None:
        fault = ollama_server.faults.set("status")  # every model
        llm = self.make(slm_http, fallback, on_fallback_error="return_slm")  # nothing to return
        with pytest.raises(FallbackError, match="the SLM had failed too: slm_response_error"):
            await self.ask(llm, call, QUESTION)
        assert fault.hits == 2
        s = llm.stats
        assert (s.queries, s.errors, s.slm_failures, s.escalations) == (1, 1, 1, 0)

    async def test_return_slm_answers_with_the_flagged_slm_answer(
        self, call: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Any
    ) -> None:
        ollama_server.faults.set("status", model=GEMMA3)
        llm = self.make(smollm2_slm, fallback, policy=ALWAYS_LLM, on_fallback_error="return_slm")
        reply = await self.ask(llm, call, QUESTION)
        meta = reply.routing
        expected = smollm2_slm.generate([Message("user", QUESTION)], max_tokens=TOKENS).text
        assert reply.text == expected
        assert meta["route"] == "slm" and meta["reason"].startswith("fallback failed")
        assert "500" in meta["fallback_error"]
        assert meta["models"]["answered_by"] == reply.model == "smollm2-135m"
        assert reply.logprobs and len(reply.logprobs) == TOKENS  # the SLM's own evidence
        s = llm.stats
        assert (s.queries, s.answered_by_slm, s.errors, s.fallback_calls_avoided) == (1, 1, 0, 0)

    @pytest.mark.parametrize("kind", list(MID_STREAM))
    async def test_a_fallback_that_dies_mid_stream_never_looks_complete(
        self,
        kind: str,
        mid_stream_call: str,
        ollama_server: OllamaTestServer,
        smollm2_slm: LlamaCppSLM,
        fallback: Any,
    ) -> None:
        fault = ollama_server.faults.set(kind, model=GEMMA3, **MID_STREAM[kind])
        llm = self.make(
            smollm2_slm,
            fallback,
            policy=ALWAYS_LLM,
            fallback_timeout=1.5,
            on_fallback_error="return_slm",
        )
        chunks: list[Any] = []
        with pytest.raises(FallbackError) as info:
            await self.collect(llm, mid_stream_call, QUESTION, chunks)
        assert fault.hits == 1
        assert "".join(self.chunk_text(c) for c in chunks), "part of the answer had been sent"
        first = self.chunk_routing(chunks[0])
        assert first["route"] == "llm"
        models = first["models"]
        assert models["answered_by"] == models["llm"] is not None, (
            "the first chunk names who answers"
        )
        assert all("latency_s" not in self.chunk_routing(c) for c in chunks), "no final chunk"
        assert not any(self.closes(c) for c in chunks), "no chunk announced the end"
        if kind == "stall_mid":
            assert isinstance(info.value, FallbackTimeoutError)
        assert (llm.stats.queries, llm.stats.errors) == (1, 1)

    # -- configuration and input ----------------------------------------------------------------

    @pytest.mark.parametrize(("settings", "field_name"), INVALID_SETTINGS)
    def test_invalid_settings_fail_at_construction_naming_the_field(
        self, settings: dict[str, Any], field_name: str, smollm2_slm: LlamaCppSLM, fallback: Any
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            self.make(smollm2_slm, fallback, **settings)
        assert info.value.field == field_name

    def test_an_invalid_slm_timeout_names_the_field(self, fallback: Any) -> None:
        with pytest.raises(ConfigurationError) as info:
            self.by_name(SMOLLM2, fallback, timeout=0)
        assert info.value.field == "timeout"

    @pytest.mark.parametrize("bad", ["no_messages", "empty_prompt", "image_block"])
    async def test_bad_input_raises_invalid_input_error_before_any_model_call(
        self,
        call: str,
        bad: str,
        ollama_server: OllamaTestServer,
        slm_http: OllamaSLM,
        fallback: Any,
    ) -> None:
        question, words = {
            "no_messages": ([], "messages is empty"),
            "empty_prompt": ("", "every message is empty"),
            "image_block": (self.image_input, self.image_words),
        }[bad]
        tripwire = ollama_server.faults.set("status", endpoints="*")
        llm = self.make(slm_http, fallback)
        with pytest.raises(InvalidInputError, match=words):
            await self.ask(llm, call, question)
        assert tripwire.hits == 0
        assert llm.stats.queries == 0

    # -- cancellation ---------------------------------------------------------------------------

    async def test_cancelling_the_async_call_closes_the_slm_connection(
        self, ollama_server: OllamaTestServer, slm_http: OllamaSLM, fallback: Any
    ) -> None:
        port = ollama_server.port
        baseline, tasks = settled_client_connections(port), other_tasks()
        fault = ollama_server.faults.set("stall", seconds=60, model=SMOLLM2)
        llm = self.make(slm_http, fallback)
        task = asyncio.ensure_future(self.ask(llm, self.calls[1], QUESTION))
        assert await await_until(lambda: fault.hits == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await await_until(lambda: client_connections(port) <= baseline, within=1.0)
        assert await await_until(lambda: other_tasks() == tasks, within=1.0)
        assert llm.stats.queries == 0

    async def test_leaving_the_async_stream_midway_closes_the_fallback_connection(
        self, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, ollama_host: str
    ) -> None:
        port = ollama_server.port
        own = self.make_fallback(ollama_host)
        before, tasks = settled_client_ports(port), other_tasks()
        ollama_server.faults.set("stall_mid", seconds=60, after=1, model=GEMMA3)
        llm = self.make(smollm2_slm, own, policy=ALWAYS_LLM)
        stream = await self.open_astream(llm, QUESTION)
        first = await anext(stream)
        assert self.chunk_routing(first)["route"] == "llm" and self.chunk_text(first)
        reader = asyncio.ensure_future(anext(stream))
        assert await await_until(lambda: opened_since(port, before) == 1)
        reader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reader
        await stream.aclose()
        assert await await_until(lambda: opened_since(port, before) == 0, within=1.0)
        assert await await_until(lambda: other_tasks() == tasks, within=1.0)

    # -- secrets and logs -----------------------------------------------------------------------

    async def test_the_fallback_api_key_never_shows(
        self, caplog: pytest.LogCaptureFixture, smollm2_slm: LlamaCppSLM
    ) -> None:
        for name in self.loggers:
            caplog.set_level(logging.DEBUG, logger=name)
        keyed = self.keyed_fallback(SECRET, dead_host())
        assert self.key_of(keyed) == SECRET, "the key is really there"
        llm = self.make(smollm2_slm, keyed, policy=ALWAYS_LLM)
        shown = self.shown(llm)
        for call in self.calls:  # the key's holder is called (and refused) in every call
            with pytest.raises(FallbackError) as info:
                await self.ask(llm, call, QUESTION)
            cause = info.value.__cause__
            assert isinstance(cause, self.refusal), f"{type(cause).__name__}: {cause}"
            assert f"{type(cause).__name__}: {cause}" in str(info.value)
            shown.append(everything_said(info.value))
        rescuing = self.make(smollm2_slm, keyed, policy=ALWAYS_LLM, on_fallback_error="return_slm")
        reply = await self.ask(rescuing, self.calls[1], QUESTION)
        assert reply.routing["fallback_error"]
        shown += [str(reply.native), repr(reply.native)]
        shown += [r.getMessage() for r in caplog.records]
        for text in shown:
            assert "SECRET-4242" not in text

    async def test_logs_carry_no_prompt_and_no_answer(
        self,
        caplog: pytest.LogCaptureFixture,
        ollama_server: OllamaTestServer,
        slm_http: OllamaSLM,
        fallback: Any,
    ) -> None:
        for name in self.loggers:
            caplog.set_level(logging.DEBUG, logger=name)
        prompt = "Zanzibar-4471 asks: what is the capital of France?"
        llm = self.make(slm_http, fallback)
        answered, escalated, streamed, failing = self.log_calls
        answers = [(await self.ask(llm, answered, prompt)).text]
        with ollama_server.faults.inject("status", model=SMOLLM2):
            answers.append((await self.ask(llm, escalated, prompt)).text)
            answers.append((await self.ask(llm, streamed, prompt)).text)
        with ollama_server.faults.inject("status"), pytest.raises(FallbackError):
            await self.ask(llm, failing, prompt)
        records = [r for r in caplog.records if r.name.split(".")[0] in self.loggers]
        assert records, "the router logged something: the check is not vacuous"
        logged = "\n".join(r.getMessage() for r in records)
        assert "Zanzibar" not in logged
        for answer in answers:
            if len(answer.strip()) >= 4:
                assert answer.strip() not in logged

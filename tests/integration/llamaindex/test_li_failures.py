"""The failure table through ConfidenceRouterLLM: what a LlamaIndex user sees.

Real parts: the SLM over HTTP (``OllamaSLM``) or in process (SmolLM2), the fallback a
real LlamaIndex ``Ollama`` LLM (Gemma 3 270M) on the Ollama-compatible test server,
faults scoped to one model so the other keeps working. Every row runs through
``chat``, ``achat``, ``stream_chat`` and ``astream_chat`` (``complete`` shares their code).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import ollama
import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    TextBlock,
)
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.llms.ollama import Ollama

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
from llamaindex_confidence_router import ConfidenceRouterLLM
from tests.support.fallbacks import llamaindex_gemma
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
MODES = ["chat", "achat", "stream_chat", "astream_chat"]


def _dead_host() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


async def ask(llm: ConfidenceRouterLLM, mode: str, messages: Any) -> ChatResponse:
    """One call in one mode; a stream must end with its final response (full routing)."""
    if mode == "chat":
        return llm.chat(messages)
    if mode == "achat":
        return await llm.achat(messages)
    if mode == "stream_chat":
        responses = list(llm.stream_chat(messages))
    else:
        responses = [r async for r in await llm.astream_chat(messages)]
    last = responses[-1]
    assert last.delta == "" and "usage" in last.raw and "models" in last.raw["routing"]
    assert "".join(r.delta or "" for r in responses) == last.message.content
    return last


def routing(response: ChatResponse) -> dict[str, Any]:
    return response.additional_kwargs["routing"]


def make_fallback(host: str) -> Ollama:
    return llamaindex_gemma(host, TOKENS)


def make_llm(slm: Any, fallback: Any, **kwargs: Any) -> ConfidenceRouterLLM:
    return ConfidenceRouterLLM(slm, fallback, num_output=TOKENS, **kwargs)


@pytest.fixture(scope="module")
def fallback(ollama_host: str) -> Ollama:
    return make_fallback(ollama_host)


@pytest.fixture(scope="module")
def fallback_text(fallback: Ollama) -> dict[str, str]:
    return {q: str(fallback.chat(user(q)).message.content) for q in (QUESTION, LONG_QUESTION)}


@pytest.fixture
def slm_http(ollama_host: str) -> Iterator[OllamaSLM]:
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=TOKENS, timeout=60)
    yield slm
    slm.close()


# -- the SLM fails: escalation with the reason, or the typed error when strict ---------------


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


@pytest.mark.parametrize("case_id", list(SLM_CASES))
async def test_a_failing_slm_escalates_with_the_reason_or_raises_when_strict(
    case_id: str,
    ollama_server: OllamaTestServer,
    fallback: Ollama,
    fallback_text: dict[str, str],
) -> None:
    case = SLM_CASES[case_id]
    host = _dead_host() if case.dead_host else ollama_server.host
    slm = OllamaSLM(SMOLLM2, host=host, timeout=case.timeout, max_tokens=TOKENS, **case.options)
    fault = None
    if case.fault is not None:
        kind, params = case.fault
        fault = ollama_server.faults.set(kind, model=SMOLLM2, **params)
    llm = make_llm(slm, fallback)
    code = case.error.reason_code
    # A stall costs its whole timeout per call: two modes (one sync, one async) suffice there.
    modes = MODES if case.timeout >= 30 else [MODES[0], MODES[3]]
    messages = user(case.question)
    for mode in modes:
        response = await ask(llm, mode, messages)
        meta = routing(response)
        assert meta["route"] == "llm" and meta["score"] is None, mode
        assert f"escalated because the SLM failed ({code})" in meta["reason"]
        assert meta["slm_error"].startswith(f"{code}: ")
        assert meta["models"] == {"slm": None, "llm": GEMMA3, "answered_by": GEMMA3}
        assert response.message.content == fallback_text[case.question]
        assert response.logprobs is None  # the fallback's answer carries no SLM logprobs
    n = len(modes)
    assert (llm.stats.queries, llm.stats.escalations, llm.stats.slm_failures) == (n, n, n)
    strict = make_llm(slm, fallback, strict=True)
    strict_modes = ("chat", "astream_chat") if case.timeout >= 30 else ("astream_chat",)
    for mode in strict_modes:
        with pytest.raises(case.error) as info:
            await ask(strict, mode, messages)
        assert info.value.model == SMOLLM2
    m = len(strict_modes)
    assert (strict.stats.queries, strict.stats.errors, strict.stats.slm_failures) == (m, m, m)
    if fault is not None:
        assert fault.hits >= 1, "the fault never fired"
    slm.close()


# -- the fallback fails --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_a_fallback_answer_cut_without_its_end_raises(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Ollama
) -> None:
    """LlamaIndex's Ollama answering without Ollama's ``done: true``: the half answer raises
    from every mode, with no final response (no ``raw["usage"]``)."""
    fault = ollama_server.faults.set("truncate", after=1, model=GEMMA3)
    llm = make_llm(smollm2_slm, fallback, policy=ALWAYS_LLM)
    responses: list[ChatResponse] = []
    with pytest.raises(FallbackError, match="'gemma3:270m' failed after escalation") as info:
        if mode == "stream_chat":
            responses.extend(llm.stream_chat(user(QUESTION)))
        elif mode == "astream_chat":
            responses.extend([r async for r in await llm.astream_chat(user(QUESTION))])
        else:
            await ask(llm, mode, user(QUESTION))
    assert isinstance(info.value.__cause__, IncompleteResponseError)
    assert not any("usage" in r.raw for r in responses)
    assert fault.hits == 1
    s = llm.stats
    assert (s.queries, s.errors, s.escalations, s.slm_failures) == (1, 1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_failing_fallback_surfaces_as_fallback_error(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Ollama
) -> None:
    fault = ollama_server.faults.set("status", model=GEMMA3, message="upstream overloaded")
    llm = make_llm(smollm2_slm, fallback, policy=ALWAYS_LLM)
    with pytest.raises(FallbackError, match="'gemma3:270m' failed after escalation") as info:
        await ask(llm, mode, user(QUESTION))
    assert isinstance(info.value.__cause__, ollama.ResponseError)
    assert "upstream overloaded" in str(info.value)
    assert fault.hits == 1
    s = llm.stats
    assert (s.queries, s.errors, s.escalations, s.slm_failures) == (1, 1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_stalled_fallback_ends_at_fallback_timeout(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Ollama
) -> None:
    fault = ollama_server.faults.set("stall", seconds=30, model=GEMMA3)
    llm = make_llm(smollm2_slm, fallback, policy=ALWAYS_LLM, fallback_timeout=1.0)
    with pytest.raises(FallbackTimeoutError, match=r"timed out.*fallback_timeout=1s"):
        await ask(llm, mode, user(QUESTION))
    assert fault.hits == 1
    assert (llm.stats.queries, llm.stats.errors) == (1, 1)


@pytest.mark.parametrize("mode", MODES)
async def test_both_models_failing_raise_fallback_error_naming_both(
    mode: str, ollama_server: OllamaTestServer, slm_http: OllamaSLM, fallback: Ollama
) -> None:
    fault = ollama_server.faults.set("status")  # every model
    llm = make_llm(slm_http, fallback, on_fallback_error="return_slm")  # nothing to return
    with pytest.raises(FallbackError, match="the SLM had failed too: slm_response_error"):
        await ask(llm, mode, user(QUESTION))
    assert fault.hits == 2
    s = llm.stats
    assert (s.queries, s.errors, s.slm_failures, s.escalations) == (1, 1, 1, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_return_slm_answers_with_the_flagged_slm_answer(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: Ollama
) -> None:
    ollama_server.faults.set("status", model=GEMMA3)
    llm = make_llm(smollm2_slm, fallback, policy=ALWAYS_LLM, on_fallback_error="return_slm")
    response = await ask(llm, mode, user(QUESTION))
    meta = routing(response)
    expected = smollm2_slm.generate([Message("user", QUESTION)], max_tokens=TOKENS).text
    assert response.message.content == expected
    assert meta["route"] == "slm" and meta["reason"].startswith("fallback failed")
    assert "500" in meta["fallback_error"]
    assert response.raw["model"] == "smollm2-135m"
    assert response.logprobs and len(response.logprobs) == TOKENS  # the SLM's own evidence
    s = llm.stats
    assert (s.queries, s.answered_by_slm, s.errors, s.fallback_calls_avoided) == (1, 1, 0, 0)


MID_STREAM = {
    "drop_mid": {"after": 1},
    "error_line": {"after": 1, "message": "runner crashed"},
    "stall_mid": {"after": 1, "seconds": 30},
}


@pytest.mark.parametrize("kind", list(MID_STREAM))
@pytest.mark.parametrize("mode", ["stream_chat", "astream_complete"])
async def test_a_fallback_that_dies_mid_stream_never_looks_complete(
    kind: str,
    mode: str,
    ollama_server: OllamaTestServer,
    smollm2_slm: LlamaCppSLM,
    fallback: Ollama,
) -> None:
    fault = ollama_server.faults.set(kind, model=GEMMA3, **MID_STREAM[kind])
    llm = make_llm(
        smollm2_slm,
        fallback,
        policy=ALWAYS_LLM,
        fallback_timeout=1.5,
        on_fallback_error="return_slm",
    )
    responses: list[Any] = []
    with pytest.raises(FallbackError) as info:
        if mode == "stream_chat":
            for response in llm.stream_chat(user(QUESTION)):
                responses.append(response)
        else:
            async for response in await llm.astream_complete(QUESTION):
                responses.append(response)
    assert fault.hits == 1
    assert "".join(r.delta or "" for r in responses), "part of the answer had been sent"
    assert routing(responses[0])["route"] == "llm"
    assert routing(responses[0])["models"]["answered_by"] == routing(responses[0])["models"]["llm"]
    assert all("latency_s" not in r.raw["routing"] for r in responses), "no final response"
    assert all("usage" not in r.raw for r in responses)
    if kind == "stall_mid":
        assert isinstance(info.value, FallbackTimeoutError)
    assert (llm.stats.queries, llm.stats.errors) == (1, 1)


# -- configuration and input ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"fallback_timeout": 0}, "fallback_timeout"),
        ({"fallback_timeout": -3}, "fallback_timeout"),
        ({"on_fallback_error": "ignore"}, "on_fallback_error"),
        ({"strict": "yes"}, "strict"),
        ({"num_output": 0}, "num_output"),
        ({"fallbak_timeout": 3}, "fallbak_timeout"),
    ],
)
def test_invalid_settings_fail_at_construction_naming_the_field(
    kwargs: dict[str, Any], field_name: str, smollm2_slm: LlamaCppSLM, fallback: Ollama
) -> None:
    params: dict[str, Any] = {"num_output": TOKENS, **kwargs}
    with pytest.raises(ConfigurationError) as info:
        ConfidenceRouterLLM(smollm2_slm, fallback, **params)
    assert info.value.field == field_name


def test_an_invalid_slm_timeout_names_the_field(fallback: Ollama) -> None:
    with pytest.raises(ConfigurationError) as info:
        ConfidenceRouterLLM(SMOLLM2, fallback, request_timeout=0, num_output=TOKENS)
    assert info.value.field == "timeout"


IMAGE = [
    ChatMessage(
        role="user",
        blocks=[
            TextBlock(text="What is in this picture?"),
            ImageBlock(image=b"\x89PNG\r\n\x1a\n", image_mimetype="image/png"),
        ],
    )
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([], "messages is empty"),
        (user(""), "every message is empty"),
        (IMAGE, "contains a ImageBlock"),
    ],
    ids=["no_messages", "empty_message", "image_block"],
)
async def test_bad_input_raises_invalid_input_error_before_any_model_call(
    mode: str,
    messages: Any,
    words: str,
    ollama_server: OllamaTestServer,
    slm_http: OllamaSLM,
    fallback: Ollama,
) -> None:
    tripwire = ollama_server.faults.set("status", endpoints="*")
    llm = make_llm(slm_http, fallback)
    with pytest.raises(InvalidInputError, match=words):
        await ask(llm, mode, messages)
    with pytest.raises(InvalidInputError):
        await llm.acomplete("   ")
    assert tripwire.hits == 0
    assert llm.stats.queries == 0


# -- cancellation ---------------------------------------------------------------------------


async def test_cancelling_achat_closes_the_slm_connection(
    ollama_server: OllamaTestServer, slm_http: OllamaSLM, fallback: Ollama
) -> None:
    port = ollama_server.port
    baseline, tasks = settled_client_connections(port), other_tasks()
    fault = ollama_server.faults.set("stall", seconds=60, model=SMOLLM2)
    llm = make_llm(slm_http, fallback)
    task = asyncio.ensure_future(llm.achat(user(QUESTION)))
    assert await await_until(lambda: fault.hits == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await await_until(lambda: client_connections(port) <= baseline, within=1.0)
    assert await await_until(lambda: other_tasks() == tasks, within=1.0)
    assert llm.stats.queries == 0


async def test_leaving_astream_chat_midway_closes_the_fallback_connection(
    ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    port = ollama_server.port
    own = make_fallback(ollama_host)
    before, tasks = settled_client_ports(port), other_tasks()
    ollama_server.faults.set("stall_mid", seconds=60, after=1, model=GEMMA3)
    llm = make_llm(smollm2_slm, own, policy=ALWAYS_LLM)
    stream = await llm.astream_chat(user(QUESTION))
    first = await stream.__anext__()
    assert routing(first)["route"] == "llm" and first.delta
    reader = asyncio.ensure_future(stream.__anext__())
    assert await await_until(lambda: opened_since(port, before) == 1)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await stream.aclose()
    assert await await_until(lambda: opened_since(port, before) == 0, within=1.0)
    assert await await_until(lambda: other_tasks() == tasks, within=1.0)


# -- secrets and logs ---------------------------------------------------------------------------

SECRET = "sk-test-SECRET-4242"


class KeyedLLM(CustomLLM):
    """A LlamaIndex LLM holding its key as a plain str field, as several integrations do
    (llama-index-llms-openai's ``api_key: str``); it sends it to a real address that refuses."""

    api_key: str
    base_url: str

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=2048, num_output=TOKENS, model_name="keyed-model")

    def _post(self) -> CompletionResponse:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        reply = httpx.post(f"{self.base_url}/v1/completions", headers=headers, timeout=5)
        return CompletionResponse(text=reply.text)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._post()

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield self._post()


def _everything_said(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + repr(error.__cause__)


async def test_the_fallback_api_key_never_shows(
    caplog: pytest.LogCaptureFixture, smollm2_slm: LlamaCppSLM
) -> None:
    for name in ("confidence_router", "llamaindex_confidence_router"):
        caplog.set_level(logging.DEBUG, logger=name)
    keyed = KeyedLLM(api_key=SECRET, base_url=_dead_host())
    assert SECRET in repr(keyed), "the fallback itself does show it: the test is not vacuous"
    llm = make_llm(smollm2_slm, keyed, policy=ALWAYS_LLM)
    shown = [
        repr(llm),
        str(llm),
        repr(llm.router),
        llm.model_dump_json(),
        str(llm.to_dict()),
        str(llm.metadata),
    ]
    for mode in MODES:
        with pytest.raises(FallbackError) as info:
            await ask(llm, mode, user(QUESTION))
        assert isinstance(info.value.__cause__, httpx.ConnectError)
        shown.append(_everything_said(info.value))
    rescuing = make_llm(smollm2_slm, keyed, policy=ALWAYS_LLM, on_fallback_error="return_slm")
    response = await rescuing.achat(user(QUESTION))
    assert routing(response)["fallback_error"]
    shown += [str(response.raw), str(response.additional_kwargs), str(response)]
    shown += [r.getMessage() for r in caplog.records]
    for text in shown:
        assert "SECRET-4242" not in text


async def test_logs_carry_no_prompt_and_no_answer(
    caplog: pytest.LogCaptureFixture,
    ollama_server: OllamaTestServer,
    slm_http: OllamaSLM,
    fallback: Ollama,
) -> None:
    for name in ("confidence_router", "llamaindex_confidence_router"):
        caplog.set_level(logging.DEBUG, logger=name)
    prompt = "Zanzibar-4471 asks: what is the capital of France?"
    llm = make_llm(slm_http, fallback)
    answers = [llm.complete(prompt).text]
    with ollama_server.faults.inject("status", model=SMOLLM2):
        answers.append(str((await llm.achat(user(prompt))).message.content))
        answers.append("".join(r.delta or "" for r in llm.stream_chat(user(prompt))))
    with ollama_server.faults.inject("status"), pytest.raises(FallbackError):
        await llm.acomplete(prompt)
    records = [
        r
        for r in caplog.records
        if r.name.split(".")[0] in ("confidence_router", "llamaindex_confidence_router")
    ]
    assert records, "the router logged something: the check is not vacuous"
    logged = "\n".join(r.getMessage() for r in records)
    assert "Zanzibar" not in logged
    for answer in answers:
        if len(answer.strip()) >= 4:
            assert answer.strip() not in logged

"""The failure table through ConfidenceRouterChat: what a LangChain user sees.

Real parts: the SLM over HTTP (``OllamaSLM``) or in process (SmolLM2), the fallback
a real ``ChatOllama`` (Gemma 3 270M) on the Ollama-compatible test server, faults
scoped to one model so the other keeps working. Every row runs through
``invoke``, ``ainvoke``, ``stream`` and ``astream``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import ollama
import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_ollama import ChatOllama

from confidence_router import (
    Bound,
    ConfigurationError,
    ContextWindowExceededError,
    FallbackError,
    FallbackTimeoutError,
    IncompleteResponseError,
    InvalidInputError,
    LlamaCppSLM,
    MissingLogprobsError,
    ModelNotFoundError,
    OllamaSLM,
    SLMError,
    SLMResponseError,
    SLMTimeoutError,
    SLMUnavailableError,
    ThresholdPolicy,
)
from langchain_confidence_router import ConfidenceRouterChat
from tests.support.leaks import (
    await_until,
    client_connections,
    opened_since,
    other_tasks,
    settled_client_connections,
    settled_client_ports,
)
from tests.support.ollama_server import OllamaTestServer

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

TOKENS = 4
SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"
QUESTION = "What is the capital of France?"
LONG_QUESTION = "Please answer this. " * 40
ALWAYS_LLM = ThresholdPolicy((Bound("length", max=0),))
MODES = ["invoke", "ainvoke", "stream", "astream"]


def _dead_host() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def ask(llm: ConfidenceRouterChat, mode: str, messages: Any = QUESTION) -> AIMessage:
    """One call in one mode; a stream must end with its last chunk and merge to a message."""
    if mode == "invoke":
        return llm.invoke(messages)
    if mode == "ainvoke":
        return await llm.ainvoke(messages)
    if mode == "stream":
        chunks = list(llm.stream(messages))
    else:
        chunks = [c async for c in llm.astream(messages)]
    assert chunks[-1].chunk_position == "last"
    merged: AIMessageChunk = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return AIMessage(content=merged.content, response_metadata=merged.response_metadata)


def routing(message: BaseMessage) -> dict[str, Any]:
    return message.response_metadata["routing"]


@pytest.fixture(scope="module")
def fallback(ollama_host: str) -> ChatOllama:
    return ChatOllama(model=GEMMA3, base_url=ollama_host, num_predict=TOKENS, temperature=0, seed=0)


@pytest.fixture(scope="module")
def fallback_text(fallback: ChatOllama) -> dict[str, str]:
    return {q: str(fallback.invoke(q).content) for q in (QUESTION, LONG_QUESTION)}


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
    fallback: ChatOllama,
    fallback_text: dict[str, str],
) -> None:
    case = SLM_CASES[case_id]
    host = _dead_host() if case.dead_host else ollama_server.host
    slm = OllamaSLM(SMOLLM2, host=host, timeout=case.timeout, max_tokens=TOKENS, **case.options)
    fault = None
    if case.fault is not None:
        kind, params = case.fault
        fault = ollama_server.faults.set(kind, model=SMOLLM2, **params)
    llm = ConfidenceRouterChat(slm=slm, fallback=fallback, max_tokens=TOKENS)
    code = case.error.reason_code
    # A stall costs its whole timeout per call: two modes (one sync, one async) suffice there.
    modes = MODES if case.timeout >= 30 else [MODES[0], MODES[3]]
    for mode in modes:
        message = await ask(llm, mode, case.question)
        meta = routing(message)
        assert meta["route"] == "llm" and meta["score"] is None, mode
        assert f"escalated because the SLM failed ({code})" in meta["reason"]
        assert meta["slm_error"].startswith(f"{code}: ")
        assert meta["models"] == {"slm": None, "llm": GEMMA3, "answered_by": GEMMA3}
        assert message.content == fallback_text[case.question]
    n = len(modes)
    assert (llm.stats.queries, llm.stats.escalations, llm.stats.slm_failures) == (n, n, n)
    strict = ConfidenceRouterChat(slm=slm, fallback=fallback, max_tokens=TOKENS, strict=True)
    strict_modes = ("invoke", "astream") if case.timeout >= 30 else ("astream",)
    for mode in strict_modes:
        with pytest.raises(case.error) as info:
            await ask(strict, mode, case.question)
        assert info.value.model == SMOLLM2
    m = len(strict_modes)
    assert (strict.stats.queries, strict.stats.errors, strict.stats.slm_failures) == (m, m, m)
    if fault is not None:
        assert fault.hits >= 1, "the fault never fired"
    slm.close()


# -- the fallback fails --------------------------------------------------------------------


@pytest.fixture
def slm_http(ollama_host: str) -> Iterator[OllamaSLM]:
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=TOKENS, timeout=60)
    yield slm
    slm.close()


@pytest.mark.parametrize("mode", MODES)
async def test_a_failing_fallback_surfaces_as_fallback_error(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: ChatOllama
) -> None:
    fault = ollama_server.faults.set("status", model=GEMMA3, message="upstream overloaded")
    llm = ConfidenceRouterChat(
        slm=smollm2_slm, fallback=fallback, policy=ALWAYS_LLM, max_tokens=TOKENS
    )
    with pytest.raises(FallbackError, match="'gemma3:270m' failed after escalation") as info:
        await ask(llm, mode)
    assert isinstance(info.value.__cause__, ollama.ResponseError)
    assert "upstream overloaded" in str(info.value)
    assert fault.hits == 1
    s = llm.stats
    assert (s.queries, s.errors, s.escalations, s.slm_failures) == (1, 1, 0, 0)


@pytest.mark.parametrize("protocol", ["ollama", "openai"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_fallback_answer_cut_without_its_end_raises(
    protocol: str, mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM
) -> None:
    """ChatOllama / ChatOpenAI answering without Ollama's ``done`` / a ``finish_reason``: the
    half answer raises from every mode, with no closing chunk and no usage."""
    from langchain_openai import ChatOpenAI

    host = ollama_server.host
    chat_model: Any = (
        ChatOllama(model=GEMMA3, base_url=host, num_predict=TOKENS, temperature=0, seed=0)
        if protocol == "ollama"
        else ChatOpenAI(
            model=GEMMA3,
            base_url=f"{host}/v1",
            api_key="EMPTY",  # type: ignore[arg-type]
            max_tokens=TOKENS,  # type: ignore[call-arg]
            temperature=0,
            max_retries=0,
        )
    )
    fault = ollama_server.faults.set("truncate", after=1, model=GEMMA3)
    llm = ConfidenceRouterChat(
        slm=smollm2_slm, fallback=chat_model, policy=ALWAYS_LLM, max_tokens=TOKENS
    )
    chunks: list[AIMessageChunk] = []
    with pytest.raises(FallbackError, match="'gemma3:270m' failed after escalation") as info:
        if mode == "stream":
            chunks.extend(llm.stream(QUESTION))
        elif mode == "astream":
            chunks.extend([c async for c in llm.astream(QUESTION)])
        else:
            await ask(llm, mode)
    assert isinstance(info.value.__cause__, IncompleteResponseError)
    assert "incomplete" in str(info.value)
    assert not any(c.chunk_position == "last" or c.usage_metadata for c in chunks)
    assert fault.hits == 1
    s = llm.stats
    assert (s.queries, s.errors, s.escalations, s.slm_failures) == (1, 1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_stalled_fallback_ends_at_fallback_timeout(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: ChatOllama
) -> None:
    fault = ollama_server.faults.set("stall", seconds=30, model=GEMMA3)
    llm = ConfidenceRouterChat(
        slm=smollm2_slm,
        fallback=fallback,
        policy=ALWAYS_LLM,
        max_tokens=TOKENS,
        fallback_timeout=1.0,
    )
    with pytest.raises(FallbackTimeoutError, match=r"timed out.*fallback_timeout=1s"):
        await ask(llm, mode)
    assert fault.hits == 1
    assert (llm.stats.queries, llm.stats.errors) == (1, 1)


@pytest.mark.parametrize("mode", MODES)
async def test_both_models_failing_raise_fallback_error_naming_both(
    mode: str, ollama_server: OllamaTestServer, slm_http: OllamaSLM, fallback: ChatOllama
) -> None:
    fault = ollama_server.faults.set("status")  # every model
    llm = ConfidenceRouterChat(
        slm=slm_http, fallback=fallback, max_tokens=TOKENS, on_fallback_error="return_slm"
    )  # no SLM answer to return
    with pytest.raises(FallbackError, match="the SLM had failed too: slm_response_error"):
        await ask(llm, mode)
    assert fault.hits == 2
    s = llm.stats
    assert (s.queries, s.errors, s.slm_failures, s.escalations) == (1, 1, 1, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_return_slm_answers_with_the_flagged_slm_answer(
    mode: str, ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, fallback: ChatOllama
) -> None:
    ollama_server.faults.set("status", model=GEMMA3)
    llm = ConfidenceRouterChat(
        slm=smollm2_slm,
        fallback=fallback,
        policy=ALWAYS_LLM,
        max_tokens=TOKENS,
        on_fallback_error="return_slm",
    )
    message = await ask(llm, mode)
    meta = routing(message)
    expected = smollm2_slm.generate([_user(QUESTION)], max_tokens=TOKENS).text
    assert message.content == expected
    assert meta["route"] == "slm" and meta["reason"].startswith("fallback failed")
    assert "500" in meta["fallback_error"]
    assert meta["models"]["answered_by"] == "smollm2-135m"
    assert message.response_metadata["model_name"] == "smollm2-135m"
    s = llm.stats
    assert (s.queries, s.answered_by_slm, s.errors, s.fallback_calls_avoided) == (1, 1, 0, 0)


def _user(text: str) -> Any:
    from confidence_router import Message

    return Message("user", text)


MID_STREAM = {
    "drop_mid": {"after": 1},
    "error_line": {"after": 1, "message": "runner crashed"},
    "stall_mid": {"after": 1, "seconds": 30},
}


@pytest.mark.parametrize("kind", list(MID_STREAM))
@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_fallback_that_dies_mid_stream_never_looks_complete(
    kind: str,
    mode: str,
    ollama_server: OllamaTestServer,
    smollm2_slm: LlamaCppSLM,
    fallback: ChatOllama,
) -> None:
    fault = ollama_server.faults.set(kind, model=GEMMA3, **MID_STREAM[kind])
    llm = ConfidenceRouterChat(
        slm=smollm2_slm,
        fallback=fallback,
        policy=ALWAYS_LLM,
        max_tokens=TOKENS,
        fallback_timeout=1.5,
        on_fallback_error="return_slm",
    )
    chunks: list[AIMessageChunk] = []
    with pytest.raises(FallbackError) as info:
        if mode == "stream":
            for chunk in llm.stream(QUESTION):
                chunks.append(chunk)
        else:
            async for chunk in llm.astream(QUESTION):
                chunks.append(chunk)
    assert fault.hits == 1
    assert "".join(str(c.content) for c in chunks), "part of the answer had been sent"
    assert routing(chunks[0])["route"] == "llm"
    assert all(c.chunk_position != "last" for c in chunks), "no chunk announced the end"
    models = routing(chunks[0])["models"]
    assert models["answered_by"] == models["llm"] is not None, "the first chunk names who answers"
    assert all("latency_s" not in c.response_metadata.get("routing", {}) for c in chunks)
    assert all(not c.usage_metadata for c in chunks)
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
        ({"slm": None, "slm_model": SMOLLM2, "timeout": 0}, "timeout"),
        ({"strict": "yes"}, "strict"),
        ({"fallbak_timeout": 3}, "fallbak_timeout"),
    ],
)
def test_invalid_settings_fail_at_construction_naming_the_field(
    kwargs: dict[str, Any], field_name: str, smollm2_slm: LlamaCppSLM, fallback: ChatOllama
) -> None:
    params: dict[str, Any] = {"slm": smollm2_slm, "fallback": fallback, **kwargs}
    with pytest.raises(ConfigurationError) as info:
        ConfidenceRouterChat(**params)
    assert info.value.field == field_name


IMAGE = HumanMessage(
    content=[
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("messages", "words"),
    [
        ([], "messages is empty"),
        ("", "every message is empty"),
        ([IMAGE], "content block 1 has type 'image_url'"),
    ],
    ids=["no_messages", "empty_prompt", "image_block"],
)
async def test_bad_input_raises_invalid_input_error_before_any_model_call(
    mode: str,
    messages: Any,
    words: str,
    ollama_server: OllamaTestServer,
    slm_http: OllamaSLM,
    fallback: ChatOllama,
) -> None:
    tripwire = ollama_server.faults.set("status", endpoints="*")
    llm = ConfidenceRouterChat(slm=slm_http, fallback=fallback, max_tokens=TOKENS)
    with pytest.raises(InvalidInputError, match=words):
        await ask(llm, mode, messages)
    assert tripwire.hits == 0
    assert llm.stats.queries == 0


# -- cancellation ---------------------------------------------------------------------------


async def test_cancelling_ainvoke_closes_the_slm_connection(
    ollama_server: OllamaTestServer, slm_http: OllamaSLM, fallback: ChatOllama
) -> None:
    port = ollama_server.port
    baseline, tasks = settled_client_connections(port), other_tasks()
    fault = ollama_server.faults.set("stall", seconds=60, model=SMOLLM2)
    llm = ConfidenceRouterChat(slm=slm_http, fallback=fallback, max_tokens=TOKENS)
    task = asyncio.ensure_future(llm.ainvoke(QUESTION))
    assert await await_until(lambda: fault.hits == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await await_until(lambda: client_connections(port) <= baseline, within=1.0)
    assert await await_until(lambda: other_tasks() == tasks, within=1.0)
    assert llm.stats.queries == 0


async def test_leaving_astream_midway_closes_the_fallback_connection(
    ollama_server: OllamaTestServer, smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    port = ollama_server.port
    own = ChatOllama(model=GEMMA3, base_url=ollama_host, num_predict=TOKENS, temperature=0)
    before, tasks = settled_client_ports(port), other_tasks()
    ollama_server.faults.set("stall_mid", seconds=60, after=1, model=GEMMA3)
    llm = ConfidenceRouterChat(slm=smollm2_slm, fallback=own, policy=ALWAYS_LLM, max_tokens=TOKENS)
    stream = llm.astream(QUESTION)
    first = await stream.__anext__()
    assert routing(first)["route"] == "llm"
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


def _keyed_fallback() -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model="gpt-4o-mini", api_key=SECRET, base_url=f"{_dead_host()}/v1", max_retries=0, timeout=5
    )


def _everything_said(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + repr(error.__cause__)


async def test_the_fallback_api_key_never_shows(
    caplog: pytest.LogCaptureFixture, smollm2_slm: LlamaCppSLM
) -> None:
    pytest.importorskip("langchain_openai")
    for name in ("confidence_router", "langchain_confidence_router"):
        caplog.set_level(logging.DEBUG, logger=name)
    keyed = _keyed_fallback()
    llm = ConfidenceRouterChat(
        slm=smollm2_slm, fallback=keyed, policy=ALWAYS_LLM, max_tokens=TOKENS
    )
    shown = [
        repr(llm),
        str(llm),
        repr(llm.router),
        str(llm._identifying_params),
        llm.model_dump_json(),
        str(llm.router.fallback),
    ]
    for mode in MODES:  # the key's holder is called (and refused) in every mode
        with pytest.raises(FallbackError) as info:
            await ask(llm, mode)
        assert "Connection error" in str(info.value)
        shown.append(_everything_said(info.value))
    rescuing = ConfidenceRouterChat(
        slm=smollm2_slm,
        fallback=keyed,
        policy=ALWAYS_LLM,
        max_tokens=TOKENS,
        on_fallback_error="return_slm",
    )
    message = await rescuing.ainvoke(QUESTION)
    assert routing(message)["fallback_error"]
    shown += [str(message.response_metadata), str(message)]
    shown += [r.getMessage() for r in caplog.records]
    assert keyed.openai_api_key.get_secret_value() == SECRET, "the key is really there"
    for text in shown:
        assert SECRET not in text and "SECRET-4242" not in text


async def test_logs_carry_no_prompt_and_no_answer(
    caplog: pytest.LogCaptureFixture,
    ollama_server: OllamaTestServer,
    slm_http: OllamaSLM,
    fallback: ChatOllama,
) -> None:
    for name in ("confidence_router", "langchain_confidence_router"):
        caplog.set_level(logging.DEBUG, logger=name)
    prompt = "Zanzibar-4471 asks: what is the capital of France?"
    llm = ConfidenceRouterChat(slm=slm_http, fallback=fallback, max_tokens=TOKENS)
    answers = [str(llm.invoke(prompt).content)]
    with ollama_server.faults.inject("status", model=SMOLLM2):
        answers.append(str((await llm.ainvoke(prompt)).content))
        answers.append("".join(str(c.content) for c in llm.stream(prompt)))
    with ollama_server.faults.inject("status"), pytest.raises(FallbackError):
        await llm.ainvoke(prompt)
    records = [
        r
        for r in caplog.records
        if r.name.split(".")[0] in ("confidence_router", "langchain_confidence_router")
    ]
    assert records, "the router logged something: the check is not vacuous"
    logged = "\n".join(r.getMessage() for r in records)
    assert "Zanzibar" not in logged
    for answer in answers:
        if len(answer.strip()) >= 4:
            assert answer.strip() not in logged

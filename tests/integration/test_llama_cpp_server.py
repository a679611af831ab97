"""``OpenAICompatibleSLM`` and LangChain's ``ChatOpenAI`` against a real third-party server.

llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``,
``tests/support/llama_server.py``) serves the embedded SmolLM2-135M-Instruct.
It runs the same llama.cpp build and the same raw-logit log-softmax as the
in-process ``LlamaCppSLM`` (its ``logits_all`` is on), so a greedy answer's
tokens are the same and its logprobs agree to float32 rounding. What it does
differently from the project's test server is pinned here on the wire, and
what the backend makes of it: no usage chunk in streams, HTTP 200 with an empty
body for a streamed prompt longer than the context, any model name accepted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from confidence_router import (
    Bound,
    ContextWindowExceededError,
    Generation,
    IncompleteResponseError,
    LlamaCppSLM,
    Message,
    OpenAICompatibleSLM,
    Router,
    ThresholdPolicy,
    Usage,
)
from confidence_router._accumulate import accumulate
from tests.support.leaks import await_until, client_connections, settled_client_connections
from tests.support.llama_server import N_CTX, LlamaCppServer
from tests.support.models import shared_slm

pytest.importorskip("openai")
pytest.importorskip("llama_cpp.server")

QUESTION = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
PROMPT = [Message("user", "The capital of France is")]
TOKENS = 8
# Same build, same softmax; the server runs 1 thread and its own batch, so the
# float32 sums may round differently in the last bits (measured: < 1e-6).
ATOL = 1e-4
OVERLONG = [Message("user", "word " * (N_CTX + 100))]


def _body(server: LlamaCppServer, messages: list[Message], **extra: Any) -> dict[str, Any]:
    return {
        "model": server.model,
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "max_tokens": TOKENS,
        "temperature": 0,
        "logprobs": True,
        "top_logprobs": 5,
        **extra,
    }


def assert_same_answer(got: Generation, expected: Generation) -> None:
    assert got.text == expected.text
    assert got.tokens == expected.tokens
    assert got.top_tokens == expected.top_tokens
    np.testing.assert_allclose(got.token_logprobs, expected.token_logprobs, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got.top_logprobs, expected.top_logprobs, rtol=0, atol=ATOL)
    assert got.finish_reason == expected.finish_reason


@pytest.fixture
def slm(llama_server: LlamaCppServer) -> Iterator[OpenAICompatibleSLM]:
    backend = OpenAICompatibleSLM(
        llama_server.model, base_url=llama_server.base_url, max_tokens=TOKENS, timeout=120
    )
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def expected(smollm2_slm: LlamaCppSLM) -> Generation:
    return smollm2_slm.generate(QUESTION, max_tokens=TOKENS)


# -- the server as it is on the wire ---------------------------------------------------------


def test_the_server_lists_its_one_model_and_started_in_time(llama_server: LlamaCppServer) -> None:
    listed = httpx.get(f"{llama_server.base_url}/models", timeout=30).json()
    assert [m["id"] for m in listed["data"]] == [llama_server.model]
    assert llama_server.startup_s is not None and llama_server.startup_s < 120


def test_a_stream_carries_no_usage_chunk_even_when_asked(llama_server: LlamaCppServer) -> None:
    body = _body(llama_server, QUESTION, stream=True, stream_options={"include_usage": True})
    with httpx.stream(
        "POST", f"{llama_server.base_url}/chat/completions", json=body, timeout=120
    ) as r:
        assert r.status_code == 200
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c.get("usage") is None for c in chunks), "llama-cpp-python now sends usage"
    assert all(c["choices"] for c in chunks), "a usage chunk has no choices"


def test_an_overlong_prompt_gets_400_whole_and_an_empty_200_streamed(
    llama_server: LlamaCppServer,
) -> None:
    url = f"{llama_server.base_url}/chat/completions"
    whole = httpx.post(url, json=_body(llama_server, OVERLONG), timeout=120)
    assert whole.status_code == 400
    error = whole.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert f"maximum context length is {N_CTX} tokens" in error["message"]
    with httpx.stream(
        "POST", url, json=_body(llama_server, OVERLONG, stream=True), timeout=120
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.read() == b"", "llama-cpp-python now answers this stream with something"


def test_any_model_name_is_served(llama_server: LlamaCppServer) -> None:
    body = _body(llama_server, QUESTION)
    named = httpx.post(f"{llama_server.base_url}/chat/completions", json=body, timeout=120).json()
    body["model"] = "no-such-model:7b"
    other = httpx.post(f"{llama_server.base_url}/chat/completions", json=body, timeout=120).json()
    assert "error" not in other
    assert other["model"] == "no-such-model:7b"  # the name is echoed back, not checked
    assert other["choices"][0]["message"] == named["choices"][0]["message"]


def test_completion_text_offsets_count_from_the_start_of_the_prompt(
    llama_server: LlamaCppServer,
) -> None:
    """As in OpenAI's legacy API; the project's test server follows (test_openai_server.py)."""
    prompt = PROMPT[0].content
    body = {"model": llama_server.model, "prompt": prompt, "max_tokens": 3, "temperature": 0}
    body["logprobs"] = 2
    answer = httpx.post(f"{llama_server.base_url}/completions", json=body, timeout=120).json()
    logprobs = answer["choices"][0]["logprobs"]
    tokens = logprobs["tokens"]
    assert logprobs["text_offset"] == [
        len(prompt) + sum(len(t) for t in tokens[:i]) for i in range(len(tokens))
    ]


# -- OpenAICompatibleSLM ------------------------------------------------------------------


def test_generate_equals_the_in_process_model(
    slm: OpenAICompatibleSLM, expected: Generation
) -> None:
    got = slm.generate(QUESTION)
    assert got.model == slm.model
    assert_same_answer(got, expected)
    assert got.usage == expected.usage  # the whole answer carries the server's usage
    assert got.top_logprobs.shape == (len(got.tokens), 5) and got.has_logprobs


async def test_agenerate_equals_generate(slm: OpenAICompatibleSLM, expected: Generation) -> None:
    assert_same_answer(await slm.agenerate(QUESTION), expected)


def test_stream_adds_up_to_the_same_answer(slm: OpenAICompatibleSLM, expected: Generation) -> None:
    chunks = list(slm.stream(QUESTION))
    assert [c.tokens for c in chunks if c.tokens] == [(t,) for t in expected.tokens]
    assert all(len(c.token_logprobs) == len(c.tokens) for c in chunks)
    assert chunks[-1].finish_reason == expected.finish_reason
    got = accumulate(chunks, model=slm.model, latency_s=0.0, has_logprobs=True)
    assert_same_answer(got, expected)


async def test_astream_adds_up_to_the_same_answer(
    slm: OpenAICompatibleSLM, expected: Generation
) -> None:
    chunks = [c async for c in slm.astream(QUESTION)]
    assert chunks[-1].finish_reason == expected.finish_reason
    got = accumulate(chunks, model=slm.model, latency_s=0.0, has_logprobs=True)
    assert_same_answer(got, expected)


async def test_logprobs_are_equal_across_calls_and_modes(slm: OpenAICompatibleSLM) -> None:
    first = slm.generate(QUESTION)
    again = [slm.generate(QUESTION), await slm.agenerate(QUESTION)]
    streamed = accumulate(
        list(slm.stream(QUESTION)), model=slm.model, latency_s=0.0, has_logprobs=True
    )
    for gen in (*again, streamed):
        assert gen.tokens == first.tokens
        np.testing.assert_array_equal(gen.token_logprobs, first.token_logprobs)
        np.testing.assert_array_equal(gen.top_logprobs, first.top_logprobs)


def test_completion_endpoint_equals_the_in_process_completion(
    llama_server: LlamaCppServer,
) -> None:
    """With its default repeat penalty off, /v1/completions is greedy decoding as in process."""
    expected = shared_slm("smollm2", "completion").generate(PROMPT, max_tokens=TOKENS)
    slm = OpenAICompatibleSLM(
        llama_server.model,
        base_url=llama_server.base_url,
        prompt_format="completion",
        max_tokens=TOKENS,
        timeout=120,
        extra_body={"repeat_penalty": 1.0},
    )
    assert_same_answer(slm.generate(PROMPT), expected)
    got = accumulate(list(slm.stream(PROMPT)), model=slm.model, latency_s=0.0, has_logprobs=True)
    assert_same_answer(got, expected)


def test_its_default_repeat_penalty_picks_tokens_the_logprobs_rank_lower(
    llama_server: LlamaCppServer,
) -> None:
    """llama-cpp-python's server applies ``repeat_penalty=1.1`` even at temperature 0.

    The logprobs it reports are the raw logits' (before the penalty), so once a
    token repeats, the chosen token can be one its own top-k ranks below another:
    here the answer to "The capital of France is" leaves greedy decoding at the
    second newline. Pass ``extra_body={"repeat_penalty": 1.0}`` for greedy answers.
    """
    expected = shared_slm("smollm2", "completion").generate(PROMPT, max_tokens=TOKENS)
    slm = OpenAICompatibleSLM(
        llama_server.model,
        base_url=llama_server.base_url,
        prompt_format="completion",
        max_tokens=TOKENS,
        timeout=120,
    )
    got = slm.generate(PROMPT)
    assert got.tokens != expected.tokens
    at = next(i for i, (a, b) in enumerate(zip(got.tokens, expected.tokens)) if a != b)
    assert got.tokens[:at] == expected.tokens[:at]
    np.testing.assert_allclose(
        got.token_logprobs[:at], expected.token_logprobs[:at], rtol=0, atol=ATOL
    )
    assert got.top_tokens[at][0] == expected.tokens[at]  # the raw logits' favourite...
    assert got.token_logprobs[at] < got.top_logprobs[at][0]  # ...was not the one chosen


async def test_an_overlong_prompt_not_streamed_is_a_context_window_error(
    slm: OpenAICompatibleSLM,
) -> None:
    for call in (lambda: slm.generate(OVERLONG),):
        with pytest.raises(ContextWindowExceededError, match=f"maximum context length is {N_CTX}"):
            call()
    with pytest.raises(ContextWindowExceededError):
        await slm.agenerate(OVERLONG)


async def test_an_overlong_prompt_streamed_is_an_error_not_an_empty_answer(
    slm: OpenAICompatibleSLM,
) -> None:
    """The empty 200 stream raises IncompleteResponseError: the server sent nothing."""
    with pytest.raises(IncompleteResponseError) as sync_info:
        list(slm.stream(OVERLONG))
    with pytest.raises(IncompleteResponseError) as async_info:
        _ = [c async for c in slm.astream(OVERLONG)]
    for error in (sync_info.value, async_info.value):
        assert error.tokens_received == 0 and error.model == slm.model
        assert "closed the stream" in str(error) and "without sending anything" in str(error)


def test_the_router_escalates_an_overlong_streamed_prompt_with_the_cause(
    slm: OpenAICompatibleSLM, gemma3_slm: LlamaCppSLM
) -> None:
    """Not "the SLM gave an empty answer": the SLM failed, and the reason says how."""
    router = Router(slm, gemma3_slm)  # the default: a watched (streamed) SLM answer
    result = router.invoke(OVERLONG, max_tokens=3)
    assert result.route == "llm" and result.slm is None
    assert result.slm_error is not None and result.slm_error.startswith("slm_incomplete:")
    assert "without sending anything" in result.decision.reason
    assert "empty answer" not in result.decision.reason
    assert (router.stats.escalations, router.stats.slm_failures) == (1, 1)


def test_an_unknown_model_name_cannot_be_detected(
    llama_server: LlamaCppServer, expected: Generation
) -> None:
    """The server answers any name with its one model: no ModelNotFoundError is possible."""
    other = OpenAICompatibleSLM(
        "no-such-model:7b", base_url=llama_server.base_url, max_tokens=TOKENS, timeout=120
    )
    got = other.generate(QUESTION)
    assert got.model == "no-such-model:7b"
    assert_same_answer(got, expected)
    assert other.list_models() == [llama_server.model]  # only the listing tells the truth


async def test_cancelling_a_stream_closes_its_connection(llama_server: LlamaCppServer) -> None:
    slm = OpenAICompatibleSLM(
        llama_server.model, base_url=llama_server.base_url, max_tokens=512, timeout=300
    )
    long_answer = [Message("user", "Write a long story about a dragon and a knight.")]
    before = settled_client_connections(llama_server.port)
    received: list[Any] = []

    async def consume() -> None:
        async for chunk in slm.astream(long_answer):
            received.append(chunk)

    task = asyncio.create_task(consume())
    assert await await_until(lambda: len(received) >= 2, within=120)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(received) < 512
    assert await await_until(lambda: client_connections(llama_server.port) <= before, within=10), (
        "the cancelled stream's connection stayed open"
    )
    answered = slm.generate(QUESTION, max_tokens=TOKENS)  # the server serves the next request
    assert answered.text and answered.finish_reason in ("stop", "length")


# -- through the Router and LangChain's ChatOpenAI -----------------------------------------


async def test_router_keeps_a_confident_answer_in_every_mode(
    slm: OpenAICompatibleSLM, gemma3_slm: LlamaCppSLM, expected: Generation
) -> None:
    router = Router(slm, gemma3_slm)
    results = [router.invoke(QUESTION), await router.ainvoke(QUESTION)]
    streamed = list(router.stream(QUESTION))
    astreamed = [c async for c in router.astream(QUESTION)]
    results += [streamed[-1].result, astreamed[-1].result]
    assert {r.route for r in results} == {"slm"}
    assert {r.text for r in results} == {expected.text}
    assert "".join(c.text for c in streamed) == "".join(c.text for c in astreamed) == expected.text
    assert router.stats.queries == 4 and router.stats.answered_by_slm == 4
    # no usage chunk in its streams: completion tokens counted from the logprobs, the
    # prompt's marked unknown (not 0), so the ledger's costs are a lower bound
    n = len(expected.tokens)
    assert router.stats.tokens_by_model[slm.model] == Usage(0, 4 * n, 4, 0)
    assert router.stats.to_dict()["costs_exact"] is False


@pytest.fixture
def chat_openai(llama_server: LlamaCppServer) -> Any:
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=llama_server.model,
        base_url=llama_server.base_url,
        api_key="EMPTY",
        max_tokens=TOKENS,
        temperature=0,
        max_retries=0,
        timeout=120,
    )


async def test_chat_openai_on_it_is_a_working_fallback(
    chat_openai: Any, ollama_server: Any, expected: Generation
) -> None:
    """An escalated query answered by ChatOpenAI over llama-cpp-python's server, every mode."""
    from langchain_confidence_router import ConfidenceRouterChat

    direct = chat_openai.invoke([(m.role, m.content) for m in QUESTION])
    assert direct.text == expected.text  # the same model and the same greedy answer
    llm = ConfidenceRouterChat(
        slm_model="smollm2:135m",
        base_url=ollama_server.host,
        fallback=chat_openai,
        policy=ThresholdPolicy((Bound("length", max=0),)),  # every answer is "unsure"
        max_tokens=TOKENS,
    )
    messages = [(m.role, m.content) for m in QUESTION]
    answers = [llm.invoke(messages), await llm.ainvoke(messages)]
    for message in answers:
        routing = message.response_metadata["routing"]
        assert routing["route"] == "llm" and routing["reason"].startswith("unsure")
        assert message.response_metadata["model_name"] == chat_openai.model_name
        assert message.text == direct.text
    streamed = "".join(c.text for c in llm.stream(messages))
    astreamed = "".join([c.text async for c in llm.astream(messages)])
    assert streamed == astreamed == direct.text
    assert llm.stats.queries == 4 and llm.stats.escalations == 4 and llm.stats.errors == 0

"""The test server's OpenAI-compatible ``/v1``, checked with the official ``openai`` client.

Logprobs must equal, token by token, what the llama.cpp backend computes in
process for the same prompt at temperature 0, streamed or not, on both the
chat and the completions endpoint. Error bodies, SSE framing and
``stream_options.include_usage`` follow OpenAI's API reference, and
LangChain's ``ChatOpenAI`` talks to the server unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from confidence_router import Generation, LlamaCppSLM, Message
from tests.support.ollama_server import OllamaTestServer

openai = pytest.importorskip("openai")

QUESTION = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
PROMPT = "The capital of France is"
TOKENS = 8
K = 5


@pytest.fixture(scope="module")
def client(ollama_server: OllamaTestServer) -> Iterator[Any]:
    with openai.OpenAI(
        base_url=f"{ollama_server.host}/v1", api_key="EMPTY", max_retries=0, timeout=60
    ) as c:
        yield c


@pytest.fixture(scope="module")
def expected(smollm2_slm: LlamaCppSLM) -> Generation:
    return smollm2_slm.generate(QUESTION, max_tokens=TOKENS)


@pytest.fixture(scope="module")
def expected_completion(gemma3_slm: LlamaCppSLM) -> Generation:
    return gemma3_slm.generate([Message("user", PROMPT)], max_tokens=TOKENS)


def _chat(client: Any, **extra: Any) -> Any:
    return client.chat.completions.create(
        model="smollm2:135m",
        messages=[{"role": m.role, "content": m.content} for m in QUESTION],
        max_tokens=TOKENS,
        temperature=0,
        seed=0,
        logprobs=True,
        top_logprobs=K,
        **extra,
    )


def _assert_entries_equal(entries: list[Any], gen: Generation) -> None:
    """Chat logprob entries against the in-process generation, token by token."""
    assert [e.token for e in entries] == list(gen.tokens)
    for i, entry in enumerate(entries):
        assert entry.logprob == pytest.approx(gen.token_logprobs[i], abs=1e-6)
        assert [a.token for a in entry.top_logprobs] == list(gen.top_tokens[i])
        np.testing.assert_allclose(
            [a.logprob for a in entry.top_logprobs], gen.top_logprobs[i], rtol=0, atol=1e-6
        )
        if entry.bytes is not None:  # the raw bytes of the token piece
            assert bytes(entry.bytes).decode("utf-8", errors="replace") == entry.token


def test_chat_logprobs_equal_the_in_process_backend(client: Any, expected: Generation) -> None:
    response = _chat(client)
    choice = response.choices[0]
    assert response.object == "chat.completion" and response.model == "smollm2:135m"
    assert choice.message.role == "assistant" and choice.message.content == expected.text
    assert choice.finish_reason == expected.finish_reason
    _assert_entries_equal(choice.logprobs.content, expected)
    assert response.usage.prompt_tokens == expected.usage.prompt_tokens
    assert response.usage.completion_tokens == expected.usage.completion_tokens
    assert response.usage.total_tokens == expected.usage.total_tokens


def test_chat_stream_carries_each_tokens_logprobs_in_its_chunk(
    client: Any, expected: Generation
) -> None:
    chunks = list(_chat(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].logprobs is None
    tokens = [c for c in chunks if c.choices and c.choices[0].logprobs is not None]
    assert all(len(c.choices[0].logprobs.content) == 1 for c in tokens)
    entries = [e for c in tokens for e in c.choices[0].logprobs.content]
    _assert_entries_equal(entries, expected)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == expected.finish_reason and set(finish[:-1]) == {None}
    last = chunks[-1]  # include_usage: one more chunk, no choices, the usage
    assert last.choices == [] and last.usage.completion_tokens == expected.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1


def test_chat_without_logprobs_and_with_k_zero(client: Any, expected: Generation) -> None:
    plain = client.chat.completions.create(
        model="smollm2:135m",
        messages=[{"role": m.role, "content": m.content} for m in QUESTION],
        max_tokens=TOKENS,
        temperature=0,
    )
    assert plain.choices[0].message.content == expected.text
    assert plain.choices[0].logprobs is None
    zero = client.chat.completions.create(
        model="smollm2:135m",
        messages=[{"role": m.role, "content": m.content} for m in QUESTION],
        max_tokens=TOKENS,
        temperature=0,
        logprobs=True,
        top_logprobs=0,
    )
    content = zero.choices[0].logprobs.content
    assert [e.top_logprobs for e in content] == [[] for _ in content]
    np.testing.assert_allclose([e.logprob for e in content], expected.token_logprobs, atol=1e-6)


def test_completion_logprobs_equal_the_in_process_backend(
    client: Any, expected_completion: Generation
) -> None:
    for stream in (False, True):
        response = client.completions.create(
            model="gemma3:270m",
            prompt=PROMPT,
            max_tokens=TOKENS,
            temperature=0,
            logprobs=K,
            stream=stream,
        )
        parts = list(response) if stream else [response]
        choices = [c.choices[0] for c in parts if c.choices]
        logprobs = [c.logprobs for c in choices if c.logprobs is not None]
        tokens = [t for lp in logprobs for t in lp.tokens]
        values = [v for lp in logprobs for v in lp.token_logprobs]
        tops = [t for lp in logprobs for t in lp.top_logprobs]
        offsets = [o for lp in logprobs for o in lp.text_offset]
        assert "".join(c.text for c in choices) == expected_completion.text
        assert tokens == list(expected_completion.tokens)
        np.testing.assert_allclose(values, expected_completion.token_logprobs, atol=1e-6)
        for i, top in enumerate(tops):
            best = max(top, key=top.__getitem__)
            assert best == expected_completion.top_tokens[i][0]
            assert top[best] == pytest.approx(expected_completion.top_logprobs[i][0], abs=1e-6)
            assert len(top) <= K
        # Offsets count from the start of the prompt (OpenAI, llama-cpp-python's server).
        assert offsets == [
            len(PROMPT) + sum(len(t) for t in tokens[:i]) for i in range(len(tokens))
        ]
        assert choices[-1].finish_reason == expected_completion.finish_reason


def test_sse_framing_on_the_wire(ollama_server: OllamaTestServer) -> None:
    body = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        "stream": True,
        "logprobs": True,
    }
    with (
        httpx.Client(timeout=60) as http,
        http.stream("POST", f"{ollama_server.host}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    payloads = [json.loads(line[6:]) for line in lines[:-1]]
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert "usage" not in payloads[0]  # only with stream_options.include_usage


@pytest.mark.parametrize(
    ("request_body", "status", "error_type", "words"),
    [
        ({"model": "nope:1b"}, 404, openai.NotFoundError, "does not exist"),
        ({"top_logprobs": 21}, 400, openai.BadRequestError, "top_logprobs"),
        ({"top_logprobs": 3, "logprobs": False}, 400, openai.BadRequestError, "requires logprobs"),
        ({"stream_options": {"include_usage": True}}, 400, openai.BadRequestError, "stream"),
        ({"n": 2}, 400, openai.BadRequestError, "Only one"),
        ({"max_tokens": True}, 400, openai.BadRequestError, "Invalid type for 'max_tokens'"),
        (
            {"messages": [{"role": "user", "content": "word " * 3000}]},
            400,
            openai.BadRequestError,
            "maximum context length is 2048 tokens",
        ),
    ],
)
def test_errors_have_openais_shape(
    client: Any, request_body: dict[str, Any], status: int, error_type: type, words: str
) -> None:
    body: dict[str, Any] = {
        "model": "smollm2:135m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 2,
        **request_body,
    }
    with pytest.raises(error_type) as info:
        client.chat.completions.create(**body)
    error = info.value
    assert error.status_code == status and words in error.message
    assert set(error.body) >= {"message", "type", "param", "code"}
    if status == 404:
        assert error.code == "model_not_found"
    if "context" in words:
        assert error.code == "context_length_exceeded"


def test_faults_apply_to_the_openai_endpoints_too(
    client: Any, ollama_server: OllamaTestServer
) -> None:
    with (
        ollama_server.faults.inject("status", status=503, message="overloaded") as fault,
        pytest.raises(openai.InternalServerError) as info,
    ):
        _chat(client)
    assert fault.hits == 1 and info.value.status_code == 503
    assert info.value.body == {
        "message": "overloaded",
        "type": "server_error",
        "param": None,
        "code": None,
    }
    with (
        ollama_server.faults.inject("error_line", after=2, message="runner died"),
        pytest.raises(openai.APIError, match="runner died"),
    ):
        list(_chat(client, stream=True))
    with ollama_server.faults.inject("no_logprobs"):
        assert _chat(client).choices[0].logprobs is None


def test_models_lists_the_served_names(client: Any, ollama_server: OllamaTestServer) -> None:
    assert [m.id for m in client.models.list()] == ["smollm2:135m", "gemma3:270m"]
    with ollama_server.faults.inject("not_found", model="gemma3:270m", endpoints=("models",)):
        assert [m.id for m in client.models.list()] == ["smollm2:135m"]


async def test_langchain_chat_openai_talks_to_it_unchanged(
    ollama_server: OllamaTestServer, expected: Generation
) -> None:
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(
        model="smollm2:135m",
        base_url=f"{ollama_server.host}/v1",
        api_key="EMPTY",
        max_tokens=TOKENS,
        temperature=0,
        seed=0,
        logprobs=True,
        top_logprobs=K,
        max_retries=0,
        stream_usage=True,  # off by default for a non-OpenAI base_url
    )
    messages = [(m.role, m.content) for m in QUESTION]
    message = chat.invoke(messages)
    assert message.text == expected.text
    content = message.response_metadata["logprobs"]["content"]
    assert [e["token"] for e in content] == list(expected.tokens)
    np.testing.assert_allclose([e["logprob"] for e in content], expected.token_logprobs, atol=1e-6)
    assert message.usage_metadata is not None
    assert message.usage_metadata["output_tokens"] == expected.usage.completion_tokens
    chunks = [c async for c in chat.astream(messages)]
    assert "".join(c.text for c in chunks) == expected.text
    streamed_usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert streamed_usage and streamed_usage[-1]["output_tokens"] == len(expected.tokens)

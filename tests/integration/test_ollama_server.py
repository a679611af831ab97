"""The Ollama-compatible test server, spoken to by the real clients over HTTP.

The official ``ollama`` client (sync and async), raw ``httpx``, LangChain's
``ChatOllama`` and LlamaIndex's ``Ollama`` must accept its answers unchanged,
and its logprobs must be the ones the in-process ``LlamaCppSLM`` computes.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import numpy as np
import ollama
import pytest

from confidence_router import Generation, LlamaCppSLM, Message
from tests.support.models import ServedModel
from tests.support.ollama_server import OllamaTestServer

QUESTION = "What is the capital of France?"
CHAT = [{"role": "user", "content": QUESTION}]
GREEDY = {"temperature": 0, "seed": 0, "num_predict": 8}
PROMPT = "The capital of France is"


@pytest.fixture
def client(ollama_host: str) -> ollama.Client:
    return ollama.Client(host=ollama_host, timeout=60)


@pytest.fixture
def http(ollama_host: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ollama_host, timeout=60) as session:
        yield session


def assert_same_tokens(entries: Sequence[Any], expected: Generation, k: int) -> None:
    """Client Logprob objects vs the in-process Generation: same tokens, same numbers."""
    assert [e.token for e in entries] == list(expected.tokens)
    np.testing.assert_allclose(
        [e.logprob for e in entries], expected.token_logprobs, rtol=0, atol=1e-6
    )
    if k == 0:
        assert all(e.top_logprobs is None for e in entries)
        return
    top = np.array([[a.logprob for a in e.top_logprobs] for e in entries])
    np.testing.assert_allclose(top, expected.top_logprobs[:, :k], rtol=0, atol=1e-6)
    assert [[a.token for a in e.top_logprobs] for e in entries] == [
        list(alts[:k]) for alts in expected.top_tokens
    ]


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    lines = response.text.split("\n")
    assert lines[-1] == "", "an NDJSON stream ends with a newline"
    assert all(lines[:-1]), "no blank lines inside an NDJSON stream"
    return [json.loads(line) for line in lines[:-1]]


# -- chat and generate through the official client --------------------------------


def test_chat_logprobs_match_the_in_process_model(
    client: ollama.Client, smollm2_slm: LlamaCppSLM
) -> None:
    response = client.chat(
        model="smollm2:135m", messages=CHAT, options=GREEDY, logprobs=True, top_logprobs=3
    )
    expected = smollm2_slm.generate([Message("user", QUESTION)], max_tokens=8)
    assert response.message.role == "assistant"
    assert response.message.content == expected.text
    assert response.done and response.done_reason == "length"
    assert response.eval_count == len(response.logprobs) == 8
    assert response.prompt_eval_count == expected.usage.prompt_tokens
    assert_same_tokens(response.logprobs, expected, k=3)


def test_chat_stream_sends_each_token_with_its_own_logprobs(
    client: ollama.Client, smollm2_slm: LlamaCppSLM
) -> None:
    parts = list(
        client.chat(
            model="smollm2:135m",
            messages=CHAT,
            options=GREEDY,
            logprobs=True,
            top_logprobs=2,
            stream=True,
        )
    )
    expected_chunks = [
        c
        for c in smollm2_slm.stream([Message("user", QUESTION)], max_tokens=8)
        if c.finish_reason is None
    ]
    *tokens, final = parts
    assert len(tokens) == len(expected_chunks) == 8
    for part, chunk in zip(tokens, expected_chunks):
        assert not part.done
        assert part.message.content == chunk.text
        assert [e.token for e in part.logprobs] == list(chunk.tokens)
        assert part.logprobs[0].logprob == pytest.approx(chunk.token_logprobs[0], abs=1e-6)
    assert final.done and final.done_reason == "length"
    assert final.message.content == "" and final.logprobs is None
    assert final.eval_count == 8
    for field in ("total_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(getattr(final, field), int) and getattr(final, field) > 0
    # streamed and whole answers carry the same list
    whole = client.chat(
        model="smollm2:135m", messages=CHAT, options=GREEDY, logprobs=True, top_logprobs=2
    )
    assert [e for p in tokens for e in p.logprobs] == list(whole.logprobs)


def test_generate_templated_and_raw_match_the_in_process_model(
    client: ollama.Client, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    templated = client.generate(
        model="smollm2:135m",
        prompt=QUESTION,
        system="Answer in one word.",
        options=GREEDY,
        logprobs=True,
        top_logprobs=2,
    )
    expected = smollm2_slm.generate(
        [Message("system", "Answer in one word."), Message("user", QUESTION)], max_tokens=8
    )
    assert templated.response == expected.text
    assert_same_tokens(templated.logprobs, expected, k=2)
    assert templated.context and all(isinstance(t, int) for t in templated.context)

    raw = client.generate(
        model="gemma3:270m",
        prompt=PROMPT,
        raw=True,
        options={**GREEDY, "num_predict": 5},
        logprobs=True,
        top_logprobs=4,
    )
    expected = gemma3_slm.generate([Message("user", PROMPT)], max_tokens=5)
    assert raw.response == expected.text
    assert_same_tokens(raw.logprobs, expected, k=4)
    assert raw.context is None, "Ollama sends no context for raw prompts"


async def test_async_client_streams_and_answers_like_the_sync_one(
    ollama_host: str, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    aclient = ollama.AsyncClient(host=ollama_host, timeout=60)
    parts = [
        part
        async for part in await aclient.chat(
            model="smollm2:135m",
            messages=CHAT,
            options=GREEDY,
            logprobs=True,
            top_logprobs=1,
            stream=True,
        )
    ]
    expected = smollm2_slm.generate([Message("user", QUESTION)], max_tokens=8)
    assert "".join(p.message.content for p in parts) == expected.text
    assert_same_tokens([e for p in parts[:-1] for e in p.logprobs], expected, k=1)

    whole = await aclient.generate(
        model="gemma3:270m",
        prompt=PROMPT,
        raw=True,
        options={**GREEDY, "num_predict": 4},
        logprobs=True,
        top_logprobs=2,
    )
    expected = gemma3_slm.generate([Message("user", PROMPT)], max_tokens=4)
    assert whole.response == expected.text
    assert_same_tokens(whole.logprobs, expected, k=2)


async def test_concurrent_requests_each_get_their_own_answer(
    ollama_host: str, smollm2_slm: LlamaCppSLM
) -> None:
    import asyncio

    questions = ["What is 2 + 2?", QUESTION, "Name a colour."]
    aclient = ollama.AsyncClient(host=ollama_host, timeout=60)
    answers = await asyncio.gather(
        *(
            aclient.chat(
                model="smollm2:135m",
                messages=[{"role": "user", "content": q}],
                options={**GREEDY, "num_predict": 4},
                logprobs=True,
            )
            for q in questions
        )
    )
    for question, answer in zip(questions, answers):
        expected = smollm2_slm.generate([Message("user", question)], max_tokens=4)
        assert answer.message.content == expected.text
        assert_same_tokens(answer.logprobs, expected, k=0)


def test_logprobs_come_from_raw_logits_whatever_the_temperature(
    client: ollama.Client,
) -> None:
    """Sampling temperature changes the choice, not the reported distribution."""

    def first_alternatives(temperature: float) -> list[tuple[str, float]]:
        response = client.chat(
            model="smollm2:135m",
            messages=CHAT,
            logprobs=True,
            top_logprobs=5,
            options={"temperature": temperature, "seed": 7, "num_predict": 1},
        )
        return [(a.token, a.logprob) for a in response.logprobs[0].top_logprobs]

    greedy, hot = first_alternatives(0.0), first_alternatives(1.5)
    assert [t for t, _ in greedy] == [t for t, _ in hot]
    np.testing.assert_allclose([lp for _, lp in greedy], [lp for _, lp in hot], atol=1e-9)


def test_seeded_sampling_is_reproducible(client: ollama.Client) -> None:
    def sample() -> str:
        options = {"temperature": 1.2, "seed": 42, "num_predict": 6}
        return client.chat(model="smollm2:135m", messages=CHAT, options=options).message.content

    assert sample() == sample()


def test_stop_sequence_ends_the_answer_like_the_in_process_model(
    client: ollama.Client, smollm2_slm: LlamaCppSLM
) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    response = client.chat(
        model="smollm2:135m",
        messages=messages,
        options={**GREEDY, "num_predict": 16, "stop": ["5"]},
        logprobs=True,
    )
    expected = smollm2_slm.generate(
        [Message("user", messages[0]["content"])], max_tokens=16, stop=["5"]
    )
    assert "5" not in response.message.content
    assert response.message.content == expected.text
    assert response.done_reason == expected.finish_reason == "stop"
    assert [e.token for e in response.logprobs] == list(expected.tokens)


# -- the wire format, raw -----------------------------------------------------------


def test_stream_defaults_to_true_when_the_field_is_absent(http: httpx.Client) -> None:
    response = http.post(
        "/api/chat",
        json={"model": "smollm2:135m", "messages": CHAT, "options": {"num_predict": 3}},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert response.headers["transfer-encoding"] == "chunked"
    objects = ndjson(response)
    assert len(objects) == 4
    assert [o["done"] for o in objects] == [False, False, False, True]
    assert all("logprobs" not in o for o in objects), "no logprobs unless asked for"
    assert all(set(o["message"]) == {"role", "content"} for o in objects)
    final = objects[-1]
    assert final["done_reason"] == "length" and final["eval_count"] == 3
    assert final["created_at"].endswith("Z")


def test_non_streaming_answer_is_one_json_object(http: httpx.Client) -> None:
    response = http.post(
        "/api/generate",
        json={
            "model": "gemma3:270m",
            "prompt": PROMPT,
            "stream": False,
            "raw": True,
            "options": {"num_predict": 3, "temperature": 0},
            "logprobs": True,
        },
    )
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["done"] is True and len(body["logprobs"]) == body["eval_count"] == 3
    metrics = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")
    assert all(isinstance(body[m], int) for m in metrics if m in body)


def test_top_logprobs_zero_omits_the_alternatives(http: httpx.Client) -> None:
    body = http.post(
        "/api/chat",
        json={
            "model": "smollm2:135m",
            "messages": CHAT,
            "stream": False,
            "logprobs": True,
            "top_logprobs": 0,
            "options": {"num_predict": 3, "temperature": 0},
        },
    ).json()
    assert len(body["logprobs"]) == 3
    for entry in body["logprobs"]:
        assert "top_logprobs" not in entry
        assert entry["logprob"] <= 0
        assert bytes(entry["bytes"]).decode() == entry["token"]


def test_top_logprobs_lists_include_the_chosen_token_with_bytes(http: httpx.Client) -> None:
    body = http.post(
        "/api/chat",
        json={
            "model": "smollm2:135m",
            "messages": CHAT,
            "stream": False,
            "logprobs": True,
            "top_logprobs": 20,
            "options": {"num_predict": 2, "temperature": 0},
        },
    ).json()
    for entry in body["logprobs"]:
        alternatives = entry["top_logprobs"]
        assert len(alternatives) == 20
        assert alternatives[0]["token"] == entry["token"]  # greedy: the best one was chosen
        assert [a["logprob"] for a in alternatives] == sorted(
            (a["logprob"] for a in alternatives), reverse=True
        )
        assert all(isinstance(b, int) for a in alternatives for b in a.get("bytes", []))


@pytest.mark.parametrize("top", [21, -1])
@pytest.mark.parametrize("endpoint", ["chat", "generate"])
def test_top_logprobs_outside_0_to_20_is_a_400(http: httpx.Client, endpoint: str, top: int) -> None:
    payload = {"model": "smollm2:135m", "logprobs": True, "top_logprobs": top}
    payload.update({"messages": CHAT} if endpoint == "chat" else {"prompt": QUESTION})
    response = http.post(f"/api/{endpoint}", json=payload)
    assert response.status_code == 400
    assert response.json() == {"error": "top_logprobs must be between 0 and 20"}


def test_the_client_raises_400_for_top_logprobs_21(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.chat(model="smollm2:135m", messages=CHAT, logprobs=True, top_logprobs=21)
    assert info.value.status_code == 400
    assert info.value.error == "top_logprobs must be between 0 and 20"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("endpoint", ["chat", "generate"])
def test_unknown_model_is_a_404_with_ollamas_exact_text(
    http: httpx.Client, client: ollama.Client, endpoint: str, stream: bool
) -> None:
    payload: dict[str, Any] = {"model": "nope:1b", "stream": stream}
    payload.update({"messages": CHAT} if endpoint == "chat" else {"prompt": QUESTION})
    response = http.post(f"/api/{endpoint}", json=payload)
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/json")
    assert response.text == '{"error":"model \'nope:1b\' not found"}'
    call = client.chat if endpoint == "chat" else client.generate
    kwargs = {"messages": CHAT} if endpoint == "chat" else {"prompt": QUESTION}
    with pytest.raises(ollama.ResponseError) as info:
        result = call(model="nope:1b", stream=stream, **kwargs)
        if stream:
            next(iter(result))  # the status arrives before any line
    assert info.value.status_code == 404
    assert info.value.error == "model 'nope:1b' not found"


def test_options_with_nulls_and_unknown_keys_are_accepted(http: httpx.Client) -> None:
    options = {
        "temperature": None,
        "num_ctx": None,
        "top_k": None,
        "num_predict": 2,
        "mirostat_tau": 5.0,
        "not_an_option": [1, 2],
    }
    response = http.post(
        "/api/chat",
        json={"model": "smollm2:135m", "messages": CHAT, "stream": False, "options": options},
    )
    assert response.status_code == 200
    assert response.json()["eval_count"] == 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"num_predict": "8"}, 'option "num_predict" must be of type integer'),
        ({"temperature": True}, 'option "temperature" must be of type float32'),
        ({"stop": "\n"}, 'option "stop" must be of type array'),
    ],
)
def test_options_of_the_wrong_type_are_refused(
    http: httpx.Client, options: dict[str, Any], error: str
) -> None:
    response = http.post(
        "/api/chat", json={"model": "smollm2:135m", "messages": CHAT, "options": options}
    )
    assert response.status_code == 400
    assert response.json() == {"error": error}


def test_bad_request_bodies_get_go_style_errors(http: httpx.Client) -> None:
    missing = http.post("/api/chat", content=b"")
    assert (missing.status_code, missing.json()) == (400, {"error": "missing request body"})
    wrong = http.post("/api/chat", json={"model": "smollm2:135m", "stream": "yes"})
    assert wrong.status_code == 400
    assert "cannot unmarshal string" in wrong.json()["error"]
    assert http.post("/api/chat", json={"messages": CHAT}).json() == {"error": "model is required"}
    think = http.post("/api/chat", json={"model": "smollm2:135m", "messages": CHAT, "think": True})
    assert think.json() == {"error": '"smollm2:135m" does not support thinking'}
    assert http.get("/api/nothing").status_code == 404
    assert http.get("/api/chat").status_code == 405


def test_an_input_longer_than_num_ctx_is_refused_before_any_line(
    http: httpx.Client,
) -> None:
    response = http.post(
        "/api/chat",
        json={
            "model": "smollm2:135m",
            "messages": [{"role": "user", "content": "word " * 64}],
            "options": {"num_ctx": 32},
        },
    )
    assert response.status_code == 400
    assert response.json() == {"error": "the input length exceeds the context length"}


def test_empty_messages_only_load_the_model(http: httpx.Client) -> None:
    body = http.post("/api/chat", json={"model": "smollm2:135m", "messages": []}).json()
    assert body["done"] is True and body["done_reason"] == "load"
    assert body["message"] == {"role": "assistant", "content": ""}
    unload = http.post("/api/generate", json={"model": "gemma3:270m", "keep_alive": 0}).json()
    assert unload["done_reason"] == "unload"


# -- the other endpoints ------------------------------------------------------------


def test_tags_show_ps_and_version(client: ollama.Client, http: httpx.Client) -> None:
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"smollm2:135m", "gemma3:270m"}
    smol = listed["smollm2:135m"]
    assert smol.details.family == "llama" and smol.details.quantization_level == "Q4_1"
    assert smol.size > 50_000_000 and len(smol.digest) == 64

    shown = client.show("smollm2:135m")
    assert shown.modelinfo["llama.context_length"] == 8192
    assert shown.modelinfo["general.architecture"] == "llama"
    assert "completion" in shown.capabilities and "<|im_start|>" in shown.template
    raw_show = http.post("/api/show", json={"model": "gemma3:270m"}).json()
    assert raw_show["model_info"]["gemma3.context_length"] == 32768
    assert {"modelfile", "parameters", "template", "details", "modified_at"} <= set(raw_show)
    assert http.post("/api/show", json={"model": "nope:1b"}).json() == {
        "error": "model 'nope:1b' not found"
    }

    client.chat(model="smollm2:135m", messages=CHAT, options={"num_predict": 1})
    running = {m.model: m for m in client.ps().models}
    assert running["smollm2:135m"].context_length == 2048
    assert running["smollm2:135m"].expires_at is not None

    version = http.get("/api/version")
    assert version.json() == {"version": "0.12.11"}
    assert http.get("/").text == "Ollama is running"
    assert http.head("/api/tags").status_code == 200


def test_names_match_with_or_without_latest_and_registry_prefix(http: httpx.Client) -> None:
    with OllamaTestServer([ServedModel("tiny", "smollm2")]) as tiny:
        for name in ("tiny", "tiny:latest", "TINY:Latest", "registry.ollama.ai/library/tiny"):
            response = httpx.post(f"{tiny.host}/api/show", json={"model": name}, timeout=30)
            assert response.status_code == 200, name
        answer = httpx.post(
            f"{tiny.host}/api/chat",
            json={
                "model": "tiny:latest",
                "messages": CHAT,
                "stream": False,
                "options": {"num_predict": 1},
            },
            timeout=30,
        ).json()
        assert answer["model"] == "tiny:latest" and answer["done"] is True
        assert (
            httpx.post(f"{tiny.host}/api/show", json={"model": "tiny:1b"}, timeout=30).status_code
            == 404
        )
    assert http.post("/api/show", json={"model": "library/smollm2:135m"}).status_code == 200


def test_langchain_chat_ollama_accepts_the_answers_unchanged(
    ollama_host: str, smollm2_slm: LlamaCppSLM
) -> None:
    from langchain_ollama import ChatOllama

    chat = ChatOllama(
        model="smollm2:135m",
        base_url=ollama_host,
        validate_model_on_init=True,
        logprobs=True,
        top_logprobs=3,
        temperature=0,
        seed=0,
        num_predict=6,
    )
    expected = smollm2_slm.generate([Message("user", QUESTION)], max_tokens=6)
    message = chat.invoke(QUESTION)
    assert message.content == expected.text
    assert_same_tokens(message.response_metadata["logprobs"], expected, k=3)

    chunks = list(chat.stream(QUESTION))
    assert "".join(str(c.content) for c in chunks) == expected.text
    per_chunk = [
        c.response_metadata["logprobs"] for c in chunks if c.response_metadata.get("logprobs")
    ]
    assert len(per_chunk) == 6 and all(len(entries) == 1 for entries in per_chunk)

    with pytest.raises(ValueError, match="not found"):
        ChatOllama(model="nope:1b", base_url=ollama_host, validate_model_on_init=True)


def test_llamaindex_ollama_completes_and_chats(
    ollama_server: OllamaTestServer, ollama_host: str
) -> None:
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.ollama import Ollama

    llm = Ollama(
        model="smollm2:135m",
        base_url=ollama_host,
        request_timeout=60,
        additional_kwargs={"num_predict": 6},
    )
    completion = llm.complete(QUESTION)
    assert isinstance(completion.text, str) and completion.raw["done"] is True
    assert completion.raw["eval_count"] <= 6
    assert llm.metadata.context_window == 8192  # read from /api/show's model_info

    reply = llm.chat([ChatMessage(role="user", content=QUESTION)])
    assert reply.message.role == "assistant" and reply.raw["eval_count"] <= 6

    sent = [r for r in ollama_server.requests if r.path == "/api/chat"][-1].body
    assert sent["options"]["temperature"] is None  # LlamaIndex sends nulls; accepted
    assert any(r.path == "/api/show" for r in ollama_server.requests)


# -- the fault switches, seen on the wire ----------------------------------------------


def test_error_line_arrives_inside_a_200_stream(
    ollama_server: OllamaTestServer, http: httpx.Client
) -> None:
    fault = ollama_server.faults.set("error_line", after=2, message="runner crashed")
    response = http.post(
        "/api/chat",
        json={"model": "smollm2:135m", "messages": CHAT, "options": {"num_predict": 6}},
    )
    assert response.status_code == 200
    objects = ndjson(response)
    assert len(objects) == 3 and objects[-1] == {"error": "runner crashed"}
    assert fault.hits == 1


def test_refused_connections_come_back_when_the_fault_is_cleared(
    ollama_server: OllamaTestServer, http: httpx.Client
) -> None:
    assert http.get("/api/version").status_code == 200  # a pooled keep-alive connection
    ollama_server.faults.set("refuse")
    with pytest.raises(httpx.ConnectError):
        http.get("/api/version")
    ollama_server.faults.clear()
    assert http.get("/api/version").json() == {"version": "0.12.11"}


def test_a_stall_ends_when_the_fault_is_cleared(
    ollama_server: OllamaTestServer, ollama_host: str
) -> None:
    fault = ollama_server.faults.set("stall", seconds=120, endpoints=("version",))
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(httpx.get(f"{ollama_host}/api/version", timeout=60))
        except httpx.HTTPError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    deadline = time.monotonic() + 10
    while fault.hits == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    ollama_server.faults.clear()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - started < 5
    assert isinstance(outcome[0], httpx.RemoteProtocolError), "a released stall hangs up"


def test_faults_can_be_scoped_rationed_and_counted(
    ollama_server: OllamaTestServer, http: httpx.Client
) -> None:
    faults = ollama_server.faults
    fault = faults.set("status", status=503, model="gemma3", endpoints="show", times=1)
    assert http.post("/api/show", json={"model": "gemma3:270m"}).status_code == 200
    assert fault.hits == 0  # "gemma3" means gemma3:latest, which is not gemma3:270m
    faults.clear()
    fault = faults.set("status", status=503, model="gemma3:270m", endpoints="show", times=1)
    first = http.post("/api/show", json={"model": "gemma3:270m"})
    assert (first.status_code, first.json()["error"]) == (503, fault.message)
    assert http.post("/api/show", json={"model": "gemma3:270m"}).status_code == 200
    assert fault.hits == 1 and not faults.active

    with faults.inject("not_found", model="gemma3:270m", endpoints=("tags", "show")):
        names = [m["name"] for m in http.get("/api/tags").json()["models"]]
        assert names == ["smollm2:135m"]
    assert len(http.get("/api/tags").json()["models"]) == 2


def test_bad_logprobs_are_sent_as_nan_and_infinity(
    ollama_server: OllamaTestServer, http: httpx.Client
) -> None:
    payload = {
        "model": "smollm2:135m",
        "messages": CHAT,
        "stream": False,
        "logprobs": True,
        "options": {"num_predict": 3, "temperature": 0},
    }
    with ollama_server.faults.inject("bad_logprobs", index=1):
        text = http.post("/api/chat", json=payload).text
    assert '"logprob":NaN' in text
    with ollama_server.faults.inject("bad_logprobs", value=float("-inf")):
        text = http.post("/api/chat", json=payload).text
    assert '"logprob":-Infinity' in text


def test_a_dropped_stream_is_an_incomplete_chunked_body(
    ollama_server: OllamaTestServer, http: httpx.Client
) -> None:
    ollama_server.faults.set("drop_mid", after=1)
    with (
        pytest.raises(httpx.RemoteProtocolError),
        http.stream(
            "POST",
            "/api/chat",
            json={"model": "smollm2:135m", "messages": CHAT, "options": {"num_predict": 4}},
        ) as response,
    ):
        lines = list(response.iter_lines())
        pytest.fail(f"the stream ended cleanly after {lines}")

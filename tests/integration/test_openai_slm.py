"""``OpenAICompatibleSLM`` against the test server's ``/v1``: the same answers as in process.

The server runs the same ``LlamaCppSLM`` instances the fixtures hand out, so
for a greedy answer the text, the tokens, every logprob and the usage must be
identical whichever way they were fetched, through the official ``openai``
client on either endpoint. Then the backend goes through the Router in every
mode, through both faces, and by spec.
"""

from __future__ import annotations

import logging
import socket
import traceback
from typing import Any

import numpy as np
import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    Generation,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    OpenAICompatibleSLM,
    Router,
    SLMError,
    SLMUnavailableError,
    ThresholdPolicy,
    slm_from_spec,
)
from confidence_router._accumulate import accumulate
from confidence_router.backends.spec import SLMSpec, parse_slm_spec
from tests.support.ollama_server import OllamaTestServer

pytest.importorskip("openai")

QUESTION = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
PROMPT = [Message("user", "The capital of France is")]
TOKENS = 8
SECRET = "sk-test-OPENAI-SECRET-9191"


def _header(request: Any, name: str) -> str | None:
    return next((v for k, v in request.headers.items() if k.lower() == name), None)


def assert_same_generation(got: Generation, expected: Generation, model: str) -> None:
    assert got.model == model
    assert got.text == expected.text
    assert got.tokens == expected.tokens
    assert got.top_tokens == expected.top_tokens
    np.testing.assert_allclose(got.token_logprobs, expected.token_logprobs, rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.top_logprobs, expected.top_logprobs, rtol=0, atol=1e-6)
    assert got.usage == expected.usage
    assert got.finish_reason == expected.finish_reason
    assert got.has_logprobs


@pytest.fixture(scope="module")
def v1(ollama_server: OllamaTestServer) -> str:
    return f"{ollama_server.host}/v1"


@pytest.fixture
def smol(v1: str) -> OpenAICompatibleSLM:
    return OpenAICompatibleSLM("smollm2:135m", base_url=v1, max_tokens=TOKENS, timeout=60)


@pytest.fixture
def gemma(v1: str) -> OpenAICompatibleSLM:
    return OpenAICompatibleSLM(
        "gemma3:270m", base_url=v1, prompt_format="completion", max_tokens=TOKENS, timeout=60
    )


@pytest.fixture(scope="module")
def smol_expected(smollm2_slm: LlamaCppSLM) -> Generation:
    return smollm2_slm.generate(QUESTION, max_tokens=TOKENS)


# -- the four entry points equal the in-process model -------------------------------------


def test_generate_equals_the_in_process_model(
    smol: OpenAICompatibleSLM, smol_expected: Generation
) -> None:
    got = smol.generate(QUESTION)
    assert_same_generation(got, smol_expected, "smollm2:135m")
    assert got.usage.completion_tokens == len(got.token_logprobs) > 0
    assert got.top_logprobs.shape == (len(got.tokens), 5)


async def test_agenerate_equals_the_in_process_model(
    smol: OpenAICompatibleSLM, smol_expected: Generation
) -> None:
    assert_same_generation(await smol.agenerate(QUESTION), smol_expected, "smollm2:135m")


def test_stream_yields_token_chunks_that_add_up(
    smol: OpenAICompatibleSLM, smol_expected: Generation, smollm2_slm: LlamaCppSLM
) -> None:
    chunks = list(smol.stream(QUESTION))
    in_process = list(smollm2_slm.stream(QUESTION, max_tokens=TOKENS))
    assert [c.tokens for c in chunks[:-1]] == [c.tokens for c in in_process[:-1]]
    assert all(len(c.token_logprobs) == 1 for c in chunks[:-1])
    last = chunks[-1]  # the finish chunk, with the usage chunk folded in
    assert last.finish_reason == smol_expected.finish_reason
    assert last.usage == smol_expected.usage
    assert_same_generation(
        accumulate(chunks, model="smollm2:135m", latency_s=0.0, has_logprobs=True),
        smol_expected,
        "smollm2:135m",
    )


async def test_astream_yields_the_same_chunks_as_stream(
    smol: OpenAICompatibleSLM, smol_expected: Generation
) -> None:
    chunks = [c async for c in smol.astream(QUESTION)]
    assert len(chunks) == len(smol_expected.tokens) + 1  # one per token, then the final one
    assert chunks[-1].usage == smol_expected.usage
    assert_same_generation(
        accumulate(chunks, model="smollm2:135m", latency_s=0.0, has_logprobs=True),
        smol_expected,
        "smollm2:135m",
    )


async def test_completion_endpoint_equals_the_in_process_base_model(
    gemma: OpenAICompatibleSLM, gemma3_slm: LlamaCppSLM
) -> None:
    expected = gemma3_slm.generate(PROMPT, max_tokens=TOKENS)
    assert_same_generation(gemma.generate(PROMPT), expected, "gemma3:270m")
    assert_same_generation(await gemma.agenerate(PROMPT), expected, "gemma3:270m")
    streamed = [c async for c in gemma.astream(PROMPT)]
    got = accumulate(streamed, model="gemma3:270m", latency_s=0.0, has_logprobs=True)
    assert_same_generation(got, expected, "gemma3:270m")


def test_stream_usage_can_be_turned_off(v1: str, smol_expected: Generation) -> None:
    slm = OpenAICompatibleSLM("smollm2:135m", base_url=v1, max_tokens=TOKENS, stream_usage=False)
    chunks = list(slm.stream(QUESTION))
    assert chunks[-1].finish_reason == smol_expected.finish_reason
    assert all(c.usage is None for c in chunks)
    assert "".join(c.text for c in chunks) == smol_expected.text


def test_stop_and_max_tokens_per_call(smol: OpenAICompatibleSLM, smollm2_slm: LlamaCppSLM) -> None:
    ask = [Message("user", "Count from 1 to 10, separated by commas.")]
    got = smol.generate(ask, stop=["4"], max_tokens=16)
    expected = smollm2_slm.generate(ask, stop=["4"], max_tokens=16)
    assert_same_generation(got, expected, "smollm2:135m")
    assert got.finish_reason == "stop" and "4" not in got.text
    assert len(smol.generate(ask, max_tokens=2).tokens) == 2


def test_top_logprobs_setting_reaches_the_server(v1: str, ollama_server: OllamaTestServer) -> None:
    slm = OpenAICompatibleSLM("smollm2:135m", base_url=v1, top_logprobs=0, max_tokens=3)
    gen = slm.generate(QUESTION)
    assert gen.top_logprobs.shape == (3, 0) and len(gen.token_logprobs) == 3
    sent = ollama_server.requests[-1].body
    assert sent["logprobs"] is True and sent["top_logprobs"] == 1  # k = 0 is "none" elsewhere
    wide = OpenAICompatibleSLM("smollm2:135m", base_url=v1, top_logprobs=20, max_tokens=3)
    assert wide.generate(QUESTION).top_logprobs.shape == (3, 20)
    assert ollama_server.requests[-1].body["top_logprobs"] == 20


def test_what_the_client_sends(smol: OpenAICompatibleSLM, ollama_server: OllamaTestServer) -> None:
    list(smol.stream(QUESTION, stop=["\n"]))
    sent = ollama_server.requests[-1]
    assert sent.path == "/v1/chat/completions"
    assert _header(sent, "authorization") == "Bearer EMPTY"  # no key: what vLLM's docs send
    body = sent.body
    assert body["model"] == "smollm2:135m" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["temperature"], body["seed"], body["max_tokens"]) == (0.0, 0, TOKENS)
    assert body["stop"] == ["\n"]
    assert body["messages"][0] == {"role": "system", "content": QUESTION[0].content}


def test_url_and_key_come_from_the_environment(
    v1: str,
    monkeypatch: pytest.MonkeyPatch,
    smol_expected: Generation,
    ollama_server: OllamaTestServer,
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", v1)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    slm = OpenAICompatibleSLM("smollm2:135m", max_tokens=TOKENS)
    assert slm.base_url == v1
    assert slm.generate(QUESTION).text == smol_expected.text
    assert _header(ollama_server.requests[-1], "authorization") == f"Bearer {SECRET}"
    assert set(slm.list_models()) == {"smollm2:135m", "gemma3:270m"}
    explicit = OpenAICompatibleSLM("smollm2:135m", base_url=v1, api_key="sk-other")
    explicit.list_models()
    assert _header(ollama_server.requests[-1], "authorization") == "Bearer sk-other"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"prompt_format": "json"}, "prompt_format"),
        ({"stop": "\n"}, "stop"),
        ({"timeout": 0}, "timeout"),
        ({"base_url": "localhost:8000/v1"}, "base_url"),
        ({"extra_body": ["x"]}, "extra_body"),
    ],
)
def test_invalid_settings_fail_naming_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        OpenAICompatibleSLM("m", **{"base_url": "http://127.0.0.1:1/v1", **kwargs})
    assert info.value.field == field


# -- specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("openai:gpt-4o-mini", SLMSpec("openai", "gpt-4o-mini")),
        (
            "openai:Qwen/Qwen2.5-1.5B-Instruct@http://gpu:8000/v1",
            SLMSpec("openai", "Qwen/Qwen2.5-1.5B-Instruct", "http://gpu:8000/v1"),
        ),
        (
            "openai:smollm2:135m@https://h:1/v1",
            SLMSpec("openai", "smollm2:135m", "https://h:1/v1"),
        ),
        ("ollama:qwen2.5:1.5b", SLMSpec("ollama", "qwen2.5:1.5b")),
        ("OLLAMA:a@b@http://x:1", SLMSpec("ollama", "a@b", "http://x:1")),
    ],
)
def test_specs_parse(text: str, expected: SLMSpec) -> None:
    assert parse_slm_spec(text) == expected
    assert parse_slm_spec(str(expected)) == expected


@pytest.mark.parametrize("text", ["openai:", "vllm:x@http://h", "qwen2.5:1.5b", "openai:@http://h"])
def test_bad_specs_fail_naming_the_field(text: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_slm_spec(text, "--slm")
    assert info.value.field == "--slm" and "openai:MODEL[@URL]" in str(info.value)


def test_a_spec_builds_the_backend(v1: str, smol_expected: Generation) -> None:
    slm = slm_from_spec(f"openai:smollm2:135m@{v1}", max_tokens=TOKENS)
    assert isinstance(slm, OpenAICompatibleSLM) and slm.base_url == v1
    assert slm.generate(QUESTION).text == smol_expected.text


def test_eval_command_builds_the_backend_from_a_spec(v1: str) -> None:
    from confidence_router.cli.eval import UsageError, build_model

    slm = build_model(
        f"openai:gemma3:270m@{v1}",
        role="slm",
        top_k=3,
        max_tokens=4,
        n_ctx=512,
        prompt_format="completion",
    )
    assert isinstance(slm, OpenAICompatibleSLM)
    assert (slm.base_url, slm.prompt_format, slm.top_logprobs) == (v1, "completion", 3)
    assert slm.generate(PROMPT).top_logprobs.shape == (4, 3)
    with pytest.raises(UsageError, match="openai:MODEL"):
        build_model("openai:", role="slm", top_k=3, max_tokens=4, n_ctx=512)


# -- through the Router ------------------------------------------------------------------


@pytest.fixture
def router(smol: OpenAICompatibleSLM, gemma3_slm: LlamaCppSLM) -> Router:
    return Router(smol, gemma3_slm)


def test_router_keeps_a_confident_answer(router: Router) -> None:
    result = router.invoke(QUESTION)
    assert result.route == "slm" and "Paris" in result.text
    assert result.decision.reason.startswith("confident")
    assert result.slm is not None and result.slm.model == "smollm2:135m"
    assert result.fallback is None and result.slm_error is None
    assert result.usage_by_model["smollm2:135m"].completion_tokens == len(result.slm.tokens)


async def test_router_decides_the_same_in_every_mode(router: Router) -> None:
    sync = router.invoke(QUESTION)
    asynchronous = await router.ainvoke(QUESTION)
    streamed = list(router.stream(QUESTION))
    astreamed = [c async for c in router.astream(QUESTION)]
    batched = router.batch([QUESTION, QUESTION], max_concurrency=2)
    abatched = await router.abatch([QUESTION, QUESTION], max_concurrency=2)
    results = [sync, asynchronous, streamed[-1].result, astreamed[-1].result, *batched, *abatched]
    assert {r.route for r in results} == {"slm"}
    assert {r.text for r in results} == {sync.text}
    assert {r.decision.score for r in results} == {sync.decision.score}
    assert "".join(c.text for c in streamed) == sync.text
    assert "".join(c.text for c in astreamed) == sync.text
    assert streamed[0].decision == sync.decision
    assert router.stats.queries == 8 and router.stats.answered_by_slm == 8


async def test_router_escalates_an_unsure_answer_to_a_real_fallback(
    smol: OpenAICompatibleSLM, gemma: OpenAICompatibleSLM, gemma3_slm: LlamaCppSLM
) -> None:
    # Demanding near-certainty on every token makes SmolLM2 "unsure" here; the
    # fallback is Gemma over the same /v1 (completions endpoint).
    strict = ThresholdPolicy((Bound("min_logprob", min=-0.01),))
    router = Router(smol, gemma, strict)
    result = await router.ainvoke(PROMPT, max_tokens=4)
    assert result.route == "llm" and result.decision.reason.startswith("unsure")
    assert result.fallback is not None and result.fallback.model == "gemma3:270m"
    assert result.text == gemma3_slm.generate(PROMPT, max_tokens=4).text
    assert set(result.usage_by_model) == {"smollm2:135m", "gemma3:270m"}
    chunks = [c async for c in router.astream(PROMPT, max_tokens=4)]
    assert chunks[0].route == "llm" and chunks[-1].result is not None
    assert "".join(c.text for c in chunks) == result.text
    assert router.stats.escalations == 2 and router.stats.slm_failures == 0


# -- through both faces --------------------------------------------------------------------


async def test_langchain_face_takes_the_backend_by_spec(
    v1: str, smol_expected: Generation, ollama_server: OllamaTestServer
) -> None:
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    from langchain_confidence_router import ConfidenceRouterChat

    fallback = ChatOpenAI(
        model="gemma3:270m", base_url=v1, api_key="EMPTY", max_tokens=4, temperature=0
    )
    llm = ConfidenceRouterChat(  # the seed thresholds keep this answer (the default would not)
        slm_model=f"openai:smollm2:135m@{v1}",
        fallback=fallback,
        max_tokens=TOKENS,
        policy=ThresholdPolicy(),
    )
    assert isinstance(llm.router.slm, OpenAICompatibleSLM) and llm.base_url == v1
    messages = [(m.role, m.content) for m in QUESTION]
    message = llm.invoke(messages)
    assert message.text == smol_expected.text
    assert message.response_metadata["routing"]["route"] == "slm"
    assert len(message.response_metadata["logprobs"]["content"]) == len(smol_expected.tokens)
    amessage = await llm.ainvoke(messages)
    streamed = "".join(c.text for c in llm.stream(messages))
    astreamed = "".join([c.text async for c in llm.astream(messages)])
    assert {amessage.text, streamed, astreamed} == {smol_expected.text}
    escalating = ConfidenceRouterChat(
        slm_model="openai:smollm2:135m",
        base_url=v1,
        fallback=fallback,
        policy=ThresholdPolicy((Bound("length", max=0),)),
        max_tokens=TOKENS,
    )
    escalated = await escalating.ainvoke("The capital of France is")
    assert escalated.response_metadata["routing"]["route"] == "llm"
    assert escalated.response_metadata["model_name"] == "gemma3:270m"
    assert ollama_server.requests[-1].path == "/v1/chat/completions"  # ChatOpenAI, unchanged


async def test_llamaindex_face_takes_the_backend_by_spec(
    v1: str, smol_expected: Generation
) -> None:
    pytest.importorskip("llama_index.core")
    from llamaindex_confidence_router import ConfidenceRouterLLM, EmbeddedLLM

    fallback = EmbeddedLLM(
        slm_from_spec(f"openai:gemma3:270m@{v1}", prompt_format="completion", max_tokens=4),
        context_window=2048,
    )
    llm = ConfidenceRouterLLM(  # the seed thresholds keep this answer (the default would not)
        f"openai:smollm2:135m@{v1}", fallback=fallback, num_output=TOKENS, policy=ThresholdPolicy()
    )
    assert isinstance(llm.slm, OpenAICompatibleSLM)
    from llama_index.core.llms import ChatMessage

    chat = [ChatMessage(role=m.role, content=m.content) for m in QUESTION]
    response = llm.chat(chat)
    assert response.message.content == smol_expected.text
    assert response.additional_kwargs["routing"]["route"] == "slm"
    aresponse = await llm.achat(chat)
    pieces = [r.delta async for r in await llm.astream_chat(chat)]
    assert aresponse.message.content == "".join(p or "" for p in pieces) == smol_expected.text


# -- the key never shows ----------------------------------------------------------------------


async def test_the_api_key_never_shows(
    v1: str, caplog: pytest.LogCaptureFixture, ollama_server: OllamaTestServer
) -> None:
    for name in ("confidence_router", "openai", "httpx", "httpcore", ""):
        caplog.set_level(logging.DEBUG, logger=name)
    slm = OpenAICompatibleSLM("smollm2:135m", base_url=v1, api_key=SECRET, max_tokens=3)
    shown = [repr(slm), str(slm), repr(vars(slm)), repr(Router(slm, slm))]
    assert slm.generate(QUESTION).text  # it works with the key...
    assert _header(ollama_server.requests[-1], "authorization") == f"Bearer {SECRET}"
    ollama_server.faults.set("status", status=401, message=f"Incorrect API key provided: {SECRET}")
    with pytest.raises(SLMError) as refused:  # ... and a 401 that quotes it is not repeated
        await slm.agenerate(QUESTION)
    assert "refused the API key" in str(refused.value)
    ollama_server.faults.clear()
    ollama_server.faults.set("error_line", after=1, message=f"key {SECRET} went bad")
    errors = [refused.value]
    for call in (lambda: list(slm.stream(QUESTION)), lambda: slm.generate(QUESTION)):
        with pytest.raises(SLMError) as info:
            call()
        errors.append(info.value)
    ollama_server.faults.clear()
    result = await Router(slm, slm).ainvoke(QUESTION)
    shown.append(str(result.to_dict()))
    for error in errors:
        shown.append("".join(traceback.format_exception(error)) + repr(error.__cause__))
    shown += [r.getMessage() for r in caplog.records]
    assert any("openai" in r.name or "httpx" in r.name for r in caplog.records), "logs were seen"
    for text in shown:
        assert SECRET not in text and "SECRET-9191" not in text


def test_both_faces_hand_their_api_key_to_a_spec_built_slm(
    v1: str, ollama_server: OllamaTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``api_key=`` reaches the server as the bearer token and shows nowhere on the face."""
    pytest.importorskip("llama_index.core")
    from langchain_confidence_router import ConfidenceRouterChat
    from llamaindex_confidence_router import ConfidenceRouterLLM, EmbeddedLLM

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    spec = f"openai:smollm2:135m@{v1}"
    fallback_slm = slm_from_spec(f"openai:gemma3:270m@{v1}", max_tokens=3)
    chat = ConfidenceRouterChat(
        slm_model=spec, api_key=SECRET, fallback=_lc_fallback(v1), max_tokens=TOKENS
    )
    li_fallback = EmbeddedLLM(fallback_slm, context_window=2048)
    llm = ConfidenceRouterLLM(spec, li_fallback, api_key=SECRET, num_output=3)
    for face, ask in (
        (chat, lambda: chat.invoke("Capital of France?")),
        (llm, lambda: llm.complete("Capital of France?")),
    ):
        ask()
        slm_call = next(
            r for r in reversed(ollama_server.requests) if r.body.get("model") == "smollm2:135m"
        )
        assert _header(slm_call, "authorization") == f"Bearer {SECRET}"
        for text in (repr(face), str(face), face.model_dump_json()):
            assert SECRET not in text
    for build in (
        lambda: ConfidenceRouterChat(
            slm_model="ollama:smollm2:135m", api_key=SECRET, fallback=_lc_fallback(v1)
        ),
        lambda: ConfidenceRouterChat(
            slm_model="smollm2:135m", api_key=SECRET, fallback=_lc_fallback(v1)
        ),
        lambda: ConfidenceRouterLLM("smollm2:135m", li_fallback, api_key=SECRET),
    ):
        with pytest.raises(ConfigurationError, match="api_key") as info:
            build()
        assert SECRET not in str(info.value)


def _lc_fallback(v1: str) -> Any:
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model="gemma3:270m", base_url=v1, api_key="EMPTY", max_tokens=3)


@pytest.mark.parametrize("backend", ["openai", "ollama"])
async def test_credentials_in_the_server_url_never_show(backend: str) -> None:
    """A proxy URL with ``user:password@`` or ``?api_key=`` is masked in reprs and errors."""
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://alice:pw-SECRET-7373@127.0.0.1:{port}/v1?api_key=SECRET-7474&region=eu"
    slm: OpenAICompatibleSLM | OllamaSLM
    if backend == "openai":
        slm = OpenAICompatibleSLM("smollm2:135m", base_url=url, timeout=5)
    else:
        slm = OllamaSLM("smollm2:135m", host=url, timeout=5)
    shown = [repr(slm), str(slm), repr(Router(slm, slm))]
    for call in (lambda: slm.generate(QUESTION), lambda: list(slm.stream(QUESTION))):
        with pytest.raises(SLMUnavailableError) as info:
            call()
        shown.append(str(info.value))
    with pytest.raises(SLMUnavailableError) as ainfo:
        await slm.agenerate(QUESTION)
    shown.append(str(ainfo.value))
    for text in shown:
        assert "SECRET" not in text, text
    assert "alice:***@127.0.0.1" in shown[0] and "region=eu" in shown[0]
    assert f"alice:***@127.0.0.1:{port}" in shown[-1]


def test_eval_run_records_traces_from_an_openai_compatible_slm(
    v1: str, tmp_path: Any, gemma3_slm: LlamaCppSLM
) -> None:
    """``confidence-router eval run --slm openai:MODEL@URL`` end to end (two questions)."""
    import json

    from confidence_router.cli.eval import main
    from tests.support.paths import SQUAD_V1_SAMPLE

    argv = ["run", "--data", str(SQUAD_V1_SAMPLE), "--limit", "2", "--max-tokens", "4"]
    argv += ["--slm", f"openai:gemma3:270m@{v1}", "--slm-format", "completion"]
    argv += ["--traces", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "squad_v1.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for record in records:
        slm = record["slm"]
        assert record["config"]["slm"] == "gemma3:270m" and slm["error"] is None
        assert len(slm["logprobs"]) == len(slm["tokens"]) > 0
        assert slm["completion_tokens"] >= len(slm["tokens"])  # a stop token is counted, not shown
        assert slm["signals"]


async def test_a_server_that_ignores_logprobs_escalates_through_both_faces(
    v1: str, ollama_server: OllamaTestServer, gemma3_slm: LlamaCppSLM
) -> None:
    """The MissingLogprobsError row (LM Studio, older Ollama /v1) seen from the faces."""
    pytest.importorskip("langchain_openai")
    from langchain_openai import ChatOpenAI

    from langchain_confidence_router import ConfidenceRouterChat
    from llamaindex_confidence_router import ConfidenceRouterLLM, EmbeddedLLM

    spec = f"openai:smollm2:135m@{v1}"
    fallback = ChatOpenAI(model="gemma3:270m", base_url=v1, api_key="EMPTY", max_tokens=3)
    chat = ConfidenceRouterChat(slm_model=spec, fallback=fallback, max_tokens=3)
    llm = ConfidenceRouterLLM(spec, fallback=EmbeddedLLM(gemma3_slm), num_output=3)
    with ollama_server.faults.inject("no_logprobs", model="smollm2:135m") as fault:
        message = await chat.ainvoke("What is the capital of France?")
        response = await llm.acomplete("What is the capital of France?")
    assert fault.hits == 2
    for routing in (message.response_metadata["routing"], response.additional_kwargs["routing"]):
        assert routing["route"] == "llm" and "missing_logprobs" in routing["slm_error"]
        assert "without logprobs" in routing["reason"]
    assert chat.stats.slm_failures == llm.stats.slm_failures == 1

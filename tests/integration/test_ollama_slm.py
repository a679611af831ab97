"""``OllamaSLM`` against the Ollama-compatible server: the same answers as in process.

The server runs the same ``LlamaCppSLM`` instances the fixtures hand out, so
for a greedy answer the text, the tokens, every logprob and the usage must be
identical whichever way they were fetched.
"""

from __future__ import annotations

import numpy as np
import pytest

from confidence_router import (
    Bound,
    Generation,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    Router,
    ThresholdPolicy,
)
from confidence_router._accumulate import accumulate

QUESTION = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
PROMPT = [Message("user", "The capital of France is")]
TOKENS = 8


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


@pytest.fixture
def smol(ollama_host: str) -> OllamaSLM:
    return OllamaSLM("smollm2:135m", host=ollama_host, max_tokens=TOKENS, timeout=60)


@pytest.fixture
def gemma(ollama_host: str) -> OllamaSLM:
    return OllamaSLM(
        "gemma3:270m",
        host=ollama_host,
        prompt_format="completion",
        max_tokens=TOKENS,
        timeout=60,
    )


@pytest.fixture(scope="module")
def smol_expected(smollm2_slm: LlamaCppSLM) -> Generation:
    return smollm2_slm.generate(QUESTION, max_tokens=TOKENS)


def test_generate_equals_the_in_process_model(smol: OllamaSLM, smol_expected: Generation) -> None:
    got = smol.generate(QUESTION)
    assert_same_generation(got, smol_expected, "smollm2:135m")
    assert got.usage.completion_tokens == len(got.token_logprobs) > 0
    assert got.top_logprobs.shape == (len(got.tokens), 5)


async def test_agenerate_equals_the_in_process_model(
    smol: OllamaSLM, smol_expected: Generation
) -> None:
    assert_same_generation(await smol.agenerate(QUESTION), smol_expected, "smollm2:135m")


def test_stream_yields_token_chunks_that_add_up(
    smol: OllamaSLM, smol_expected: Generation, smollm2_slm: LlamaCppSLM
) -> None:
    chunks = list(smol.stream(QUESTION))
    in_process = list(smollm2_slm.stream(QUESTION, max_tokens=TOKENS))
    assert [c.tokens for c in chunks] == [c.tokens for c in in_process]
    assert all(len(c.token_logprobs) == 1 for c in chunks[:-1])
    last = chunks[-1]
    assert last.finish_reason == smol_expected.finish_reason
    assert last.usage == smol_expected.usage
    assert_same_generation(
        accumulate(chunks, model="smollm2:135m", latency_s=0.0, has_logprobs=True),
        smol_expected,
        "smollm2:135m",
    )


async def test_astream_yields_the_same_chunks_as_stream(
    smol: OllamaSLM, smol_expected: Generation
) -> None:
    chunks = [c async for c in smol.astream(QUESTION)]
    assert len(chunks) == len(smol_expected.tokens) + 1  # one per token, then the final one
    assert_same_generation(
        accumulate(chunks, model="smollm2:135m", latency_s=0.0, has_logprobs=True),
        smol_expected,
        "smollm2:135m",
    )


async def test_completion_format_equals_the_in_process_base_model(
    gemma: OllamaSLM, gemma3_slm: LlamaCppSLM
) -> None:
    expected = gemma3_slm.generate(PROMPT, max_tokens=TOKENS)
    assert_same_generation(gemma.generate(PROMPT), expected, "gemma3:270m")
    assert_same_generation(await gemma.agenerate(PROMPT), expected, "gemma3:270m")


def test_stop_and_max_tokens_per_call(smol: OllamaSLM, smollm2_slm: LlamaCppSLM) -> None:
    ask = [Message("user", "Count from 1 to 10, separated by commas.")]
    got = smol.generate(ask, stop=["4"], max_tokens=16)
    expected = smollm2_slm.generate(ask, stop=["4"], max_tokens=16)
    assert_same_generation(got, expected, "smollm2:135m")
    assert got.finish_reason == "stop" and "4" not in got.text
    assert len(smol.generate(ask, max_tokens=2).tokens) == 2


def test_top_logprobs_setting_reaches_the_server(ollama_host: str) -> None:
    slm = OllamaSLM("smollm2:135m", host=ollama_host, top_logprobs=0, max_tokens=3)
    gen = slm.generate(QUESTION)
    assert gen.top_logprobs.shape == (3, 0) and len(gen.token_logprobs) == 3
    wide = OllamaSLM("smollm2:135m", host=ollama_host, top_logprobs=20, max_tokens=3)
    assert wide.generate(QUESTION).top_logprobs.shape == (3, 20)


def test_host_comes_from_the_ollama_host_variable(
    ollama_host: str, monkeypatch: pytest.MonkeyPatch, smol_expected: Generation
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_host)
    slm = OllamaSLM("smollm2:135m", max_tokens=TOKENS)
    assert slm.host == ollama_host
    assert slm.generate(QUESTION).text == smol_expected.text
    assert set(slm.list_models()) == {"smollm2:135m", "gemma3:270m"}


@pytest.fixture
def router(smol: OllamaSLM, gemma3_slm: LlamaCppSLM) -> Router:
    return Router(smol, gemma3_slm)


def test_router_keeps_a_confident_ollama_answer(router: Router) -> None:
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
    assert streamed[0].decision == sync.decision
    assert router.stats.queries == 8 and router.stats.answered_by_slm == 8


async def test_router_escalates_an_unsure_ollama_answer_to_a_real_fallback(
    smol: OllamaSLM, gemma3_slm: LlamaCppSLM
) -> None:
    # Demanding near-certainty on every token makes SmolLM2 "unsure" here.
    strict = ThresholdPolicy((Bound("min_logprob", min=-0.01),))
    router = Router(smol, gemma3_slm, strict)
    result = await router.ainvoke(PROMPT, max_tokens=4)
    assert result.route == "llm" and result.decision.reason.startswith("unsure")
    assert result.fallback is not None and result.fallback.model == "gemma3-270m"
    assert result.text == gemma3_slm.generate(PROMPT, max_tokens=4).text
    assert set(result.usage_by_model) == {"smollm2:135m", "gemma3-270m"}
    chunks = [c async for c in router.astream(PROMPT, max_tokens=4)]
    assert chunks[0].route == "llm" and chunks[-1].result is not None
    assert "".join(c.text for c in chunks) == result.text
    assert router.stats.escalations == 2 and router.stats.slm_failures == 0


def test_router_over_ollama_for_both_models(ollama_host: str, gemma: OllamaSLM) -> None:
    slm = OllamaSLM("smollm2:135m", host=ollama_host, max_tokens=4)
    strict = ThresholdPolicy((Bound("length", max=0),))  # never keeps the SLM answer
    result = Router(slm, gemma, strict).invoke(PROMPT, max_tokens=4)
    assert result.route == "llm" and result.fallback is not None
    assert result.fallback.model == "gemma3:270m" and result.fallback.has_logprobs

"""The embedded llama.cpp backend: logprobs, streaming, stop sequences, validation."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from confidence_router import (
    ConfigurationError,
    ContextWindowExceededError,
    LlamaCppSLM,
    Message,
    smollm2_path,
)

QUESTION = [Message("user", "What is the capital of France? Answer in one sentence.")]


def test_generation_carries_consistent_per_token_logprobs(smollm2_slm: LlamaCppSLM) -> None:
    gen = smollm2_slm.generate(QUESTION, max_tokens=24)
    n = len(gen.token_logprobs)
    assert gen.has_logprobs and n == gen.usage.completion_tokens > 0
    assert gen.top_logprobs.shape == (n, smollm2_slm.top_logprobs)
    assert np.all(gen.token_logprobs <= 0)
    # greedy decoding picks the most likely token, which heads its own top-k row
    assert np.allclose(gen.token_logprobs, gen.top_logprobs[:, 0])
    assert np.all(np.diff(gen.top_logprobs, axis=1) <= 0)  # rows sorted, best first
    assert "".join(gen.tokens) == gen.text
    assert [row[0] for row in gen.top_tokens] == list(gen.tokens)
    assert gen.usage.prompt_tokens == len(smollm2_slm.tokenize_prompt(QUESTION))


async def test_stream_astream_and_generate_agree(smollm2_slm: LlamaCppSLM) -> None:
    gen = smollm2_slm.generate(QUESTION, max_tokens=16)
    chunks = list(smollm2_slm.stream(QUESTION, max_tokens=16))
    achunks = [c async for c in smollm2_slm.astream(QUESTION, max_tokens=16)]
    agen = await smollm2_slm.agenerate(QUESTION, max_tokens=16)
    for pieces in (chunks, achunks):
        assert "".join(c.text for c in pieces) == gen.text
        streamed = np.concatenate([c.token_logprobs for c in pieces])
        assert np.allclose(streamed, gen.token_logprobs)
        assert pieces[-1].finish_reason == gen.finish_reason and pieces[-1].usage == gen.usage
    assert agen.text == gen.text and np.allclose(agen.token_logprobs, gen.token_logprobs)


@pytest.mark.parametrize("stop", ["a", "ital", "Paris", "never-there"])
def test_stop_sequences_cut_the_text_where_they_start(smollm2_slm: LlamaCppSLM, stop: str) -> None:
    full = smollm2_slm.generate(QUESTION, max_tokens=24).text
    cut = smollm2_slm.generate(QUESTION, max_tokens=24, stop=[stop])
    assert cut.text == full.split(stop)[0]  # a stop inside a token keeps the token's prefix
    streamed = "".join(c.text for c in smollm2_slm.stream(QUESTION, max_tokens=24, stop=[stop]))
    assert streamed == cut.text


def test_max_tokens_ends_with_finish_reason_length(smollm2_slm: LlamaCppSLM) -> None:
    gen = smollm2_slm.generate(QUESTION, max_tokens=2)
    assert gen.finish_reason == "length" and len(gen.token_logprobs) == 2


def test_sampling_is_reproducible_with_a_seed_and_logprobs_ignore_temperature() -> None:
    hot = LlamaCppSLM(smollm2_path(), temperature=1.5, seed=7, top_logprobs=0)
    first, second = (hot.generate(QUESTION, max_tokens=8) for _ in range(2))
    assert first.text == second.text
    assert first.top_logprobs.shape == (len(first.token_logprobs), 0)
    # the first position's distribution does not depend on the temperature
    greedy = LlamaCppSLM(smollm2_path(), top_logprobs=3).generate(QUESTION, max_tokens=1)
    sampled = LlamaCppSLM(smollm2_path(), temperature=1.5, seed=7, top_logprobs=3).generate(
        QUESTION, max_tokens=1
    )
    assert np.allclose(sampled.top_logprobs[0], greedy.top_logprobs[0], atol=1e-6)


def test_a_prompt_longer_than_the_context_raises_a_typed_error() -> None:
    small = LlamaCppSLM(smollm2_path(), n_ctx=32)
    with pytest.raises(ContextWindowExceededError, match="context window of 32"):
        small.generate([Message("user", "word " * 100)])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": -1.0}, "temperature"),
        ({"prompt_format": "json"}, "prompt_format"),
        ({"stop": "\n"}, "stop"),
        ({"n_ctx": 4}, "n_ctx"),
    ],
)
def test_invalid_settings_fail_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        LlamaCppSLM(smollm2_path(), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_a_missing_model_file_fails_at_construction(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="no GGUF file"):
        LlamaCppSLM(tmp_path / "missing.gguf")


def test_a_file_llama_cpp_cannot_read_fails_with_its_reason(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    with pytest.raises(ConfigurationError, match="failed to read header") as info:
        LlamaCppSLM(broken, prompt_format="completion")
    assert info.value.field == "model_path"


def test_loading_gemma_writes_nothing_to_stderr_and_logs_its_notices(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="confidence_router.llama_cpp"):
        slm = LlamaCppSLM.gemma3()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    notices = [r for r in caplog.records if "full-size SWA cache" in r.getMessage()]
    assert [r.levelno for r in notices] == [logging.INFO]
    assert slm.generate([Message("user", "The capital of France is")], max_tokens=2).text
    assert capfd.readouterr().err == ""

"""The test server's logprobs against an independent computation: llama-cpp-python's own.

The project's test server computes logprobs with the core's ``LlamaCppSLM``
(so "HTTP equals in process" alone would only check the transport). Here the
same prompt text goes to ``llama_cpp.Llama.create_completion(prompt,
logprobs=k, temperature=0)`` on the same GGUF file, a separate model instance
with ``logits_all=True``, whose logprobs come from llama-cpp-python's own
``Llama.logits_to_logprobs``: the log-softmax of the raw logits over the whole
vocabulary, in float32, before temperature or penalties. The core's are the
same quantity (raw logits, full vocabulary, float64), so they agree token by
token to float32 rounding (measured: below 1e-6; the tolerance is 1e-4).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from confidence_router.backends.models import smollm2_path
from tests.support.ollama_server import OllamaTestServer

llama_cpp = pytest.importorskip("llama_cpp")

PROMPT = "The capital of France is"
TOKENS = 8
K = 5
ATOL = 1e-4


@pytest.fixture(scope="module")
def independent() -> Iterator[Any]:
    """llama-cpp-python's completion of PROMPT on its own instance of SmolLM2."""
    llm = llama_cpp.Llama(
        str(smollm2_path()), n_ctx=512, logits_all=True, n_threads=1, seed=0, verbose=False
    )
    try:
        yield llm.create_completion(
            PROMPT, logprobs=K, max_tokens=TOKENS, temperature=0, repeat_penalty=1.0
        )
    finally:
        llm.close()


def test_the_test_server_logprobs_equal_llama_cpp_python_s_own(
    independent: Any, ollama_server: OllamaTestServer
) -> None:
    body = {
        "model": "smollm2:135m",
        "prompt": PROMPT,
        "max_tokens": TOKENS,
        "temperature": 0,
        "logprobs": K,
    }
    served = httpx.post(f"{ollama_server.host}/v1/completions", json=body, timeout=120).json()
    ours = served["choices"][0]
    theirs = independent["choices"][0]
    assert ours["text"] == theirs["text"] and len(ours["logprobs"]["tokens"]) == TOKENS
    assert ours["logprobs"]["tokens"] == theirs["logprobs"]["tokens"]
    np.testing.assert_allclose(
        ours["logprobs"]["token_logprobs"],
        np.asarray(theirs["logprobs"]["token_logprobs"], dtype=np.float64),
        rtol=0,
        atol=ATOL,
    )
    for mine, other in zip(ours["logprobs"]["top_logprobs"], theirs["logprobs"]["top_logprobs"]):
        # llama-cpp-python adds the chosen token to its top-k dict; compare the best k
        best = sorted(other.items(), key=lambda kv: -kv[1])[:K]
        assert list(mine) == [token for token, _ in best]
        np.testing.assert_allclose(
            list(mine.values()), [float(v) for _, v in best], rtol=0, atol=ATOL
        )
    # a real distribution: the chosen tokens are greedy and the top-k mass is below 1
    for top in ours["logprobs"]["top_logprobs"]:
        assert sum(np.exp(list(top.values()))) <= 1.0 + 1e-6
    assert ours["logprobs"]["token_logprobs"] == [
        max(top.values()) for top in ours["logprobs"]["top_logprobs"]
    ]

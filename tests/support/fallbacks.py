"""Real fallback models the face tests escalate to: Gemma 3 on the test server."""

from __future__ import annotations

from typing import Any

GEMMA3 = "gemma3:270m"


def llamaindex_gemma(host: str, tokens: int) -> Any:
    """LlamaIndex's own ``Ollama`` LLM for Gemma 3, greedy, answers of at most ``tokens``."""
    from llama_index.llms.ollama import Ollama

    return Ollama(
        model=GEMMA3,
        base_url=host,
        request_timeout=60.0,
        temperature=0.0,
        context_window=2048,
        additional_kwargs={"num_predict": tokens, "seed": 0},
    )

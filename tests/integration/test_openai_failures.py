"""The backend failure contract for ``OpenAICompatibleSLM``, through the real ``openai`` client.

Every row of ``tests/contracts/backend_failures.py`` against the test server's
``/v1/chat/completions``, with the same fault switches as the Ollama rows
(``test_failures.py``); the hints name what an OpenAI-API user checks (``base_url``,
``/models``).
"""

from __future__ import annotations

from typing import ClassVar

import pytest

from confidence_router import OpenAICompatibleSLM
from tests.contracts.backend_failures import SLM_TOKENS, BackendFailureContract

pytest.importorskip("openai")


class TestOpenAICompatibleFailures(BackendFailureContract):
    hints: ClassVar[dict[str, tuple[str, ...]]] = {
        "not_listening": ("base_url",),
        "unknown_model": ("does not exist", "/models"),
        "not_found": ("no model",),
        "context_window_exceeded": ("maximum context length is 64 tokens",),
    }

    def make_slm(
        self, model: str, host: str, *, timeout: float = 30.0, num_ctx: int | None = None
    ) -> OpenAICompatibleSLM:
        return OpenAICompatibleSLM(
            model,
            base_url=f"{host}/v1",
            timeout=timeout,
            max_tokens=SLM_TOKENS,
            # the test server's context window, per request
            extra_body=None if num_ctx is None else {"num_ctx": num_ctx},
        )

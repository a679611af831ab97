"""The backend failure contract for ``OllamaSLM``, through the real ``ollama`` client.

Every row of ``tests/contracts/backend_failures.py`` against the test server's Ollama
API; the hints name what an Ollama user does next (``ollama serve``, ``ollama pull``).
"""

from __future__ import annotations

from typing import ClassVar

from confidence_router import OllamaSLM
from tests.contracts.backend_failures import SLM_TOKENS, BackendFailureContract


class TestOllamaFailures(BackendFailureContract):
    hints: ClassVar[dict[str, tuple[str, ...]]] = {
        "not_listening": ("ollama serve",),
        "unknown_model": ("not found", "ollama pull"),
        "not_found": ("not found",),
    }

    def make_slm(
        self, model: str, host: str, *, timeout: float = 30.0, num_ctx: int | None = None
    ) -> OllamaSLM:
        return OllamaSLM(model, host=host, timeout=timeout, max_tokens=SLM_TOKENS, num_ctx=num_ctx)

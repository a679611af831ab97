"""Served SLMs named by one string: ``ollama:MODEL[@URL]`` or ``openai:MODEL[@URL]``.

The same spelling works in ``ConfidenceRouterChat(slm_model=...)``,
``ConfidenceRouterLLM(slm)``, ``confidence-router rag --slm`` and
``confidence-router eval --slm/--fallback``::

    ollama:qwen2.5:1.5b                                   # OLLAMA_HOST or the default host
    ollama:qwen2.5:1.5b@http://gpu-box:11434
    openai:Qwen/Qwen2.5-1.5B-Instruct@http://gpu-box:8000/v1   # vLLM, SGLang, llama-server...
    openai:smollm2:135m@http://127.0.0.1:11434/v1               # Ollama's OpenAI endpoint
    openai:gpt-4o-mini                                    # OPENAI_BASE_URL, else OpenAI itself

Only ``@http://`` or ``@https://`` starts the URL, so model names keep their
colons, slashes and any other ``@``. The API key of an ``openai:`` SLM comes
from ``OPENAI_API_KEY`` (never from the spec, which ends up in logs and argv).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigurationError
from .base import SLMBackend

Provider = Literal["ollama", "openai"]
PROVIDERS: tuple[Provider, ...] = ("ollama", "openai")
_SPEC = re.compile(r"(?P<provider>[A-Za-z_]+):(?P<model>.+?)(?:@(?P<url>https?://\S+))?")


@dataclass(frozen=True)
class SLMSpec:
    """A parsed spec: which API, which model, which server (None: the environment's)."""

    provider: Provider
    model: str
    url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.url}" if self.url else "")


def is_served_spec(text: str) -> bool:
    """Whether ``text`` names a served SLM by spec (``ollama:`` or ``openai:``)."""
    provider = text.partition(":")[0].strip().lower()
    return provider in PROVIDERS and ":" in text


def parse_slm_spec(text: str, field: str = "slm") -> SLMSpec:
    """Split ``PROVIDER:MODEL[@URL]``; ConfigurationError naming ``field`` if it is not one."""
    match = _SPEC.fullmatch(text.strip()) if isinstance(text, str) else None
    provider = match["provider"].lower() if match else ""
    model = match["model"].strip() if match else ""
    if match is None or provider not in PROVIDERS or not model or re.match(r"@https?://", model):
        raise ConfigurationError(
            field,
            f"expected ollama:MODEL[@URL] or openai:MODEL[@URL] "
            f"(e.g. openai:Qwen/Qwen2.5-1.5B-Instruct@http://localhost:8000/v1), got {text!r}",
        )
    return SLMSpec(provider, model, match["url"])


def slm_from_spec(
    spec: str | SLMSpec,
    *,
    field: str = "slm",
    default_url: str | None = None,
    **options: Any,
) -> SLMBackend:
    """The backend a spec names. ``default_url`` applies when the spec has no ``@URL``;
    ``options`` go to the backend (``timeout``, ``max_tokens``, ``top_logprobs``, ...)."""
    parsed = spec if isinstance(spec, SLMSpec) else parse_slm_spec(spec, field)
    url = parsed.url or default_url
    if parsed.provider == "ollama":
        from .ollama import OllamaSLM

        return OllamaSLM(parsed.model, host=url, **options)
    from .openai_compat import OpenAICompatibleSLM

    return OpenAICompatibleSLM(parsed.model, base_url=url, **options)


__all__ = ["PROVIDERS", "SLMSpec", "is_served_spec", "parse_slm_spec", "slm_from_spec"]

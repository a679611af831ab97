"""Models named by one string, parsed here and nowhere else.

Served SLMs: `ollama:MODEL[@URL]` or `openai:MODEL[@URL]`. The same spelling
works in `ConfidenceRouterChat(slm_model=...)`, `ConfidenceRouterLLM(slm)`,
`confidence-router rag --slm/--fallback` and `confidence-router eval
--slm/--fallback`:

```text
ollama:qwen2.5:1.5b                                   # OLLAMA_HOST or the default host
ollama:qwen2.5:1.5b@http://gpu-box:11434
openai:Qwen/Qwen2.5-1.5B-Instruct@http://gpu-box:8000/v1   # vLLM, SGLang, llama-server...
openai:smollm2:135m@http://127.0.0.1:11434/v1               # Ollama's OpenAI endpoint
openai:gpt-4o-mini                                    # OPENAI_BASE_URL, else OpenAI itself
```

Only `@http://` or `@https://` starts the URL, so model names keep their
colons, slashes and any other `@`. The API key of an `openai:` SLM comes
from `OPENAI_API_KEY` (never from the spec, which ends up in logs and argv).

The RAG app's `--slm`/`--fallback` also take `embedded[:NAME]` (a model run
in-process) and, for the fallback, any `PROVIDER:MODEL` LangChain's
`init_chat_model` knows: `parse_model_spec` reads those, and reads the two
served providers exactly as `parse_slm_spec` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import ConfigurationError
from .base import SLMBackend

Provider = Literal["ollama", "openai"]
PROVIDERS: tuple[Provider, ...] = ("ollama", "openai")
EMBEDDED = "embedded"
_MODEL_AT_URL = re.compile(r"(?P<model>.+?)(?:@(?P<url>https?://\S+))?")


@dataclass(frozen=True)
class SLMSpec:
    """A parsed spec: which API, which model, which server (None: the environment's)."""

    provider: Provider
    model: str
    url: str | None = None

    def __str__(self) -> str:
        return f"{self.provider}:{self.model}" + (f"@{self.url}" if self.url else "")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed `embedded[:NAME]` or `PROVIDER:MODEL[@URL]`.

    `provider` is lower case: `embedded`, `ollama`, `openai` or another
    LangChain provider. `model` is empty for the default embedded model. `url`
    is the server of an `ollama:`/`openai:` spec (None: the environment's);
    another provider keeps everything after the colon as its model. `raw` is
    the text as given, for messages.
    """

    provider: str
    model: str
    url: str | None = None
    raw: str = field(compare=False, default="")

    def as_slm_spec(self) -> SLMSpec | None:
        """The served SLM this names (`ollama:`/`openai:`), None for any other provider."""
        if self.provider in PROVIDERS:
            return SLMSpec(self.provider, self.model, self.url)
        return None


def _split(text: str) -> tuple[str, str, str | None]:
    """`PROVIDER:MODEL[@URL]` as (lower-case provider, model, URL); missing parts empty."""
    provider, _, rest = text.strip().partition(":")
    match = _MODEL_AT_URL.fullmatch(rest)
    if match is None:
        return provider.lower(), "", None
    return provider.lower(), match["model"].strip(), match["url"]


def is_served_spec(text: str) -> bool:
    """Whether `text` names a served SLM by spec (`ollama:` or `openai:`)."""
    provider = text.partition(":")[0].strip().lower()
    return provider in PROVIDERS and ":" in text


def parse_slm_spec(text: str, field: str = "slm") -> SLMSpec:
    """Split `PROVIDER:MODEL[@URL]`; ConfigurationError naming `field` if it is not one."""
    provider, model, url = _split(text) if isinstance(text, str) else ("", "", None)
    if provider not in PROVIDERS or not model or re.match(r"@https?://", model):
        raise ConfigurationError(
            field,
            f"expected ollama:MODEL[@URL] or openai:MODEL[@URL] "
            f"(e.g. openai:Qwen/Qwen2.5-1.5B-Instruct@http://localhost:8000/v1), got {text!r}",
        )
    return SLMSpec(provider, model, url)


def parse_model_spec(text: str, field: str = "model") -> ModelSpec:
    """`embedded[:NAME]` or `PROVIDER:MODEL[@URL]`; ConfigurationError naming `field`
    if it is neither, or if an `ollama:`/`openai:` spec fails `parse_slm_spec`."""
    stripped = text.strip()
    if stripped in (EMBEDDED, ""):
        return ModelSpec(EMBEDDED, "", None, text)
    provider, sep, rest = stripped.partition(":")
    if not sep or not provider or not rest:
        raise ConfigurationError(
            field,
            f"expected 'embedded' or PROVIDER:MODEL (e.g. ollama:qwen2.5:1.5b), got {text!r}",
        )
    if provider.lower() in PROVIDERS:
        served = parse_slm_spec(stripped, field)
        return ModelSpec(served.provider, served.model, served.url, text)
    return ModelSpec(provider.lower(), rest, None, text)


def slm_from_spec(
    spec: str | SLMSpec,
    *,
    field: str = "slm",
    default_url: str | None = None,
    **options: Any,
) -> SLMBackend:
    """The backend a spec names: one parser for every face and CLI.

    Args:
        spec: `ollama:MODEL[@URL]` or `openai:MODEL[@URL]`, or a parsed `SLMSpec`.
        field: the setting named in errors (`slm`, `--slm`, ...).
        default_url: the server when the spec has no `@URL`.
        **options: passed to the backend (`timeout`, `max_tokens`, `top_logprobs`, ...).

    Returns:
        An `OllamaSLM` or an `OpenAICompatibleSLM`; no request is sent yet.

    Raises:
        ConfigurationError: a spec that names no known provider or no model, or
            an option value the backend rejects.
    """
    parsed = spec if isinstance(spec, SLMSpec) else parse_slm_spec(spec, field)
    url = parsed.url or default_url
    if parsed.provider == "ollama":
        from .ollama import OllamaSLM

        return OllamaSLM(parsed.model, host=url, **options)
    from .openai_compat import OpenAICompatibleSLM

    return OpenAICompatibleSLM(parsed.model, base_url=url, **options)


__all__ = [
    "EMBEDDED",
    "PROVIDERS",
    "ModelSpec",
    "SLMSpec",
    "is_served_spec",
    "parse_model_spec",
    "parse_slm_spec",
    "slm_from_spec",
]

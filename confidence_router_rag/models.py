"""The models: the small model that answers first, the fallback, and the router between them.

The embedded default needs no server and no network: Qwen2.5-Coder-0.5B-Instruct
answers first in-process (the core's `LlamaCppSLM`), and
Qwen2.5-Coder-1.5B-Instruct, run by `ChatLlamaCpp` (`._community`), is the
fallback; `--tiny` swaps in SmolLM2-135M and Gemma 3 270M. Served models are
named by spec (`ollama:MODEL[@URL]`, `openai:MODEL[@URL]`, or any
`PROVIDER:MODEL` LangChain's `init_chat_model` knows, for the fallback).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from confidence_router.backends.base import SLMBackend
from confidence_router.backends.spec import ModelSpec, slm_from_spec
from confidence_router.errors import ConfigurationError
from confidence_router.observe.ledger import Price

from . import _community
from .chain import BASE_MODEL_DEMO

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

#: Embedded models by name; the first is the default.
EMBEDDED_SLMS = ("qwen-0.5b", "smollm2", "gemma3")
EMBEDDED_FALLBACKS = ("qwen-1.5b", "gemma3")
#: `--tiny`: the fast pair for tests and slow machines (weak: see the README).
TINY_PAIR = ("embedded:smollm2", "embedded:gemma3")


def _completion_prompt(*, messages: list[dict[str, Any]], **_: Any) -> Any:
    """llama.cpp chat formatter for a base model: the system text, the worked
    example (unless the messages carry it already), then the rest, blank-line separated."""
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    system = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    rest = [str(m.get("content") or "") for m in messages if m.get("role") != "system"]
    demo = [] if any(BASE_MODEL_DEMO in text for text in rest) else [BASE_MODEL_DEMO]
    return ChatFormatterResponse(prompt="\n\n".join([*system, *demo, *rest]))


def completion_chat_handler() -> Any:
    """A llama-cpp-python `chat_handler` that gives a base model a completion prompt
    (see `embedded_fallback`), for `ChatLlamaCpp(model_kwargs={"chat_handler": ...})`."""
    from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler

    return chat_formatter_to_chat_completion_handler(_completion_prompt)  # type: ignore[arg-type]


def embedded_fallback(
    name: str = "qwen-1.5b", *, max_tokens: int = 48, n_ctx: int = 4096
) -> BaseChatModel:
    """An embedded fallback run in-process by langchain-community's `ChatLlamaCpp`.

    `qwen-1.5b` (the default) is Qwen2.5-Coder-1.5B-Instruct with its own chat
    template, read from the GGUF. `gemma3` is Gemma 3 270M, a base model: its
    GGUF has no chat template, so llama-cpp-python would fall back to Llama-2's
    `[INST]` format, which this model only echoes; it gets a plain completion
    prompt instead (system text, one worked example, the question ending in
    `Answer:`) through llama-cpp-python's own `chat_handler` extension point.
    The answer ends at the first newline.
    """
    from confidence_router.backends.models import gemma3_path, qwen_coder_15b_path

    if name not in EMBEDDED_FALLBACKS:
        raise ConfigurationError(
            "fallback", f"unknown embedded model {name!r}; choose one of {EMBEDDED_FALLBACKS}"
        )
    extra: dict[str, Any] = {}
    if name == "gemma3":
        path = gemma3_path()
        extra["model_kwargs"] = {"chat_handler": completion_chat_handler()}
    else:
        path = qwen_coder_15b_path()
    return _community.llama_cpp_chat(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=512,
        temperature=0.0,
        max_tokens=max_tokens,
        stop=["\n"],
        seed=0,
        verbose=False,
        streaming=False,  # the non-streamed path reports token usage
        **extra,
    )


def make_slm(
    spec: ModelSpec, *, max_tokens: int, ollama_host: str | None = None, timeout: float = 60.0
) -> SLMBackend:
    """The small model: embedded llama.cpp (default Qwen2.5-Coder-0.5B-Instruct), an Ollama
    model, or a model on an OpenAI-compatible server (`openai:MODEL[@URL]`)."""
    if spec.provider == "embedded":
        from confidence_router.backends.llama_cpp import LlamaCppSLM

        # One answer line: past the first newline small models ramble.
        name = spec.model or EMBEDDED_SLMS[0]
        if name == "qwen-0.5b":
            return LlamaCppSLM.qwen_coder_05b(max_tokens=max_tokens, stop=["\n"], n_ctx=4096)
        if name == "smollm2":
            return LlamaCppSLM.smollm2(max_tokens=max_tokens, stop=["\n"])
        if name == "gemma3":
            return LlamaCppSLM.gemma3(max_tokens=max_tokens, stop=["\n"])
        raise ConfigurationError(
            "slm", f"unknown embedded model {name!r}; choose one of {EMBEDDED_SLMS}"
        )
    served = spec.as_slm_spec()
    if served is not None:
        return slm_from_spec(
            served,
            default_url=ollama_host if served.provider == "ollama" else None,
            max_tokens=max_tokens,
            timeout=timeout,
        )
    raise ConfigurationError(
        "slm",
        f"the SLM must be 'embedded[:qwen-0.5b|smollm2|gemma3]', 'ollama:MODEL[@URL]' or "
        f"'openai:MODEL[@URL]' (it needs token log-probabilities), got {spec.raw!r}",
    )


def make_fallback(
    spec: ModelSpec, *, max_tokens: int, ollama_host: str | None = None
) -> BaseChatModel:
    """The large model: embedded (default Qwen2.5-Coder-1.5B-Instruct), or any provider
    through `init_chat_model`."""
    if spec.provider == "embedded":
        return embedded_fallback(spec.model or EMBEDDED_FALLBACKS[0], max_tokens=max_tokens)
    from langchain.chat_models import init_chat_model

    kwargs: dict[str, Any] = {"temperature": 0}
    if spec.provider == "openai" and spec.url:  # openai:MODEL@URL: any compatible server
        kwargs["base_url"] = spec.url
        if not os.environ.get("OPENAI_API_KEY"):  # local servers check no key
            kwargs["api_key"] = "EMPTY"
    if spec.provider == "ollama":
        kwargs["num_predict"] = max_tokens
        if spec.url or ollama_host:  # ollama:MODEL@URL names its server, as for --slm
            kwargs["base_url"] = spec.url or ollama_host
    else:
        kwargs["max_tokens"] = max_tokens
    try:
        chat: BaseChatModel = init_chat_model(spec.model, model_provider=spec.provider, **kwargs)
    except ImportError as exc:
        raise ConfigurationError("fallback", f"{spec.raw!r} needs a package: {exc}") from exc
    except Exception as exc:  # unknown provider, missing API key, bad options
        raise ConfigurationError("fallback", f"cannot create {spec.raw!r}: {exc}") from exc
    return chat


def make_chat(
    slm: SLMBackend,
    fallback: Any,
    policy: Any,
    slm_price: Price,
    fallback_price: Price,
    trace: Any = None,
    shadow_rate: float = 0.0,
    stages: Sequence[Any] | None = None,
) -> Any:
    """The router as a LangChain chat model (a `ConfidenceRouterChat`): the SLM answers,
    the fallback takes over when the policy says so; `stages` (the SLMs above the first)
    make it a ladder."""
    from langchain_confidence_router import ConfidenceRouterChat

    ladder: dict[str, Any] = {} if not stages else {"stages": list(stages)}
    return ConfidenceRouterChat(
        slm=slm,
        fallback=fallback,
        policy=policy,
        slm_price=slm_price,
        fallback_price=fallback_price,
        trace=trace,
        shadow_rate=shadow_rate,
        **ladder,
    )


__all__ = [
    "EMBEDDED_FALLBACKS",
    "EMBEDDED_SLMS",
    "TINY_PAIR",
    "completion_chat_handler",
    "embedded_fallback",
    "make_chat",
    "make_fallback",
    "make_slm",
]

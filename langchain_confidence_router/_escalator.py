"""Any LangChain chat model as the core's Escalator (the model the router escalates to)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig

from confidence_router import Generation, IncompleteResponseError, Message, TokenChunk, Usage

from ._messages import to_langchain

# Set by the face around one non-streamed call, so the fallback's run nests
# under the router's run in traces. Streams leave it unset: LangChain gives
# `_stream` no run manager to nest under, and a fallback run that inherited
# the surrounding chain's callbacks would show its tokens a second time in
# `astream_events`. Unset means: run the fallback with no callbacks of its own.
_CALL_CONFIG: ContextVar[RunnableConfig | None] = ContextVar(
    "confidence_router_fallback_config", default=None
)


def _config() -> RunnableConfig:
    return _CALL_CONFIG.get() or {"callbacks": []}


@contextmanager
def fallback_config(config: RunnableConfig | None) -> Iterator[None]:
    """Run the fallback with `config` (callbacks, tags) inside this block."""
    token = _CALL_CONFIG.set(config)
    try:
        yield
    finally:
        _CALL_CONFIG.reset(token)


def model_name_of(chat_model: BaseChatModel) -> str:
    """The name a chat model goes by: its model attribute, file, or LangChain type."""
    for attr in ("model_name", "model", "model_id", "deployment_name"):
        value = getattr(chat_model, attr, None)
        if isinstance(value, str) and value:
            return value
    path = getattr(chat_model, "model_path", None)
    if isinstance(path, (str, Path)) and str(path):
        return Path(path).stem
    return str(chat_model._llm_type)


def _usage(message: BaseMessage) -> Usage:
    """Tokens from `usage_metadata`, else the older `token_usage` convention; a model
    that reported neither has unknown counts (not 0)."""
    usage = getattr(message, "usage_metadata", None)
    if usage:
        return Usage(int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0))
    legacy = message.response_metadata.get("token_usage") or {}
    if isinstance(legacy, dict) and legacy:
        return Usage(
            int(legacy.get("prompt_tokens") or 0), int(legacy.get("completion_tokens") or 0)
        )
    return Usage.reported(None, None)


# Chat models whose streams end with a marker (ChatOllama: Ollama's `done: true`
# object; ChatOpenAI and its kin: the chunk with `finish_reason`). A stream of one of
# them that ends without it was cut; other models may mark nothing, so theirs is trusted.
_MARKING_MODELS = frozenset({"ChatOllama", "BaseChatOpenAI"})


def marks_its_end(chat_model: BaseChatModel) -> bool:
    """Whether this chat model's streams always end with a finish marker."""
    return any(cls.__name__ in _MARKING_MODELS for cls in type(chat_model).__mro__)


def _ended(message: BaseMessage) -> bool:
    """Whether a (merged) streamed message carries its model's finish marker."""
    meta = message.response_metadata
    return bool(
        meta.get("finish_reason")
        or meta.get("done_reason")
        or meta.get("stop_reason")
        or meta.get("done") is True
    )


def _model(message: BaseMessage, default: str) -> str:
    meta = message.response_metadata
    for key in ("model_name", "model"):
        value = meta.get(key)
        if isinstance(value, str) and value:
            return value
    return default


def _finish_reason(message: BaseMessage) -> str:
    meta = message.response_metadata
    value = meta.get("finish_reason") or meta.get("done_reason") or meta.get("stop_reason")
    return str(value) if value else "stop"


class ChatModelEscalator:
    """Adapts a LangChain chat model to the router's Escalator contract.

    The fallback gets the caller's original LangChain messages (see
    `SourcedMessage`) and the stop sequences. `max_tokens`
    is not forwarded: chat models have no common per-call name for it, so the
    fallback keeps the limit it was configured with. Usage and the model name
    are read from what the chat model reports.
    """

    def __init__(self, chat_model: BaseChatModel, *, max_retries: int = 0) -> None:
        self.chat_model = chat_model
        self.model = model_name_of(chat_model)
        self._marks_end = marks_its_end(chat_model)
        self._invoker: Runnable[Any, Any] = (
            chat_model.with_retry(stop_after_attempt=max_retries + 1)
            if max_retries > 0
            else chat_model
        )

    def __repr__(self) -> str:
        return f"ChatModelEscalator(model={self.model!r})"

    def _generation(self, message: BaseMessage, started: float) -> Generation:
        if self._marks_end and not _ended(message):
            raise IncompleteResponseError(
                f"the fallback {self.model!r} answered without its finish marker "
                f"(no finish_reason / done): the answer is incomplete",
                model=self.model,
            )
        return Generation.without_logprobs(
            message.text,
            _model(message, self.model),
            usage=_usage(message),
            latency_s=time.perf_counter() - started,
            finish_reason=_finish_reason(message),
        )

    def _last_chunk(self, full: AIMessageChunk | None) -> TokenChunk:
        """The closing chunk; without a finish reason when the stream was cut (a model
        that marks its end did not), which the router raises as an unfinished answer."""
        if self._marks_end and (full is None or not _ended(full)):
            usage = Usage.reported(None, None) if full is None else _usage(full)
            return TokenChunk("", finish_reason=None, usage=usage)
        if full is None:
            return TokenChunk("", finish_reason="stop", usage=Usage.reported(None, None))
        return TokenChunk("", finish_reason=_finish_reason(full), usage=_usage(full))

    def generate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        started = time.perf_counter()
        answer = self._invoker.invoke(
            to_langchain(messages), _config(), stop=list(stop) if stop else None
        )
        return self._generation(answer, started)

    async def agenerate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        started = time.perf_counter()
        answer = await self._invoker.ainvoke(
            to_langchain(messages), _config(), stop=list(stop) if stop else None
        )
        return self._generation(answer, started)

    def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[TokenChunk]:
        full: AIMessageChunk | None = None
        for chunk in self.chat_model.stream(
            to_langchain(messages), _config(), stop=list(stop) if stop else None
        ):
            full = chunk if full is None else full + chunk
            if chunk.text:
                yield TokenChunk(chunk.text)
        yield self._last_chunk(full)

    async def astream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        full: AIMessageChunk | None = None
        async for chunk in self.chat_model.astream(
            to_langchain(messages), _config(), stop=list(stop) if stop else None
        ):
            full = chunk if full is None else full + chunk
            if chunk.text:
                yield TokenChunk(chunk.text)
        yield self._last_chunk(full)


__all__ = ["ChatModelEscalator", "fallback_config", "model_name_of"]

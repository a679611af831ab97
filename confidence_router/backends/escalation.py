"""Adapting whatever the user gives as a fallback into one Escalator shape."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from ..errors import ConfigurationError, IncompleteResponseError
from ..types import Generation, Message, TokenChunk
from .base import BaseEscalator, Escalator

FallbackResult = Generation | str
SyncFallback = Callable[[list[Message]], FallbackResult]
AsyncFallback = Callable[[list[Message]], Awaitable[FallbackResult]]


def _as_generation(value: FallbackResult, model: str) -> Generation:
    if isinstance(value, Generation):
        return value
    if isinstance(value, str):
        return Generation.without_logprobs(value, model)
    raise TypeError(f"the fallback must return a Generation or a str, got {type(value).__name__}")


class CallableEscalator(BaseEscalator):
    """An Escalator from plain functions: a sync one, an async one, or both.

    With only a sync function, async calls run it in a worker thread; with
    only an async one, sync calls run it in a fresh event loop (and so cannot
    be made from inside a running loop). A function may return a
    `Generation` or just the answer text.
    """

    def __init__(
        self,
        sync: SyncFallback | None = None,
        async_: AsyncFallback | None = None,
        *,
        model: str = "fallback",
    ) -> None:
        if sync is None and async_ is None:
            raise ConfigurationError("fallback", "give a sync function, an async one, or both")
        self._sync = sync
        self._async = async_
        self.model = model

    def _generate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        if self._sync is not None:
            return _as_generation(self._sync(list(messages)), self.model)
        assert self._async is not None
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return _as_generation(asyncio.run(_await(self._async(list(messages)))), self.model)
        raise RuntimeError(
            "this fallback is async-only: use ainvoke/astream/abatch inside an event loop"
        )

    async def _agenerate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        if self._async is not None:
            return _as_generation(await self._async(list(messages)), self.model)
        assert self._sync is not None
        return _as_generation(await asyncio.to_thread(self._sync, list(messages)), self.model)


async def _await(value: Awaitable[FallbackResult]) -> FallbackResult:
    return await value


def as_escalator(fallback: Any) -> Escalator:
    """Accept an Escalator (any object with generate/agenerate, SLM backends
    included), or a plain sync or async callable."""
    if isinstance(fallback, Escalator):
        return fallback
    if inspect.iscoroutinefunction(fallback) or inspect.iscoroutinefunction(
        type(fallback).__call__
    ):
        return CallableEscalator(async_=fallback)
    if callable(fallback):
        return CallableEscalator(sync=fallback)
    raise ConfigurationError(
        "fallback",
        f"must be a callable (messages -> Generation | str) or an object with "
        f"generate/agenerate, got {type(fallback).__name__}",
    )


def stream_escalation(
    escalator: Escalator,
    messages: Sequence[Message],
    *,
    stop: Sequence[str] | None,
    max_tokens: int | None,
) -> Iterator[TokenChunk] | None:
    """The escalator's own token stream, or None if it cannot stream."""
    stream = getattr(escalator, "stream", None)
    if stream is None:
        return None
    chunks: Iterator[TokenChunk] = stream(messages, stop=stop, max_tokens=max_tokens)
    return chunks


def astream_escalation(
    escalator: Escalator,
    messages: Sequence[Message],
    *,
    stop: Sequence[str] | None,
    max_tokens: int | None,
) -> AsyncIterator[TokenChunk] | None:
    """The escalator's own async token stream, or None if it cannot stream."""
    astream = getattr(escalator, "astream", None)
    if astream is None:
        return None
    chunks: AsyncIterator[TokenChunk] = astream(messages, stop=stop, max_tokens=max_tokens)
    return chunks


def check_finished(chunks: Sequence[TokenChunk], model: str) -> None:
    """Raise IncompleteResponseError unless a streamed answer ended with its finish marker.

    Every escalator's stream ends with a chunk carrying `finish_reason` (our
    backends raise themselves when their server's stream stops short; the
    faces' adapters when their chat model's does): without it the answer was
    cut, and a half answer is never presented as complete.
    """
    if not any(c.finish_reason is not None for c in chunks):
        received = sum(len(c.tokens) or int(bool(c.text)) for c in chunks)
        raise IncompleteResponseError(
            f"the stream of {model!r} ended without a finish reason after {received} "
            f"chunk(s) of text: the answer is incomplete",
            model=model,
            tokens_received=received,
        )


__all__ = ["CallableEscalator", "Escalator", "as_escalator", "check_finished"]

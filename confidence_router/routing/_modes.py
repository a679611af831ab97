"""The call modes the Router and the Cascade share, written once around their own steps.

`invoke`, `ainvoke`, `batch`, `abatch`, `stream` and `astream` mean
the same in both, and so does when a query counts as cancelled: an `ainvoke`
task cancelled, or a stream closed or cancelled before its `done` chunk. Each
class brings the steps of one query (`_invoke`, `_ainvoke`, `_stream`,
`_astream`) and where a cancelled query is counted (`_cancelled`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Generator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from .._deadline import aclose_quietly
from ..errors import ConfidenceRouterError
from ..types import MessagesLike, RouteChunk, RoutedResult
from ._batching import arun_batch, run_batch

R = TypeVar("R", bound=RoutedResult)


class CallModes(ABC, Generic[R]):
    """Every way to route a query, each returning (or ending with) an `R`: a RoutedResult
    for the Router, a CascadeResult for the Cascade."""

    #: Default parallelism of `batch` and `abatch`.
    max_concurrency: int

    @abstractmethod
    def _invoke(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> R: ...

    @abstractmethod
    async def _ainvoke(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> R: ...

    @abstractmethod
    def _stream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generator[RouteChunk, None, None]: ...

    @abstractmethod
    def _astream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncGenerator[RouteChunk, None]: ...

    @abstractmethod
    def _cancelled(self) -> None:
        """Count one query the caller cancelled or abandoned before it ended."""

    def invoke(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> R:
        """Route one query and return its answer with the decision that chose it.

        Args:
            messages: a string (one user message) or a sequence of `Message`s.
            stop: stop sequences, passed to every model the query reaches.
            max_tokens: the answer budget of every model the query reaches,
                instead of each model's own.

        Returns:
            A `RoutedResult` from a `Router`; a `CascadeResult` (with every
            stage's record) from a `Cascade`.

        Raises:
            InvalidInputError: no message, only empty ones, or an item that is
                not a `Message`.
            SLMError: the SLM failed and `strict=True` (otherwise it escalates).
            FallbackError: the fallback failed (`FallbackTimeoutError` past
                `fallback_timeout`), unless `on_fallback_error="return_slm"`
                could return the SLM's answer.
        """
        return self._invoke(messages, stop, max_tokens)

    async def ainvoke(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> R:
        """Async `invoke`, with the same result and errors.

        Cancelling it cancels the model request in flight and counts the query
        as cancelled (`stats.cancelled`).
        """
        try:
            return await self._ainvoke(messages, stop, max_tokens)
        except asyncio.CancelledError:
            self._cancelled()
            raise

    def batch(
        self,
        inputs: Sequence[MessagesLike],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Any]:
        """Route many queries on a thread pool; results keep the input order.

        Returns:
            One result per input; with `return_exceptions=True` a failed query's
            place holds its exception instead of raising the first one.
        """
        return run_batch(
            lambda item: self.invoke(item, stop=stop, max_tokens=max_tokens),
            inputs,
            workers=max_concurrency or self.max_concurrency,
            return_exceptions=return_exceptions,
        )

    async def abatch(
        self,
        inputs: Sequence[MessagesLike],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Any]:
        """Route many queries concurrently, at most `max_concurrency` at a time.

        Returns:
            One result per input, in input order; as `batch` for `return_exceptions`.
        """
        return await arun_batch(
            lambda item: self.ainvoke(item, stop=stop, max_tokens=max_tokens),
            inputs,
            limit=max_concurrency or self.max_concurrency,
            return_exceptions=return_exceptions,
        )

    def stream(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generator[RouteChunk, None, None]:
        """Decide first, then replay the kept answer or stream the fallback's tokens.

        The first chunk carries the Decision (in a cascade, the deciding
        stage's) and `models`; the last (empty, `done=True`) carries the
        result. A fallback that fails mid-stream, or whose stream ends without
        its finish marker, raises `FallbackError`:
        a partial answer is never presented as complete. Closed before its
        `done` chunk, the query counts as cancelled (in a cascade, in every
        stage router it reached too).

        Yields:
            `RouteChunk`s: the decision, the answer's text, then the `done` chunk.

        Raises:
            InvalidInputError: no message, or only empty ones.
            SLMError: the SLM failed and `strict=True`.
            FallbackError: the fallback failed, before or during its stream.
        """
        rest = self._stream(messages, stop, max_tokens)
        try:
            with self._until_done() as progress:
                for route_chunk in rest:
                    yield progress.see(route_chunk)
        finally:
            rest.close()

    async def astream(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[RouteChunk, None]:
        """Async `stream`, with the same chunks in the same order."""
        rest = self._astream(messages, stop, max_tokens)
        try:
            with self._until_done() as progress:
                async for route_chunk in rest:
                    yield progress.see(route_chunk)
        finally:  # a caller that stops early closes the fallback stream now, not at GC
            await aclose_quietly(rest)

    @contextmanager
    def _until_done(self) -> Iterator[_Progress]:
        """Count the stream's query as cancelled if it stops before its `done` chunk.

        A typed error does not count here: it was counted where it was raised
        (or raised before any model call).
        """
        progress = _Progress()
        try:
            yield progress
        except ConfidenceRouterError:
            raise
        except BaseException:  # closed, cancelled, or broken by something untyped
            if not progress.done:
                self._cancelled()
            raise


class _Progress:
    """Whether a stream has reached its `done` chunk."""

    def __init__(self) -> None:
        self.done = False

    def see(self, chunk: RouteChunk) -> RouteChunk:
        self.done = self.done or chunk.done
        return chunk


__all__ = ["CallModes"]

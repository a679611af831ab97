"""The contract every SLM backend and every fallback meets, and the base that implements it.

`Escalator` (a fallback) answers whole; `SLMBackend` is an
escalator that also streams and names its model. Both are protocols: any
object with these methods will do. The bundled backends build on
`BaseSLM` (and the callable fallback on `BaseEscalator`), which
write the public signatures once and leave each backend its `_generate`,
`_agenerate`, `_stream` and `_astream`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Protocol, runtime_checkable

from ..types import Generation, Message, TokenChunk


@runtime_checkable
class Escalator(Protocol):
    """The large model the router escalates to: messages in, Generation out.

    `stream`/`astream` are optional: without them a streamed escalation
    arrives as one chunk. A stream's last chunk carries `finish_reason`: a
    stream that ends without one is an unfinished answer and fails the query
    (`check_finished`).
    """

    def generate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation: ...

    async def agenerate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation: ...


@runtime_checkable
class SLMBackend(Escalator, Protocol):
    """A small model that answers with per-token log-probabilities.

    Implementations raise the typed errors of `confidence_router.errors`
    (`SLMUnavailableError`, `SLMTimeoutError`, `ModelNotFoundError`,
    `MissingLogprobsError`, ...) and nothing else for model failures.
    """

    model: str

    def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[TokenChunk]: ...

    def astream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[TokenChunk]: ...


class BaseEscalator(ABC):
    """An `Escalator`: the public methods, each handing its arguments to a hook."""

    def generate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        """The whole answer to `messages`."""
        return self._generate(messages, stop, max_tokens)

    async def agenerate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        """Async `generate`."""
        return await self._agenerate(messages, stop, max_tokens)

    @abstractmethod
    def _generate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation: ...

    @abstractmethod
    async def _agenerate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation: ...


class BaseSLM(BaseEscalator):
    """An `SLMBackend`: `BaseEscalator` plus the two streams."""

    model: str

    def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[TokenChunk]:
        """Token chunks with their logprobs; the last chunk has usage and finish reason."""
        return self._stream(messages, stop, max_tokens)

    def astream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        """Async `stream`."""
        return self._astream(messages, stop, max_tokens)

    @abstractmethod
    def _stream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Iterator[TokenChunk]: ...

    @abstractmethod
    def _astream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncIterator[TokenChunk]: ...


__all__ = ["BaseEscalator", "BaseSLM", "Escalator", "SLMBackend"]

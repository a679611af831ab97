"""The contract every SLM backend and every fallback meets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Protocol, runtime_checkable

from ..types import Generation, Message, TokenChunk


@runtime_checkable
class SLMBackend(Protocol):
    """A small model that answers with per-token log-probabilities.

    Implementations raise the typed errors of :mod:`confidence_router.errors`
    (``SLMUnavailableError``, ``SLMTimeoutError``, ``ModelNotFoundError``,
    ``MissingLogprobsError``, ...) and nothing else for model failures.
    """

    model: str

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

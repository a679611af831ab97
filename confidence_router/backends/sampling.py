"""Drawing k extra sampled answers for self-consistency: the contract and its argument checks."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError
from ..types import Generation, Message


@runtime_checkable
class Sampler(Protocol):
    """A backend that can draw ``k`` sampled answers to the same messages.

    Sample ``i`` uses seed ``seed + i``, so the same call gives the same
    samples and every sample differs from its siblings at a temperature > 0.
    A separate protocol (not part of :class:`SLMBackend`) so backends written
    before it keep satisfying the SLM contract.
    """

    def sample(
        self,
        messages: Sequence[Message],
        *,
        k: int,
        temperature: float,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Generation]: ...

    async def asample(
        self,
        messages: Sequence[Message],
        *,
        k: int,
        temperature: float,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Generation]: ...


def check_sampling(k: Any, temperature: Any, seed: Any) -> tuple[int, float, int]:
    """Validate the arguments of ``sample``; raise ConfigurationError naming the field."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigurationError("k", f"must be an int >= 1, got {k!r}")
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ConfigurationError(
            "temperature", f"must be a number > 0 (samples must vary), got {temperature!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigurationError("seed", f"must be an int >= 0, got {seed!r}")
    return k, float(temperature), seed


async def gather_all(calls: Sequence[Awaitable[Generation]]) -> list[Generation]:
    """Run the sample requests concurrently; the first failure cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()


__all__ = ["Sampler", "check_sampling", "gather_all"]

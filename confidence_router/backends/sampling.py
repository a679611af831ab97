"""Drawing k extra sampled answers for self-consistency: the contract, its base and checks."""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError
from ..types import Generation, Message


@runtime_checkable
class Sampler(Protocol):
    """A backend that can draw `k` sampled answers to the same messages.

    Sample `i` uses seed `seed + i`, so the same call gives the same
    samples and every sample differs from its siblings at a temperature > 0.
    A separate protocol (not part of `SLMBackend`) so backends written
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


@dataclass(frozen=True)
class Draws:
    """What one `sample` call asks for, its arguments checked: `k` answers at
    `temperature`, sample `i` with seed `seed + i`, each under `stop` and
    `max_tokens`."""

    k: int
    temperature: float
    seed: int
    stop: Sequence[str] | None = None
    max_tokens: int | None = None


class BaseSampler(ABC):
    """A `Sampler`: the arguments checked once, then handed to the backend's hooks."""

    def sample(
        self,
        messages: Sequence[Message],
        *,
        k: int,
        temperature: float,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Generation]:
        """`k` sampled answers to `messages`, sample `i` drawn with seed `seed + i`.

        Raises:
            ConfigurationError: `k` < 1, `temperature` <= 0 or `seed` < 0.
        """
        return self._sample(messages, _draws(k, temperature, seed, stop, max_tokens))

    async def asample(
        self,
        messages: Sequence[Message],
        *,
        k: int,
        temperature: float,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Generation]:
        """Async `sample`."""
        return await self._asample(messages, _draws(k, temperature, seed, stop, max_tokens))

    @abstractmethod
    def _sample(self, messages: Sequence[Message], draws: Draws) -> list[Generation]: ...

    @abstractmethod
    async def _asample(self, messages: Sequence[Message], draws: Draws) -> list[Generation]: ...


def _draws(
    k: Any, temperature: Any, seed: Any, stop: Sequence[str] | None, max_tokens: int | None
) -> Draws:
    k, temperature, seed = check_sampling(k, temperature, seed)
    return Draws(k, temperature, seed, stop, max_tokens)


def check_sampling(k: Any, temperature: Any, seed: Any) -> tuple[int, float, int]:
    """Validate the arguments of `sample`; raise ConfigurationError naming the field."""
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


__all__ = ["BaseSampler", "Draws", "Sampler", "check_sampling", "gather_all"]

"""Many queries through one router: the thread-pool and asyncio loops the Router and
the Cascade share, so both keep order, bound concurrency and cancel alike."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def run_batch(
    call: Callable[[T], R], inputs: Sequence[T], *, workers: int, return_exceptions: bool
) -> list[Any]:
    """`call` on each input on a thread pool; results keep the input order.

    The first failure cancels the calls not yet started and is raised, unless
    `return_exceptions` puts it in that input's place instead.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(call, item) for item in inputs]
        results: list[Any] = []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:
                if not return_exceptions:
                    for pending in futures:
                        pending.cancel()
                    raise
                results.append(exc)
        return results


async def arun_batch(
    call: Callable[[T], Awaitable[R]],
    inputs: Sequence[T],
    *,
    limit: int,
    return_exceptions: bool,
) -> list[Any]:
    """`call` on each input concurrently, at most `limit` at a time, in input order;
    the tasks still running when it ends (a failure, or the caller's cancellation)
    are cancelled."""
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with semaphore:
            return await call(item)

    tasks = [asyncio.ensure_future(one(item)) for item in inputs]
    try:
        return list(await asyncio.gather(*tasks, return_exceptions=return_exceptions))
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()


__all__ = ["arun_batch", "run_batch"]

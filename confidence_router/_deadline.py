"""Whole-call deadlines: a model call that is still running after `timeout` seconds is over.

A per-read timeout (httpx's) never fires on a server that sends a byte just
inside it, again and again; these helpers bound the *whole* call instead.
Async calls are cancelled at the deadline. A blocking call cannot be
interrupted from outside, so the sync helpers run it on a daemon thread and
stop waiting: the call may go on in the background until it ends by itself,
and a streaming one stops at its next item.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

from ._handoff import has_item, pump

T = TypeVar("T")


class DeadlineExceeded(Exception):
    """The call ran past its deadline (internal: callers turn it into a typed error)."""


class CancelledAtDeadline(DeadlineExceeded):
    """An async call past its deadline, cancelled: unlike a sync one, nothing of it runs on."""


async def wait_at_most(awaitable: Awaitable[T], timeout: float) -> T:
    """Await `awaitable`; past `timeout` seconds cancel it and raise CancelledAtDeadline.

    Unlike `asyncio.wait_for`, a TimeoutError raised by the call itself stays
    what it is, so the caller can tell "too slow" from "failed".
    """
    task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
    try:
        done, _ = await asyncio.wait({task}, timeout=max(timeout, 0.0))
    except BaseException:  # our caller was cancelled: take the call down with it
        await _cancel(task)
        raise
    if task in done:
        return task.result()
    await _cancel(task)
    raise CancelledAtDeadline(f"no result within {timeout:g}s")


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel a task and wait until it has really stopped (its sockets closed)."""
    if task.done():
        if not task.cancelled():
            task.exception()  # retrieved: no "exception never retrieved" warning
        return
    task.cancel()
    try:
        await asyncio.shield(asyncio.wait({task}))
    finally:
        if task.done() and not task.cancelled():
            task.exception()


async def _anext(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()


async def anext_before(iterator: AsyncIterator[T], deadline: float) -> T:
    """The iterator's next item, or CancelledAtDeadline at `deadline` (`loop.time()` clock).

    Raises StopAsyncIteration at the end, like `__anext__`.
    """
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise CancelledAtDeadline("the deadline passed between two items")
    return await wait_at_most(_anext(iterator), remaining)


async def aclose_quietly(iterator: Any) -> None:
    """Close an async generator we stopped reading (its connection goes with it)."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        # Closing a broken stream: its own error was already reported.
        with contextlib.suppress(Exception):
            await aclose()


def call_at_most(fn: Callable[[], T], timeout: float, *, name: str = "deadline-call") -> T:
    """`fn()` on a daemon thread; DeadlineExceeded if it has not returned after `timeout` s.

    The caller's context variables go with it (LangChain passes callbacks that way).
    """
    context = contextvars.copy_context()
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(context.run(fn))
        except BaseException as exc:  # handed to the waiting caller
            future.set_exception(exc)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        return future.result(timeout=max(timeout, 0.0))
    except FutureTimeout:
        if future.done():  # the call itself raised a TimeoutError
            raise
        raise DeadlineExceeded(f"no result within {timeout:g}s") from None


def iterate_at_most(
    make_iter: Callable[[], Iterator[T]], timeout: float, *, name: str = "deadline-stream"
) -> Iterator[T]:
    """Items of `make_iter()`, produced on a daemon thread, until `timeout` s have passed.

    Then DeadlineExceeded; the worker notices at its next item and closes the
    iterator (a stream blocked on the network ends when its own client gives up).
    """
    context = contextvars.copy_context()
    items: queue.Queue[tuple[object, BaseException | None]] = queue.Queue()
    stop = threading.Event()

    def put(item: object, error: BaseException | None) -> None:
        items.put((item, error))

    threading.Thread(
        target=lambda: context.run(pump, make_iter, put, stop), name=name, daemon=True
    ).start()
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                item, error = items.get(timeout=max(deadline - time.monotonic(), 0.0))
            except queue.Empty:
                raise DeadlineExceeded(f"the stream did not end within {timeout:g}s") from None
            if not has_item(item, error):
                return
            yield item  # type: ignore[misc]
    finally:
        stop.set()


__all__ = [
    "CancelledAtDeadline",
    "DeadlineExceeded",
    "aclose_quietly",
    "anext_before",
    "call_at_most",
    "iterate_at_most",
    "wait_at_most",
]

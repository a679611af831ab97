"""Running a blocking token loop in a worker thread behind an async iterator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


async def iterate_in_thread(
    make_iter: Callable[[threading.Event], Iterator[T]],
) -> AsyncIterator[T]:
    """Yield what ``make_iter(cancel)`` yields, produced on a worker thread.

    When the consumer stops (cancellation, ``aclose``, an exception), ``cancel``
    is set, so a loop that checks it between tokens stops at the next token
    instead of running to the end in the background.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
    cancel = threading.Event()

    def put(item: object, error: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (item, error))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            cancel.set()

    def worker() -> None:
        try:
            for item in make_iter(cancel):
                if cancel.is_set():
                    break
                put(item, None)
        except BaseException as exc:  # forwarded to the consumer, not swallowed
            put(_DONE, exc)
            return
        put(_DONE, None)

    loop.run_in_executor(None, worker)
    try:
        while True:
            item, error = await queue.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item  # type: ignore[misc]
    finally:
        cancel.set()

"""Running a blocking token loop in a worker thread behind an async iterator."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

from .._handoff import has_item, pump

T = TypeVar("T")


async def iterate_in_thread(
    make_iter: Callable[[threading.Event], Iterator[T]],
) -> AsyncIterator[T]:
    """Yield what `make_iter(cancel)` yields, produced on a worker thread.

    When the consumer stops (cancellation, `aclose`, an exception), `cancel`
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

    loop.run_in_executor(None, pump, lambda: make_iter(cancel), put, cancel)
    try:
        while True:
            item, error = await queue.get()
            if not has_item(item, error):
                return
            yield item  # type: ignore[misc]
    finally:
        cancel.set()

"""Handing a blocking iterator's items from a worker thread to a consumer elsewhere.

Two places run an iterator on a thread of its own and pass `(item, error)`
pairs through a queue: the async bridge of the in-process SLM
(`confidence_router.backends._threads`) and the sync whole-call deadline
(`confidence_router._deadline`). This module is that hand-off,
written once: `pump` on the worker's side, `has_item` on the
consumer's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
END = object()  # the item of the last pair: the iterator is done (error: what it raised)


def pump(
    make_iter: Callable[[], Iterator[T]],
    put: Callable[[object, BaseException | None], None],
    stop: threading.Event,
) -> None:
    """Run `make_iter()` on this thread: `put(item, None)` each item, then `put(END, error)`.

    Once `stop` is set, the next item is not handed on and the iterator is
    closed (a generator holding a lock or a connection lets go of it now). What
    the iterator raises is handed on as `error`, never swallowed.
    """
    try:
        iterator = make_iter()
        try:
            for item in iterator:
                if stop.is_set():
                    break
                put(item, None)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
    except BaseException as exc:  # handed to the consumer
        put(END, exc)
        return
    put(END, None)


def has_item(item: object, error: BaseException | None) -> bool:
    """True for an item to pass on, False at the end; raises the error the worker handed on."""
    if item is not END:
        return True
    if error is not None:
        raise error
    return False


__all__ = ["END", "has_item", "pump"]

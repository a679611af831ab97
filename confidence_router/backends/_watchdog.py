"""The deadline of one sync HTTP request: past it, the connection is cut.

A blocking read cannot be interrupted from outside, but shutting its socket
down from a timer thread ends it at once (with a read error that the backend
reports as a timeout, since `Watchdog.expired` is set). The socket is
known from the moment the response headers arrive; before that, httpx's own
timeout (the same number of seconds) bounds the wait.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import TypeVar

import httpx

T = TypeVar("T")


class Watchdog:
    """Cuts one request's connection when its deadline, `seconds` from now, passes."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._done = False

    def passed(self) -> bool:
        if time.monotonic() >= self.at:
            self.expired = True
        return self.expired

    def watch(self, response: httpx.Response) -> None:
        """Called with the response headers: arm the timer on its socket."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if self._done or self._timer is not None:
                return
            timer = threading.Timer(max(self.at - time.monotonic(), 0.0), self._cut, (sock,))
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _cut(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()


class Watchdogs:
    """Which request of each thread awaits its headers, for a client's response hook.

    Pass `on_response` to the httpx client's `event_hooks["response"]`; a
    request sent inside `watching` then arms that request's watchdog.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def on_response(self, response: httpx.Response) -> None:
        watchdog: Watchdog | None = getattr(self._local, "watchdog", None)
        if watchdog is not None:
            watchdog.watch(response)

    @contextmanager
    def watching(self, watchdog: Watchdog) -> Iterator[None]:
        """Let responses received by this thread inside the block arm `watchdog`."""
        previous = getattr(self._local, "watchdog", None)
        self._local.watchdog = watchdog
        try:
            yield
        finally:
            self._local.watchdog = previous

    def guarded(
        self, responses: Iterable[T], watchdog: Watchdog, timeout: Callable[[], Exception]
    ) -> Generator[T, None, None]:
        """A sync stream under a deadline, checked again after every object.

        Past the deadline it raises `timeout()`. However it ends, the watchdog
        stops and the stream is closed: the connection goes now, not whenever
        the garbage collector gets to it.
        """
        iterator = iter(responses)
        try:
            while True:
                with self.watching(watchdog):
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                if watchdog.passed():
                    raise timeout()
                yield item
        finally:
            watchdog.stop()
            for source in (iterator, responses):  # an OpenAI Stream closes its response itself
                close = getattr(source, "close", None)
                if close is not None:
                    close()


__all__ = ["Watchdog", "Watchdogs"]

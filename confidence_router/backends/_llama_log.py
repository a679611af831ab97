"""llama.cpp's log messages, routed to `logging` while a model loads.

llama-cpp-python 0.3.x reads ggml's log levels one step off (ggml now numbers
them DEBUG=1, INFO=2, WARN=3, ERROR=4), so with `verbose=False` it still
prints every *warning* to stderr as if it were an error: loading Gemma 3
writes `llama_kv_cache_iswa: using full-size SWA cache ...` on every run.

While a model loads, `routed_llama_logs` installs a callback that sends
each message to the `confidence_router.llama_cpp` logger at its real level,
with load-time warnings (remarks about the model file and the cache layout,
nothing a caller can act on) lowered to INFO. Errors stay errors and are
kept (`LoadLog.errors`): llama-cpp-python points stderr at /dev/null while
it loads, so the caller puts them in the exception it raises. Afterwards
llama-cpp-python's own callback is put back: the hook is process-wide and
other users of `llama_cpp` keep their behaviour.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

logger = logging.getLogger("confidence_router.llama_cpp")

# ggml_log_level: NONE=0, DEBUG=1, INFO=2, WARN=3, ERROR=4, CONT=5 (continue the last line)
_LOAD_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.INFO}
_CONT = 5
_lock = threading.Lock()


class LoadLog:
    """Joins continued pieces into lines, logs each line once, keeps the errors."""

    def __init__(self) -> None:
        self.level = logging.DEBUG
        self.pending = ""
        self.errors: list[str] = []

    def feed(self, ggml_level: int, text: str) -> None:
        if ggml_level != _CONT:
            self.flush()
            self.level = _LOAD_LEVELS.get(ggml_level, logging.ERROR)
        self.pending += text
        if self.pending.endswith("\n"):
            self.flush()

    def flush(self) -> None:
        line, self.pending = self.pending.strip(), ""
        if line.strip("."):  # progress dots carry nothing
            logger.log(self.level, "%s", line)
            if self.level >= logging.ERROR:
                self.errors.append(line)


@contextmanager
def routed_llama_logs() -> Iterator[LoadLog]:
    """While the block runs, llama.cpp logs through `confidence_router.llama_cpp`."""
    import llama_cpp
    from llama_cpp import _logger as llama_cpp_logger

    lines = LoadLog()

    def receive(level: int, text: bytes, _user_data: Any) -> None:
        lines.feed(level, text.decode("utf-8", errors="replace"))

    callback = llama_cpp.llama_log_callback(receive)  # kept alive until restored
    with _lock:
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        try:
            yield lines
        finally:
            lines.flush()
            llama_cpp.llama_log_set(llama_cpp_logger.llama_log_callback, ctypes.c_void_p(0))


__all__ = ["LoadLog", "routed_llama_logs"]

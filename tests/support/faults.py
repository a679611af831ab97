"""Switchable faults for the Ollama-compatible test server.

A test flips a switch, the server misbehaves in exactly that way, and the
switch is reset after the test (the ``ollama_server`` fixture clears every
fault after each test)::

    with ollama_server.faults.inject("stall", seconds=5) as fault:
        ...                      # every chat/generate request stalls 5 s first
    assert fault.hits == 1       # the fault really fired

    ollama_server.faults.set("status", status=500, model="smollm2:135m")
    ollama_server.faults.clear()  # also wakes every stalled request at once

``chat`` covers ``/api/chat`` and ``/v1/chat/completions``, ``generate`` covers
``/api/generate`` and ``/v1/completions`` (``models`` is ``GET /v1/models``),
so one switch makes both APIs fail alike.

Kinds (``after`` counts the NDJSON objects sent before a mid-stream fault; a
non-streaming answer gets the same fault half-way through its body):

=================  ==============================================================
``refuse``         the listening socket is closed: connections are refused
``hangup``         the request is read, then the connection closed with no answer
``status``         answer HTTP ``status`` (default 500) with ``{"error": message}``
``not_found``      answer 404 ``model 'NAME' not found`` (and hide it from /api/tags)
``stall``          wait ``seconds`` before sending the first byte
``stall_mid``      wait ``seconds`` after ``after`` objects (or half the body)
``drop_mid``       close the connection after ``after`` objects (or half the body)
``error_line``     send ``{"error": message}`` inside the 200 stream after ``after``
                   objects (non-streaming: HTTP 500, as Ollama does)
``no_logprobs``    answer without ``logprobs`` even when they were asked for
``bad_logprobs``   the ``index``-th token's logprob becomes ``value`` (NaN, -inf...)
``malformed_json`` send ``text`` as a line after ``after`` objects (non-streaming:
                   as the whole body); ``text=""`` sends a blank line
``truncate``       a clean close without the terminal marker after ``after``
                   token objects (``after=0``: an empty 200 body, as
                   llama-cpp-python's server answers a streamed over-long
                   prompt): no ``done: true`` object / no ``finish_reason``
                   chunk and no ``data: [DONE]``, the chunked body properly
                   ended. Non-streaming: the first ``after`` objects as one
                   answer with ``done: false`` / ``finish_reason: null``
``partial_logprobs`` only the first content object carries its ``logprobs``;
                   later ones carry text without them (a proxy dropping the field)
=================  ==============================================================

Stalls last until their ``seconds`` run out or until the fault is cleared,
whichever comes first; a cleared stall closes its connection instead of
answering, so no thread outlives the test that started it.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from .models import canonical_name

KINDS = (
    "refuse",
    "hangup",
    "status",
    "not_found",
    "stall",
    "stall_mid",
    "drop_mid",
    "error_line",
    "no_logprobs",
    "bad_logprobs",
    "malformed_json",
    "truncate",
    "partial_logprobs",
)
MID_STREAM = ("stall_mid", "drop_mid", "error_line", "malformed_json", "truncate")
INFERENCE = ("chat", "generate")
ENDPOINTS = ("chat", "generate", "show", "tags", "ps", "version", "models")


@dataclass
class Fault:
    """One switch. ``model`` and ``endpoints`` narrow it; ``times`` and ``rate`` ration it."""

    kind: str
    model: str | None = None
    endpoints: Sequence[str] = INFERENCE
    times: int | None = None
    rate: float = 1.0
    status: int = 500
    message: str = "llama runner process has terminated: injected fault"
    seconds: float = 3600.0
    after: int = 1
    value: float = math.nan
    index: int = 0
    text: str = '{"model":"smollm2:135m","created_at":'
    hits: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if isinstance(self.endpoints, str):
            self.endpoints = (self.endpoints,)
        unknown = set(self.endpoints) - set(ENDPOINTS) - {"*"}
        if unknown:
            raise ValueError(f"endpoints must be among {ENDPOINTS} or '*', got {sorted(unknown)}")
        if self.times is not None and self.times < 1:
            raise ValueError(f"times must be None or >= 1, got {self.times}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate must be between 0 and 1, got {self.rate}")
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.seconds < 0 or self.after < 0 or self.index < 0:
            raise ValueError("seconds, after and index must be >= 0")

    def applies_to(self, endpoint: str, model: str | None) -> bool:
        if "*" not in self.endpoints and endpoint not in self.endpoints:
            return False
        if self.model is None:
            return True
        return model is not None and canonical_name(self.model) == canonical_name(model)


class Plan:
    """The faults one request drew, and the event that cuts its stalls short."""

    def __init__(self, faults: dict[str, Fault], release: threading.Event) -> None:
        self.faults = faults
        self._release = release

    def __contains__(self, kind: str) -> bool:
        return kind in self.faults

    def get(self, kind: str) -> Fault | None:
        return self.faults.get(kind)

    def fire(self, kind: str) -> Fault:
        """Record that the fault acted on this request and return it."""
        fault = self.faults[kind]
        fault.hits += 1
        return fault

    def stall(self, seconds: float) -> bool:
        """Wait; True when the stall was cut short by ``clear()`` or server stop."""
        return self._release.wait(seconds)


class Faults:
    """The server's fault switches; thread-safe, flipped by tests, read per request."""

    def __init__(self, on_change: Callable[[], None] | None = None, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._release = threading.Event()
        self._rng = random.Random(seed)
        self._on_change = on_change

    def set(self, kind: str, **params: object) -> Fault:
        """Turn a fault on (until removed or cleared) and return its switch."""
        fault = Fault(kind, **params)  # type: ignore[arg-type]
        with self._lock:
            self._rules.append(fault)
        self._changed()
        return fault

    @contextmanager
    def inject(self, kind: str, **params: object) -> Iterator[Fault]:
        """A fault that is on only inside the ``with`` block."""
        fault = self.set(kind, **params)
        try:
            yield fault
        finally:
            self.remove(fault)

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._rules = [f for f in self._rules if f is not fault]
            if fault.kind in ("stall", "stall_mid"):
                self._release_stalls()
        self._changed()

    def clear(self) -> None:
        """Every fault off, every stalled request released (its connection closed)."""
        with self._lock:
            self._rules = []
            self._release_stalls()
        self._changed()

    @property
    def active(self) -> tuple[Fault, ...]:
        with self._lock:
            return tuple(self._rules)

    @property
    def refusing(self) -> bool:
        with self._lock:
            return any(f.kind == "refuse" for f in self._rules)

    def hidden(self, endpoint: str, model: str) -> bool:
        """Whether a ``not_found`` fault hides this model from a listing."""
        with self._lock:
            return any(
                f.kind == "not_found" and f.model is not None and f.applies_to(endpoint, model)
                for f in self._rules
            )

    def select(self, endpoint: str, model: str | None) -> Plan:
        """The faults this request gets: the first matching rule of each kind."""
        chosen: dict[str, Fault] = {}
        with self._lock:
            for fault in list(self._rules):
                if fault.kind in chosen or fault.kind == "refuse":
                    continue
                if not fault.applies_to(endpoint, model):
                    continue
                if fault.rate < 1.0 and self._rng.random() >= fault.rate:
                    continue
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times == 0:
                        self._rules.remove(fault)
                chosen[fault.kind] = fault
            return Plan(chosen, self._release)

    def _release_stalls(self) -> None:
        self._release.set()
        self._release = threading.Event()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


__all__ = ["ENDPOINTS", "INFERENCE", "KINDS", "MID_STREAM", "Fault", "Faults", "Plan"]

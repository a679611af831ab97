"""Record routed traffic as traces: one JSON line per query, in the evaluation's schema.

A `TraceRecorder` given to `Router(trace=...)` appends one record per
answered query with the same keys as the records of `confidence-router eval`
(`id`, `dataset`, `question`, `answers`, `answerable`, `meta`,
`config`, `query`, `slm`, `fallbacks`) and three more: `routing` (the
decision, latency, cost, tokens), `label` (agreement of the SLM's answer with
the fallback's, when both exist) and `time`.

**A token count the server did not report is `null`, never 0**: `prompt_tokens`
and `completion_tokens` of the `slm` part, of a fallback and of a sample are
`null` when the call failed (or never ran) or its server left the count out
(llama-cpp-python's server streams no usage; an Ollama stream stopped early
has no prompt count). Readers leave such a question out of token and cost
figures and say how many they left out (`confidence_router.eval.counts`).

**Privacy by default**: prompts, answers and the SLM's token strings are
written only with `store_text=True`; otherwise a record holds ids, signals,
log-probabilities, routes, token counts, latencies, costs and labels.

Writing never blocks or fails a query: records go through a bounded queue to
a writer thread; a full queue drops the record (counted in `dropped`), and
the first write error (a full disk: `ENOSPC`) logs one warning and stops the
recorder for good. Files rotate by size like `logging.handlers.RotatingFileHandler`:
`traces.jsonl` -> `traces.jsonl.1` -> ... -> `traces.jsonl.<backups>`.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as _dt
import json
import logging
import math
import os
import queue
import stat
import threading
import uuid
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..types import Generation, Message, RoutedResult

logger = logging.getLogger("confidence_router")

Record = dict[str, Any]

#: Keys of a trace record shared with the evaluation's records (`confidence_router.eval.traces`).
EVAL_KEYS: tuple[str, ...] = (
    "id",
    "dataset",
    "question",
    "answers",
    "answerable",
    "meta",
    "config",
    "query",
    "slm",
    "fallbacks",
)


def _round(values: Any) -> list[float | None]:
    return [round(float(v), 4) if math.isfinite(v) else None for v in np.asarray(values).ravel()]


def slm_part(
    gen: Generation | None,
    error: str | None,
    *,
    store_text: bool,
    agreement: tuple[float, float] | None = None,
) -> Record:
    """The `slm` entry of a record, with the keys of the evaluation's `slm_record`.

    `em`/`f1` score the SLM's answer against the fallback's (the reference of
    recorded traffic), or are None when the fallback's answer is unknown.
    """
    em, f1 = agreement if agreement is not None else (None, None)
    if gen is None:
        return {
            "raw": None if not store_text else "",
            "answer": None if not store_text else "",
            "em": em,
            "f1": f1,
            "error": error,
            "signals": None,
            "tokens": [] if store_text else None,
            "logprobs": [],
            "top_logprobs": [],
            "prompt_tokens": None,  # the call failed: its counts are unknown, not 0
            "completion_tokens": None,
            "latency_s": None,
            "finish_reason": None,
        }
    from ..signals.token import compute_signals

    try:
        signals: dict[str, float] | None = (
            compute_signals(gen).as_dict() if gen.has_logprobs else None
        )
    except ValueError:
        signals = None
    return {
        "raw": gen.text if store_text else None,
        "answer": gen.text.strip() if store_text else None,
        "em": em,
        "f1": f1,
        "error": error,
        "signals": signals,
        "tokens": list(gen.tokens) if store_text else None,
        "logprobs": _round(gen.token_logprobs),
        "top_logprobs": [_round(row) for row in np.asarray(gen.top_logprobs)],
        **gen.usage.counts(),  # an unreported count: None
        "latency_s": round(gen.latency_s, 5),
        "finish_reason": gen.finish_reason,
    }


def fallback_part(gen: Generation, *, store_text: bool) -> Record:
    """A `fallbacks` entry, with the keys of the evaluation's `fallback_record`.

    The fallback is the reference of recorded traffic, so it scores 1.
    """
    return {
        "raw": gen.text if store_text else None,
        "answer": gen.text.strip() if store_text else None,
        "em": 1.0,
        "f1": 1.0,
        "error": None,
        **gen.usage.counts(),
        "latency_s": round(gen.latency_s, 5),
        "model": gen.model,
    }


def _error_code(text: str | None) -> str | None:
    if text is None:
        return None
    return text.split(":", 1)[0]


def build_record(
    result: RoutedResult,
    messages: Sequence[Message] | None,
    *,
    store_text: bool,
    dataset: str,
    max_tokens: int | None = None,
    label: Mapping[str, Any] | None = None,
    shadow: Generation | None = None,
) -> Record:
    """The trace record of one routed query (see the module docstring for the keys)."""
    slm = result.slm
    fallback = result.fallback if result.fallback is not None else shadow
    lab = dict(label or {})
    agreement = None
    if lab.get("f1") is not None:
        agreement = (float(lab.get("em") or 0.0), float(lab["f1"]))
    decision = result.decision
    clean = result.slm_error is None and result.fallback_error is None
    top_k = (
        int(np.asarray(slm.top_logprobs).shape[1])
        if slm is not None and slm.top_logprobs.ndim == 2
        else None
    )
    question = None
    meta: dict[str, Any] = {}
    if store_text and messages:
        users = [m.content for m in messages if m.role == "user"]
        question = users[-1] if users else messages[-1].content
        meta["messages"] = [{"role": m.role, "content": m.content} for m in messages]
    record: Record = {
        "id": uuid.uuid4().hex,
        "dataset": dataset,
        "question": question,
        "answers": [],
        "answerable": None,
        "meta": meta,
        "config": {
            "slm": slm.model if slm is not None else None,
            "prompt": "router",
            "top_k": top_k,
            "max_tokens": max_tokens,
        },
        "query": {},
        "slm": slm_part(
            slm,
            result.slm_error if store_text else _error_code(result.slm_error),
            store_text=store_text,
            agreement=agreement,
        ),
        "fallbacks": {}
        if fallback is None
        else {fallback.model: fallback_part(fallback, store_text=store_text)},
        "routing": {
            "route": decision.route,
            "score": decision.score,
            "threshold": decision.threshold,
            "policy": decision.policy,
            "reason": decision.reason if (store_text or clean) else None,
            "answered_by": result.answered_by.model,
            "latency_s": round(result.latency_s, 5),
            "cost": result.cost,
            "usage": {m: u.to_dict() for m, u in result.usage_by_model.items()},  # unknown: null
            "slm_error": _error_code(result.slm_error),
            "fallback_error": None
            if result.fallback_error is None
            else (result.fallback_error if store_text else "fallback failed"),
        },
        "label": lab,
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds"),
    }
    check = decision.consistency
    if check is not None and record["slm"] is not None:
        # the same shape as `eval run --samples`, so the offline analysis reads both
        record["slm"]["samples"] = [
            {
                "raw": s.text if store_text else None,
                "answer": s.text.strip() if store_text else None,
                **s.usage.counts(),
                "finish_reason": s.finish_reason,
                "latency_s": round(s.latency_s, 5),
            }
            for s in check.samples
        ]
        summary = check.to_dict()
        summary.pop("samples")
        record["routing"]["consistency"] = summary
    return record


_STOP = object()


class TraceRecorder:
    """Append trace records to a JSONL file from a background thread; never block a query.

    Args:
        path: the file (created with its folders; appended to if it exists).
        store_text: also write prompts, answers and token strings (default False).
        max_bytes: rotate when the file would grow past this size (0: never).
        backups: rotated files kept (`path.1` newest ... `path.<backups>` oldest).
        dataset: the `dataset` field of every record (name your traffic).
        queue_size: records waiting for the writer before new ones are dropped.

    Raises:
        ConfigurationError: `store_text` not a bool, `max_bytes` or `backups` not an
            int >= 0, `queue_size` not an int >= 1, or a trace file that cannot be
            opened (field `trace`). Writing never raises: a full queue drops the
            record, a write error stops the recorder (`error`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        store_text: bool = False,
        max_bytes: int = 64 * 1024 * 1024,
        backups: int = 5,
        dataset: str = "traffic",
        queue_size: int = 10_000,
    ) -> None:
        if not isinstance(store_text, bool):
            raise ConfigurationError("store_text", f"must be True or False, got {store_text!r}")
        for name, value in (("max_bytes", max_bytes), ("backups", backups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(name, f"must be an int >= 0, got {value!r}")
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ConfigurationError("queue_size", f"must be an int >= 1, got {queue_size!r}")
        self.path = Path(path)
        self.store_text = store_text
        self.max_bytes = max_bytes
        self.backups = backups
        self.dataset = str(dataset)
        try:
            if not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle: Any = self.path.open("a", encoding="utf-8")
        except OSError as exc:
            raise ConfigurationError(
                "trace", f"cannot open the trace file {str(self.path)!r}: {exc}"
            ) from exc
        self._size = self._current_size()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self.written = 0
        self.dropped = 0
        self.stopped = False
        self.error: str | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="confidence-router-trace-writer", daemon=True
        )
        self._thread.start()
        atexit.register(_close_at_exit, weakref.ref(self))

    def __repr__(self) -> str:
        return (
            f"TraceRecorder({str(self.path)!r}, store_text={self.store_text}, "
            f"written={self.written}, stopped={self.stopped})"
        )

    def _current_size(self) -> int:
        try:
            st = os.stat(self.path)
        except OSError:
            return 0
        return st.st_size if stat.S_ISREG(st.st_mode) else 0

    def write(self, record: Record) -> None:
        """Queue one record for writing; returns at once, whatever happens."""
        if self.stopped or self._closed:
            return
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = self.dropped == 1
            if first:
                logger.warning(
                    "trace recorder %s: the writer cannot keep up; dropping records", self.path
                )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued record is written (or the recorder stopped)."""
        done = threading.Event()
        if self._closed or not self._thread.is_alive():
            return self._queue.empty()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer and close the file."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        self._thread.join(timeout)

    # -- the writer thread --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                break
            if isinstance(item, threading.Event):
                item.set()
                continue
            if self.stopped:
                continue
            try:
                line = json.dumps(item, ensure_ascii=False, allow_nan=False) + "\n"
            except (TypeError, ValueError) as exc:
                logger.warning(
                    "trace recorder %s: a record could not be encoded: %s", self.path, exc
                )
                continue
            try:
                data = line.encode("utf-8")
                if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                self._handle.write(line)
                self._handle.flush()
                self._size += len(data)
                self.written += 1
            except OSError as exc:
                self._stop(exc)
        try:
            self._handle.close()
        except OSError as exc:
            if not self.stopped:
                self._stop(exc)

    def _stop(self, exc: OSError) -> None:
        self.stopped = True
        self.error = f"{type(exc).__name__}: {exc}"
        logger.warning(
            "trace recorder %s stopped: %s (%s); queries go on, unrecorded",
            self.path,
            exc.strerror or exc,
            "disk full" if exc.errno == 28 else "write failed",
        )
        with contextlib.suppress(OSError):
            self._handle.close()

    def _rotate(self) -> None:
        """Shift `path` -> `path.1` -> ... (regular files only; never a device)."""
        self._handle.close()
        if stat.S_ISREG(os.stat(self.path).st_mode):
            if self.backups == 0:
                self.path.unlink()
            else:
                oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
                if oldest.exists():
                    oldest.unlink()
                for i in range(self.backups - 1, 0, -1):
                    src = self.path.with_name(f"{self.path.name}.{i}")
                    if src.exists():
                        os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._handle = self.path.open("a", encoding="utf-8")
        self._size = self._current_size()


def _close_at_exit(ref: weakref.ref[TraceRecorder]) -> None:
    """Write what is still queued when the program ends without `close()`."""
    recorder = ref()
    if recorder is not None:
        recorder.close(timeout=2.0)


def as_recorder(trace: TraceRecorder | str | os.PathLike[str] | None) -> TraceRecorder | None:
    """`Router(trace=...)`: a recorder as it is, a path for a privacy-default recorder."""
    if trace is None or isinstance(trace, TraceRecorder):
        return trace
    if isinstance(trace, (str, os.PathLike)):
        return TraceRecorder(trace)
    raise ConfigurationError(
        "trace", f"must be a path or a TraceRecorder, got {type(trace).__name__}"
    )


__all__ = [
    "EVAL_KEYS",
    "TraceRecorder",
    "as_recorder",
    "build_record",
    "fallback_part",
    "slm_part",
]

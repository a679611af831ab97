"""After each answered query: label it, shadow-check a random share of kept answers, record it.

The `Monitor` is what `Router(trace=..., shadow_rate=...)` calls once an
answer is final. It never delays that answer:

* **Audit draw.** Each query is *audited* with probability `shadow_rate`,
  drawn before anything is known about it, so the audited queries are a
  uniform random sample of the traffic (what `confidence-router calibrate`
  needs). An audited query gets a label: whether the SLM's answer agrees with
  the fallback's.
* **Escalated queries** already have both answers: agreement is normalised
  token F1 (SQuAD normalisation: case, punctuation, articles) of the two,
  agreeing when it reaches `min_f1`; or the `judge`'s verdict.
* **Kept answers** (audited): the fallback is asked the same messages on a
  background thread with its own event loop; the user already has the SLM's
  answer. At most `max_pending` checks run at once; beyond that a check is
  skipped (counted). The ledger keeps the running precision of kept answers
  (share that agree) with a Wilson interval, and the extra fallback tokens
  and cost apart from the routed ones.
* `Monitor.close` cancels the checks still running (their async
  requests are cancelled, their records written with `shadow: "cancelled"`),
  then flushes and closes the trace file.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import logging
import random
import threading
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from ..backends.escalation import Escalator
from ..errors import ConfigurationError
from ..types import Generation, Message, RoutedResult
from .ledger import Ledger, Price
from .recorder import TraceRecorder, build_record

logger = logging.getLogger("confidence_router")

#: `judge(messages, slm_answer, fallback_answer) -> bool` (sync or async): do they agree?
Judge = Callable[[Sequence[Message], str, str], "bool | Awaitable[bool]"]


def _normalize(text: str) -> list[str]:
    from ..scoring import NO_ANSWER_PHRASES, normalize_answer

    norm = normalize_answer(text)
    return [] if norm in NO_ANSWER_PHRASES else norm.split()


def agreement(a: str, b: str) -> tuple[float, float]:
    """Exact match and token F1 of two answers after SQuAD normalisation (both empty: 1)."""
    ta, tb = _normalize(a), _normalize(b)
    if not ta or not tb:
        same = float(ta == tb)
        return same, same
    common = Counter(ta) & Counter(tb)
    overlap = sum(common.values())
    em = float(ta == tb)
    if overlap == 0:
        return em, 0.0
    precision, recall = overlap / len(ta), overlap / len(tb)
    return em, 2 * precision * recall / (precision + recall)


class Monitor:
    """Labels, shadow checks and trace records for one Router (see the module docstring)."""

    def __init__(
        self,
        fallback: Escalator,
        ledger: Ledger,
        fallback_price: Price,
        *,
        recorder: TraceRecorder | None = None,
        shadow_rate: float = 0.0,
        judge: Judge | None = None,
        min_f1: float = 0.5,
        max_pending: int = 4,
        timeout: float | None = None,
        seed: int | None = None,
    ) -> None:
        if (
            isinstance(shadow_rate, bool)
            or not isinstance(shadow_rate, (int, float))
            or not 0.0 <= shadow_rate <= 1.0
        ):
            raise ConfigurationError(
                "shadow_rate", f"must be a number between 0 and 1, got {shadow_rate!r}"
            )
        if isinstance(min_f1, bool) or not isinstance(min_f1, (int, float)) or not 0 < min_f1 <= 1:
            raise ConfigurationError("shadow_min_f1", f"must be in (0, 1], got {min_f1!r}")
        if judge is not None and not callable(judge):
            raise ConfigurationError(
                "shadow_judge", f"must be callable, got {type(judge).__name__}"
            )
        self.fallback = fallback
        self.ledger = ledger
        self.fallback_price = fallback_price
        self.recorder = recorder
        self.shadow_rate = float(shadow_rate)
        self.judge = judge
        self.min_f1 = float(min_f1)
        self.max_pending = max_pending
        self.timeout = 120.0 if timeout is None else timeout
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._context: weakref.WeakKeyDictionary[Generation, tuple[Any, ...]] = (
            weakref.WeakKeyDictionary()
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._futures: set[concurrent.futures.Future[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        atexit.register(_close_at_exit, weakref.ref(self))

    # -- called by the Router ---------------------------------------------------------------

    def remember(
        self, gen: Generation, messages: list[Message], stop: Any, max_tokens: int | None
    ) -> None:
        """Keep a query's messages until its answer is final (weakly, by its SLM generation)."""
        with self._lock:
            self._context[gen] = (messages, None if stop is None else list(stop), max_tokens)

    def observe(self, result: RoutedResult) -> None:
        """Label, shadow-check and record one answered query. Never raises, never waits."""
        try:
            self._observe(result)
        except Exception:  # a bug here must not fail the user's query
            logger.exception("confidence-router monitor failed on one query (ignored)")

    def _observe(self, result: RoutedResult) -> None:
        with self._lock:
            ctx = self._context.pop(result.slm, None) if result.slm is not None else None
            audit = self.shadow_rate > 0 and self._rng.random() < self.shadow_rate
        messages, stop, max_tokens = ctx if ctx is not None else (None, None, None)
        label: dict[str, Any] = {
            "audit": audit,
            "source": None,
            "em": None,
            "f1": None,
            "agree": None,
            "shadow": None,
        }
        slm, fallback = result.slm, result.fallback
        has_slm_answer = slm is not None and bool(slm.text.strip())
        if result.route == "llm" and has_slm_answer and fallback is not None:
            assert slm is not None
            if (
                audit
                and self.judge is not None
                and messages is not None
                and self._submit(self._judged(result, messages, label))
            ):
                return
            self._label(label, "escalation", *agreement(slm.text, fallback.text))
        elif (
            result.route == "slm"
            and audit
            and has_slm_answer
            and result.fallback_error is None
            and messages is not None
        ):
            if self._submit(self._shadow(result, messages, stop, max_tokens, label)):
                return
            label["shadow"] = "skipped"
            self.ledger.record_shadow("skipped")
        self._write(result, messages, max_tokens, label)

    def _label(self, label: dict[str, Any], source: str, em: float, f1: float) -> None:
        label.update(source=source, em=round(em, 5), f1=round(f1, 5), agree=f1 >= self.min_f1)

    def _write(
        self,
        result: RoutedResult,
        messages: list[Message] | None,
        max_tokens: int | None,
        label: dict[str, Any],
        shadow: Generation | None = None,
    ) -> None:
        if self.recorder is None:
            return
        self.recorder.write(
            build_record(
                result,
                messages,
                store_text=self.recorder.store_text,
                dataset=self.recorder.dataset,
                max_tokens=max_tokens,
                label=label,
                shadow=shadow,
            )
        )

    # -- background work --------------------------------------------------------------------

    def _start(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    loop.close()

            self._thread = threading.Thread(
                target=run, name="confidence-router-shadow", daemon=True
            )
            self._thread.start()
            ready.wait()
            self._loop = loop
        return self._loop

    def _submit(self, coro: Any) -> bool:
        """Run `coro` in the background; False (and the coroutine closed) if at capacity."""
        with self._lock:
            if self._closed or len(self._futures) >= self.max_pending:
                coro.close()
                return False
            loop = self._start()
            future = asyncio.run_coroutine_threadsafe(self._tracked(coro), loop)
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return True

    def _forget(self, future: concurrent.futures.Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)

    async def _tracked(self, coro: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await coro
        finally:
            self._tasks.discard(task)

    async def _agree(
        self, messages: list[Message], slm_text: str, fb_text: str, label: dict[str, Any]
    ) -> bool:
        if self.judge is not None:
            verdict = self.judge(messages, slm_text, fb_text)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            em, f1 = agreement(slm_text, fb_text)
            label.update(
                source="judge", em=round(em, 5), f1=1.0 if verdict else 0.0, agree=bool(verdict)
            )
            return bool(verdict)
        em, f1 = agreement(slm_text, fb_text)
        self._label(label, "shadow", em, f1)
        return f1 >= self.min_f1

    async def _shadow(
        self,
        result: RoutedResult,
        messages: list[Message],
        stop: Any,
        max_tokens: int | None,
        label: dict[str, Any],
    ) -> None:
        assert result.slm is not None
        gen: Generation | None = None
        try:
            gen = await asyncio.wait_for(
                self.fallback.agenerate(messages, stop=stop, max_tokens=max_tokens),
                self.timeout,
            )
            agree = await self._agree(messages, result.slm.text, gen.text, label)
            label["shadow"] = "done"
            self.ledger.record_shadow(
                "agree" if agree else "disagree",
                {gen.model: gen.usage},
                self.fallback_price.cost(gen.usage),
            )
        except asyncio.CancelledError:
            label["shadow"] = "cancelled"
            self.ledger.record_shadow("cancelled")
            self._write(result, messages, max_tokens, label)
            raise
        except Exception as exc:
            if self._closed:  # shutting down: e.g. no executor left at interpreter exit
                label["shadow"] = "cancelled"
                self.ledger.record_shadow("cancelled")
                self._write(result, messages, max_tokens, label)
                return
            label["shadow"] = f"failed: {type(exc).__name__}"
            usage = {gen.model: gen.usage} if gen is not None else None
            self.ledger.record_shadow("failed", usage)
            logger.warning(
                "shadow check failed (%s); the answer was not labelled", type(exc).__name__
            )
        self._write(result, messages, max_tokens, label, shadow=gen)

    async def _judged(
        self, result: RoutedResult, messages: list[Message], label: dict[str, Any]
    ) -> None:
        assert result.slm is not None and result.fallback is not None
        try:
            await self._agree(messages, result.slm.text, result.fallback.text, label)
        except asyncio.CancelledError:
            self._label(label, "escalation", *agreement(result.slm.text, result.fallback.text))
            self._write(result, messages, None, label)
            raise
        except Exception as exc:
            logger.warning("the shadow judge failed (%s); using token F1", type(exc).__name__)
            self._label(label, "escalation", *agreement(result.slm.text, result.fallback.text))
        self._write(result, messages, None, label)

    @property
    def pending(self) -> int:
        """Shadow checks still running."""
        with self._lock:
            return len(self._futures)

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until the shadow checks running now have finished (for tests and scripts)."""
        with self._lock:
            futures = list(self._futures)
        done, not_done = concurrent.futures.wait(futures, timeout=timeout)
        return not not_done

    def close(self, timeout: float = 10.0) -> None:
        """Cancel the shadow checks still running, then flush and close the trace file."""
        with self._lock:
            self._closed = True
            loop = self._loop
        if loop is not None and loop.is_running():

            async def cancel_all() -> None:
                tasks = list(self._tasks)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

            try:
                asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(timeout)
            except (concurrent.futures.TimeoutError, RuntimeError):
                logger.warning("shadow checks did not stop within %ss", timeout)
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
        if self.recorder is not None:
            self.recorder.close(timeout)


def _close_at_exit(ref: weakref.ref[Monitor]) -> None:
    """A program ending without `close()`: cancel the checks, write their records."""
    monitor = ref()
    if monitor is not None:
        monitor.close(timeout=2.0)


__all__ = ["Judge", "Monitor", "agreement"]

"""Hedged escalation (opt-in, async modes): start the fallback early when the SLM looks unsure.

With ``Router(hedge=Hedge(after_tokens=4, low=..., high=...))`` the router
scores the SLM's answer after ``after_tokens`` tokens; when that prefix score
lies in the grey zone ``[low, high)`` it starts the fallback call at once, in
parallel with the rest of the SLM's answer. The final decision is made as
always (on the whole answer, or at an early abort): if it escalates, the
fallback's answer is already on its way; if it keeps the SLM's answer, the
fallback call is cancelled, and the tokens it produced until then are counted
in the ledger and the result's cost (``usage_by_model`` names them).

Cost: every hedged query that ends up answered by the SLM pays for part of a
fallback call it did not need. Use it where time to first token matters more
than that (latency-critical chat), with a narrow band. The invariant holds: no
text reaches the caller before the decision, and a stream never mixes the
two models' text. Only ``ainvoke``, ``abatch`` and ``astream`` hedge (a sync
call cannot cancel a blocking fallback call); the sync modes ignore ``hedge``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..backends.escalation import Escalator, astream_escalation, check_finished
from ..errors import ConfigurationError, FallbackError, SLMError
from ..signals.incremental import IncrementalSignals
from ..types import Decision, Generation, Message, RouteChunk, RoutedResult, TokenChunk, Usage
from ._accumulate import accumulate
from ._deadline import DeadlineExceeded, aclose_quietly, wait_at_most
from .early_exit import Checks, agenerate_watched

if TYPE_CHECKING:
    from .router import Router

_END = object()


@dataclass(frozen=True)
class Hedge:
    """When to start the fallback in parallel: after ``after_tokens`` SLM tokens, if the
    policy's score of that prefix is in ``[low, high)`` (in the policy's score units)."""

    after_tokens: int = 4
    low: float = -math.inf
    high: float = math.inf

    def __post_init__(self) -> None:
        if isinstance(self.after_tokens, bool) or not isinstance(self.after_tokens, int):
            raise ConfigurationError(
                "hedge.after_tokens", f"must be an int, got {self.after_tokens!r}"
            )
        if self.after_tokens < 1:
            raise ConfigurationError("hedge.after_tokens", f"must be >= 1, got {self.after_tokens}")
        for side in ("low", "high"):
            value = getattr(self, side)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ConfigurationError(f"hedge.{side}", f"must be a number, got {value!r}")
        if self.low >= self.high:
            raise ConfigurationError("hedge", f"low {self.low!r} must be below high {self.high!r}")


class HedgedCall:
    """One fallback call running in a task, its chunks kept and queued for a stream."""

    def __init__(
        self,
        fallback: Escalator,
        model: str,
        messages: list[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
    ) -> None:
        self.model = model
        self.chunks: list[TokenChunk] = []
        self.whole: Generation | None = None
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.started = time.perf_counter()
        self.task = asyncio.ensure_future(self._run(fallback, messages, stop, max_tokens))

    async def _run(
        self,
        fallback: Escalator,
        messages: list[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
    ) -> None:
        try:
            stream = astream_escalation(fallback, messages, stop=stop, max_tokens=max_tokens)
            if stream is None:
                self.whole = await fallback.agenerate(messages, stop=stop, max_tokens=max_tokens)
                return
            try:
                async for chunk in stream:
                    self.chunks.append(chunk)
                    self.queue.put_nowait(chunk)
                check_finished(self.chunks, self.model)  # a cut stream is a failed call
            finally:
                await aclose_quietly(stream)
        except BaseException as exc:
            self.queue.put_nowait(exc)
            raise
        finally:
            self.queue.put_nowait(_END)

    def generation(self) -> Generation:
        if self.whole is not None:
            return self.whole
        return accumulate(
            self.chunks,
            model=self.model,
            latency_s=time.perf_counter() - self.started,
            has_logprobs=False,
        )

    async def result(self, timeout: float | None) -> Generation:
        """The whole answer (raises what the call raised, or DeadlineExceeded)."""
        if timeout is None:
            await asyncio.shield(self.task)
        else:
            remaining = timeout - (time.perf_counter() - self.started)
            await wait_at_most(asyncio.shield(self.task), max(remaining, 0.0))
        return self.generation()

    async def stream(self, timeout: float | None) -> AsyncIterator[TokenChunk]:
        """Every chunk from the first, then the rest as they come (the whole answer as one
        chunk for a fallback that cannot stream)."""
        while True:
            if timeout is None:
                item = await self.queue.get()
            else:
                remaining = timeout - (time.perf_counter() - self.started)
                item = await wait_at_most(self.queue.get(), max(remaining, 0.0))
            if item is _END:
                if self.whole is not None:
                    yield TokenChunk(self.whole.text, usage=self.whole.usage, finish_reason="stop")
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, TokenChunk)
            yield item

    async def cancel(self) -> Generation:
        """Stop the call; what it produced until now, its tokens counted."""
        if not self.task.done():
            self.task.cancel()
        await asyncio.wait({self.task})  # cancelled, or it had failed: either way it lost
        if not self.task.cancelled():
            self.task.exception()  # retrieved: no "exception never retrieved" warning
        gen = self.generation()
        if gen.usage.completion_tokens == 0:  # a cancelled stream reports no usage
            received = sum(len(c.tokens) or int(bool(c.text)) for c in self.chunks)
            usage = gen.usage
            gen = replace(
                gen, usage=Usage(usage.prompt_tokens, received, usage.prompt_unknown_calls)
            )
        return gen


def _hedge_note(call: HedgedCall, after: int, loser: Generation | None) -> str:
    if loser is None:
        return f"; hedged: the fallback was started after {after} SLM tokens"
    return (
        f"; hedged: the fallback was started after {after} SLM tokens and cancelled "
        f"({loser.usage.completion_tokens} of its tokens counted)"
    )


def _noted(decision: Decision, note: str) -> Decision:
    return replace(decision, reason=decision.reason + note)


async def _slm_phase(
    router: Router, msgs: list[Message], stop: Sequence[str] | None, max_tokens: int | None
) -> tuple[Generation | None, SLMError | None, HedgedCall | None, int]:
    hedge = router.hedge
    assert hedge is not None
    checks = router._abort_checks() or Checks(())
    call: HedgedCall | None = None
    looked = False
    at = 0

    def on_tokens(acc: IncrementalSignals) -> None:
        nonlocal call, looked, at
        if looked or acc.count < hedge.after_tokens:
            return
        looked = True
        score = router.policy.score(acc.snapshot())
        if hedge.low <= score < hedge.high:
            at = acc.count
            call = HedgedCall(router.fallback, router.fallback_model, msgs, stop, max_tokens)

    try:
        gen = await agenerate_watched(
            router.slm, msgs, checks, stop=stop, max_tokens=max_tokens, on_tokens=on_tokens
        )
        router._check_scorable(gen)
        return gen, None, call, at
    except SLMError as exc:
        try:
            return None, router._slm_failed(exc), call, at
        except BaseException:
            if call is not None:
                await call.cancel()
            raise
    except BaseException:
        if call is not None:
            await call.cancel()
        raise


async def hedged_ainvoke(
    router: Router, messages: Any, stop: Sequence[str] | None, max_tokens: int | None
) -> RoutedResult:
    """``Router.ainvoke`` with a hedged fallback."""
    msgs = router._prepare(messages)
    started = time.perf_counter()
    slm, error, call, at = await _slm_phase(router, msgs, stop, max_tokens)
    try:
        decision = router._decide(slm, error, msgs)
    except BaseException:
        if call is not None:
            await call.cancel()
        raise
    if call is None:
        if decision.route == "slm":
            return router._finish(decision, slm, None, error, started)
        try:
            fallback = await router._arun_fallback(msgs, stop, max_tokens, error)
        except FallbackError as exc:
            return router._fallback_failed(exc, decision, slm, error, started)
        return router._finish(decision, slm, fallback, error, started)
    if decision.route == "slm":
        loser = await call.cancel()
        return router._finish(
            _noted(decision, _hedge_note(call, at, loser)),
            slm,
            None,
            error,
            started,
            hedge_loser=loser,
        )
    decision = _noted(decision, _hedge_note(call, at, None))
    try:
        try:
            fallback = await call.result(router.fallback_timeout)
        except DeadlineExceeded as exc:
            await call.cancel()
            raise router._fallback_error(_async_deadline(exc), error) from exc
        except asyncio.CancelledError:
            await call.cancel()
            raise
        except Exception as exc:
            raise router._fallback_error(exc, error) from exc
    except FallbackError as exc:
        return router._fallback_failed(exc, decision, slm, error, started)
    return router._finish(decision, slm, fallback, error, started)


def _async_deadline(exc: DeadlineExceeded) -> DeadlineExceeded:
    from .router import _AsyncDeadline

    return _AsyncDeadline(str(exc))


async def hedged_astream(
    router: Router, messages: Any, stop: Sequence[str] | None, max_tokens: int | None
) -> AsyncIterator[RouteChunk]:
    """``Router.astream`` with a hedged fallback: the same chunks, sooner when escalated."""
    from .router import _forward, _replay

    msgs = router._prepare(messages)
    started = time.perf_counter()
    slm, error, call, at = await _slm_phase(router, msgs, stop, max_tokens)
    try:
        decision = router._decide(slm, error, msgs)
        if call is not None and decision.route == "slm":
            loser = await call.cancel()
            noted = _noted(decision, _hedge_note(call, at, loser))
            result = router._finish(
                noted, slm, None, error, started, hedge_loser=loser, count=False
            )
            assert slm is not None
            for chunk in _replay(noted, slm, result, router._count):
                yield chunk
            return
    except BaseException:
        if call is not None:
            await call.cancel()
        raise
    if call is None:
        rest = router._astream_decided(msgs, stop, max_tokens, slm, error, decision, started)
        try:
            async for chunk in rest:
                yield chunk
        finally:
            await aclose_quietly(rest)
        return
    decision = _noted(decision, _hedge_note(call, at, None))
    models = router._streamed_models(slm)
    sent = False
    rescued: RoutedResult | None = None
    try:
        try:
            async for piece in call.stream(router.fallback_timeout):
                if piece.text or piece.tokens:
                    yield _forward(piece, None if sent else decision, models)
                    sent = True
        except DeadlineExceeded as exc:
            raise router._fallback_error(_async_deadline(exc), error) from exc
        except Exception as exc:
            raise router._fallback_error(exc, error) from exc
    except FallbackError as exc:
        rescued = router._fallback_failed(
            exc, decision, slm, error, started, text_sent=sent, count=False
        )
    finally:
        await call.cancel()
    if rescued is not None:
        for chunk in _replay(rescued.decision, rescued.answered_by, rescued, router._count):
            yield chunk
        return
    result = router._finish(decision, slm, call.generation(), error, started)
    yield RouteChunk(
        "",
        "llm",
        None if sent else decision,
        result=result,
        done=True,
        models=None if sent else result.models,
    )


__all__ = ["Hedge", "HedgedCall", "hedged_ainvoke", "hedged_astream"]

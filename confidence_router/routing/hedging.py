"""Hedged escalation (opt-in, async modes): start the fallback early when the SLM looks unsure.

With `Router(hedge=Hedge(after_tokens=4, low=..., high=...))` the router
scores the SLM's answer after `after_tokens` tokens; when that prefix score
lies in the grey zone `[low, high)` it starts the fallback call at once, in
parallel with the rest of the SLM's answer. The final decision is made as
always (on the whole answer, or at an early abort): if it escalates, the
fallback's answer is already on its way; if it keeps the SLM's answer, the
fallback call is cancelled, and the tokens it produced until then are counted
in the ledger and the result's cost (`usage_by_model` names them).

Cost: every hedged query that ends up answered by the SLM pays for part of a
fallback call it did not need. Use it where time to first token matters more
than that (latency-critical chat), with a narrow band. The invariant holds: no
text reaches the caller before the decision, and a stream never mixes the
two models' text. Only `ainvoke`, `abatch` and `astream` hedge (a sync
call cannot cancel a blocking fallback call); the sync modes ignore `hedge`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, replace

from .._accumulate import accumulate
from .._deadline import aclose_quietly, wait_at_most
from ..backends.escalation import Escalator, astream_escalation, check_finished
from ..errors import ConfigurationError, SLMError
from ..signals.incremental import IncrementalSignals
from ..types import Decision, Generation, Message, RouteChunk, RoutedResult, TokenChunk, Usage
from ._pipeline import EscalatedStream, Pipeline, Query
from .early_exit import Checks, agenerate_watched

_END = object()


@dataclass(frozen=True)
class Hedge:
    """When to start the fallback in parallel: after `after_tokens` SLM tokens, if the
    policy's score of that prefix is in `[low, high)` (in the policy's score units).

    Hedging trades the fallback's tokens for latency on the queries most likely to
    escalate; async calls only (`Router(hedge=...)`).

    Raises:
        ConfigurationError: `after_tokens` not an int >= 1, a bound that is not
            a number, or `low` not below `high`.
    """

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
        """The whole answer (raises what the call raised, or CancelledAtDeadline)."""
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


def _hedge_note(after: int, loser: Generation | None) -> str:
    if loser is None:
        return f"; hedged: the fallback was started after {after} SLM tokens"
    return (
        f"; hedged: the fallback was started after {after} SLM tokens and cancelled "
        f"({loser.usage.completion_tokens} of its tokens counted)"
    )


def _noted(decision: Decision, note: str) -> Decision:
    return replace(decision, reason=decision.reason + note)


async def _slm_phase(
    pipeline: Pipeline, hedge: Hedge, query: Query
) -> tuple[HedgedCall | None, int]:
    """The SLM's answer (or failure) on the query, and the fallback call started on the
    way, if its prefix score fell in the band (after how many tokens)."""
    settings = pipeline.settings
    checks = pipeline.abort_checks() or Checks(())
    call: HedgedCall | None = None
    looked = False
    at = 0

    def on_tokens(acc: IncrementalSignals) -> None:
        nonlocal call, looked, at
        if looked or acc.count < hedge.after_tokens:
            return
        looked = True
        score = settings.policy.score(acc.snapshot())
        if hedge.low <= score < hedge.high:
            at = acc.count
            call = HedgedCall(
                settings.fallback, settings.fallback_model, query.msgs, query.stop, query.max_tokens
            )

    try:
        try:
            gen = await agenerate_watched(
                settings.slm,
                query.msgs,
                checks,
                stop=query.stop,
                max_tokens=query.max_tokens,
                on_tokens=on_tokens,
            )
            pipeline.answered(query, gen)
        except SLMError as exc:
            query.error = pipeline.slm_failed(exc)  # raises when strict
    except BaseException:
        if call is not None:
            await call.cancel()
        raise
    return call, at


async def _decide(
    pipeline: Pipeline, query: Query, call: HedgedCall | None, at: int, *, count: bool
) -> tuple[Decision, RoutedResult | None]:
    """The decision, noted when a call was started; when it keeps the SLM's answer, that
    call is cancelled and the result made (counted unless `count=False`)."""
    try:
        decision = pipeline.decide(query.slm, query.error, query.msgs)
        if call is None:
            return decision, None
        if decision.route == "llm":
            return _noted(decision, _hedge_note(at, None)), None
        loser = await call.cancel()
        noted = _noted(decision, _hedge_note(at, loser))
        return noted, pipeline.finish(noted, query, None, hedge_loser=loser, count=count)
    except BaseException:
        if call is not None:
            await call.cancel()
        raise


async def hedged_ainvoke(pipeline: Pipeline, hedge: Hedge, query: Query) -> RoutedResult:
    """`Router.ainvoke` with a hedged fallback."""
    call, at = await _slm_phase(pipeline, hedge, query)
    decision, kept = await _decide(pipeline, query, call, at, count=True)
    if kept is not None:
        return kept
    if call is None:
        return await pipeline.aanswer(query, decision)
    try:
        fallback = await call.result(pipeline.settings.fallback_timeout)
    except BaseException as exc:
        await call.cancel()  # at the deadline, or cancelled ourselves (a failed call is over)
        if not isinstance(exc, Exception):
            raise
        return pipeline.fallback_failed(exc, decision, query)
    return pipeline.finish(decision, query, fallback)


async def hedged_astream(
    pipeline: Pipeline, hedge: Hedge, query: Query
) -> AsyncIterator[RouteChunk]:
    """`Router.astream` with a hedged fallback: the same chunks, sooner when escalated."""
    call, at = await _slm_phase(pipeline, hedge, query)
    decision, kept = await _decide(pipeline, query, call, at, count=False)
    if kept is not None:
        for chunk in pipeline.replay(kept):
            yield chunk
        return
    if call is None:
        rest = pipeline.astream_decided(query, decision)
        try:
            async for chunk in rest:
                yield chunk
        finally:
            await aclose_quietly(rest)
        return
    out = EscalatedStream(pipeline, query, decision)
    rescued: RoutedResult | None = None
    try:
        async for piece in call.stream(pipeline.settings.fallback_timeout):
            for chunk in out.forward(piece):
                yield chunk
    except Exception as exc:
        rescued = out.failed(exc)
    finally:
        await call.cancel()
    for chunk in out.end(rescued, call.generation()):
        yield chunk


__all__ = ["Hedge", "HedgedCall", "hedged_ainvoke", "hedged_astream"]

"""The steps of one routed query, shared by every call mode of the Router and by hedging.

A query is started (its messages checked, its clock running); the SLM answers,
watched for an early abort; the policy decides, then self-consistency where it
is unsure; the fallback answers when the query is escalated, called or
streamed after the decision; and the result is counted once
(`Pipeline.count`). `Pipeline` runs these steps on the live
settings of its router (`RouteSettings`: a policy set on the router
later takes effect at the next query); the router's call modes and
`.hedging` compose them.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, TypeVar

from .._accumulate import accumulate
from .._deadline import (
    CancelledAtDeadline,
    DeadlineExceeded,
    aclose_quietly,
    anext_before,
    call_at_most,
    iterate_at_most,
    wait_at_most,
)
from ..backends.base import SLMBackend
from ..backends.escalation import Escalator, astream_escalation, check_finished, stream_escalation
from ..errors import (
    FallbackError,
    FallbackTimeoutError,
    InvalidInputError,
    MissingLogprobsError,
    SLMError,
    SLMResponseError,
)
from ..observe.ledger import Ledger, Price
from ..observe.shadow import Monitor
from ..policies.base import Policy
from ..policies.defaults import cut_off_escalates
from ..signals.token import compute_signals
from ..types import (
    Decision,
    Generation,
    Message,
    MessagesLike,
    RouteChunk,
    RoutedResult,
    TokenChunk,
    Usage,
    as_messages,
)
from .early_exit import (
    ABORTED,
    Checks,
    EarlyExitRule,
    abort_decision,
    agenerate_watched,
    checks_for,
    generate_watched,
)
from .self_consistency import SelfConsistency

logger = logging.getLogger("confidence_router")
T = TypeVar("T")

OnFallbackError = Literal["raise", "return_slm"]
#: `RoutedResult.models`: which model was the SLM, the fallback, and which answered.
Models = dict[str, str | None]


class RouteSettings(Protocol):
    """The router's settings, as the pipeline reads them at every step."""

    slm: SLMBackend
    fallback: Escalator
    policy: Policy
    policy_label: str | None
    strict: bool
    slm_price: Price
    fallback_price: Price
    fallback_timeout: float | None
    on_fallback_error: OnFallbackError
    early_abort: bool | EarlyExitRule
    consistency: SelfConsistency | None
    ledger: Ledger

    @property
    def monitor(self) -> Monitor | None: ...

    @property
    def fallback_model(self) -> str: ...


@dataclass
class Query:
    """One query on its way: what was asked, since when, and the SLM's answer or failure."""

    msgs: list[Message]
    stop: Sequence[str] | None
    max_tokens: int | None
    started: float = field(default_factory=time.perf_counter)
    slm: Generation | None = None
    error: SLMError | None = None


class Pipeline:
    """The steps of routing one query, on the live settings of a router."""

    def __init__(self, settings: RouteSettings) -> None:
        self.settings = settings
        # Built now so that a bad early_abort fails at construction, not at the first query.
        self._early: tuple[Policy, Checks | None] = (
            settings.policy,
            checks_for(settings.policy, settings.early_abort),
        )

    # -- the I/O-free steps ------------------------------------------------------------

    @staticmethod
    def start(messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None) -> Query:
        """A new query, its clock started; InvalidInputError when there is nothing to answer."""
        msgs = as_messages(messages)
        if not msgs:
            raise InvalidInputError("messages is empty: give at least one message")
        if not any(m.content.strip() for m in msgs):
            raise InvalidInputError("every message is empty: there is nothing to answer")
        return Query(msgs, stop, max_tokens)

    @staticmethod
    def check_scorable(generation: Generation) -> None:
        """Turn an answer the policy cannot score into a typed SLMError."""
        if not generation.has_logprobs:
            raise MissingLogprobsError(
                f"model {generation.model!r} answered without log-probabilities",
                model=generation.model,
            )
        if not all(map(math.isfinite, generation.token_logprobs.tolist())):
            # the router's own check, for backends that do not validate: an SLM failure
            raise SLMResponseError(
                f"model {generation.model!r} returned invalid log-probabilities (NaN or -inf)",
                model=generation.model,
            )

    def abort_checks(self) -> Checks | None:
        """The early-abort checks of the current policy (None: decide on whole answers)."""
        policy, checks = self._early
        if policy is not self.settings.policy:
            checks = checks_for(self.settings.policy, self.settings.early_abort)
            self._early = (self.settings.policy, checks)
        return checks

    def slm_failed(self, error: SLMError) -> SLMError:
        """The SLM's failure, to escalate with; raised (and counted) when `strict`."""
        if self.settings.strict:
            self.settings.ledger.record_error(slm_failed=True)
            raise error
        logger.warning("SLM failed (%s), escalating: %s", error.reason_code, error)
        return error

    def decide(
        self, slm: Generation | None, error: SLMError | None, msgs: Sequence[Message] = ()
    ) -> Decision:
        """The policy's decision on the SLM's answer (escalate when there is none to score)."""
        settings = self.settings
        policy_name = settings.policy_label or type(settings.policy).__name__
        threshold = settings.policy.threshold
        if error is not None or slm is None:
            code = error.reason_code if error is not None else "slm_error"
            reason = f"escalated because the SLM failed ({code}): {error}"
            return Decision("llm", None, threshold, {}, reason, policy_name)
        checks = self.abort_checks()
        if slm.finish_reason == ABORTED and checks is not None:
            return abort_decision(checks, slm)
        if not slm.text.strip():
            return Decision(
                "llm", None, threshold, {}, "escalated: the SLM gave an empty answer", policy_name
            )
        try:
            signals = compute_signals(slm, msgs)
        except ValueError as exc:
            err = SLMResponseError(f"unusable log-probabilities: {exc}", model=slm.model)
            self.slm_failed(err)
            return Decision("llm", None, threshold, {}, f"escalated: {err}", policy_name)
        decision = settings.policy.decide(signals)
        if settings.policy_label is not None:
            decision = replace(decision, policy=settings.policy_label)
        return cut_off_escalates(decision, slm)

    def _sampling(self, decision: Decision, query: Query) -> dict[str, Any] | None:
        """Arguments of the SLM's `sample`/`asample` when this answer is sampled, else None."""
        sc = self.settings.consistency
        if sc is None or not sc.wants_samples(decision, query.slm):
            return None
        return {
            "k": sc.k,
            "temperature": sc.temperature,
            "seed": sc.seed,
            "stop": query.stop,
            "max_tokens": sc.max_tokens or query.max_tokens,
        }

    def _after_sampling(
        self, decision: Decision, slm: Generation, samples: list[Generation] | SLMError
    ) -> Decision:
        """The decision the samples lead to; the policy's own when drawing them failed."""
        sc = self.settings.consistency
        assert sc is not None
        if isinstance(samples, SLMError):
            logger.warning("consistency samples failed, the policy decides: %s", samples)
            return sc.failed(decision, samples)
        return sc.decide(decision, sc.check(slm.text, samples))

    def fallback_error(self, exc: BaseException, error: SLMError | None) -> FallbackError:
        """The typed error for a failed fallback call (not counted yet: see fallback_failed)."""
        name = self.settings.fallback_model
        also = f" (the SLM had failed too: {error.reason_code})" if error is not None else ""
        if isinstance(exc, DeadlineExceeded):
            background = (
                ""
                if isinstance(exc, CancelledAtDeadline)
                else "; the call may still be running in the background"
            )
            return FallbackTimeoutError(
                f"the fallback model {name!r} timed out: no complete answer "
                f"within fallback_timeout={self.settings.fallback_timeout:g}s{background}{also}"
            )
        return FallbackError(
            f"the fallback model {name!r} failed after escalation{also}: "
            f"{type(exc).__name__}: {exc}"
        )

    def fallback_failed(
        self,
        exc: Exception,
        decision: Decision,
        query: Query,
        *,
        text_sent: bool = False,
        count: bool = True,
    ) -> RoutedResult:
        """Return the SLM's answer, flagged, if asked to and there is one; else count and raise.

        `exc` is what the fallback call raised; the error raised is its typed
        `fallback_error`. `text_sent`: part of the fallback's answer
        already reached the caller, so it must not be completed by another
        model's answer. `count=False`: a stream counts the returned answer at
        its closing chunk (see `count`).
        """
        failure = self.fallback_error(exc, query.error)
        failure.__cause__ = exc
        slm = query.slm
        if (
            self.settings.on_fallback_error == "return_slm"
            and not text_sent
            and slm is not None
            and slm.text.strip()
            and slm.finish_reason != ABORTED
        ):
            flagged = Decision(
                "slm",
                decision.score,
                decision.threshold,
                decision.signals,
                f"fallback failed ({type(failure).__name__}), so this is the SLM's answer, "
                f"which the policy had found unsure: {decision.reason}",
                decision.policy,
                decision.consistency,
            )
            logger.warning("fallback failed, returning the SLM answer: %s", failure)
            return self.finish(flagged, query, None, fallback_error=str(failure), count=count)
        usage = {slm.model: slm.usage} if slm is not None else None
        if usage is not None and decision.consistency is not None:
            assert slm is not None
            usage[slm.model] = usage[slm.model] + decision.consistency.usage
        self.settings.ledger.record_error(usage, slm_failed=query.error is not None)
        raise failure

    def finish(
        self,
        decision: Decision,
        query: Query,
        fallback: Generation | None,
        *,
        fallback_error: str | None = None,
        hedge_loser: Generation | None = None,
        count: bool = True,
    ) -> RoutedResult:
        """The RoutedResult; counted in the ledger now unless `count=False` (a stream
        counts it at its closing chunk: see `count`)."""
        slm_price, fallback_price = self.settings.slm_price, self.settings.fallback_price
        slm, error = query.slm, query.error
        usage: dict[str, Usage] = {}
        for gen in (slm, fallback, hedge_loser):
            if gen is not None:
                usage[gen.model] = usage.get(gen.model, Usage()) + gen.usage
        cost = slm_price.cost(slm.usage) if slm is not None else 0.0
        check = decision.consistency
        if check is not None and slm is not None:  # the samples are SLM work too
            usage[slm.model] = usage.get(slm.model, Usage()) + check.usage
            cost += slm_price.cost(check.usage)
        if hedge_loser is not None:  # a cancelled hedged fallback call is paid for too
            cost += fallback_price.cost(hedge_loser.usage)
        if fallback is not None:
            cost += fallback_price.cost(fallback.usage)
        answer = fallback if decision.route == "llm" else slm
        assert answer is not None
        result = RoutedResult(
            text=answer.text,
            decision=decision,
            slm=slm,
            fallback=fallback,
            latency_s=time.perf_counter() - query.started,
            usage_by_model=usage,
            cost=cost,
            slm_error=f"{error.reason_code}: {error}" if error is not None else None,
            fallback_error=fallback_error,
        )
        if count:
            self.count(result)
        return result

    def count(self, result: RoutedResult) -> None:
        """Count one answered query in the ledger (and the trace / shadow checks).

        When a query is counted, the same in every mode (this is the one place):
        `invoke`/`ainvoke` when they return; a stream just before it yields
        its closing `done` chunk (never before its first chunk), so a stream
        counts only once its answer is complete. A query that raises is counted
        once as an error where it raises (`strict` SLM failure, failed
        fallback). A query the caller cancels or abandons before either (a
        cancelled `ainvoke`/`abatch` task, a stream closed or cancelled
        before its `done` chunk) counts once in `cancelled` instead, outside
        `queries` (see `LedgerSnapshot`).
        """
        settings = self.settings
        fallback, slm = result.fallback, result.slm
        if fallback is not None:
            baseline = settings.fallback_price.cost(fallback.usage)
        else:
            assert slm is not None
            baseline = settings.fallback_price.cost(slm.usage)
        check = result.decision.consistency
        settings.ledger.record(
            result,
            baseline,
            consistency_cost=settings.slm_price.cost(check.usage) if check is not None else 0.0,
        )
        if settings.monitor is not None:
            settings.monitor.observe(result)
        decision = result.decision
        logger.info("route=%s score=%s reason=%s", decision.route, decision.score, decision.reason)

    def replay(self, result: RoutedResult) -> Iterator[RouteChunk]:
        """Chunks of a finished answer, token by token when the tokens spell the text;
        counted (`count`) just before the closing chunk."""
        decision, gen = result.decision, result.answered_by
        route = decision.route
        if gen.tokens and "".join(gen.tokens) == gen.text:
            pieces: Sequence[str] = gen.tokens
        else:
            pieces = (gen.text,)
        for i, piece in enumerate(pieces):
            logprobs = gen.token_logprobs[i : i + 1] if pieces is gen.tokens else gen.token_logprobs
            yield RouteChunk(
                piece,
                route,
                decision if i == 0 else None,
                token_logprobs=logprobs,
                tokens=(piece,) if pieces is gen.tokens else gen.tokens,
                models=result.models if i == 0 else None,
            )
        self.count(result)
        yield RouteChunk("", route, None, result=result, done=True)

    # -- sync I/O ------------------------------------------------------------------------

    def decided(self, query: Query) -> Decision:
        """Ask the SLM (its answer or failure kept on the query), then decide on the answer."""
        self._run_slm(query)
        return self._consistent(query, self.decide(query.slm, query.error, query.msgs))

    def _run_slm(self, query: Query) -> None:
        """The SLM's answer (stopped at an early abort) or its failure, kept on the query."""
        checks = self.abort_checks()
        slm = self.settings.slm
        try:
            if checks is None:
                gen = slm.generate(query.msgs, stop=query.stop, max_tokens=query.max_tokens)
            else:
                gen = generate_watched(
                    slm, query.msgs, checks, stop=query.stop, max_tokens=query.max_tokens
                )
            self.answered(query, gen)
        except SLMError as exc:
            query.error = self.slm_failed(exc)

    def answered(self, query: Query, gen: Generation) -> None:
        """Keep the SLM's answer on the query once it is scorable, and hand its messages to
        the monitor (so the trace and a shadow check can use them); every path calls this."""
        self.check_scorable(gen)
        monitor = self.settings.monitor
        if monitor is not None:
            monitor.remember(gen, query.msgs, query.stop, query.max_tokens)
        query.slm = gen

    def _consistent(self, query: Query, decision: Decision) -> Decision:
        """The decision after self-consistency sampling (unchanged when not in the band)."""
        kwargs = self._sampling(decision, query)
        if kwargs is None or query.slm is None:
            return decision
        sampler: Any = self.settings.slm
        try:
            samples: list[Generation] | SLMError = sampler.sample(query.msgs, **kwargs)
        except SLMError as exc:
            samples = exc
        return self._after_sampling(decision, query.slm, samples)

    def answer(self, query: Query, decision: Decision, *, count: bool = True) -> RoutedResult:
        """The result once decided: the SLM's answer, or the fallback's (called now)."""
        fallback = None
        if decision.route == "llm":
            try:
                fallback = self._call_fallback(query)
            except Exception as exc:
                return self.fallback_failed(exc, decision, query, count=count)
        return self.finish(decision, query, fallback, count=count)

    def _call_fallback(self, query: Query) -> Generation:
        def call() -> Generation:
            return self.settings.fallback.generate(
                query.msgs, stop=query.stop, max_tokens=query.max_tokens
            )

        timeout = self.settings.fallback_timeout
        if timeout is None:
            return call()
        return call_at_most(call, timeout, name="confidence-router-fallback")

    def _fallback_stream(
        self, query: Query, decision: Decision, open_stream: Callable[..., T | None]
    ) -> T | None:
        """The fallback's own stream of an escalated query; None when the answer was kept
        or the fallback cannot stream."""
        if decision.route != "llm":
            return None
        fallback = self.settings.fallback
        return open_stream(fallback, query.msgs, stop=query.stop, max_tokens=query.max_tokens)

    def stream_decided(self, query: Query, decision: Decision) -> Iterator[RouteChunk]:
        """The chunks once the decision is made: the kept answer replayed, or the fallback's
        streamed (replayed when it cannot stream)."""
        chunks = self._fallback_stream(query, decision, stream_escalation)
        if chunks is None:
            yield from self.replay(self.answer(query, decision, count=False))
            return
        timeout = self.settings.fallback_timeout
        if timeout is not None:
            opened = chunks
            chunks = iterate_at_most(lambda: opened, timeout, name="confidence-router-fallback")
        out = EscalatedStream(self, query, decision)
        rescued: RoutedResult | None = None
        try:
            for chunk in chunks:
                yield from out.forward(chunk)
            out.check_finished()
        except Exception as exc:
            rescued = out.failed(exc)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        yield from out.end(rescued)

    # -- async I/O -----------------------------------------------------------------------

    async def adecided(self, query: Query) -> Decision:
        """Async `decided`: cancelling it cancels the SLM request in flight."""
        await self._arun_slm(query)
        return await self._aconsistent(query, self.decide(query.slm, query.error, query.msgs))

    async def _arun_slm(self, query: Query) -> None:
        checks = self.abort_checks()
        slm = self.settings.slm
        try:
            if checks is None:
                gen = await slm.agenerate(query.msgs, stop=query.stop, max_tokens=query.max_tokens)
            else:
                gen = await agenerate_watched(
                    slm, query.msgs, checks, stop=query.stop, max_tokens=query.max_tokens
                )
            self.answered(query, gen)
        except SLMError as exc:
            query.error = self.slm_failed(exc)

    async def _aconsistent(self, query: Query, decision: Decision) -> Decision:
        kwargs = self._sampling(decision, query)
        if kwargs is None or query.slm is None:
            return decision
        sampler: Any = self.settings.slm
        try:
            samples: list[Generation] | SLMError = await sampler.asample(query.msgs, **kwargs)
        except SLMError as exc:
            samples = exc
        return self._after_sampling(decision, query.slm, samples)

    async def aanswer(
        self, query: Query, decision: Decision, *, count: bool = True
    ) -> RoutedResult:
        """Async `answer`: the fallback call is cancelled at `fallback_timeout`."""
        fallback = None
        if decision.route == "llm":
            call = self.settings.fallback.agenerate(
                query.msgs, stop=query.stop, max_tokens=query.max_tokens
            )
            timeout = self.settings.fallback_timeout
            try:
                fallback = await (call if timeout is None else wait_at_most(call, timeout))
            except Exception as exc:
                return self.fallback_failed(exc, decision, query, count=count)
        return self.finish(decision, query, fallback, count=count)

    async def astream_decided(self, query: Query, decision: Decision) -> AsyncIterator[RouteChunk]:
        """Async `stream_decided`; the fallback's stream is cancelled at its deadline."""
        chunks = self._fallback_stream(query, decision, astream_escalation)
        if chunks is None:
            for route_chunk in self.replay(await self.aanswer(query, decision, count=False)):
                yield route_chunk
            return
        out = EscalatedStream(self, query, decision)
        timeout = self.settings.fallback_timeout
        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        rescued: RoutedResult | None = None
        try:
            while True:
                try:
                    if deadline is None:
                        chunk = await chunks.__anext__()
                    else:
                        chunk = await anext_before(chunks, deadline)
                except StopAsyncIteration:
                    break
                for route_chunk in out.forward(chunk):
                    yield route_chunk
            out.check_finished()
        except Exception as exc:
            rescued = out.failed(exc)
        finally:
            await aclose_quietly(chunks)
        for route_chunk in out.end(rescued):
            yield route_chunk


class EscalatedStream:
    """The fallback's answer on its way to the caller once the query is escalated.

    The first chunk with text carries the decision and `models`; a failure
    mid-stream raises its typed error, or returns the SLM's answer (see
    `Pipeline.fallback_failed`) when no fallback text was sent yet.
    """

    def __init__(self, pipeline: Pipeline, query: Query, decision: Decision) -> None:
        self.pipeline = pipeline
        self.query = query
        self.decision = decision
        self.received: list[TokenChunk] = []
        self.sent = False
        name = pipeline.settings.fallback_model
        slm = query.slm
        #: `RoutedResult.models` of the escalation, known before the fallback's first token.
        self.models: Models = {
            "slm": slm.model if slm is not None else None,
            "llm": name,
            "answered_by": name,
        }
        self.started = time.perf_counter()

    def forward(self, chunk: TokenChunk) -> Iterator[RouteChunk]:
        """The chunk for the caller, when it has text (the first carries the decision)."""
        self.received.append(chunk)
        if chunk.text or chunk.tokens:
            first = not self.sent
            yield RouteChunk(
                chunk.text,
                "llm",
                self.decision if first else None,
                token_logprobs=chunk.token_logprobs,
                tokens=chunk.tokens,
                models=self.models if first else None,
            )
            self.sent = True

    def check_finished(self) -> None:
        """Raise IncompleteResponseError when the stream ended without its finish marker."""
        check_finished(self.received, self.pipeline.settings.fallback_model)

    def failed(self, exc: Exception) -> RoutedResult:
        """The SLM's answer to replay instead, when allowed; else the typed error, raised."""
        return self.pipeline.fallback_failed(
            exc, self.decision, self.query, text_sent=self.sent, count=False
        )

    def end(
        self, rescued: RoutedResult | None, fallback: Generation | None = None
    ) -> Iterator[RouteChunk]:
        """The closing chunks: the rescued answer replayed, else the one with the result
        (`fallback`: the whole answer, by default the chunks received)."""
        if rescued is not None:
            yield from self.pipeline.replay(rescued)
            return
        if fallback is None:
            fallback = accumulate(
                self.received,
                model=self.pipeline.settings.fallback_model,
                latency_s=time.perf_counter() - self.started,
                has_logprobs=False,
            )
        result = self.pipeline.finish(self.decision, self.query, fallback)
        first = not self.sent
        yield RouteChunk(
            "",
            "llm",
            self.decision if first else None,
            result=result,
            done=True,
            models=result.models if first else None,
        )


__all__ = [
    "EscalatedStream",
    "Models",
    "OnFallbackError",
    "Pipeline",
    "Query",
    "RouteSettings",
]

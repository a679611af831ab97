"""The cascade: the small model answers, the policy scores it, the fallback takes the rest."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Sequence,
)
from dataclasses import replace
from typing import Any, Literal

from ..backends.base import SLMBackend
from ..backends.escalation import (
    Escalator,
    as_escalator,
    astream_escalation,
    check_finished,
    stream_escalation,
)
from ..backends.sampling import Sampler
from ..errors import (
    ConfidenceRouterError,
    ConfigurationError,
    FallbackError,
    FallbackTimeoutError,
    InvalidInputError,
    MissingLogprobsError,
    SLMError,
    SLMResponseError,
)
from ..observe.ledger import Ledger, LedgerSnapshot, Price
from ..observe.recorder import TraceRecorder, as_recorder
from ..observe.shadow import Judge, Monitor
from ..policies.base import Policy, ThresholdPolicy
from ..policies.defaults import PolicyChoice, cut_off_escalates
from ..policies.registry import as_policy
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
from ._accumulate import accumulate
from ._batching import arun_batch, run_batch
from ._deadline import (
    DeadlineExceeded,
    aclose_quietly,
    anext_before,
    call_at_most,
    iterate_at_most,
    wait_at_most,
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
from .hedging import Hedge, hedged_ainvoke, hedged_astream
from .self_consistency import SelfConsistency

logger = logging.getLogger("confidence_router")

OnFallbackError = Literal["raise", "return_slm"]
Models = dict[str, str | None]


class Router:
    """Answer with the small model when it is confident, escalate otherwise.

    Args:
        slm: the small model, any :class:`SLMBackend` (``OllamaSLM``, ``LlamaCppSLM``).
        fallback: the large model: an object with ``generate``/``agenerate``
            (and optionally ``stream``/``astream``), or a plain sync or async
            callable ``(messages) -> Generation | str``.
        policy: decides from the SLM's signals; defaults to :class:`ThresholdPolicy`.
        strict: what to do when the SLM fails (unreachable, timeout, unknown
            model, no logprobs). ``False`` (default) escalates and says why in
            the Decision; ``True`` raises the typed :class:`SLMError`.
        slm_price, fallback_price: per-million-token prices for the ledger.
        max_concurrency: default parallelism of ``batch``/``abatch``.
        fallback_timeout: seconds the whole fallback call (or stream) may take
            before it fails with :class:`FallbackTimeoutError`. ``None`` (default)
            relies on the fallback's own client timeout. Async calls are
            cancelled at the deadline. Sync calls run the fallback on a
            worker thread and stop waiting: a blocked call may go on in the
            background until its own client gives up (a stream stops at its
            next chunk).
        on_fallback_error: ``"raise"`` (default) raises :class:`FallbackError`
            when the fallback fails. ``"return_slm"`` returns the SLM's own
            answer instead when there is one (the SLM answered, was scored
            and found unsure), flagged: ``route`` is ``"slm"``, the reason
            starts with "fallback failed" and ``result.fallback_error`` says
            what the fallback raised. A stream that already sent fallback
            text still raises: a half answer is never completed by another model.
        trace: a path or a :class:`TraceRecorder`: append one JSON line per answered
            query, in the evaluation's trace schema (signals and ids only unless the
            recorder has ``store_text=True``). Never blocks or fails a query.
        shadow_rate: share of queries audited (0 by default): an audited query the SLM
            kept is also sent to the fallback in the background, never delaying the
            answer; agreement of the two answers labels it, and the ledger reports the
            running precision of kept answers (``stats.kept_precision``).
        shadow_judge: ``judge(messages, slm_answer, fallback_answer) -> bool`` (sync or
            async) deciding agreement instead of token F1, e.g. for long answers.
        shadow_min_f1: normalised token F1 at which two answers agree (default 0.5).
        early_abort: stop the SLM while it is still answering once its answer
            cannot pass any more, and escalate at once (see
            :mod:`confidence_router.routing.early_exit`). ``True``: for the
            bounds of a ``ThresholdPolicy`` that can only get worse as tokens
            arrive (length over its max, min_logprob under its min,
            max_entropy over its max, sum_logprob under its min), which gives
            exactly the decision of the full answer. An :class:`EarlyExitRule`
            fitted for this policy adds its learned bound. ``False``: decide
            on the whole answer only. ``None`` (default): ``True``, except
            with ``on_fallback_error="return_slm"``, whose rescue needs the
            SLM's whole answer (an answer stopped early is never returned),
            and with ``consistency``, whose samples may keep an answer the
            policy alone would stop.
        hedge: opt-in, async modes only (see :mod:`confidence_router.routing.hedging`):
            a :class:`Hedge` starts the fallback in parallel when the score of
            the SLM's first ``after_tokens`` tokens lies in its grey zone; the
            call the final decision does not pick is cancelled and its tokens
            still counted.
        consistency: opt-in sampled self-consistency (see
            :mod:`confidence_router.routing.self_consistency`): a :class:`SelfConsistency`
            draws k extra SLM samples when the policy's score lies in its band
            and keeps the answer iff enough of them agree with it. The SLM
            must be able to sample (``sample``/``asample``). Not combinable
            with ``hedge``.

    ``policy`` may also be the path of a policy file (``confidence-router calibrate``),
    or a :class:`~confidence_router.policies.defaults.PolicyChoice` (``choose_policy(model)``),
    whose label (name and provenance) every Decision then carries.
    Call :meth:`close` (or use the router as a context manager) to cancel the
    shadow checks still running and flush the trace file.

    The decision is made before any text reaches the caller, in every mode.
    """

    def __init__(
        self,
        slm: SLMBackend,
        fallback: Any,
        policy: Policy | PolicyChoice | None = None,
        *,
        strict: bool = False,
        slm_price: Price | None = None,
        fallback_price: Price | None = None,
        max_concurrency: int = 4,
        fallback_timeout: float | None = None,
        on_fallback_error: OnFallbackError = "raise",
        trace: TraceRecorder | str | Any = None,
        shadow_rate: float = 0.0,
        shadow_judge: Judge | None = None,
        shadow_min_f1: float = 0.5,
        early_abort: bool | EarlyExitRule | None = None,
        hedge: Hedge | None = None,
        consistency: SelfConsistency | None = None,
    ) -> None:
        if not isinstance(slm, SLMBackend):
            raise ConfigurationError(
                "slm",
                f"must be an SLM backend with generate/agenerate/stream/astream and a model "
                f"name (e.g. OllamaSLM or LlamaCppSLM), got {type(slm).__name__}",
            )
        label: str | None = None
        if isinstance(policy, PolicyChoice):  # a named default: decisions carry its label
            label, policy = policy.label, policy.policy
        policy = as_policy(policy)
        chosen: Policy = ThresholdPolicy() if policy is None else policy
        if not isinstance(chosen, Policy):
            raise ConfigurationError(
                "policy", f"must have score/decide/threshold, got {type(chosen).__name__}"
            )
        if not isinstance(strict, bool):
            raise ConfigurationError("strict", f"must be True or False, got {strict!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int):
            raise ConfigurationError("max_concurrency", f"must be an int, got {max_concurrency!r}")
        if max_concurrency < 1:
            raise ConfigurationError("max_concurrency", f"must be >= 1, got {max_concurrency}")
        if fallback_timeout is not None and (
            isinstance(fallback_timeout, bool)
            or not isinstance(fallback_timeout, (int, float))
            or not math.isfinite(fallback_timeout)
            or fallback_timeout <= 0
        ):
            raise ConfigurationError(
                "fallback_timeout",
                f"must be None or a number of seconds > 0, got {fallback_timeout!r}",
            )
        if on_fallback_error not in ("raise", "return_slm"):
            raise ConfigurationError(
                "on_fallback_error", f"must be 'raise' or 'return_slm', got {on_fallback_error!r}"
            )
        if hedge is not None and not isinstance(hedge, Hedge):
            raise ConfigurationError("hedge", f"must be None or a Hedge, got {hedge!r}")
        if consistency is not None:
            if not isinstance(consistency, SelfConsistency):
                raise ConfigurationError(
                    "consistency", f"must be None or a SelfConsistency, got {consistency!r}"
                )
            if not isinstance(slm, Sampler):
                raise ConfigurationError(
                    "consistency",
                    f"the SLM {type(slm).__name__} cannot draw samples (it has no "
                    f"sample/asample); use LlamaCppSLM, OllamaSLM or OpenAICompatibleSLM",
                )
            if hedge is not None:
                raise ConfigurationError(
                    "consistency", "cannot be combined with hedge (choose one of the two)"
                )
        for name, price in (("slm_price", slm_price), ("fallback_price", fallback_price)):
            if price is not None and not isinstance(price, Price):
                raise ConfigurationError(name, f"must be a Price, got {type(price).__name__}")
        self.slm = slm
        self.fallback: Escalator = as_escalator(fallback)
        self.policy = chosen
        #: The policy's name and provenance when it was given as a PolicyChoice
        #: (``"any-slm/extractive-qa (transferred: fitted on other SLMs)"``); every
        #: Decision then names it instead of the policy's type.
        self.policy_label = label
        self.strict = strict
        self.slm_price = slm_price or Price()
        self.fallback_price = fallback_price or Price()
        self.max_concurrency = max_concurrency
        self.fallback_timeout = None if fallback_timeout is None else float(fallback_timeout)
        self.on_fallback_error: OnFallbackError = on_fallback_error
        self.ledger = Ledger()
        if early_abort is None:  # both need the SLM's whole answer
            early_abort = on_fallback_error != "return_slm" and consistency is None
        self.early_abort: bool | EarlyExitRule = early_abort
        self.hedge = hedge
        self.consistency = consistency
        self._early: tuple[Policy, Checks | None] = (chosen, checks_for(chosen, early_abort))
        self._monitor: Monitor | None = None
        if trace is not None or shadow_rate:
            self._monitor = Monitor(
                self.fallback,
                self.ledger,
                self.fallback_price,
                recorder=as_recorder(trace),
                shadow_rate=shadow_rate,
                judge=shadow_judge,
                min_f1=shadow_min_f1,
                timeout=self.fallback_timeout,
            )

    @property
    def monitor(self) -> Monitor | None:
        """Trace recording and shadow checks (None when neither is on)."""
        return self._monitor

    def close(self, timeout: float = 10.0) -> None:
        """Cancel shadow checks still running; flush and close the trace file."""
        if self._monitor is not None:
            self._monitor.close(timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close, timeout)

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Router(slm={self.slm.model!r}, fallback={self.fallback_model!r}, "
            f"policy={self.policy_label or type(self.policy).__name__}, strict={self.strict})"
        )

    @property
    def stats(self) -> LedgerSnapshot:
        """Totals so far: queries, escalations, tokens per model, cost and savings."""
        return self.ledger.snapshot()

    @property
    def fallback_model(self) -> str:
        return str(getattr(self.fallback, "model", "fallback"))

    def _streamed_models(self, slm: Generation | None) -> Models:
        """``RoutedResult.models`` of an escalation, known before the fallback's first token."""
        name = self.fallback_model
        return {"slm": slm.model if slm is not None else None, "llm": name, "answered_by": name}

    # -- the shared, I/O-free steps ------------------------------------------------

    @staticmethod
    def _prepare(messages: MessagesLike) -> list[Message]:
        msgs = as_messages(messages)
        if not msgs:
            raise InvalidInputError("messages is empty: give at least one message")
        if not any(m.content.strip() for m in msgs):
            raise InvalidInputError("every message is empty: there is nothing to answer")
        return msgs

    @staticmethod
    def _check_scorable(generation: Generation) -> None:
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

    def _abort_checks(self) -> Checks | None:
        """The early-abort checks of the current policy (None: decide on whole answers)."""
        policy, checks = self._early
        if policy is not self.policy:
            checks = checks_for(self.policy, self.early_abort)
            self._early = (self.policy, checks)
        return checks

    def _slm_failed(self, error: SLMError) -> SLMError:
        if self.strict:
            self.ledger.record_error(slm_failed=True)
            raise error
        logger.warning("SLM failed (%s), escalating: %s", error.reason_code, error)
        return error

    def _decide(
        self, slm: Generation | None, error: SLMError | None, msgs: Sequence[Message] = ()
    ) -> Decision:
        policy_name = self.policy_label or type(self.policy).__name__
        threshold = self.policy.threshold
        if error is not None or slm is None:
            code = error.reason_code if error is not None else "slm_error"
            reason = f"escalated because the SLM failed ({code}): {error}"
            return Decision("llm", None, threshold, {}, reason, policy_name)
        checks = self._abort_checks()
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
            self._slm_failed(err)
            return Decision("llm", None, threshold, {}, f"escalated: {err}", policy_name)
        decision = self.policy.decide(signals)
        if self.policy_label is not None:
            decision = replace(decision, policy=self.policy_label)
        return cut_off_escalates(decision, slm)

    def _sampling(
        self,
        decision: Decision,
        slm: Generation | None,
        stop: Sequence[str] | None,
        max_tokens: int | None,
    ) -> dict[str, Any] | None:
        """Arguments of the SLM's ``sample``/``asample`` when this answer is sampled, else None."""
        sc = self.consistency
        if sc is None or not sc.wants_samples(decision, slm):
            return None
        return {
            "k": sc.k,
            "temperature": sc.temperature,
            "seed": sc.seed,
            "stop": stop,
            "max_tokens": sc.max_tokens or max_tokens,
        }

    def _after_sampling(
        self, decision: Decision, slm: Generation, samples: list[Generation] | SLMError
    ) -> Decision:
        """The decision the samples lead to; the policy's own when drawing them failed."""
        sc = self.consistency
        assert sc is not None
        if isinstance(samples, SLMError):
            logger.warning("consistency samples failed, the policy decides: %s", samples)
            return sc.failed(decision, samples)
        return sc.decide(decision, sc.check(slm.text, samples))

    def _consistent(
        self,
        decision: Decision,
        slm: Generation | None,
        msgs: list[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
    ) -> Decision:
        """The decision after self-consistency sampling (unchanged when not in the band)."""
        kwargs = self._sampling(decision, slm, stop, max_tokens)
        if kwargs is None or slm is None:
            return decision
        sampler: Any = self.slm
        try:
            samples: list[Generation] | SLMError = sampler.sample(msgs, **kwargs)
        except SLMError as exc:
            samples = exc
        return self._after_sampling(decision, slm, samples)

    async def _aconsistent(
        self,
        decision: Decision,
        slm: Generation | None,
        msgs: list[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
    ) -> Decision:
        """Async :meth:`_consistent`."""
        kwargs = self._sampling(decision, slm, stop, max_tokens)
        if kwargs is None or slm is None:
            return decision
        sampler: Any = self.slm
        try:
            samples: list[Generation] | SLMError = await sampler.asample(msgs, **kwargs)
        except SLMError as exc:
            samples = exc
        return self._after_sampling(decision, slm, samples)

    def _fallback_error(self, exc: BaseException, error: SLMError | None) -> FallbackError:
        """The typed error for a failed fallback call (not counted yet: see _fallback_failed)."""
        also = f" (the SLM had failed too: {error.reason_code})" if error is not None else ""
        if isinstance(exc, DeadlineExceeded):
            background = (
                "; the call may still be running in the background"
                if not isinstance(exc, _AsyncDeadline)
                else ""
            )
            return FallbackTimeoutError(
                f"the fallback model {self.fallback_model!r} timed out: no complete answer "
                f"within fallback_timeout={self.fallback_timeout:g}s{background}{also}"
            )
        return FallbackError(
            f"the fallback model {self.fallback_model!r} failed after escalation{also}: "
            f"{type(exc).__name__}: {exc}"
        )

    def _fallback_failed(
        self,
        exc: FallbackError,
        decision: Decision,
        slm: Generation | None,
        error: SLMError | None,
        started: float,
        *,
        text_sent: bool = False,
        count: bool = True,
    ) -> RoutedResult:
        """Return the SLM's answer, flagged, if asked to and there is one; else count and raise.

        ``text_sent``: part of the fallback's answer already reached the caller,
        so it must not be completed by another model's answer. ``count=False``:
        a stream counts the returned answer at its closing chunk (see :meth:`_count`).
        """
        if (
            self.on_fallback_error == "return_slm"
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
                f"fallback failed ({type(exc).__name__}), so this is the SLM's answer, which "
                f"the policy had found unsure: {decision.reason}",
                decision.policy,
                decision.consistency,
            )
            logger.warning("fallback failed, returning the SLM answer: %s", exc)
            return self._finish(
                flagged, slm, None, error, started, fallback_error=str(exc), count=count
            )
        usage = {slm.model: slm.usage} if slm is not None else None
        if usage is not None and decision.consistency is not None:
            assert slm is not None
            usage[slm.model] = usage[slm.model] + decision.consistency.usage
        self.ledger.record_error(usage, slm_failed=error is not None)
        raise exc

    def _finish(
        self,
        decision: Decision,
        slm: Generation | None,
        fallback: Generation | None,
        error: SLMError | None,
        started: float,
        *,
        fallback_error: str | None = None,
        hedge_loser: Generation | None = None,
        count: bool = True,
    ) -> RoutedResult:
        """The RoutedResult; counted in the ledger now unless ``count=False`` (a stream
        counts it at its closing chunk: see :meth:`_count`)."""
        usage: dict[str, Usage] = {}
        for gen in (slm, fallback, hedge_loser):
            if gen is not None:
                usage[gen.model] = usage.get(gen.model, Usage()) + gen.usage
        cost = self.slm_price.cost(slm.usage) if slm is not None else 0.0
        check = decision.consistency
        if check is not None and slm is not None:  # the samples are SLM work too
            usage[slm.model] = usage.get(slm.model, Usage()) + check.usage
            cost += self.slm_price.cost(check.usage)
        if hedge_loser is not None:  # a cancelled hedged fallback call is paid for too
            cost += self.fallback_price.cost(hedge_loser.usage)
        if fallback is not None:
            cost += self.fallback_price.cost(fallback.usage)
        answer = fallback if decision.route == "llm" else slm
        assert answer is not None
        result = RoutedResult(
            text=answer.text,
            decision=decision,
            slm=slm,
            fallback=fallback,
            latency_s=time.perf_counter() - started,
            usage_by_model=usage,
            cost=cost,
            slm_error=f"{error.reason_code}: {error}" if error is not None else None,
            fallback_error=fallback_error,
        )
        if count:
            self._count(result)
        return result

    def _count(self, result: RoutedResult) -> None:
        """Count one answered query in the ledger (and the trace / shadow checks).

        When a query is counted, the same in every mode (this is the one place):
        ``invoke``/``ainvoke`` when they return; a stream just before it yields
        its closing ``done`` chunk (never before its first chunk), so a stream
        counts only once its answer is complete. A query that raises is counted
        once as an error where it raises (``strict`` SLM failure, failed
        fallback). A query the caller cancels or abandons before either (a
        cancelled ``ainvoke``/``abatch`` task, a stream closed or cancelled
        before its ``done`` chunk) counts once in ``cancelled`` instead, outside
        ``queries`` (see :class:`~confidence_router.observe.ledger.LedgerSnapshot`).
        """
        fallback, slm = result.fallback, result.slm
        if fallback is not None:
            baseline = self.fallback_price.cost(fallback.usage)
        else:
            assert slm is not None
            baseline = self.fallback_price.cost(slm.usage)
        check = result.decision.consistency
        self.ledger.record(
            result,
            baseline,
            consistency_cost=self.slm_price.cost(check.usage) if check is not None else 0.0,
        )
        if self._monitor is not None:
            self._monitor.observe(result)
        decision = result.decision
        logger.info("route=%s score=%s reason=%s", decision.route, decision.score, decision.reason)

    # -- sync ------------------------------------------------------------------------

    def _run_slm(
        self, msgs: list[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> tuple[Generation | None, SLMError | None]:
        checks = self._abort_checks()
        try:
            if checks is None:
                gen = self.slm.generate(msgs, stop=stop, max_tokens=max_tokens)
            else:
                gen = generate_watched(self.slm, msgs, checks, stop=stop, max_tokens=max_tokens)
            self._check_scorable(gen)
            if self._monitor is not None:
                self._monitor.remember(gen, msgs, stop, max_tokens)
            return gen, None
        except SLMError as exc:
            return None, self._slm_failed(exc)

    def _run_fallback(
        self,
        msgs: list[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        error: SLMError | None,
    ) -> Generation:
        def call() -> Generation:
            return self.fallback.generate(msgs, stop=stop, max_tokens=max_tokens)

        try:
            if self.fallback_timeout is None:
                return call()
            return call_at_most(call, self.fallback_timeout, name="confidence-router-fallback")
        except Exception as exc:
            raise self._fallback_error(exc, error) from exc

    def _fallback_stream(
        self, msgs: list[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Iterator[TokenChunk] | None:
        chunks = stream_escalation(self.fallback, msgs, stop=stop, max_tokens=max_tokens)
        if chunks is None or self.fallback_timeout is None:
            return chunks
        opened = chunks
        return iterate_at_most(
            lambda: opened, self.fallback_timeout, name="confidence-router-fallback"
        )

    def invoke(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> RoutedResult:
        """Route one query and return the answer with its Decision."""
        msgs = self._prepare(messages)
        started = time.perf_counter()
        slm, error = self._run_slm(msgs, stop, max_tokens)
        decision = self._consistent(self._decide(slm, error, msgs), slm, msgs, stop, max_tokens)
        fallback = None
        if decision.route == "llm":
            try:
                fallback = self._run_fallback(msgs, stop, max_tokens, error)
            except FallbackError as exc:
                return self._fallback_failed(exc, decision, slm, error, started)
        return self._finish(decision, slm, fallback, error, started)

    def batch(
        self,
        inputs: Sequence[MessagesLike],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Any]:
        """Route many queries on a thread pool; results keep the input order."""
        return run_batch(
            lambda item: self.invoke(item, stop=stop, max_tokens=max_tokens),
            inputs,
            workers=max_concurrency or self.max_concurrency,
            return_exceptions=return_exceptions,
        )

    def stream(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generator[RouteChunk, None, None]:
        """Decide first, then replay the SLM answer or stream the fallback's tokens.

        The first chunk carries the Decision; the last (empty, ``done=True``)
        carries the RoutedResult. A fallback that fails mid-stream, or whose
        stream ends without its finish marker, raises :class:`FallbackError`:
        a partial answer is never presented as complete. Closed before its
        ``done`` chunk, the query counts as cancelled (see :meth:`_count`).
        """
        rest = self._stream(messages, stop, max_tokens)
        ended = False
        try:
            for route_chunk in rest:
                ended = ended or route_chunk.done
                yield route_chunk
            ended = True
        except ConfidenceRouterError:
            ended = True  # counted where it was raised (or before any model call)
            raise
        finally:
            rest.close()
            if not ended:
                self.ledger.record_cancelled()

    def _stream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generator[RouteChunk, None, None]:
        msgs = self._prepare(messages)
        started = time.perf_counter()
        slm, error = self._run_slm(msgs, stop, max_tokens)
        decision = self._consistent(self._decide(slm, error, msgs), slm, msgs, stop, max_tokens)
        if decision.route == "slm":
            assert slm is not None
            kept = self._finish(decision, slm, None, error, started, count=False)
            yield from _replay(decision, slm, kept, self._count)
            return
        chunks = self._fallback_stream(msgs, stop, max_tokens)
        if chunks is None:
            try:
                fallback = self._run_fallback(msgs, stop, max_tokens, error)
            except FallbackError as exc:
                flagged = self._fallback_failed(exc, decision, slm, error, started, count=False)
                yield from _replay(flagged.decision, flagged.answered_by, flagged, self._count)
                return
            result = self._finish(decision, slm, fallback, error, started, count=False)
            yield from _replay(decision, fallback, result, self._count)
            return
        received: list[TokenChunk] = []
        sent_decision = False
        models = self._streamed_models(slm)
        fb_started = time.perf_counter()
        rescued: RoutedResult | None = None
        try:
            try:
                for chunk in chunks:
                    received.append(chunk)
                    if chunk.text or chunk.tokens:
                        yield _forward(chunk, None if sent_decision else decision, models)
                        sent_decision = True
                check_finished(received, self.fallback_model)
            except Exception as exc:
                raise self._fallback_error(exc, error) from exc
        except FallbackError as exc:
            rescued = self._fallback_failed(
                exc, decision, slm, error, started, text_sent=sent_decision, count=False
            )
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        if rescued is not None:
            yield from _replay(rescued.decision, rescued.answered_by, rescued, self._count)
            return
        fallback = accumulate(
            received,
            model=self.fallback_model,
            latency_s=time.perf_counter() - fb_started,
            has_logprobs=False,
        )
        result = self._finish(decision, slm, fallback, error, started)
        yield RouteChunk(
            "",
            "llm",
            None if sent_decision else decision,
            result=result,
            done=True,
            models=None if sent_decision else result.models,
        )

    # -- async -----------------------------------------------------------------------

    async def _arun_slm(
        self, msgs: list[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> tuple[Generation | None, SLMError | None]:
        checks = self._abort_checks()
        try:
            if checks is None:
                gen = await self.slm.agenerate(msgs, stop=stop, max_tokens=max_tokens)
            else:
                gen = await agenerate_watched(
                    self.slm, msgs, checks, stop=stop, max_tokens=max_tokens
                )
            self._check_scorable(gen)
            if self._monitor is not None:
                self._monitor.remember(gen, msgs, stop, max_tokens)
            return gen, None
        except SLMError as exc:
            return None, self._slm_failed(exc)

    async def _arun_fallback(
        self,
        msgs: list[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        error: SLMError | None,
    ) -> Generation:
        call = self.fallback.agenerate(msgs, stop=stop, max_tokens=max_tokens)
        try:
            if self.fallback_timeout is None:
                return await call
            try:
                return await wait_at_most(call, self.fallback_timeout)
            except DeadlineExceeded as exc:
                raise _AsyncDeadline(str(exc)) from None
        except Exception as exc:
            raise self._fallback_error(exc, error) from exc

    async def ainvoke(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> RoutedResult:
        """Async :meth:`invoke`; cancelling it cancels the model request in flight (and
        counts the query as cancelled, see :meth:`_count`)."""
        msgs = self._prepare(messages)
        try:
            if self.hedge is not None:
                return await hedged_ainvoke(self, msgs, stop, max_tokens)
            return await self._ainvoke(msgs, stop, max_tokens)
        except asyncio.CancelledError:
            self.ledger.record_cancelled()
            raise

    async def _ainvoke(
        self, msgs: list[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> RoutedResult:
        started = time.perf_counter()
        slm, error = await self._arun_slm(msgs, stop, max_tokens)
        decision = await self._aconsistent(
            self._decide(slm, error, msgs), slm, msgs, stop, max_tokens
        )
        fallback = None
        if decision.route == "llm":
            try:
                fallback = await self._arun_fallback(msgs, stop, max_tokens, error)
            except FallbackError as exc:
                return self._fallback_failed(exc, decision, slm, error, started)
        return self._finish(decision, slm, fallback, error, started)

    async def abatch(
        self,
        inputs: Sequence[MessagesLike],
        *,
        max_concurrency: int | None = None,
        return_exceptions: bool = False,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Any]:
        """Route many queries concurrently, at most ``max_concurrency`` at a time."""
        return await arun_batch(
            lambda item: self.ainvoke(item, stop=stop, max_tokens=max_tokens),
            inputs,
            limit=max_concurrency or self.max_concurrency,
            return_exceptions=return_exceptions,
        )

    async def astream(
        self,
        messages: MessagesLike,
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncGenerator[RouteChunk, None]:
        """Async :meth:`stream`, with the same chunks in the same order."""
        rest = self._astream(messages, stop, max_tokens)
        ended = False
        try:
            async for route_chunk in rest:
                ended = ended or route_chunk.done
                yield route_chunk
            ended = True
        except ConfidenceRouterError:
            ended = True  # counted where it was raised (or before any model call)
            raise
        finally:  # a caller that stops early closes the fallback stream now, not at GC
            if not ended:
                self.ledger.record_cancelled()
            await aclose_quietly(rest)

    async def _astream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncIterator[RouteChunk]:
        if self.hedge is not None:
            rest = hedged_astream(self, messages, stop, max_tokens)
        else:
            msgs = self._prepare(messages)
            started = time.perf_counter()
            slm, error = await self._arun_slm(msgs, stop, max_tokens)
            decision = await self._aconsistent(
                self._decide(slm, error, msgs), slm, msgs, stop, max_tokens
            )
            rest = self._astream_decided(msgs, stop, max_tokens, slm, error, decision, started)
        try:
            async for route_chunk in rest:
                yield route_chunk
        finally:
            await aclose_quietly(rest)

    async def _astream_decided(
        self,
        msgs: list[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        slm: Generation | None,
        error: SLMError | None,
        decision: Decision,
        started: float,
    ) -> AsyncIterator[RouteChunk]:
        """The rest of :meth:`astream` once the decision is made."""
        if decision.route == "slm":
            assert slm is not None
            kept = self._finish(decision, slm, None, error, started, count=False)
            for route_chunk in _replay(decision, slm, kept, self._count):
                yield route_chunk
            return
        chunks = astream_escalation(self.fallback, msgs, stop=stop, max_tokens=max_tokens)
        if chunks is None:
            try:
                fallback = await self._arun_fallback(msgs, stop, max_tokens, error)
            except FallbackError as exc:
                flagged = self._fallback_failed(exc, decision, slm, error, started, count=False)
                for route_chunk in _replay(
                    flagged.decision, flagged.answered_by, flagged, self._count
                ):
                    yield route_chunk
                return
            result = self._finish(decision, slm, fallback, error, started, count=False)
            for route_chunk in _replay(decision, fallback, result, self._count):
                yield route_chunk
            return
        received: list[TokenChunk] = []
        sent_decision = False
        models = self._streamed_models(slm)
        fb_started = time.perf_counter()
        loop = asyncio.get_running_loop()
        deadline = None if self.fallback_timeout is None else loop.time() + self.fallback_timeout
        rescued: RoutedResult | None = None
        try:
            try:
                while True:
                    try:
                        if deadline is None:
                            chunk = await chunks.__anext__()
                        else:
                            chunk = await anext_before(chunks, deadline)
                    except StopAsyncIteration:
                        break
                    except DeadlineExceeded as exc:
                        raise _AsyncDeadline(str(exc)) from None
                    received.append(chunk)
                    if chunk.text or chunk.tokens:
                        yield _forward(chunk, None if sent_decision else decision, models)
                        sent_decision = True
                check_finished(received, self.fallback_model)
            except Exception as exc:
                raise self._fallback_error(exc, error) from exc
        except FallbackError as exc:
            rescued = self._fallback_failed(
                exc, decision, slm, error, started, text_sent=sent_decision, count=False
            )
        finally:
            await aclose_quietly(chunks)
        if rescued is not None:
            for route_chunk in _replay(rescued.decision, rescued.answered_by, rescued, self._count):
                yield route_chunk
            return
        fallback = accumulate(
            received,
            model=self.fallback_model,
            latency_s=time.perf_counter() - fb_started,
            has_logprobs=False,
        )
        result = self._finish(decision, slm, fallback, error, started)
        yield RouteChunk(
            "",
            "llm",
            None if sent_decision else decision,
            result=result,
            done=True,
            models=None if sent_decision else result.models,
        )


class _AsyncDeadline(DeadlineExceeded):
    """An async fallback call cancelled at its deadline (nothing left running)."""


def _forward(chunk: TokenChunk, decision: Decision | None, models: Models) -> RouteChunk:
    return RouteChunk(
        chunk.text,
        "llm",
        decision,
        token_logprobs=chunk.token_logprobs,
        tokens=chunk.tokens,
        models=models if decision is not None else None,
    )


def _replay(
    decision: Decision,
    gen: Generation,
    result: RoutedResult,
    count: Callable[[RoutedResult], None],
) -> Iterator[RouteChunk]:
    """Chunks of a finished answer, token by token when the tokens spell the text;
    ``count(result)`` runs just before the closing chunk (see ``Router._count``)."""
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
    count(result)
    yield RouteChunk("", route, None, result=result, done=True)


__all__ = ["Router"]

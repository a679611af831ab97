"""The cascade: the small model answers, the policy scores it, the fallback takes the rest.

`Router` checks and holds the settings; the steps of a query live in
`._pipeline`, the public call modes in `._modes` (shared with the
Cascade), and hedged escalation in `.hedging`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from .._deadline import aclose_quietly
from ..backends.base import SLMBackend
from ..backends.escalation import Escalator, as_escalator
from ..backends.sampling import Sampler
from ..errors import ConfigurationError
from ..observe.ledger import Ledger, LedgerSnapshot, Price
from ..observe.recorder import TraceRecorder, as_recorder
from ..observe.shadow import Judge, Monitor
from ..policies.base import Policy, ThresholdPolicy
from ..policies.defaults import PolicyChoice
from ..policies.registry import as_policy
from ..types import MessagesLike, RouteChunk, RoutedResult
from ._modes import CallModes
from ._pipeline import OnFallbackError, Pipeline
from .early_exit import EarlyExitRule
from .hedging import Hedge, hedged_ainvoke, hedged_astream
from .self_consistency import SelfConsistency


class Router(CallModes[RoutedResult]):
    """Answer with the small model when it is confident, escalate otherwise.

    Args:
        slm: the small model, any `SLMBackend` (`OllamaSLM`, `LlamaCppSLM`).
        fallback: the large model: an object with `generate`/`agenerate`
            (and optionally `stream`/`astream`), or a plain sync or async
            callable `(messages) -> Generation | str`.
        policy: decides from the SLM's signals; defaults to `ThresholdPolicy`.
        strict: what to do when the SLM fails (unreachable, timeout, unknown
            model, no logprobs). `False` (default) escalates and says why in
            the Decision; `True` raises the typed `SLMError`.
        slm_price, fallback_price: per-million-token prices for the ledger.
        max_concurrency: default parallelism of `batch`/`abatch`.
        fallback_timeout: seconds the whole fallback call (or stream) may take
            before it fails with `FallbackTimeoutError`. `None` (default)
            relies on the fallback's own client timeout. Async calls are
            cancelled at the deadline. Sync calls run the fallback on a
            worker thread and stop waiting: a blocked call may go on in the
            background until its own client gives up (a stream stops at its
            next chunk).
        on_fallback_error: `"raise"` (default) raises `FallbackError`
            when the fallback fails. `"return_slm"` returns the SLM's own
            answer instead when there is one (the SLM answered, was scored
            and found unsure), flagged: `route` is `"slm"`, the reason
            starts with "fallback failed" and `result.fallback_error` says
            what the fallback raised. A stream that already sent fallback
            text still raises: a half answer is never completed by another model.
        trace: a path or a `TraceRecorder`: append one JSON line per answered
            query, in the evaluation's trace schema (signals and ids only unless the
            recorder has `store_text=True`). Never blocks or fails a query.
        shadow_rate: share of queries audited (0 by default): an audited query the SLM
            kept is also sent to the fallback in the background, never delaying the
            answer; agreement of the two answers labels it, and the ledger reports the
            running precision of kept answers (`stats.kept_precision`).
        shadow_judge: `judge(messages, slm_answer, fallback_answer) -> bool` (sync or
            async) deciding agreement instead of token F1, e.g. for long answers.
        shadow_min_f1: normalised token F1 at which two answers agree (default 0.5).
        early_abort: stop the SLM while it is still answering once its answer
            cannot pass any more, and escalate at once (see
            `confidence_router.routing.early_exit`). `True`: for the
            bounds of a `ThresholdPolicy` that can only get worse as tokens
            arrive (length over its max, min_logprob under its min,
            max_entropy over its max, sum_logprob under its min), which gives
            exactly the decision of the full answer. An `EarlyExitRule`
            fitted for this policy adds its learned bound. `False`: decide
            on the whole answer only. `None` (default): `True`, except
            with `on_fallback_error="return_slm"`, whose rescue needs the
            SLM's whole answer (an answer stopped early is never returned),
            and with `consistency`, whose samples may keep an answer the
            policy alone would stop.
        hedge: opt-in, async modes only (see `confidence_router.routing.hedging`):
            a `Hedge` starts the fallback in parallel when the score of
            the SLM's first `after_tokens` tokens lies in its grey zone; the
            call the final decision does not pick is cancelled and its tokens
            still counted.
        consistency: opt-in sampled self-consistency (see
            `confidence_router.routing.self_consistency`): a `SelfConsistency`
            draws k extra SLM samples when the policy's score lies in its band
            and keeps the answer iff enough of them agree with it. The SLM
            must be able to sample (`sample`/`asample`). Not combinable
            with `hedge`.

    `policy` may also be the path of a policy file (`confidence-router calibrate`),
    or a `PolicyChoice` (`choose_policy(model)`),
    whose label (name and provenance) every Decision then carries.
    Call `close` (or use the router as a context manager) to cancel the
    shadow checks still running and flush the trace file.

    The decision is made before any text reaches the caller, in every mode.

    Raises:
        ConfigurationError: a setting out of range or of the wrong type (the
            message names it), a policy file that cannot be read, `consistency`
            with an SLM that cannot sample or together with `hedge`.
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
        #: (`"any-slm/extractive-qa (transferred: fitted on other SLMs)"`); every
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
        # The steps of every query, reading these settings as they are at each call.
        self._pipeline = Pipeline(self)

    @property
    def monitor(self) -> Monitor | None:
        """Trace recording and shadow checks (None when neither is on)."""
        return self._monitor

    def close(self, timeout: float = 10.0) -> None:
        """Cancel shadow checks still running; flush and close the trace file."""
        if self._monitor is not None:
            self._monitor.close(timeout)

    async def aclose(self, timeout: float = 10.0) -> None:
        """`close` without blocking the event loop."""
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
        """The fallback's model name, as the ledger and decisions report it."""
        return str(getattr(self.fallback, "model", "fallback"))

    # -- one query, by the shared pipeline (see CallModes for the public modes) ------------

    def _invoke(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> RoutedResult:
        steps = self._pipeline
        query = steps.start(messages, stop, max_tokens)
        return steps.answer(query, steps.decided(query))

    async def _ainvoke(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> RoutedResult:
        steps = self._pipeline
        query = steps.start(messages, stop, max_tokens)
        if self.hedge is not None:
            return await hedged_ainvoke(steps, self.hedge, query)
        return await steps.aanswer(query, await steps.adecided(query))

    def _stream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generator[RouteChunk, None, None]:
        steps = self._pipeline
        query = steps.start(messages, stop, max_tokens)
        yield from steps.stream_decided(query, steps.decided(query))

    async def _astream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncGenerator[RouteChunk, None]:
        steps = self._pipeline
        query = steps.start(messages, stop, max_tokens)
        if self.hedge is not None:
            rest = hedged_astream(steps, self.hedge, query)
        else:
            rest = steps.astream_decided(query, await steps.adecided(query))
        try:
            async for route_chunk in rest:
                yield route_chunk
        finally:
            await aclose_quietly(rest)

    def _cancelled(self) -> None:
        self.ledger.record_cancelled()


__all__ = ["Router"]

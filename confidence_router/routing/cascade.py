"""A cascade of N stages: small models in turn, each with its own policy, then the fallback.

Built from two-model `Router`s, one per small
model: the last is `Router(slm_n, fallback, policy_n)` and each earlier one is
`Router(slm_i, StageEscalator(router_i+1), policy_i)`, so a query climbs
until a stage keeps its answer, and every call mode, early abort, hedging,
self-consistency, cancellation, typed error and failure policy of the
two-model router holds at each stage unchanged.

Provenance: `StageEscalator` hands the inner stage's `RoutedResult` up
inside a `StageGeneration`. A streamed
escalation reaches the stage below as token chunks (the router folds them into
a plain Generation), so the escalator also reports the inner decision and
result to a per-call record that `Cascade` opens around each step of
the call (a `contextvars` variable: each thread and asyncio task sees
its own call's record, and tasks a stage starts, e.g. a hedged call,
inherit it).
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncGenerator, AsyncIterator, Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, NoReturn

from .._deadline import aclose_quietly
from ..backends.base import BaseSLM, SLMBackend
from ..backends.escalation import as_escalator
from ..errors import ConfidenceRouterError, ConfigurationError, FallbackError, InvalidInputError
from ..observe.cascade_ledger import CascadeLedger, CascadeStats
from ..observe.ledger import Price
from ..policies.base import Policy
from ..policies.defaults import PolicyChoice, choose_policy
from ..policies.registry import as_policy
from ..types import (
    CascadeResult,
    Decision,
    Generation,
    Message,
    MessagesLike,
    RouteChunk,
    RoutedResult,
    StageGeneration,
    StageRecord,
    TokenChunk,
    Usage,
)
from ._modes import CallModes
from ._pipeline import Models, OnFallbackError
from .early_exit import EarlyExitRule
from .hedging import Hedge
from .router import Router
from .self_consistency import SelfConsistency


@dataclass(frozen=True)
class Stage:
    """One small model of the ladder and how it decides.

    `policy`: a Policy, a named default (`choose_policy(model)`, whose label
    the stage's decisions carry) or a policy file path (default: the seed
    `ThresholdPolicy`); `price`: its per-million-token price for the
    ledger; `strict`, `early_abort`, `hedge`, `consistency`: as the
    `Router` arguments of the same names, for this stage alone. `Cascade`
    checks the fields when it is built (`ConfigurationError` naming the stage).
    """

    slm: SLMBackend
    policy: Policy | PolicyChoice | str | None = None
    price: Price | None = None
    strict: bool = False
    early_abort: bool | EarlyExitRule | None = None
    hedge: Hedge | None = None
    consistency: SelfConsistency | None = None


StageLike = Stage | SLMBackend | tuple[Any, ...]


class _Trail:
    """What the stages above reported during one call: first decisions and results."""

    def __init__(self) -> None:
        self.firsts: dict[int, tuple[Decision, Models | None]] = {}
        self.results: dict[int, RoutedResult] = {}


_TRAIL: contextvars.ContextVar[_Trail | None] = contextvars.ContextVar(
    "confidence_router_cascade_trail", default=None
)


@contextmanager
def _following(trail: _Trail) -> Iterator[None]:
    """Run a block with the call's trail, so the stages above report to it."""
    token = _TRAIL.set(trail)
    try:
        yield
    finally:
        _TRAIL.reset(token)


class _StageFailed(Exception):
    """The stage above raised: carried through the stage below's FallbackError, unwrapped
    by `Cascade` so the caller gets the error where it happened."""

    def __init__(self, stage: int, error: ConfidenceRouterError) -> None:
        super().__init__(f"stage {stage} failed: {type(error).__name__}: {error}")
        self.error = error


def _innermost(exc: ConfidenceRouterError) -> ConfidenceRouterError:
    while isinstance(exc, FallbackError) and isinstance(exc.__cause__, _StageFailed):
        exc = exc.__cause__.error
    return exc


class StageEscalator(BaseSLM):
    """The rest of a cascade (stage `stage` and up) as an Escalator for the stage below.

    `generate`/`agenerate` return a `StageGeneration` holding the
    inner RoutedResult; `stream`/`astream` relay the inner router's text
    and end with a chunk carrying its finish reason and total usage.
    """

    def __init__(self, router: Router, *, stage: int, model: str) -> None:
        self.router = router
        self.stage = stage
        self.model = model

    def __repr__(self) -> str:
        return f"StageEscalator(stage={self.stage}, model={self.model!r})"

    def _generation(self, result: RoutedResult) -> StageGeneration:
        trail = _TRAIL.get()
        if trail is not None:
            trail.firsts.setdefault(self.stage, (result.decision, result.models))
            trail.results[self.stage] = result
        answer = result.answered_by
        return StageGeneration(
            text=result.text,
            model=self.model,
            tokens=answer.tokens,
            usage=result.usage,
            latency_s=result.latency_s,
            finish_reason=result.finish_reason or "stop",
            has_logprobs=False,
            routed=result,
        )

    def _relay(self, chunk: RouteChunk, trail: _Trail | None) -> Iterator[TokenChunk]:
        """The inner router's chunk as the fallback's token chunk (none for an empty one)."""
        if trail is not None and chunk.decision is not None:
            models = dict(chunk.models) if chunk.models is not None else None
            trail.firsts.setdefault(self.stage, (chunk.decision, models))
        if chunk.done:
            result = chunk.result
            assert result is not None
            if trail is not None:
                trail.results[self.stage] = result
            yield TokenChunk("", finish_reason=result.finish_reason or "stop", usage=result.usage)
        elif chunk.text or chunk.tokens:
            yield TokenChunk(chunk.text, token_logprobs=chunk.token_logprobs, tokens=chunk.tokens)

    @contextmanager
    def _as_stage(self) -> Iterator[None]:
        """The inner router's failure, carried up as this stage's (see `_StageFailed`)."""
        try:
            yield
        except ConfidenceRouterError as exc:
            raise _StageFailed(self.stage, exc) from exc

    def _generate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        with self._as_stage():
            result = self.router.invoke(list(messages), stop=stop, max_tokens=max_tokens)
        return self._generation(result)

    async def _agenerate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        with self._as_stage():
            result = await self.router.ainvoke(list(messages), stop=stop, max_tokens=max_tokens)
        return self._generation(result)

    def _stream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Iterator[TokenChunk]:
        trail = _TRAIL.get()
        inner = self.router.stream(list(messages), stop=stop, max_tokens=max_tokens)
        try:
            with self._as_stage():
                for chunk in inner:
                    yield from self._relay(chunk, trail)
        finally:
            inner.close()

    async def _astream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncIterator[TokenChunk]:
        trail = _TRAIL.get()
        inner = self.router.astream(list(messages), stop=stop, max_tokens=max_tokens)
        try:
            with self._as_stage():
                async for chunk in inner:
                    for out in self._relay(chunk, trail):
                        yield out
        finally:
            await aclose_quietly(inner)


def as_stage(value: StageLike, field: str) -> Stage:
    """One ladder entry as a checked `Stage` (a policy path loaded); errors name `field`.

    Accepts a Stage, an `(slm, policy)` pair or a bare SLM backend (seed policy),
    as `Cascade` and the faces' `stages=` do.
    """
    if isinstance(value, Stage):
        stage = value
    elif isinstance(value, tuple):
        if len(value) != 2:
            raise ConfigurationError(
                field, f"a tuple must be (slm, policy), got {len(value)} items"
            )
        stage = Stage(value[0], value[1])
    elif isinstance(value, SLMBackend):
        stage = Stage(value)
    else:
        raise ConfigurationError(
            field,
            f"must be a Stage, an (slm, policy) tuple or an SLM backend, "
            f"got {type(value).__name__}",
        )
    if not isinstance(stage.slm, SLMBackend):
        raise ConfigurationError(
            f"{field}.slm",
            f"must be an SLM backend (e.g. OllamaSLM or LlamaCppSLM), "
            f"got {type(stage.slm).__name__}",
        )
    policy: Any = stage.policy
    try:
        if not isinstance(policy, PolicyChoice):
            policy = as_policy(policy)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{field}.policy", str(exc).partition(": ")[2]) from exc
    if policy is not None and not isinstance(policy, (Policy, PolicyChoice)):
        raise ConfigurationError(
            f"{field}.policy", f"must have score/decide/threshold, got {type(policy).__name__}"
        )
    if stage.price is not None and not isinstance(stage.price, Price):
        raise ConfigurationError(f"{field}.price", f"must be a Price, got {stage.price!r}")
    if not isinstance(stage.strict, bool):
        raise ConfigurationError(f"{field}.strict", f"must be True or False, got {stage.strict!r}")
    return stage if policy is stage.policy else replace(stage, policy=policy)


def with_default_policy(stage: Stage) -> Stage:
    """The stage with the default policy for its model (`choose_policy`) when it has none:
    what the faces give a small model named without a policy."""
    if stage.policy is not None:
        return stage
    return replace(stage, policy=choose_policy(stage.slm.model))


class _StreamState:
    def __init__(self) -> None:
        self.decision: Decision | None = None
        self.models: Models | None = None
        self.sent = False


class Cascade(CallModes[CascadeResult]):
    """Small models in turn, each with its own policy, then the fallback: a ladder.

    A query goes to the first small model; if its policy keeps the answer,
    that is the answer, else the query climbs to the next stage, up to the
    fallback (any Escalator or callable, as `Router` accepts). A
    one-stage cascade is exactly `Router(slm, fallback, policy)`.

    Setup:
        ```python
        from confidence_router import Cascade, LlamaCppSLM, ThresholdPolicy

        tiny = LlamaCppSLM.gemma3(stop=["\n"])
        small = LlamaCppSLM.qwen_coder_05b(stop=["\n"])
        large = LlamaCppSLM.qwen_coder_15b(stop=["\n"])
        ladder = Cascade([(tiny, ThresholdPolicy()), (small, ThresholdPolicy())], large)
        ```

    Usage:
        ```python
        result = ladder.invoke("Who wrote Hamlet?")
        result.answered_stage, [s.outcome for s in result.stages]
        for chunk in ladder.stream("Who wrote Hamlet?"):  # decision first, then text
            print(chunk.text, end="")
        result = await ladder.ainvoke("Who wrote Hamlet?")
        ladder.stats.answered_by_stage, ladder.stats.top_calls_avoided
        ```

    Args:
        stages: the small models, lowest first: `Stage`, `(slm, policy)`
            tuples, or bare SLM backends (seed policy).
        fallback: the top model.
        fallback_price: its per-million-token price (stage prices: `Stage.price`).
        fallback_timeout: seconds the top model's call may take (see `Router`).
        on_fallback_error: `"raise"` (default) or `"return_slm"`, at every
            stage: with `"return_slm"`, when everything above a stage failed,
            its own (unsure) answer is returned, flagged.
        max_concurrency: default parallelism of `batch`/`abatch`.

    Results are `CascadeResult`s (a `RoutedResult` with `stages`); `stats` is
    the whole ladder's ledger and `routers[i].stats` each stage's own.

    Raises:
        ConfigurationError: no stage, a stage that is not a `Stage`, an
            `(slm, policy)` pair or an SLM backend, or a setting a `Router`
            rejects (the field names the stage, e.g. `stages[1].policy`).
    """

    def __init__(
        self,
        stages: Sequence[StageLike],
        fallback: Any,
        *,
        fallback_price: Price | None = None,
        fallback_timeout: float | None = None,
        on_fallback_error: OnFallbackError = "raise",
        max_concurrency: int = 4,
    ) -> None:
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise ConfigurationError("stages", f"must be a sequence of stages, got {stages!r}")
        specs = [as_stage(s, f"stages[{i}]") for i, s in enumerate(stages)]
        if not specs:
            raise ConfigurationError(
                "stages", "give at least one small model (stage) before the fallback"
            )
        n = len(specs)
        routers: list[Router] = []
        above: Any = as_escalator(fallback)
        names: list[str] = []
        for i in reversed(range(n)):
            spec = specs[i]
            last = i == n - 1
            router = Router(
                spec.slm,
                above,
                spec.policy,  # type: ignore[arg-type]  # a path is accepted too (as_policy)
                strict=spec.strict,
                slm_price=spec.price,
                fallback_price=fallback_price if last else None,
                max_concurrency=max_concurrency,
                fallback_timeout=fallback_timeout if last else None,
                on_fallback_error=on_fallback_error,
                early_abort=spec.early_abort,
                hedge=spec.hedge,
                consistency=spec.consistency,
            )
            routers.append(router)
            names.insert(0, spec.slm.model)
            if i > 0:
                rest = names + [routers[0].fallback_model]
                above = StageEscalator(router, stage=i + 1, model=" > ".join(rest))
        routers.reverse()
        self.routers: tuple[Router, ...] = tuple(routers)
        self.max_concurrency = max_concurrency
        self.models: tuple[str, ...] = (*names, routers[-1].fallback_model)
        self._prices: tuple[Price, ...] = (
            *(s.price or Price() for s in specs),
            fallback_price or Price(),
        )
        self._ledger = CascadeLedger(self.models)

    def __repr__(self) -> str:
        return f"Cascade({' > '.join(repr(m) for m in self.models)})"

    @property
    def stats(self) -> CascadeStats:
        """Totals so far: queries answered per stage, calls avoided, tokens, cost, savings."""
        return self._ledger.snapshot()

    @property
    def fallback_model(self) -> str:
        return self.models[-1]

    def close(self, timeout: float = 10.0) -> None:
        """Close every stage router (shadow checks, trace files)."""
        for router in self.routers:
            router.close(timeout)

    def __enter__(self) -> Cascade:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- from the first stage's RoutedResult to the cascade's -------------------------

    def _failed(self, exc: ConfidenceRouterError) -> NoReturn:
        """Count a query that raised and raise the error of the stage where it happened."""
        if not isinstance(exc, InvalidInputError):
            self._ledger.record_error()
        inner = _innermost(exc)
        if inner is exc:
            raise exc
        raise inner from inner.__cause__

    def _climb(self, first: RoutedResult, trail: _Trail) -> list[RoutedResult]:
        """The RoutedResult of every stage router the query reached, lowest first."""
        results = [first]
        last = len(self.routers) - 1
        while results[-1].route == "llm" and len(results) - 1 < last:
            r = results[-1]
            fb = r.fallback
            inner = fb.routed if isinstance(fb, StageGeneration) else None
            if inner is None:
                inner = trail.results.get(len(results) + 1)
            if inner is None:  # cannot happen: every escalation of a stage runs the next one
                raise RuntimeError(f"stage {len(results) + 1}'s result is missing")
            results.append(inner)
        return results

    def _compose(self, first: RoutedResult, trail: _Trail) -> CascadeResult:
        results = self._climb(first, trail)
        top_index = len(self.routers)
        records: list[StageRecord] = []
        usage_by_model: dict[str, Usage] = {}
        cost = 0.0
        errors: list[str] = []
        for i, r in enumerate(results):
            router = self.routers[i]
            expanded = i + 1 < len(results)
            for model, usage in r.usage_by_model.items():
                if expanded and model == router.fallback_model:
                    continue  # the stages above: counted from their own results
                usage_by_model[model] = usage_by_model.get(model, Usage()) + usage
            cost += r.cost
            own = r.slm.usage if r.slm is not None else Usage()
            if r.decision.consistency is not None and r.slm is not None:
                own = own + r.decision.consistency.usage
            top_answered = not expanded and r.route == "llm" and r.fallback is not None
            if expanded:
                above = results[i + 1].latency_s
            elif top_answered:
                assert r.fallback is not None
                above = r.fallback.latency_s
            else:
                above = 0.0
            model = r.slm.model if r.slm is not None else router.slm.model
            if r.slm_error is not None:
                errors.append(f"stage {i + 1} ({model}): {r.slm_error}")
            records.append(
                StageRecord(
                    stage=i + 1,
                    model=model,
                    outcome="escalated" if r.route == "llm" else "kept",
                    score=r.decision.score,
                    threshold=r.decision.threshold,
                    reason=r.decision.reason,
                    usage=own,
                    latency_s=max(r.latency_s - above, 0.0),
                    cost=self._prices[i].cost(own),
                    decision=r.decision,
                    generation=r.slm,
                    error=r.slm_error,
                )
            )
            if top_answered:
                assert r.fallback is not None
                fb = r.fallback
                records.append(
                    StageRecord(
                        stage=top_index + 1,
                        model=fb.model,
                        outcome="answered",
                        score=None,
                        threshold=None,
                        reason=f"answered by the last stage after {i + 1} small model(s) escalated",
                        usage=fb.usage,
                        latency_s=fb.latency_s,
                        cost=self._prices[-1].cost(fb.usage),
                        generation=fb,
                    )
                )
        deciding = results[-1]
        if len(self.routers) == 1:
            slm_error = deciding.slm_error
        else:
            slm_error = "; ".join(errors) if errors else None
        return CascadeResult(
            text=deciding.text,
            decision=deciding.decision,
            slm=deciding.slm,
            fallback=deciding.fallback,
            latency_s=first.latency_s,
            usage_by_model=usage_by_model,
            cost=cost,
            slm_error=slm_error,
            fallback_error=deciding.fallback_error,
            stages=tuple(records),
        )

    def _count(self, result: CascadeResult) -> None:
        answer = result.stages[-1].generation if result.stages else None
        baseline = self._prices[-1].cost(answer.usage) if answer is not None else 0.0
        self._ledger.record(result, baseline)

    def _finish(self, first: RoutedResult, trail: _Trail) -> CascadeResult:
        result = self._compose(first, trail)
        self._count(result)
        return result

    # -- one query, up the ladder (the public modes: CallModes) -------------------------

    @contextmanager
    def _climbing(self, trail: _Trail) -> Iterator[None]:
        """A step of the first stage's call, with the call's trail; a failure is raised
        as the error of the stage where it happened (see `_failed`)."""
        with _following(trail):
            try:
                yield
            except ConfidenceRouterError as exc:
                self._failed(exc)

    def _invoke(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> CascadeResult:
        trail = _Trail()
        with self._climbing(trail):
            first = self.routers[0].invoke(messages, stop=stop, max_tokens=max_tokens)
        return self._finish(first, trail)

    async def _ainvoke(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> CascadeResult:
        trail = _Trail()
        with self._climbing(trail):
            first = await self.routers[0].ainvoke(messages, stop=stop, max_tokens=max_tokens)
        return self._finish(first, trail)

    def _cancelled(self) -> None:
        self._ledger.record_cancelled()

    def _deciding(self, chunk: RouteChunk, trail: _Trail) -> tuple[Decision, Models | None]:
        """The decision and models of the stage whose answer the stream carries."""
        assert chunk.decision is not None
        decision = chunk.decision
        models = dict(chunk.models) if chunk.models is not None else None
        stage = 1
        while decision.route == "llm" and stage < len(self.routers):
            stage += 1
            found = trail.firsts.get(stage)
            if found is None:
                break
            decision, models = found
        return decision, models

    def _relay(self, chunk: RouteChunk, trail: _Trail, state: _StreamState) -> RouteChunk:
        if state.decision is None and chunk.decision is not None:
            state.decision, state.models = self._deciding(chunk, trail)
        assert state.decision is not None
        first = not state.sent
        state.sent = True
        route = state.decision.route
        if chunk.done:
            assert chunk.result is not None
            result = self._finish(chunk.result, trail)
            return RouteChunk(
                "",
                result.route,
                state.decision if first else None,
                result=result,
                done=True,
                models=result.models if first else None,
            )
        return RouteChunk(
            chunk.text,
            route,
            state.decision if first else None,
            models=state.models if first else None,
            token_logprobs=chunk.token_logprobs,
            tokens=chunk.tokens,
        )

    def _stream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generator[RouteChunk, None, None]:
        trail, state = _Trail(), _StreamState()
        rest = self.routers[0].stream(messages, stop=stop, max_tokens=max_tokens)
        try:
            while True:
                with self._climbing(trail):
                    chunk = next(rest, None)
                if chunk is None:
                    return
                yield self._relay(chunk, trail, state)
        finally:
            with _following(trail):
                rest.close()

    async def _astream(
        self, messages: MessagesLike, stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncGenerator[RouteChunk, None]:
        trail, state = _Trail(), _StreamState()
        rest = self.routers[0].astream(messages, stop=stop, max_tokens=max_tokens)
        try:
            while True:
                with self._climbing(trail):
                    chunk = await anext(rest, None)
                if chunk is None:
                    return
                yield self._relay(chunk, trail, state)
        finally:
            with _following(trail):
                await aclose_quietly(rest)


__all__ = [
    "Cascade",
    "CascadeResult",
    "Stage",
    "StageEscalator",
    "StageGeneration",
    "StageRecord",
    "as_stage",
    "with_default_policy",
]

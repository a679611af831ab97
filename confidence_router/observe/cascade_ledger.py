"""Running totals of a cascade, stage by stage; safe under threads and asyncio.

The stage routers keep their own ledgers (`cascade.routers[i].stats`); this
one sees whole queries, so it can say which stage answered, which calls the
ladder avoided and what sending everything to the top model would have cost.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ..types import CascadeResult, Usage


@dataclass(frozen=True)
class StageStats:
    """One stage's totals.

    `reached`: queries that called this stage's model (answered or not);
    `answered`: queries whose answer is this stage's; `escalated`: passed
    up; `failures`: its model failed (the query escalated with the reason,
    or raised when the stage is strict). `calls_avoided`: answered queries
    that never called this stage (0 for the first). `tokens`, `cost` and
    `latency_s` are those of answered queries (a query that raised counts in
    the stage routers' own ledgers only).
    """

    stage: int
    model: str
    reached: int = 0
    answered: int = 0
    escalated: int = 0
    failures: int = 0
    calls_avoided: int = 0
    tokens: Usage = Usage()
    cost: float = 0.0
    latency_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "stage": self.stage,
            "model": self.model,
            "reached": self.reached,
            "answered": self.answered,
            "escalated": self.escalated,
            "failures": self.failures,
            "calls_avoided": self.calls_avoided,
            **self.tokens.counts(),  # a count some call left out: None, never 0
            "tokens_exact": self.tokens.exact,
            "cost": self.cost,
            "latency_s": self.latency_s,
        }


@dataclass(frozen=True)
class CascadeStats:
    """A consistent copy of the cascade's ledger.

    Every query lands in exactly one of `answered` and `errors` (their sum
    is `queries`); `cancelled` counts, outside `queries`, those the
    caller cancelled or abandoned. `baseline_cost` is what sending every
    answered query straight to the top model (the last stage) would have
    cost: its real bill when it answered, else an estimate (the answering
    model's token counts at the top model's price). `saved` is
    `baseline_cost - cost`: it charges the lower stages' work that was
    escalated anyway.
    """

    queries: int = 0
    answered: int = 0
    errors: int = 0
    cancelled: int = 0
    stages: tuple[StageStats, ...] = ()
    tokens_by_model: Mapping[str, Usage] = field(default_factory=dict)
    cost_by_model: Mapping[str, float] = field(default_factory=dict)
    cost: float = 0.0
    baseline_cost: float = 0.0

    @property
    def saved(self) -> float:
        return self.baseline_cost - self.cost

    @property
    def answered_by_stage(self) -> tuple[int, ...]:
        return tuple(s.answered for s in self.stages)

    @property
    def top_calls_avoided(self) -> int:
        """Answered queries the top model (the last stage) never saw."""
        return self.stages[-1].calls_avoided if self.stages else 0

    def to_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "answered": self.answered,
            "errors": self.errors,
            "cancelled": self.cancelled,
            "answered_by_stage": list(self.answered_by_stage),
            "top_calls_avoided": self.top_calls_avoided,
            "stages": [s.to_dict() for s in self.stages],
            "tokens_by_model": {m: u.to_dict() for m, u in self.tokens_by_model.items()},
            "cost_by_model": dict(self.cost_by_model),
            "cost": self.cost,
            "baseline_cost": self.baseline_cost,
            "saved": self.saved,
        }


class CascadeLedger:
    """Counts a cascade's queries per stage, tokens and cost per model, and the savings.

    One lock guards every update and no update awaits, so it is safe from
    threads and from many asyncio tasks (as `Ledger`).
    """

    def __init__(self, models: Sequence[str]) -> None:
        self._models = tuple(models)
        self._lock = threading.Lock()
        self._state = self._empty()
        self._stages = list(self._state.stages)
        self._tokens: dict[str, Usage] = {}
        self._costs: dict[str, float] = {}

    def _empty(self) -> CascadeStats:
        return CascadeStats(stages=tuple(StageStats(i + 1, m) for i, m in enumerate(self._models)))

    def record(self, result: CascadeResult, baseline_cost: float) -> None:
        """Count one answered query."""
        records = result.stages
        top = len(self._models)
        answered = result.answered_stage
        # a rescued answer (the stage above failed) called the stage above: not avoided
        avoided_from = answered + 1 if result.fallback_error is None else top + 1
        with self._lock:
            for model, usage in result.usage_by_model.items():
                self._tokens[model] = self._tokens.get(model, Usage()) + usage
            for rec in records:
                i = rec.stage - 1
                s = self._stages[i]
                self._stages[i] = replace(
                    s,
                    reached=s.reached + 1,
                    answered=s.answered + int(rec.outcome != "escalated"),
                    escalated=s.escalated + int(rec.outcome == "escalated"),
                    failures=s.failures + int(rec.error is not None),
                    tokens=s.tokens + rec.usage,
                    cost=s.cost + rec.cost,
                    latency_s=s.latency_s + rec.latency_s,
                )
                self._costs[rec.model] = self._costs.get(rec.model, 0.0) + rec.cost
            for i in range(avoided_from - 1, top):
                s = self._stages[i]
                self._stages[i] = replace(s, calls_avoided=s.calls_avoided + 1)
            st = self._state
            self._state = replace(
                st,
                queries=st.queries + 1,
                answered=st.answered + 1,
                cost=st.cost + result.cost,
                baseline_cost=st.baseline_cost + baseline_cost,
            )

    def record_error(self) -> None:
        """Count one query that ended in an exception (no answer was given)."""
        with self._lock:
            st = self._state
            self._state = replace(st, queries=st.queries + 1, errors=st.errors + 1)

    def record_cancelled(self) -> None:
        """Count one query the caller cancelled or abandoned before it ended."""
        with self._lock:
            self._state = replace(self._state, cancelled=self._state.cancelled + 1)

    def snapshot(self) -> CascadeStats:
        with self._lock:
            return replace(
                self._state,
                stages=tuple(self._stages),
                tokens_by_model=MappingProxyType(dict(self._tokens)),
                cost_by_model=MappingProxyType(dict(self._costs)),
            )

    def reset(self) -> None:
        with self._lock:
            self._state = self._empty()
            self._stages = list(self._state.stages)
            self._tokens = {}
            self._costs = {}


__all__ = ["CascadeLedger", "CascadeStats", "StageStats"]

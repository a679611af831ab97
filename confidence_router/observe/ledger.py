"""Running totals of what the router did and what it cost; safe under threads and asyncio."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from ..errors import ConfigurationError
from ..types import RoutedResult, Usage


@dataclass(frozen=True)
class Price:
    """Price of a model in currency units per million tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0

    def __post_init__(self) -> None:
        for name in ("input_per_million", "output_per_million"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ConfigurationError(
                    f"Price.{name}", f"must be a finite number >= 0, got {value!r}"
                )

    def cost(self, usage: Usage) -> float:
        return (
            usage.prompt_tokens * self.input_per_million
            + usage.completion_tokens * self.output_per_million
        ) / 1e6


@dataclass(frozen=True)
class LedgerSnapshot:
    """A consistent copy of the ledger at one moment.

    `baseline_cost` is what sending every query straight to the fallback
    would have cost: the real fallback bill for escalated queries, and an
    estimate (the SLM's token counts at the fallback's price) for the rest.
    `saved = baseline_cost - cost`, which charges the SLM calls that were
    escalated anyway.

    Every query lands in exactly one of `answered_by_slm`, `escalations`
    and `errors` (their sum is `queries`). `slm_failures` counts the
    queries whose SLM call failed, whatever came next (an escalation, or an
    error in strict mode or when the fallback failed too). `cancelled`
    counts, outside `queries`, the queries the caller cancelled or
    abandoned before they ended (when a query counts: `Pipeline.count`
    in `routing/_pipeline.py`); their tokens are not known and not counted.

    Unknown is not zero: a call whose server reported no prompt (or
    completion) count adds to `Usage.prompt_unknown_calls` (or
    `completion_unknown_calls`) of its model in `tokens_by_model`,
    not to its tokens. Then `costs_exact` is False and `cost`,
    `baseline_cost` and `saved` leave those tokens out.
    """

    queries: int = 0
    answered_by_slm: int = 0
    escalations: int = 0
    slm_failures: int = 0
    errors: int = 0
    cancelled: int = 0
    fallback_calls_avoided: int = 0
    tokens_by_model: Mapping[str, Usage] = field(default_factory=dict)
    cost: float = 0.0
    baseline_cost: float = 0.0
    # Shadow checks (Router(shadow_rate=...)): kept SLM answers also sent to the fallback
    # in the background. Not part of the counts, tokens and costs above.
    shadow_checks: int = 0  # finished with a label
    shadow_agreements: int = 0  # ... of which the SLM's answer agreed with the fallback's
    shadow_failures: int = 0
    shadow_cancelled: int = 0
    shadow_skipped: int = 0  # not started: too many checks already running
    shadow_tokens: Mapping[str, Usage] = field(default_factory=dict)
    shadow_cost: float = 0.0
    recent_shadow_checks: int = 0  # the last `Ledger.recent` checks
    recent_shadow_agreements: int = 0
    # Self-consistency (Router(consistency=...)): queries whose answer was sampled again.
    # Their tokens and cost are part of tokens_by_model and cost above as well.
    consistency_checks: int = 0
    consistency_changed: int = 0  # ... of which the samples changed the policy's route
    consistency_prompt_tokens: int = 0
    consistency_completion_tokens: int = 0
    consistency_cost: float = 0.0

    @property
    def consistency_tokens(self) -> int:
        """Extra SLM tokens drawn for self-consistency (prompt + completion)."""
        return self.consistency_prompt_tokens + self.consistency_completion_tokens

    @property
    def kept_precision(self) -> float | None:
        """Share of shadow-checked kept answers that agreed with the fallback (None: no check)."""
        return self.shadow_agreements / self.shadow_checks if self.shadow_checks else None

    @property
    def kept_precision_ci(self) -> tuple[float, float] | None:
        """95% Wilson interval of `kept_precision`."""
        from ..calibration.calibrate import wilson_interval

        if not self.shadow_checks:
            return None
        return wilson_interval(self.shadow_agreements, self.shadow_checks)

    @property
    def recent_kept_precision(self) -> float | None:
        """`kept_precision` over the most recent checks only, to see drift."""
        if not self.recent_shadow_checks:
            return None
        return self.recent_shadow_agreements / self.recent_shadow_checks

    @property
    def saved(self) -> float:
        return self.baseline_cost - self.cost

    @property
    def unknown_token_calls(self) -> int:
        """Calls whose prompt or completion count no server reported (0: every count known)."""
        return sum(
            u.prompt_unknown_calls + u.completion_unknown_calls
            for u in self.tokens_by_model.values()
        )

    @property
    def costs_exact(self) -> bool:
        """Whether cost, baseline_cost and saved rest on reported counts only."""
        return self.unknown_token_calls == 0

    @property
    def escalation_rate(self) -> float:
        answered = self.answered_by_slm + self.escalations
        return self.escalations / answered if answered else 0.0

    def to_dict(self) -> dict[str, object]:
        return {
            "queries": self.queries,
            "answered_by_slm": self.answered_by_slm,
            "escalations": self.escalations,
            "slm_failures": self.slm_failures,
            "errors": self.errors,
            "cancelled": self.cancelled,
            "fallback_calls_avoided": self.fallback_calls_avoided,
            "escalation_rate": self.escalation_rate,
            "tokens_by_model": {m: u.to_dict() for m, u in self.tokens_by_model.items()},
            "cost": self.cost,
            "baseline_cost": self.baseline_cost,
            "saved": self.saved,
            "costs_exact": self.costs_exact,
            "shadow": {
                "checks": self.shadow_checks,
                "agreements": self.shadow_agreements,
                "failures": self.shadow_failures,
                "cancelled": self.shadow_cancelled,
                "skipped": self.shadow_skipped,
                "kept_precision": self.kept_precision,
                "kept_precision_ci95": None
                if self.kept_precision_ci is None
                else list(self.kept_precision_ci),
                "recent_checks": self.recent_shadow_checks,
                "recent_kept_precision": self.recent_kept_precision,
                "tokens_by_model": {m: u.to_dict() for m, u in self.shadow_tokens.items()},
                "cost": self.shadow_cost,
            },
            "consistency": {
                "checks": self.consistency_checks,
                "changed": self.consistency_changed,
                "prompt_tokens": self.consistency_prompt_tokens,
                "completion_tokens": self.consistency_completion_tokens,
                "tokens": self.consistency_tokens,
                "cost": self.consistency_cost,
            },
        }


class Ledger:
    """Counts queries, escalations, tokens per model and money.

    One lock guards every update; no update awaits, so the same lock is safe
    from threads and from many asyncio tasks.

    Args:
        recent: how many of the latest shadow checks `recent_kept_precision` covers.

    Raises:
        ConfigurationError: `recent` is not an int >= 0.
    """

    def __init__(self, recent: int = 200) -> None:
        if isinstance(recent, bool) or not isinstance(recent, int) or recent < 0:
            raise ConfigurationError("recent", f"must be an int >= 0, got {recent!r}")
        self._lock = threading.Lock()
        self._state = LedgerSnapshot()
        self._tokens: dict[str, Usage] = {}
        self._shadow_tokens: dict[str, Usage] = {}
        self._recent: deque[bool] = deque(maxlen=recent)

    def record(
        self, result: RoutedResult, baseline_cost: float, *, consistency_cost: float = 0.0
    ) -> None:
        """Count one answered query (`consistency_cost`: the part of its cost spent on
        self-consistency samples)."""
        check = result.decision.consistency
        with self._lock:
            for model, usage in result.usage_by_model.items():
                self._tokens[model] = self._tokens.get(model, Usage()) + usage
            s = self._state
            slm = result.route == "slm"
            self._state = replace(
                s,
                queries=s.queries + 1,
                answered_by_slm=s.answered_by_slm + int(slm),
                escalations=s.escalations + int(not slm),
                slm_failures=s.slm_failures + int(result.slm_error is not None),
                fallback_calls_avoided=s.fallback_calls_avoided
                + int(slm and result.fallback_error is None),
                cost=s.cost + result.cost,
                baseline_cost=s.baseline_cost + baseline_cost,
            )
            if check is not None:
                s = self._state
                self._state = replace(
                    s,
                    consistency_checks=s.consistency_checks + 1,
                    consistency_changed=s.consistency_changed + int(check.changed),
                    consistency_prompt_tokens=s.consistency_prompt_tokens
                    + check.usage.prompt_tokens,
                    consistency_completion_tokens=s.consistency_completion_tokens
                    + check.usage.completion_tokens,
                    consistency_cost=s.consistency_cost + consistency_cost,
                )

    def record_error(
        self, usage_by_model: Mapping[str, Usage] | None = None, *, slm_failed: bool = False
    ) -> None:
        """Count one query that ended in an exception (no answer was given).

        `slm_failed`: the SLM had failed too (strict mode, or both models failed).
        """
        with self._lock:
            for model, usage in (usage_by_model or {}).items():
                self._tokens[model] = self._tokens.get(model, Usage()) + usage
            s = self._state
            self._state = replace(
                s,
                queries=s.queries + 1,
                errors=s.errors + 1,
                slm_failures=s.slm_failures + int(slm_failed),
            )

    def record_cancelled(self) -> None:
        """Count one query the caller cancelled or abandoned before it ended."""
        with self._lock:
            self._state = replace(self._state, cancelled=self._state.cancelled + 1)

    def record_shadow(
        self,
        outcome: str,
        usage_by_model: Mapping[str, Usage] | None = None,
        cost: float = 0.0,
    ) -> None:
        """Count one shadow check: agree, disagree, failed, cancelled or skipped."""
        with self._lock:
            for model, usage in (usage_by_model or {}).items():
                self._shadow_tokens[model] = self._shadow_tokens.get(model, Usage()) + usage
            s = self._state
            labelled = outcome in ("agree", "disagree")
            if labelled:
                self._recent.append(outcome == "agree")
            self._state = replace(
                s,
                shadow_checks=s.shadow_checks + int(labelled),
                shadow_agreements=s.shadow_agreements + int(outcome == "agree"),
                shadow_failures=s.shadow_failures + int(outcome == "failed"),
                shadow_cancelled=s.shadow_cancelled + int(outcome == "cancelled"),
                shadow_skipped=s.shadow_skipped + int(outcome == "skipped"),
                shadow_cost=s.shadow_cost + cost,
                recent_shadow_checks=len(self._recent),
                recent_shadow_agreements=sum(self._recent),
            )

    def snapshot(self) -> LedgerSnapshot:
        with self._lock:
            return replace(
                self._state,
                tokens_by_model=MappingProxyType(dict(self._tokens)),
                shadow_tokens=MappingProxyType(dict(self._shadow_tokens)),
            )

    def reset(self) -> None:
        with self._lock:
            self._state = LedgerSnapshot()
            self._tokens = {}
            self._shadow_tokens = {}
            self._recent.clear()


__all__ = ["Ledger", "LedgerSnapshot", "Price"]

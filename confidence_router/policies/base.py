"""Routing policies: turn Signals into a score and a Decision.

Every policy has `score(signals) -> float` (higher means the small model is
more likely right) and a `threshold`: the router escalates when the score is
below it. Policies are plain data and round-trip through JSON, so a
calibrated policy can be saved and shipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from ..errors import ConfigurationError
from ..signals.token import Signals
from ..types import Decision
from ._decision import probability_decision, route_for
from ._fields import check_finite, check_linear_fields, check_signal

Combine = Literal["all", "any"]

#: Natural unit of each signal, used to put threshold margins on one scale.
DEFAULT_SCALES: Mapping[str, float] = {"length": 16.0, "sum_logprob": 4.0}


@runtime_checkable
class Policy(Protocol):
    """What the Router needs of a policy: a score, a threshold, and JSON to ship it."""

    @property
    def threshold(self) -> float:
        """The score at or above which the SLM's answer is kept."""
        ...

    def score(self, signals: Signals) -> float:
        """How likely the SLM's answer is good enough; higher is more confident."""
        ...

    def decide(self, signals: Signals) -> Decision:
        """Returns the route for these signals, with the score and a reason a person reads."""
        ...

    def with_threshold(self, threshold: float) -> Policy:
        """Returns a copy of the policy with another threshold."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Returns the policy as JSON-ready data that `policy_from_dict` rebuilds."""
        ...


@dataclass(frozen=True)
class Bound:
    """Keep the SLM answer only if `min <= signal <= max` (either side optional).

    `scale` is the signal's unit for margins (default: 16 tokens for `length`,
    4 for `sum_logprob`, 1 otherwise). `ThresholdPolicy` validates its bounds.
    """

    signal: str
    min: float | None = None
    max: float | None = None
    scale: float | None = None

    def validate(self, where: str) -> None:
        """Check the bound; `where` names it in the error.

        Raises:
            ConfigurationError: unknown signal, no side, a side not finite (or a
                negative length), `min > max`, or a scale that is not positive.
        """
        check_signal(f"{where}.signal", self.signal)
        if self.min is None and self.max is None:
            raise ConfigurationError(where, f"bound on {self.signal!r} needs a min or a max")
        for side in ("min", "max"):
            value = getattr(self, side)
            if value is not None:
                check_finite(f"{where}.{side}", value)
                if self.signal == "length" and value < 0:
                    raise ConfigurationError(
                        f"{where}.{side}", f"a length bound cannot be negative, got {value!r}"
                    )
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ConfigurationError(where, f"min {self.min!r} is greater than max {self.max!r}")
        if self.scale is not None and check_finite(f"{where}.scale", self.scale) <= 0:
            raise ConfigurationError(f"{where}.scale", f"must be positive, got {self.scale!r}")

    @property
    def unit(self) -> float:
        """The margin's unit: `scale`, or the signal's default scale."""
        return self.scale if self.scale is not None else DEFAULT_SCALES.get(self.signal, 1.0)

    def margin(self, value: float) -> float:
        """Distance inside the bound in units of `scale` (negative = violated)."""
        margins = []
        if self.min is not None:
            margins.append(value - self.min)
        if self.max is not None:
            margins.append(self.max - value)
        return min(margins) / self.unit

    def describe(self, value: float) -> str:
        """The value against the bound, as a decision's reason shows it."""
        parts = []
        if self.min is not None:
            parts.append(f"{'>=' if value >= self.min else '<'} {self.min:g}")
        if self.max is not None:
            parts.append(f"{'<=' if value <= self.max else '>'} {self.max:g}")
        return f"{self.signal} {value:.3g} " + " and ".join(parts)


def _default_bounds() -> tuple[Bound, ...]:
    return (
        Bound("length", max=64),
        Bound("mean_entropy", max=1.0),
        Bound("min_logprob", min=-3.0),
    )


@dataclass(frozen=True)
class ThresholdPolicy:
    """Hand-set bounds on signals: the seed design (length, entropy, log-probability).

    `combine="all"` keeps the SLM answer only when every bound holds (the
    score is the smallest margin); `combine="any"` keeps it when at least one
    holds (the largest margin). Margins are measured in each signal's unit
    (`Bound.scale`; 16 tokens for length, 1 nat otherwise), so the score is
    one scalar and `threshold` (default 0) shifts all bounds at once.

    Raises:
        ConfigurationError: no bound, a bound that is not a valid `Bound`, an
            unknown `combine`, or a threshold that is not finite.
    """

    bounds: tuple[Bound, ...] = field(default_factory=_default_bounds)
    combine: Combine = "all"
    threshold: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bounds", tuple(self.bounds))
        if not self.bounds:
            raise ConfigurationError("bounds", "at least one bound is required")
        for i, bound in enumerate(self.bounds):
            if not isinstance(bound, Bound):
                raise ConfigurationError(f"bounds[{i}]", f"must be a Bound, got {bound!r}")
            bound.validate(f"bounds[{i}]")
        if self.combine not in ("all", "any"):
            raise ConfigurationError("combine", f"must be 'all' or 'any', got {self.combine!r}")
        check_finite("threshold", self.threshold)

    @classmethod
    def seed(
        cls,
        *,
        max_length: float | None = 64,
        max_entropy: float | None = 1.0,
        min_logprob: float | None = -3.0,
        logprob_signal: str = "min_logprob",
        entropy_signal: str = "mean_entropy",
        combine: Combine = "all",
    ) -> ThresholdPolicy:
        """The three-signal policy of the seed design; pass None to drop a bound."""
        bounds = []
        if max_length is not None:
            bounds.append(Bound("length", max=max_length))
        if max_entropy is not None:
            bounds.append(Bound(entropy_signal, max=max_entropy))
        if min_logprob is not None:
            bounds.append(Bound(logprob_signal, min=min_logprob))
        return cls(tuple(bounds), combine=combine)

    def _margins(self, signals: Signals) -> list[float]:
        return [b.margin(signals[b.signal]) for b in self.bounds]

    def score(self, signals: Signals) -> float:
        margins = self._margins(signals)
        return min(margins) if self.combine == "all" else max(margins)

    def decide(self, signals: Signals) -> Decision:
        margins = self._margins(signals)
        score = min(margins) if self.combine == "all" else max(margins)
        route = route_for(score, self.threshold)
        if route == "slm":
            shown = [b for b, m in zip(self.bounds, margins) if m >= self.threshold]
            verdict = "confident"
        else:
            shown = [b for b, m in zip(self.bounds, margins) if m < self.threshold]
            verdict = "unsure"
        details = "; ".join(b.describe(signals[b.signal]) for b in shown)
        reason = f"{verdict}: {details} (score {score:.3g} vs threshold {self.threshold:g})"
        return Decision(route, score, self.threshold, signals.as_dict(), reason, "threshold")

    def with_threshold(self, threshold: float) -> ThresholdPolicy:
        return replace(self, threshold=threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "threshold",
            "combine": self.combine,
            "threshold": self.threshold,
            "bounds": [{k: v for k, v in vars(b).items() if v is not None} for b in self.bounds],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ThresholdPolicy:
        """Rebuild the policy `to_dict` wrote; raises `ConfigurationError` for bad fields."""
        bounds = tuple(Bound(**b) for b in data.get("bounds", ()))
        return cls(bounds, combine=data.get("combine", "all"), threshold=data.get("threshold", 0.0))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


@dataclass(frozen=True)
class LogisticPolicy:
    """A learned estimate of P(SLM answer is right) from standardised signals.

    Fit it on traces with `fit`; the score is a probability and the
    default threshold 0.5 escalates when the SLM is more likely wrong.

    Raises:
        ConfigurationError: unknown features, or weights, means and standard
            deviations that do not match them or are not finite (or not positive).
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    threshold: float = 0.5

    def __post_init__(self) -> None:
        check_linear_fields(self)
        check_finite("bias", self.bias)
        check_finite("threshold", self.threshold)

    def _matrix(self, rows: Sequence[Signals]) -> np.ndarray:
        x = np.array([[s[f] for f in self.features] for s in rows], dtype=np.float64)
        return np.asarray((x - np.asarray(self.mean)) / np.asarray(self.std))

    def scores(self, rows: Sequence[Signals]) -> np.ndarray:
        """Vectorised scores of many answers (for evaluation)."""
        if not rows:
            return np.zeros(0)
        return _sigmoid(self._matrix(rows) @ np.asarray(self.weights) + self.bias)

    def _terms(self, signals: Signals) -> list[float]:
        """Each feature's standardised, weighted term (plain floats: one answer is on the
        router's hot path, where numpy's per-call overhead would dominate)."""
        return [
            (signals[f] - m) / s * w
            for f, w, m, s in zip(self.features, self.weights, self.mean, self.std)
        ]

    @staticmethod
    def _probability(terms: list[float], bias: float) -> float:
        return 0.5 * (1.0 + math.tanh(0.5 * (math.fsum(terms) + bias)))

    def score(self, signals: Signals) -> float:
        return self._probability(self._terms(signals), self.bias)

    def decide(self, signals: Signals) -> Decision:
        terms = self._terms(signals)
        score = self._probability(terms, self.bias)
        top = max(range(len(terms)), key=lambda i: abs(terms[i]))
        detail = f"; strongest feature {self.features[top]}={signals[self.features[top]]:.3g}"
        return probability_decision("logistic", score, self.threshold, signals, detail)

    def with_threshold(self, threshold: float) -> LogisticPolicy:
        return replace(self, threshold=threshold)

    @classmethod
    def fit(
        cls,
        rows: Sequence[Signals],
        correct: Sequence[bool] | np.ndarray,
        *,
        features: Sequence[str] = (
            "length",
            "mean_entropy",
            "min_logprob",
            "q10_logprob",
            "q25_logprob",
            "median_logprob",
            "first_margin",
        ),
        l2: float = 1.0,
        threshold: float = 0.5,
        max_iter: int = 100,
    ) -> LogisticPolicy:
        """Fit an L2-regularised logistic regression by Newton's method (numpy only).

        Args:
            rows: the signals of the SLM's answers.
            correct: whether each answer was right (the label the score estimates).
            features: the signals the model reads.
            l2: the penalty on the standardised weights (not the bias).
            threshold: the threshold of the fitted policy.
            max_iter: Newton steps at most.

        Returns:
            The fitted policy.

        Raises:
            ConfigurationError: fewer than 2 rows, rows and labels of different
                lengths, or an unknown feature.
        """
        y = np.asarray(correct, dtype=np.float64)
        if len(rows) != len(y) or len(rows) < 2:
            raise ConfigurationError(
                "rows", f"need at least 2 rows matching labels, got {len(rows)}"
            )
        for i, name in enumerate(features):
            check_signal(f"features[{i}]", name)
        raw = np.array([[s[f] for f in features] for s in rows], dtype=np.float64)
        w, mean, std = fit_logistic_arrays(raw, y, l2=l2, max_iter=max_iter)
        return cls(
            tuple(features),
            tuple(float(v) for v in w[:-1]),
            float(w[-1]),
            tuple(float(v) for v in mean),
            tuple(float(v) for v in std),
            threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "logistic",
            "features": list(self.features),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "std": list(self.std),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LogisticPolicy:
        """Rebuild the policy `to_dict` wrote; raises `ConfigurationError` for bad fields."""
        fields_ = {k: v for k, v in data.items() if k != "type"}
        return cls(**fields_)


def fit_logistic_arrays(
    raw: np.ndarray, y: np.ndarray, *, l2: float = 1.0, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standardise `raw` (n, d) and fit L2-regularised logistic regression by Newton's method.

    Returns `(weights with the bias last, mean, std)`. `LogisticPolicy.fit`
    uses it on signals; the evaluation uses it on features of the query alone,
    so both routers are trained exactly the same way.
    """
    mean = raw.mean(axis=0)
    std = raw.std(axis=0)
    std[std < 1e-12] = 1.0
    x = np.hstack([(raw - mean) / std, np.ones((len(y), 1))])
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], float(l2))
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(max_iter):
        p = _sigmoid(x @ w)
        grad = x.T @ (p - y) + penalty * w
        hess = (x.T * (p * (1 - p))) @ x + np.diag(penalty) + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w, mean, std


def calibrate_to_escalation_rate(policy: Policy, rows: Sequence[Signals], rate: float) -> Policy:
    """Set the threshold so that about `rate` of these answers escalate.

    Budget calibration: run on a calibration split, then check the achieved
    rate on held-out data (no guarantee; `confidence-router calibrate` gives one).

    Args:
        policy: the policy whose threshold is set.
        rows: the signals of the calibration answers.
        rate: the share to escalate, in [0, 1].

    Returns:
        A copy of `policy` with the new threshold.

    Raises:
        ConfigurationError: `rate` outside [0, 1], or no rows.
    """
    if not 0.0 <= check_finite("rate", rate) <= 1.0:
        raise ConfigurationError("rate", f"must be between 0 and 1, got {rate!r}")
    if not rows:
        raise ConfigurationError("rows", "calibration needs at least one answer")
    scores = np.sort(np.array([policy.score(s) for s in rows]))
    n_escalate = int(round(rate * len(scores)))
    if n_escalate <= 0:
        threshold = float(scores[0])
    elif n_escalate >= len(scores):
        threshold = float(np.nextafter(scores[-1], np.inf))
    else:
        threshold = float((scores[n_escalate - 1] + scores[n_escalate]) / 2.0)
    return policy.with_threshold(threshold)


__all__ = [
    "Bound",
    "LogisticPolicy",
    "Policy",
    "ThresholdPolicy",
    "calibrate_to_escalation_rate",
    "fit_logistic_arrays",
]

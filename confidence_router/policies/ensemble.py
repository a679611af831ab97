"""A policy that averages the probabilities of several policies (e.g. logistic + trees)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..signals.token import Signals
from ..types import Decision
from ._decision import probability_decision
from ._fields import check_finite
from ._scoring import scores_of
from .base import Policy


@dataclass(frozen=True)
class AveragePolicy:
    """Score = the weighted mean of the members' scores (each a P(SLM right)).

    Averaging a linear model and a tree model is steadier than choosing one of
    them on a few hundred answers. The members' own thresholds are ignored;
    the weights are normalised to sum to 1.

    Raises:
        ConfigurationError: no member, a member that is not a `Policy`, weights
            that do not match the members or are not positive.
    """

    members: tuple[Policy, ...]
    weights: tuple[float, ...] = ()
    threshold: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", tuple(self.members))
        if not self.members:
            raise ConfigurationError("members", "at least one member policy is required")
        for i, member in enumerate(self.members):
            if not isinstance(member, Policy):
                raise ConfigurationError(f"members[{i}]", f"must be a Policy, got {member!r}")
        weights = tuple(self.weights) or tuple(1.0 for _ in self.members)
        if len(weights) != len(self.members):
            raise ConfigurationError(
                "weights", f"has {len(weights)} values for {len(self.members)} members"
            )
        for i, w in enumerate(weights):
            if check_finite(f"weights[{i}]", w) <= 0:
                raise ConfigurationError(f"weights[{i}]", f"must be positive, got {w!r}")
        total = math.fsum(weights)
        object.__setattr__(self, "weights", tuple(float(w) / total for w in weights))
        check_finite("threshold", self.threshold)

    def score(self, signals: Signals) -> float:
        return math.fsum(w * m.score(signals) for w, m in zip(self.weights, self.members))

    def scores(self, rows: Sequence[Signals]) -> np.ndarray:
        """Vectorised scores of many answers (for evaluation)."""
        total = np.zeros(len(rows))
        for w, member in zip(self.weights, self.members):
            total += w * scores_of(member, rows)
        return total

    def decide(self, signals: Signals) -> Decision:
        parts = [m.score(signals) for m in self.members]
        score = math.fsum(w * p for w, p in zip(self.weights, parts))
        shown = ", ".join(
            f"{m.to_dict().get('type', type(m).__name__)} {p:.2f}"
            for m, p in zip(self.members, parts)
        )
        detail = f" (mean of {shown})"
        return probability_decision("average", score, self.threshold, signals, detail)

    def with_threshold(self, threshold: float) -> AveragePolicy:
        return replace(self, threshold=threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "average",
            "threshold": self.threshold,
            "weights": list(self.weights),
            "members": [m.to_dict() for m in self.members],
        }

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], member_from_dict: Callable[[Mapping[str, Any]], Policy]
    ) -> AveragePolicy:
        """Rebuild the policy `to_dict` wrote.

        `member_from_dict` rebuilds each member (the registry's `policy_from_dict`,
        passed in so the kinds never import the registry).
        """
        members = tuple(member_from_dict(m) for m in data.get("members", ()))
        return cls(members, tuple(data.get("weights", ())), float(data.get("threshold", 0.5)))


__all__ = ["AveragePolicy"]

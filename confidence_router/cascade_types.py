"""Plain data of a cascade of N stages: what each stage did, and the whole query's record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .types import Decision, Generation, RoutedResult, Usage

Outcome = Literal["kept", "escalated", "answered"]


@dataclass(frozen=True, eq=False)
class StageGeneration(Generation):
    """The answer of the rest of a cascade, as the stage below sees its fallback's answer.

    ``routed`` is the inner stage's own :class:`RoutedResult` (which may hold
    another StageGeneration as its fallback), so the provenance of every stage
    above survives inside the two-model router's result.
    """

    routed: RoutedResult | None = None


@dataclass(frozen=True, eq=False)
class StageRecord:
    """One stage a query reached: which model, what its policy said, what it cost.

    ``outcome``: ``"kept"`` (a small model's answer was kept), ``"escalated"``
    (passed up, with the reason), ``"answered"`` (the last stage, the
    fallback, answered). ``score``/``threshold`` are None for the fallback
    stage (it is not scored) and ``score`` is None when the stage's model
    failed. ``latency_s`` is the time spent at this stage, excluding the
    stages above it (the stages' latencies sum to the query's).
    """

    stage: int  # 1-based position in the ladder
    model: str
    outcome: Outcome
    score: float | None
    threshold: float | None
    reason: str
    usage: Usage
    latency_s: float
    cost: float
    decision: Decision | None = None  # None for the fallback stage
    generation: Generation | None = None  # None when the stage's model failed
    error: str | None = None  # the stage's model failure, if any

    @property
    def route(self) -> Literal["slm", "llm"]:
        """``"slm"``: this stage's answer is the answer; ``"llm"``: it went up."""
        return "llm" if self.outcome == "escalated" else "slm"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "stage": self.stage,
            "model": self.model,
            "outcome": self.outcome,
            "score": self.score,
            "threshold": self.threshold,
            "reason": self.reason,
            "usage": {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            },
            "latency_s": self.latency_s,
            "cost": self.cost,
        }
        if not self.usage.exact:
            data["usage_exact"] = False
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True, eq=False)
class CascadeResult(RoutedResult):
    """A :class:`RoutedResult` of a cascade, with every stage the query climbed.

    As a RoutedResult it reads like the two-model router's: ``route`` is
    ``"slm"`` when any small model's answer was kept, ``"llm"`` when the
    last stage (the fallback) answered; ``decision`` is the deciding stage's
    own Decision (the stage that kept its answer, or the last small model,
    which escalated to the fallback); ``slm`` is that stage's Generation;
    ``usage_by_model`` and ``cost`` cover every stage. ``stages`` lists each
    stage tried, in order.
    """

    stages: tuple[StageRecord, ...] = ()

    @property
    def answered_stage(self) -> int:
        """1-based position of the stage whose answer this is."""
        return self.stages[-1].stage if self.stages else 1

    @property
    def answered_model(self) -> str:
        return self.stages[-1].model if self.stages else self.answered_by.model

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["answered_stage"] = self.answered_stage
        data["stages"] = [s.to_dict() for s in self.stages]
        return data


__all__ = ["CascadeResult", "Outcome", "StageGeneration", "StageRecord"]

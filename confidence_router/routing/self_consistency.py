"""Sampled self-consistency (opt-in): where the policy is unsure, ask the SLM again.

With `Router(..., consistency=SelfConsistency(k=4, temperature=0.7, band=(lo, hi)))`
the router draws `k` extra sampled answers from the SLM only when the
policy's score of the greedy answer lies in `[lo, hi)`, and then lets their
agreement with the greedy answer decide: the answer is kept iff at least
`min_agreement` of the samples agree (`measure="match"`: the share whose
SQuAD-normalised text equals the greedy's; `"f1"`: their mean token F1
with it). Outside the band the policy's decision stands and nothing is drawn.

Why a band: sampling costs k more SLM calls, and only answers near the
threshold can change route. The samples' tokens are counted in the result's
`usage_by_model` and cost, and in the ledger (`consistency_checks`,
`consistency_tokens`, `consistency_cost`). Answers the router escalates
whatever the score (cut off by the token limit, stopped early, empty, SLM
failure) are never sampled. If drawing the samples fails, the policy's
decision stands and the reason says so.

Measured on Gemma 3 270M traces it did not pay: no gain on SQuAD v1.1 and a
small one on SQuAD 2.0 (APGR +0.004) for ~20% of queries sampled; see the
README ("Sampled self-consistency") and `bench/self_consistency.py`. Off by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from ..errors import ConfigurationError
from ..observe.shadow import agreement
from ..types import ConsistencyCheck, Decision, Generation, Usage
from .early_exit import ABORTED

Measure = Literal["match", "f1"]


@dataclass(frozen=True)
class SelfConsistency:
    """Draw `k` samples at `temperature` when the score lies in `band = (low, high)`;
    keep the answer iff their agreement with it is >= `min_agreement`.

    `seed`: sample `i` uses `seed + i` (reproducible). `max_tokens`:
    the samples' token limit (default: the query's). `measure`: `"match"`
    (normalised exact match) or `"f1"` (token F1 for longer answers).

    Raises:
        ConfigurationError: `k` outside 1..64, a temperature that is not > 0 (the
            samples must vary), a band that is not a pair `low < high`,
            `min_agreement` outside [0, 1], an unknown `measure`, or a negative
            seed or `max_tokens` below 1.
    """

    band: tuple[float, float]
    k: int = 4
    temperature: float = 0.7
    min_agreement: float = 0.5
    measure: Measure = "match"
    seed: int = 0
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= 64:
            raise ConfigurationError(
                "consistency.k", f"must be an int from 1 to 64, got {self.k!r}"
            )
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ConfigurationError(
                "consistency.temperature", f"must be a number > 0 (samples must vary), got {t!r}"
            )
        band = self.band
        if not isinstance(band, (tuple, list)) or len(band) != 2:
            raise ConfigurationError(
                "consistency.band", f"must be a pair (low, high), got {band!r}"
            )
        for side, value in zip(("low", "high"), band):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ConfigurationError(
                    f"consistency.band.{side}", f"must be a number, got {value!r}"
                )
        if not band[0] < band[1]:
            raise ConfigurationError(
                "consistency.band", f"low {band[0]!r} must be below high {band[1]!r}"
            )
        object.__setattr__(self, "band", (float(band[0]), float(band[1])))
        m = self.min_agreement
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not 0.0 <= m <= 1.0:
            raise ConfigurationError(
                "consistency.min_agreement", f"must be a number from 0 to 1, got {m!r}"
            )
        if self.measure not in ("match", "f1"):
            raise ConfigurationError(
                "consistency.measure", f"must be 'match' or 'f1', got {self.measure!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigurationError("consistency.seed", f"must be an int >= 0, got {self.seed!r}")
        mt = self.max_tokens
        if mt is not None and (isinstance(mt, bool) or not isinstance(mt, int) or mt < 1):
            raise ConfigurationError(
                "consistency.max_tokens", f"must be None or an int >= 1, got {mt!r}"
            )

    def wants_samples(self, decision: Decision, slm: Generation | None) -> bool:
        """Whether this answer is sampled: scored, in the band, and not escalated regardless."""
        if slm is None or decision.score is None or not slm.text.strip():
            return False
        if slm.finish_reason in ("length", ABORTED):
            return False
        low, high = self.band
        return low <= decision.score < high

    def check(self, answer: str, samples: Sequence[Generation]) -> ConsistencyCheck:
        """How far the samples agree with `answer`, and whether that keeps it."""
        pairs = [agreement(answer, s.text) for s in samples]
        agreeing = sum(1 for em, _ in pairs if em == 1.0)
        mean_f1 = sum(f1 for _, f1 in pairs) / len(pairs) if pairs else 0.0
        share = agreeing / len(pairs) if pairs else 0.0
        value = share if self.measure == "match" else mean_f1
        usage = Usage()
        for s in samples:
            usage = usage + s.usage
        return ConsistencyCheck(
            samples=tuple(samples),
            agreeing=agreeing,
            agreement=share,
            mean_f1=mean_f1,
            keep=value >= self.min_agreement,
            usage=usage,
        )

    def decide(self, decision: Decision, check: ConsistencyCheck) -> Decision:
        """The decision after the samples: the route follows the agreement."""
        k = len(check.samples)
        if self.measure == "match":
            value, what = check.agreement, f"{check.agreeing} of {k} samples agree"
        else:
            value, what = check.mean_f1, f"samples' mean token F1 {check.mean_f1:.2f}"
        sign = ">=" if check.keep else "<"
        low, high = self.band
        reason = (
            f"{'kept' if check.keep else 'escalated'}: {what} with the answer "
            f"({self.measure} {value:.2f} {sign} {self.min_agreement:g}); score "
            f"{decision.score:.3g} in the consistency band [{low:g}, {high:g}), so "
            f"{k} samples at temperature {self.temperature:g} decided; the policy said "
            f"{decision.reason}"
        )
        check = replace(check, policy_route=decision.route)
        return replace(
            decision, route="slm" if check.keep else "llm", reason=reason, consistency=check
        )

    def failed(self, decision: Decision, error: Exception) -> Decision:
        """The policy's decision, noting that the samples could not be drawn."""
        return replace(
            decision,
            reason=f"{decision.reason}; consistency samples failed "
            f"({type(error).__name__}: {error}), so the policy decided",
        )


__all__ = ["Measure", "SelfConsistency"]

"""How every policy kind turns its score into a Decision, so the route and the
reason read the same whichever kind decided."""

from __future__ import annotations

from typing import Literal

from ..signals.token import Signals
from ..types import Decision


def route_for(score: float, threshold: float) -> Literal["slm", "llm"]:
    """Keep the SLM answer when its score reaches the threshold."""
    return "slm" if score >= threshold else "llm"


def probability_decision(
    kind: str, score: float, threshold: float, signals: Signals, detail: str
) -> Decision:
    """The Decision of a policy whose score is P(SLM right); `detail` ends the reason."""
    route = route_for(score, threshold)
    verdict = "confident" if route == "slm" else "unsure"
    reason = f"{verdict}: P(slm correct) {score:.2f} vs threshold {threshold:.2f}{detail}"
    return Decision(route, score, threshold, signals.as_dict(), reason, kind)

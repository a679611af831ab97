"""Routing a query: the two-model router (:mod:`.router`), early escalation while
the SLM streams (:mod:`.early_exit`), hedging (:mod:`.hedging`), self-consistency
(:mod:`.self_consistency`) and cascades of N models (:mod:`.cascade`)."""

from __future__ import annotations

from .cascade import (
    Cascade,
    CascadeResult,
    Stage,
    StageEscalator,
    StageGeneration,
    StageRecord,
    as_stage,
    with_default_policy,
)
from .early_exit import (
    ABORTED,
    WORSENING_SIDES,
    AbortCheck,
    Checks,
    EarlyExitRule,
    MonotoneBounds,
    abort_decision,
    checks_for,
    load_early_exit,
    prefix_signals,
    save_early_exit,
)
from .hedging import Hedge, HedgedCall, hedged_ainvoke, hedged_astream
from .router import Router
from .self_consistency import Measure, SelfConsistency

__all__ = [
    "ABORTED",
    "AbortCheck",
    "Cascade",
    "CascadeResult",
    "Checks",
    "EarlyExitRule",
    "Hedge",
    "HedgedCall",
    "Measure",
    "MonotoneBounds",
    "Router",
    "SelfConsistency",
    "Stage",
    "StageEscalator",
    "StageGeneration",
    "StageRecord",
    "WORSENING_SIDES",
    "abort_decision",
    "as_stage",
    "checks_for",
    "hedged_ainvoke",
    "hedged_astream",
    "load_early_exit",
    "prefix_signals",
    "save_early_exit",
    "with_default_policy",
]

"""Routing a query: the two-model router (`router`), early escalation while the SLM
streams (`early_exit`), hedging (`hedging`), self-consistency (`self_consistency`)
and cascades of N models (`cascade`).

The names here are what a user builds a router from; the modules' other names
(and the `_`-modules the router and the cascade share) are the machinery.
"""

from __future__ import annotations

from .cascade import Cascade, Stage
from .early_exit import EarlyExitRule, MonotoneBounds, load_early_exit, save_early_exit
from .hedging import Hedge
from .router import Router
from .self_consistency import SelfConsistency

__all__ = [
    "Cascade",
    "EarlyExitRule",
    "Hedge",
    "MonotoneBounds",
    "Router",
    "SelfConsistency",
    "Stage",
    "load_early_exit",
    "save_early_exit",
]

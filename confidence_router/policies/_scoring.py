"""Scores of many answers at once, for the policy kinds with a vectorised `scores`
and the ones without (evaluation, fitting and calibration all need this)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..signals.token import Signals
from .base import Policy


def scores_of(policy: Policy, rows: Sequence[Signals]) -> np.ndarray:
    """The policy's scores of `rows`: its `scores` method when it has one, else
    `score` answer by answer."""
    batch = getattr(policy, "scores", None)
    if batch is not None:
        return np.asarray(batch(list(rows)))
    return np.array([policy.score(r) for r in rows])

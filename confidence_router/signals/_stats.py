"""Per-position statistics shared by the one-shot and the incremental signals, so both
compute entropies, margins and quantiles with the same code (and the same bits)."""

from __future__ import annotations

import math

import numpy as np

from ..types import FloatArray

_TINY = 1e-300
_LOG_TINY = math.log(_TINY)
# exp() of anything below this is 0.0 in float64: padding of -inf, clipped to it,
# behaves as probability 0 without producing NaN (0 * -inf) on the way.
_FLOOR = -745.0


def _as_top_matrix(token_logprobs: FloatArray, top_logprobs: FloatArray) -> FloatArray:
    """Top-k matrix, falling back to the chosen tokens when k = 0."""
    top = np.asarray(top_logprobs, dtype=np.float64)
    if top.ndim != 2 or top.shape[1] == 0 or top.shape[0] != token_logprobs.shape[0]:
        return token_logprobs[:, None]
    return top


def per_position(lp: FloatArray, top_logprobs: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Entropy and margin at every position, in one pass over the top-k matrix."""
    top = np.minimum(np.maximum(_as_top_matrix(lp, top_logprobs), _FLOOR), 0.0)
    probs = np.exp(top)
    rest = np.maximum(1.0 - probs.sum(axis=1), 0.0)
    entropy = -(probs * top).sum(axis=1) - rest * np.log(np.maximum(rest, _TINY))
    if top.shape[1] >= 2:
        ordered = np.sort(top, axis=1)
        best, runner_up = ordered[:, -1], ordered[:, -2]
    else:
        best = top[:, 0]
        runner_up = np.log(np.maximum(1.0 - np.exp(best), _TINY))
    margin = best - np.maximum(runner_up, _LOG_TINY)
    return np.maximum(entropy, 0.0), np.maximum(margin, 0.0)


def position_values(
    token_logprobs: FloatArray, top_logprobs: FloatArray
) -> tuple[list[float], list[float], list[float]]:
    """Log-probabilities (clipped at 0), entropies and margins per position, as floats.

    Raises:
        ValueError: a log-probability is NaN or -inf.
    """
    lp = np.minimum(np.asarray(token_logprobs, dtype=np.float64).reshape(-1), 0.0)
    values: list[float] = lp.tolist()
    if not values:
        return [], [], []
    if not all(map(math.isfinite, values)):
        raise ValueError("token_logprobs contains NaN or -inf; cannot compute signals")
    entropies, margins = per_position(lp, top_logprobs)
    return values, entropies.tolist(), margins.tolist()


def quantile(ordered: list[float], q: float) -> float:
    """numpy's default ("linear") quantile of an ascending list, with its exact arithmetic."""
    virtual = (len(ordered) - 1) * q
    low = math.floor(virtual)
    a, b = ordered[low], ordered[min(low + 1, len(ordered) - 1)]
    t = virtual - low
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t

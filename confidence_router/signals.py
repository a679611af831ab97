"""Confidence signals: numbers computed from a generation's token log-probabilities.

All computations are vectorised over token positions. Conventions:

* Log-probabilities are natural logs, as llama.cpp and Ollama report them.
* **Entropy and the mass outside the top k.** A backend reports only the k
  most likely tokens per position. The probability mass they leave,
  ``rest = 1 - sum(top-k probabilities)``, is treated as *one extra outcome*.
  The per-position entropy ``-sum(p log p) - rest log(rest)`` is then a lower
  bound on the full-vocabulary entropy (merging outcomes never adds entropy),
  exact when the top k hold all the mass, and lies in ``[0, log(k + 1)]``.
  With k = 0 (only the chosen token reported) it is the binary entropy of
  "the chosen token or anything else".
* **Margin** at a position is the log-probability of the most likely token
  minus that of the runner-up; with fewer than two alternatives reported the
  runner-up is bounded by the leftover mass, ``log(1 - p_top)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np

from .types import FloatArray, Generation

_TINY = 1e-300


@dataclass(frozen=True)
class Signals:
    """Named floats describing how sure the model was of its answer.

    Higher log-probabilities and margins and lower entropies mean more
    confident. For an empty answer every statistic is 0 and ``length`` is 0;
    the router treats empty answers separately.
    """

    length: float
    mean_logprob: float
    min_logprob: float
    sum_logprob: float
    q10_logprob: float
    q25_logprob: float
    median_logprob: float
    mean_entropy: float
    max_entropy: float
    first_margin: float
    mean_margin: float

    NAMES: ClassVar[tuple[str, ...]]

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def __getitem__(self, name: str) -> float:
        if name not in self.NAMES:
            raise KeyError(f"unknown signal {name!r}; known signals: {', '.join(self.NAMES)}")
        return float(getattr(self, name))


Signals.NAMES = tuple(f.name for f in fields(Signals))
SIGNAL_NAMES: tuple[str, ...] = Signals.NAMES


def _as_top_matrix(token_logprobs: FloatArray, top_logprobs: FloatArray) -> FloatArray:
    """Top-k matrix, falling back to the chosen tokens when k = 0."""
    top = np.asarray(top_logprobs, dtype=np.float64)
    if top.ndim != 2 or top.shape[1] == 0 or top.shape[0] != token_logprobs.shape[0]:
        return token_logprobs[:, None]
    return top


def token_entropies(token_logprobs: FloatArray, top_logprobs: FloatArray) -> FloatArray:
    """Per-position entropy of the top-k distribution plus one bucket for the rest."""
    lp = np.asarray(token_logprobs, dtype=np.float64)
    top = np.minimum(_as_top_matrix(lp, top_logprobs), 0.0)
    probs = np.exp(top)  # padding of -inf becomes 0
    plogp = probs * np.where(probs > 0.0, top, 0.0)
    rest = np.clip(1.0 - probs.sum(axis=1), 0.0, 1.0)
    rest_term = np.where(rest > 0.0, rest * np.log(np.maximum(rest, _TINY)), 0.0)
    entropy = -(plogp.sum(axis=1) + rest_term)
    return np.asarray(np.maximum(entropy, 0.0), dtype=np.float64)


def token_margins(token_logprobs: FloatArray, top_logprobs: FloatArray) -> FloatArray:
    """Per-position log-probability gap between the best and the runner-up token."""
    lp = np.asarray(token_logprobs, dtype=np.float64)
    top = np.minimum(_as_top_matrix(lp, top_logprobs), 0.0)
    ordered = -np.sort(-top, axis=1)
    best = ordered[:, 0]
    if ordered.shape[1] >= 2:
        runner_up = ordered[:, 1]
    else:
        runner_up = np.log(np.maximum(1.0 - np.exp(best), _TINY))
    margin = best - np.maximum(runner_up, np.log(_TINY))
    return np.asarray(np.maximum(margin, 0.0), dtype=np.float64)


def compute_signals(generation: Generation) -> Signals:
    """Signals of one generation (which must carry log-probabilities)."""
    return signals_from_arrays(generation.token_logprobs, generation.top_logprobs)


def signals_from_arrays(token_logprobs: FloatArray, top_logprobs: FloatArray) -> Signals:
    """Signals from the chosen tokens' logprobs (n,) and the top-k matrix (n, k)."""
    lp = np.minimum(np.asarray(token_logprobs, dtype=np.float64).reshape(-1), 0.0)
    n = lp.shape[0]
    if n == 0:
        return Signals(*(0.0 for _ in Signals.NAMES))
    if not np.all(np.isfinite(lp)):
        raise ValueError("token_logprobs contains NaN or -inf; cannot compute signals")
    entropies = token_entropies(lp, top_logprobs)
    margins = token_margins(lp, top_logprobs)
    q10, q25, q50 = np.quantile(lp, [0.10, 0.25, 0.50])
    return Signals(
        length=float(n),
        mean_logprob=float(lp.mean()),
        min_logprob=float(lp.min()),
        sum_logprob=float(lp.sum()),
        q10_logprob=float(q10),
        q25_logprob=float(q25),
        median_logprob=float(q50),
        mean_entropy=float(entropies.mean()),
        max_entropy=float(entropies.max()),
        first_margin=float(margins[0]),
        mean_margin=float(margins.mean()),
    )


__all__ = [
    "SIGNAL_NAMES",
    "Signals",
    "compute_signals",
    "signals_from_arrays",
    "token_entropies",
    "token_margins",
]

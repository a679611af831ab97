"""Incremental signals: a running accumulator over the SLM's token stream.

`IncrementalSignals` takes the token chunks as they arrive and can give
the `Signals` of the prefix seen so far at any moment, so a policy can be
asked after any prefix "can this answer still pass?" (see
`confidence_router.routing.early_exit`).

Exactness. Everything but the quantiles is exact: the count, the running
minimum of the log-probabilities and the maximum of the entropies, the first
margin, and the sums (log-probabilities, entropies, margins) are kept as
Shewchuk partials, so their value is the correctly rounded sum, bit for bit
what `compute_signals` gives on the same tokens. Per-position entropies and
margins are computed by the same code as `compute_signals`, chunk by chunk.

Quantiles (`q10_logprob`, `q25_logprob`, `median_logprob`) are exact,
from a sorted buffer, for the first `exact_quantiles_up_to` tokens (default
1024, more than any answer in the committed traces). Past that the buffer is
dropped and each quantile is followed by a P-squared estimator (Jain and
Chlamtac, 1985: five markers, O(1) memory and time per token), started from
the exact quantiles of the buffer. How close that estimate is on real token
streams is measured by `bench/early_escalation.py` (`quantile_estimate`
in its results).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

from ..types import FloatArray, TokenChunk
from ._stats import position_values, quantile
from .token import LOGPROB_SIGNAL_NAMES, Signals

QUANTILES: tuple[tuple[str, float], ...] = (
    ("q10_logprob", 0.10),
    ("q25_logprob", 0.25),
    ("median_logprob", 0.50),
)


class _ExactSum:
    """A running float sum without rounding error (Shewchuk's partials, as `math.fsum`)."""

    __slots__ = ("partials",)

    def __init__(self) -> None:
        self.partials: list[float] = []

    def add(self, x: float) -> None:
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    @property
    def value(self) -> float:
        return math.fsum(self.partials)


class P2Quantile:
    """The P-squared streaming estimate of one quantile (five markers, O(1) per value).

    Starts either empty (the first five values are kept exactly) or from a
    sorted sample (`from_sorted`), whose exact quantiles place the markers.

    Raises:
        ValueError: `p` is not between 0 and 1.
    """

    def __init__(self, p: float) -> None:
        if not 0.0 < p < 1.0:
            raise ValueError(f"p must be between 0 and 1, got {p!r}")
        self.p = p
        self.n = 0
        self.heights: list[float] = []
        self.positions = [1.0, 2.0, 3.0, 4.0, 5.0]
        self.desired = [1.0, 1.0 + 2 * p, 1.0 + 4 * p, 3.0 + 2 * p, 5.0]
        self.increments = [0.0, p / 2, p, (1 + p) / 2, 1.0]

    @classmethod
    def from_sorted(cls, ordered: Sequence[float], p: float) -> P2Quantile:
        """An estimator whose markers start at the exact quantiles of an ascending sample."""
        est = cls(p)
        n = len(ordered)
        if n < 5:
            for value in ordered:
                est.add(value)
            return est
        fractions = (0.0, p / 2, p, (1 + p) / 2, 1.0)
        est.n = n
        est.heights = [quantile(list(ordered), f) for f in fractions]
        est.positions = [1.0 + (n - 1) * f for f in fractions]
        est.desired = list(est.positions)
        return est

    def add(self, x: float) -> None:
        """Take one more value (O(1))."""
        self.n += 1
        h = self.heights
        if self.n <= 5:
            bisect.insort(h, x)
            return
        pos = self.positions
        if x < h[0]:
            h[0] = x
            k = 0
        elif x >= h[4]:
            h[4] = max(h[4], x)
            k = 3
        else:
            k = bisect.bisect_right(h, x) - 1
            k = min(max(k, 0), 3)
        for i in range(k + 1, 5):
            pos[i] += 1.0
        for i in range(5):
            self.desired[i] += self.increments[i]
        for i in (1, 2, 3):
            d = self.desired[i] - pos[i]
            if (d >= 1.0 and pos[i + 1] - pos[i] > 1.0) or (
                d <= -1.0 and pos[i - 1] - pos[i] < -1.0
            ):
                step = 1.0 if d > 0 else -1.0
                candidate = self._parabolic(i, step)
                if not h[i - 1] < candidate < h[i + 1]:
                    j = i + int(step)
                    candidate = h[i] + step * (h[j] - h[i]) / (pos[j] - pos[i])
                h[i] = candidate
                pos[i] += step

    def _parabolic(self, i: int, d: float) -> float:
        h, n = self.heights, self.positions
        return h[i] + d / (n[i + 1] - n[i - 1]) * (
            (n[i] - n[i - 1] + d) * (h[i + 1] - h[i]) / (n[i + 1] - n[i])
            + (n[i + 1] - n[i] - d) * (h[i] - h[i - 1]) / (n[i] - n[i - 1])
        )

    @property
    def value(self) -> float:
        """The estimate so far (exact for five values or fewer; 0 before any)."""
        if self.n == 0:
            return 0.0
        if self.n <= 5:
            return quantile(self.heights, self.p)
        return self.heights[2]


class IncrementalSignals:
    """Signals of a growing answer, updated token by token.

    Feed it with `push_chunk` (or `push`) as the SLM's chunks
    arrive; `snapshot` is the `Signals` of everything pushed so
    far, equal to `compute_signals` of that prefix (see the module
    docstring for the quantiles past `exact_quantiles_up_to` tokens).
    The running `count`, `min_logprob`, `max_entropy` and
    `sum_logprob` are available without building a snapshot.

    Args:
        exact_quantiles_up_to: tokens whose quantiles are kept exact; past
            them the P-squared estimates take over.

    Raises:
        ValueError: `exact_quantiles_up_to` is negative.
    """

    def __init__(self, *, exact_quantiles_up_to: int = 1024) -> None:
        if exact_quantiles_up_to < 0:
            raise ValueError(f"exact_quantiles_up_to must be >= 0, got {exact_quantiles_up_to}")
        self.exact_quantiles_up_to = exact_quantiles_up_to
        self.count = 0
        self.min_logprob = 0.0
        self.max_entropy = 0.0
        self.first_margin = 0.0
        self._sum_logprob = _ExactSum()
        self._sum_entropy = _ExactSum()
        self._sum_margin = _ExactSum()
        self._ordered: list[float] | None = []
        self._estimators: list[P2Quantile] | None = None

    @property
    def sum_logprob(self) -> float:
        """The exact sum of the log-probabilities so far."""
        return self._sum_logprob.value

    @property
    def quantiles_exact(self) -> bool:
        """Whether the quantiles of `snapshot` are exact (not yet estimated)."""
        return self._ordered is not None

    def push_chunk(self, chunk: TokenChunk) -> None:
        """Add the tokens of one streamed chunk (a chunk without tokens changes nothing)."""
        if len(chunk.token_logprobs):
            self.push(chunk.token_logprobs, chunk.top_logprobs)

    def push(self, token_logprobs: FloatArray, top_logprobs: FloatArray) -> None:
        """Add tokens: their logprobs (n,) and top-k matrix (n, k).

        Raises:
            ValueError: a log-probability is NaN or -inf, as in `compute_signals`.
        """
        values, entropies, margins = position_values(token_logprobs, top_logprobs)
        if not values:
            return
        if self.count == 0:
            self.min_logprob = values[0]
            self.max_entropy = entropies[0]
            self.first_margin = margins[0]
        self.min_logprob = min(self.min_logprob, *values)
        self.max_entropy = max(self.max_entropy, *entropies)
        for value, entropy, margin in zip(values, entropies, margins):
            self._sum_logprob.add(value)
            self._sum_entropy.add(entropy)
            self._sum_margin.add(margin)
            self._add_to_quantiles(value)
        self.count += len(values)

    def _add_to_quantiles(self, value: float) -> None:
        if self._ordered is not None:
            bisect.insort(self._ordered, value)
            if len(self._ordered) > self.exact_quantiles_up_to:
                ordered = self._ordered
                self._estimators = [P2Quantile.from_sorted(ordered, p) for _, p in QUANTILES]
                self._ordered = None
            return
        assert self._estimators is not None
        for estimator in self._estimators:
            estimator.add(value)

    def quantile_values(self) -> tuple[float, ...]:
        """Returns `(q10, q25, median)` of the log-probabilities so far (0s before any)."""
        if self.count == 0:
            return tuple(0.0 for _ in QUANTILES)
        if self._ordered is not None:
            return tuple(quantile(self._ordered, p) for _, p in QUANTILES)
        assert self._estimators is not None
        return tuple(e.value for e in self._estimators)

    def snapshot(self) -> Signals:
        """Returns the `Signals` of the prefix so far (context signals at their defaults)."""
        n = self.count
        if n == 0:
            return Signals(**dict.fromkeys(LOGPROB_SIGNAL_NAMES, 0.0))
        total = self._sum_logprob.value
        q10, q25, median = self.quantile_values()
        values = dict(
            length=float(n),
            mean_logprob=total / n,
            min_logprob=self.min_logprob,
            sum_logprob=total,
            q10_logprob=q10,
            q25_logprob=q25,
            median_logprob=median,
            mean_entropy=self._sum_entropy.value / n,
            max_entropy=self.max_entropy,
            first_margin=self.first_margin,
            mean_margin=self._sum_margin.value / n,
        )
        return Signals(**values)


__all__ = ["QUANTILES", "IncrementalSignals", "P2Quantile"]

"""Routing metrics from per-question outcomes: pure numpy, no model, no traces.

A router is described by one score per question (higher = keep the small
model's answer) and, per question, the quality and cost of keeping versus
escalating. Escalating the lowest-scored questions first traces the
quality-versus-escalation curve; ties in the score are averaged (the
expected curve under a random order within a tie), so every number here is
exact and deterministic.

Forced escalations (answers a router escalates whatever its score: the SLM
failed, answered nothing or was cut off) are escalated by every router and
counted on the escalation axis: a curve built with `forced` starts at the
forced share f, not at 0, and its first point (every other answer kept) is the
*floor* all routers share.

* AUROC: probability that a right SLM answer outscores a wrong one (ties 1/2).
* PGR(r) = (quality(r) - floor) / (fallback-only - floor); APGR is its mean
  over the escalation rates a curve reaches, r in [f, 1]; random routing gives
  exactly 0.5. Without forced escalations the floor is SLM-only and f = 0.
* CPT(x): the smallest escalation rate whose PGR reaches x.
* Calls avoided at share s: 1 - the smallest escalation rate whose quality
  reaches s x fallback-only (at most 1 - f).
* AIQ (RouterBench): area under the non-decreasing convex hull of the
  (cost, quality) points, divided by the cost range.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

FloatArray = np.ndarray


def _trapezoid(y: FloatArray, x: FloatArray) -> float:
    """Trapezoid-rule integral (numpy renamed `trapz`; this works with every version)."""
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))


def average_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks, ties sharing their average rank (like scipy's rankdata)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.concatenate(([True], sorted_values[1:] != sorted_values[:-1]))
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.append(first, len(values)))
    avg = first + (counts + 1) / 2.0
    ranks = np.empty(len(values))
    ranks[order] = avg[group]
    return ranks


def auroc(scores: FloatArray, labels: FloatArray) -> float:
    """Rank-based AUROC of `scores` for boolean `labels`; NaN if one class is missing."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _tie_averaged(scores: FloatArray, values: FloatArray) -> FloatArray:
    """`values` in ascending-score order, each tie block replaced by its mean."""
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores, dtype=np.float64)[order]
    v = np.asarray(values, dtype=np.float64)[order]
    same = np.concatenate(([False], (s[1:] == s[:-1]) | (np.isneginf(s[1:]) & np.isneginf(s[:-1]))))
    if not same.any():
        return v
    block = np.cumsum(~same) - 1
    means = np.bincount(block, weights=v) / np.bincount(block)
    return np.asarray(means[block])


@dataclass(frozen=True)
class Outcomes:
    """Per-question quality and cost when the SLM answer is kept or escalated."""

    keep_quality: FloatArray
    escalate_quality: FloatArray
    keep_cost: FloatArray
    escalate_cost: FloatArray

    def __len__(self) -> int:
        return len(self.keep_quality)

    def take(self, index: FloatArray) -> Outcomes:
        """Returns the outcomes of the questions at `index`."""
        return Outcomes(
            self.keep_quality[index],
            self.escalate_quality[index],
            self.keep_cost[index],
            self.escalate_cost[index],
        )


@dataclass(frozen=True)
class Curve:
    """Mean quality and cost after escalating k of n questions, k = start..n.

    `start` is the number of forced escalations: no router reaches fewer
    escalations, so the curve has no points below it.
    """

    quality: FloatArray
    cost: FloatArray
    start: int = 0

    @property
    def n(self) -> int:
        """How many questions the curve runs over."""
        return self.start + len(self.quality) - 1

    @property
    def rates(self) -> FloatArray:
        """The escalation rate at each point of the curve."""
        return np.arange(self.start, self.n + 1) / max(self.n, 1)


def score_curve(scores: FloatArray, outcomes: Outcomes, forced: FloatArray | None = None) -> Curve:
    """The expected quality/cost curve of escalating in ascending score order.

    `forced` questions are escalated at every point (their scores are
    ignored), so the curve starts at their share. A question whose cost is
    unknown (NaN: a token count was not reported) counts for quality only:
    each point's cost is the mean over the questions whose cost is known
    (NaN when none is), never the unknown taken as 0.
    """
    known = np.isfinite(outcomes.keep_cost) & np.isfinite(outcomes.escalate_cost)
    if known.all():
        return _score_curve(scores, outcomes, forced)
    # the curve's cost is a sum over questions / n: sum the known ones, divide by their number
    curve = _score_curve(
        scores,
        Outcomes(
            outcomes.keep_quality,
            outcomes.escalate_quality,
            np.where(known, outcomes.keep_cost, 0.0),
            np.where(known, outcomes.escalate_cost, 0.0),
        ),
        forced,
    )
    n_known = int(known.sum())
    scale = len(outcomes) / n_known if n_known else float("nan")
    return Curve(curve.quality, curve.cost * scale, curve.start)


def _score_curve(scores: FloatArray, outcomes: Outcomes, forced: FloatArray | None) -> Curve:
    """`score_curve` with every cost known."""
    n = len(outcomes)
    if forced is not None and np.any(forced):
        forced = np.asarray(forced, dtype=bool)
        free = np.flatnonzero(~forced)
        m = len(free)
        if m == 0:  # every answer is forced: one point, everything escalated
            one = Curve(
                np.array([outcomes.escalate_quality.mean()]),
                np.array([outcomes.escalate_cost.mean()]),
                start=n,
            )
            return one
        sub = _score_curve(np.asarray(scores)[free], outcomes.take(free), None)
        quality = (sub.quality * m + outcomes.escalate_quality[forced].sum()) / n
        cost = (sub.cost * m + outcomes.escalate_cost[forced].sum()) / n
        return Curve(quality, cost, start=n - m)
    gain = _tie_averaged(scores, outcomes.escalate_quality - outcomes.keep_quality)
    extra = _tie_averaged(scores, outcomes.escalate_cost - outcomes.keep_cost)
    quality = (outcomes.keep_quality.sum() + np.concatenate(([0.0], np.cumsum(gain)))) / n
    cost = (outcomes.keep_cost.sum() + np.concatenate(([0.0], np.cumsum(extra)))) / n
    return Curve(quality, cost)


def random_curve(outcomes: Outcomes, forced: FloatArray | None = None) -> Curve:
    """Random routing: the straight line from keeping all it can to escalating all."""
    return score_curve(np.zeros(len(outcomes)), outcomes, forced)


def oracle_scores(outcomes: Outcomes) -> FloatArray:
    """Scores of the oracle router: escalate the largest quality gains first."""
    return np.asarray(-(outcomes.escalate_quality - outcomes.keep_quality))


def pgr(curve: Curve, slm_quality: float, fallback_quality: float) -> FloatArray:
    """Performance gap recovered at every escalation rate (NaN when there is no gap).

    `slm_quality` is the floor: SLM-only, or with forced escalations the
    quality of keeping every answer that is not forced (the curve's first point).
    """
    gap = fallback_quality - slm_quality
    if not gap > 1e-12:
        return np.full(len(curve.quality), np.nan)
    return np.asarray((curve.quality - slm_quality) / gap)


def apgr(curve: Curve, slm_quality: float, fallback_quality: float) -> float:
    """Average PGR over the escalation rates the curve reaches, [f, 1] (trapezoid rule)."""
    values = pgr(curve, slm_quality, fallback_quality)
    rates = curve.rates
    if np.isnan(values).any() or len(rates) < 2:
        return float("nan")
    return _trapezoid(values, rates) / float(rates[-1] - rates[0])


def cpt(curve: Curve, slm_quality: float, fallback_quality: float, target: float) -> float:
    """Smallest escalation rate (on the n-question grid) whose PGR reaches `target`."""
    values = pgr(curve, slm_quality, fallback_quality)
    hits = np.flatnonzero(values >= target - 1e-12)
    return float(curve.rates[hits[0]]) if len(hits) else float("nan")


def calls_avoided(curve: Curve, fallback_quality: float, share: float = 0.95) -> float:
    """Share of fallback calls avoided while quality stays >= `share` of fallback-only."""
    hits = np.flatnonzero(curve.quality >= share * fallback_quality - 1e-12)
    return float(1.0 - curve.rates[hits[0]]) if len(hits) else float("nan")


def _upper_hull(cost: FloatArray, quality: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Upper convex hull of the points (monotone chain), left to right."""
    order = np.lexsort((quality, cost))
    hull: list[tuple[float, float]] = []
    for x, y in zip(cost[order], quality[order]):
        while len(hull) >= 2:
            (x1, y1), (x2, y2) = hull[-2], hull[-1]
            if (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1) >= 0:
                hull.pop()
            else:
                break
        if hull and hull[-1][0] == x:
            hull[-1] = (x, max(hull[-1][1], y))
            continue
        hull.append((float(x), float(y)))
    xs, ys = zip(*hull)
    return np.array(xs), np.array(ys)


def aiq(curve: Curve, cost_range: tuple[float, float]) -> float:
    """RouterBench AIQ: area under the non-decreasing convex hull over `cost_range`, normalised.

    Quality stays at its best value for costs beyond the router's own points
    (spending more can always be avoided); below its cheapest point it is
    that point's quality.
    """
    low, high = cost_range
    if not high > low:
        return float("nan")
    xs, ys = _upper_hull(np.asarray(curve.cost), np.asarray(curve.quality))
    ys = np.maximum.accumulate(ys)
    inside = (xs > low) & (xs < high)
    grid = np.concatenate(([low], xs[inside], [high]))
    values = np.interp(grid, xs, ys, left=ys[0], right=ys[-1])
    return _trapezoid(values, grid) / (high - low)


def bootstrap_ci(
    statistic: Callable[[FloatArray], float],
    n: int,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over questions.

    Returns:
        `(low, high)`; NaN for both without resamples or finite values.
    """
    if resamples <= 0:
        return (float("nan"), float("nan"))
    (interval,) = bootstrap_cis(lambda idx: np.array([statistic(idx)]), n, resamples, seed, level)
    return interval


def bootstrap_cis(
    statistic: Callable[[FloatArray], FloatArray],
    n: int,
    resamples: int,
    seed: int,
    level: float = 0.95,
) -> list[tuple[float, float]]:
    """Percentile bootstrap intervals of every component of a vector `statistic(indices)`.

    One resample serves every component, so a router's curve is built once
    per resample for all its summaries. Non-finite values are left out per component.
    """
    rng = np.random.default_rng(seed)
    values = np.array([statistic(rng.integers(0, n, n)) for _ in range(max(resamples, 0))])
    tail = (1.0 - level) / 2.0 * 100.0
    out: list[tuple[float, float]] = []
    for column in values.T if len(values) else []:
        finite = column[np.isfinite(column)]
        if len(finite) == 0:
            out.append((float("nan"), float("nan")))
            continue
        low, high = np.percentile(finite, [tail, 100.0 - tail])
        out.append((float(low), float(high)))
    return out


__all__ = [
    "Curve",
    "Outcomes",
    "aiq",
    "apgr",
    "auroc",
    "average_ranks",
    "bootstrap_ci",
    "bootstrap_cis",
    "calls_avoided",
    "cpt",
    "oracle_scores",
    "pgr",
    "random_curve",
    "score_curve",
]

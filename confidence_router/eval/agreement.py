"""Offline evaluation of sampled self-consistency, from traces recorded with `--samples K`.

For every answer the traces hold the greedy answer and k sampled ones. This
module measures their agreement (the share of samples whose SQuAD-normalised
answer equals the greedy one, and their mean token F1 with it), replays the
Router's rule (inside the score band `[low, high)` the agreement decides,
outside it the policy's score does) and chooses the band on a calibration
split so that the average extra SLM tokens per query stays under a bound.
Pure numpy over recorded numbers: no model runs. A sample's token count the
server did not report (`null`) makes that answer's sample tokens unknown
(NaN), never 0: token means are over the answers whose counts are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..observe.shadow import agreement
from . import metrics
from .counts import known_mean, token_counts
from .metrics import Outcomes
from .traces import Record


@dataclass(frozen=True)
class SampleColumns:
    """Per answer: agreement of its samples, their tokens, and whether it has any."""

    share: np.ndarray  # share of samples equal to the greedy answer after normalisation
    mean_f1: np.ndarray  # mean token F1 of the samples with the greedy answer
    prompt_tokens: np.ndarray  # prompt tokens the samples evaluated (as recorded; NaN: unknown)
    completion_tokens: np.ndarray  # tokens the samples generated (NaN: unknown)
    k: np.ndarray  # samples recorded (0: none)

    @property
    def tokens(self) -> np.ndarray:
        """Prompt plus completion tokens of each answer's samples (NaN: a count unreported)."""
        return np.asarray(self.prompt_tokens + self.completion_tokens)

    @property
    def unreported(self) -> int:
        """Answers whose sample tokens are unknown (a count the server did not report)."""
        return int(np.sum(~np.isfinite(self.tokens)))


def sample_columns(records: Sequence[Record]) -> SampleColumns:
    """Agreement and token counts of the recorded samples (zeros where there are none;
    NaN where a sample's count was not reported)."""
    share, f1, prompt, completion, k = [], [], [], [], []
    for record in records:
        slm = record.get("slm") or {}
        samples = slm.get("samples") or []
        greedy = slm.get("answer") or ""
        pairs = [agreement(greedy, s.get("answer") or "") for s in samples]
        share.append(float(np.mean([em for em, _ in pairs])) if pairs else 0.0)
        f1.append(float(np.mean([f for _, f in pairs])) if pairs else 0.0)
        counts = [token_counts(s) for s in samples]  # NaN (unknown) stays NaN in the sum
        prompt.append(float(sum(p for p, _ in counts)))
        completion.append(float(sum(c for _, c in counts)))
        k.append(len(samples))
    return SampleColumns(
        np.array(share), np.array(f1), np.array(prompt), np.array(completion), np.array(k)
    )


def in_band(scores: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Answers the Router would sample: finite score in `[low, high)`."""
    low, high = band
    return np.asarray(np.isfinite(scores) & (scores >= low) & (scores < high))


def combined_scores(
    scores: np.ndarray, agreement_values: np.ndarray, band: tuple[float, float]
) -> np.ndarray:
    """The ranking the Router's rule implies: inside the band, agreement first, then score.

    In-band answers are mapped into `[low, high)` (finite bounds: those of
    the in-band scores), ordered by agreement, ties by their own score;
    out-of-band answers keep their score, so the order across the band edges
    is unchanged.
    """
    inside = in_band(scores, band)
    out = np.array(scores, dtype=np.float64)
    if not inside.any():
        return out
    low = max(band[0], float(scores[inside].min()))
    high = min(band[1], float(np.nextafter(scores[inside].max(), np.inf)))
    width = high - low if high > low else 1.0
    tie = np.clip((scores[inside] - low) / width, 0.0, 1.0 - 1e-9)
    rank = (np.clip(agreement_values[inside], 0.0, 1.0) * 1e3 + tie) / (1e3 + 1.0)
    out[inside] = low + rank * width
    return out


def escalations(
    scores: np.ndarray,
    agreement_values: np.ndarray,
    threshold: float,
    band: tuple[float, float] | None,
    min_agreement: float,
) -> np.ndarray:
    """Which answers the Router escalates (forced ones have score -inf: always)."""
    escalate = ~(scores >= threshold)
    if band is None:
        return np.asarray(escalate)
    inside = in_band(scores, band)
    return np.asarray(np.where(inside, agreement_values < min_agreement, escalate))


@dataclass(frozen=True)
class Variant:
    """One router (with or without consistency) on one set of answers."""

    auroc: float
    apgr: float
    escalation_share: float
    kept_precision: float  # share of kept answers that are right
    quality: float  # mean F1 of the cascade at the threshold
    sampled_share: float
    extra_tokens: float  # mean extra SLM tokens per query (samples, as recorded)
    extra_cost: float  # mean extra SLM cost per query at the SLM price


def evaluate(
    scores: np.ndarray,
    correct: np.ndarray,
    outcomes: Outcomes,
    cols: SampleColumns,
    *,
    threshold: float,
    band: tuple[float, float] | None,
    min_agreement: float,
    measure: str = "match",
    sample_cost: np.ndarray | None = None,
) -> Variant:
    """AUROC/APGR of the implied ranking, and the decision at `threshold`."""
    values = cols.share if measure == "match" else cols.mean_f1
    ranked = scores if band is None else combined_scores(scores, values, band)
    sampled = np.zeros(len(scores), bool) if band is None else in_band(scores, band)
    escalate = escalations(scores, values, threshold, band, min_agreement)
    q_slm, q_fb = float(outcomes.keep_quality.mean()), float(outcomes.escalate_quality.mean())
    curve = metrics.score_curve(ranked, outcomes)
    kept = ~escalate
    quality = np.where(escalate, outcomes.escalate_quality, outcomes.keep_quality)
    cost = sample_cost if sample_cost is not None else np.zeros(len(scores))
    return Variant(
        auroc=metrics.auroc(ranked, correct),
        apgr=metrics.apgr(curve, q_slm, q_fb),
        escalation_share=float(escalate.mean()),
        kept_precision=float(correct[kept].mean()) if kept.any() else float("nan"),
        quality=float(quality.mean()),
        sampled_share=float(sampled.mean()),
        extra_tokens=_extra(sampled, cols.tokens),
        extra_cost=_extra(sampled, cost),
    )


def _extra(sampled: np.ndarray, values: np.ndarray) -> float:
    """Mean extra per query: `values` where sampled, 0 (no samples drawn) elsewhere; an
    answer sampled with unknown tokens (NaN) is left out of the mean, not counted as 0."""
    return known_mean(np.where(sampled, values, 0.0))


def band_candidates(scores: np.ndarray, steps: int = 20) -> list[tuple[float, float]]:
    """Bands between score quantiles (of the finite scores) on a `steps` grid."""
    finite = np.sort(scores[np.isfinite(scores)])
    if len(finite) == 0:
        return []
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, steps + 1)))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return [
        (float(edges[i]), float(edges[j]))
        for i in range(len(edges))
        for j in range(i + 1, len(edges))
    ]


def choose_band(
    scores: np.ndarray,
    correct: np.ndarray,
    outcomes: Outcomes,
    cols: SampleColumns,
    *,
    max_extra_tokens: float,
    measure: str = "match",
    steps: int = 20,
) -> tuple[tuple[float, float] | None, float]:
    """The band with the best APGR whose mean extra SLM tokens per query is within the bound.

    Returns `(band, apgr)`; `(None, apgr without consistency)` when no
    band beats not sampling at all.
    """
    values = cols.share if measure == "match" else cols.mean_f1
    q_slm, q_fb = float(outcomes.keep_quality.mean()), float(outcomes.escalate_quality.mean())
    best: tuple[tuple[float, float] | None, float] = (
        None,
        metrics.apgr(metrics.score_curve(scores, outcomes), q_slm, q_fb),
    )
    for band in band_candidates(scores, steps):
        inside = in_band(scores, band)
        extra = _extra(inside, cols.tokens)
        if not extra <= max_extra_tokens:  # over the bound, or unknown (no count reported)
            continue
        ranked = combined_scores(scores, values, band)
        value = metrics.apgr(metrics.score_curve(ranked, outcomes), q_slm, q_fb)
        if value > best[1] + 1e-12:
            best = (band, value)
    return best


def choose_min_agreement(
    scores: np.ndarray,
    correct: np.ndarray,
    cols: SampleColumns,
    *,
    threshold: float,
    band: tuple[float, float],
    measure: str = "match",
) -> float:
    """The agreement cut whose decisions are right (keep right, escalate wrong) most often."""
    values = cols.share if measure == "match" else cols.mean_f1
    cuts = sorted({0.0, 1.0, *(float(v) for v in np.unique(values))})
    best_cut, best_acc = 0.5, -1.0
    for cut in cuts:
        escalate = escalations(scores, values, threshold, band, cut)
        accuracy = float(np.mean(escalate != correct))
        if accuracy > best_acc + 1e-12:
            best_cut, best_acc = cut, accuracy
    return best_cut


__all__ = [
    "SampleColumns",
    "Variant",
    "band_candidates",
    "choose_band",
    "choose_min_agreement",
    "combined_scores",
    "escalations",
    "evaluate",
    "in_band",
    "sample_columns",
]

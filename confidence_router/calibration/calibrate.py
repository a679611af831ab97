"""Choose a policy's threshold from labelled traces, with a finite-sample guarantee.

Two targets:

* **A quality-loss budget**: "at most `max_loss` below fallback-only quality,
  with probability at least `confidence`". The method is **Learn-then-Test**
  (Angelopoulos, Bates, Candès, Jordan and Lei, 2021, *Learn then Test:
  Calibrating Predictive Algorithms to Achieve Risk Control*,
  arXiv:2110.01052) with **fixed-sequence testing**: thresholds are tested
  from the strictest (escalate everything) down, each with a valid p-value for
  "the expected loss at this threshold exceeds the budget", and the last one
  rejected before the first failure is chosen. The loss of keeping an answer
  only grows as the threshold falls, so this is also the upper-confidence-bound
  calibration of Bates, Angelopoulos, Lei, Malik and Jordan (2021,
  *Distribution-Free, Risk-Controlling Prediction Sets*), valid on any grid
  of thresholds, including the calibration scores themselves. p-values: the
  exact binomial tail when each loss is 0 or 1, Hoeffding–Bentkus when
  losses lie in [0, 1].

  The guarantee: if the calibration traces are an i.i.d. sample of the traffic
  the policy will see, then with probability at least `confidence` over
  that sample the chosen threshold's *expected* loss is at most `max_loss`.
* **A target escalation share**: the threshold that escalates that share of
  the calibration traces (no guarantee; the held-out share is reported with
  a Wilson interval).

The loss of one query at threshold `t` is `kept(t) * (1 - quality)`, where
`quality` in [0, 1] is how good the SLM's answer is measured against the
reference: the gold answer (evaluation traces; the reference, the perfect
fallback, scores 1) or the fallback's own answer (recorded traffic labelled by
shadow checks: the fallback agrees with itself). Fallback-only quality is
then 1 and the quality loss of the router is the mean loss.

Everything here is numpy and the standard library.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..policies._scoring import scores_of

METHOD = (
    "Learn-then-Test with fixed-sequence testing (Angelopoulos et al. 2021, arXiv:2110.01052); "
    "{pvalue} p-values"
)


# -- p-values and intervals ---------------------------------------------------------------


def _log_binom_pmf(n: int, p: float) -> np.ndarray:
    """log P(Bin(n, p) = k) for k = 0..n."""
    k = np.arange(n + 1, dtype=np.float64)
    log_fact = np.concatenate(([0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))))
    log_choose = log_fact[n] - log_fact - log_fact[::-1]
    if p <= 0.0:
        out = np.full(n + 1, -np.inf)
        out[0] = 0.0
        return out
    if p >= 1.0:
        out = np.full(n + 1, -np.inf)
        out[n] = 0.0
        return out
    return np.asarray(log_choose + k * math.log(p) + (n - k) * math.log1p(-p))


def binomial_cdf(n: int, p: float) -> np.ndarray:
    """`P(Bin(n, p) <= k)` for k = 0..n, computed in log space (stable for large n)."""
    logs = _log_binom_pmf(n, p)
    top = float(np.max(logs))
    cdf = np.cumsum(np.exp(logs - top)) * math.exp(top)
    return np.asarray(np.minimum(cdf, 1.0))


def binomial_pvalue(losses: int, n: int, alpha: float) -> float:
    """Exact p-value of H0 "risk > alpha" after `losses` losses (0/1) in `n` draws."""
    return float(binomial_cdf(n, alpha)[min(max(losses, 0), n)])


def _h1(a: float, b: float) -> float:
    """KL divergence of Bernoulli(a) from Bernoulli(b)."""
    out = 0.0
    if a > 0:
        out += a * math.log(a / b)
    if a < 1:
        out += (1 - a) * math.log((1 - a) / (1 - b))
    return out


def hoeffding_bentkus_pvalue(mean_loss: float, n: int, alpha: float) -> float:
    """Hoeffding–Bentkus p-value of H0 "risk > alpha" for losses in [0, 1] (Bates et al. 2021)."""
    if mean_loss >= alpha:
        return 1.0
    hoeffding = math.exp(-n * _h1(mean_loss, alpha))
    k = math.ceil(n * mean_loss - 1e-9)
    bentkus = math.e * binomial_pvalue(k, n, alpha)
    return float(min(1.0, hoeffding, bentkus))


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion; (0, 1) when `n` is 0."""
    if n <= 0:
        return (0.0, 1.0)
    z = _normal_quantile(0.5 + confidence / 2.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def hoeffding_interval(mean: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Hoeffding interval of the mean of n values in [0, 1]."""
    if n <= 0:
        return (0.0, 1.0)
    half = math.sqrt(math.log(2.0 / (1.0 - confidence)) / (2 * n))
    return (max(0.0, mean - half), min(1.0, mean + half))


def _normal_quantile(q: float) -> float:
    """Inverse standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {q}")
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687,
         138.3577518672690, -30.66479806614716, 2.506628277459239)  # fmt: skip
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866,
         66.80131188771972, -13.28068155288572)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838,
         -2.549732539343734, 4.374664141464968, 2.938163982698783)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996, 3.754408661907416)
    low = 0.02425
    if q < low:
        r = math.sqrt(-2 * math.log(q))
        return (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / (
            (((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1
        )
    if q > 1 - low:
        return -_normal_quantile(1 - q)
    r = q - 0.5
    s = r * r
    return (
        (((((a[0] * s + a[1]) * s + a[2]) * s + a[3]) * s + a[4]) * s + a[5])
        * r
        / (((((b[0] * s + b[1]) * s + b[2]) * s + b[3]) * s + b[4]) * s + 1)
    )


# -- the threshold choice ------------------------------------------------------------------


def min_calibration_size(max_loss: float, confidence: float) -> int:
    """Fewest calibration traces for which *any* answer can be kept under the guarantee.

    With n traces and no loss at all at the strictest threshold that keeps
    one answer, the p-value is `(1 - max_loss) ** n`; it must reach
    `1 - confidence`. Fewer traces can only ever certify "escalate everything".

    Raises:
        ConfigurationError: `max_loss` or `confidence` outside (0, 1).
    """
    _check_budget(max_loss, confidence)
    return math.ceil(math.log(1.0 - confidence) / math.log1p(-max_loss) - 1e-12)


def _check_budget(max_loss: float, confidence: float) -> None:
    if not (isinstance(max_loss, (int, float)) and 0.0 < max_loss < 1.0):
        raise ConfigurationError(
            "max_loss", f"must be between 0 and 1 (exclusive), got {max_loss!r}"
        )
    if not (isinstance(confidence, (int, float)) and 0.0 < confidence < 1.0):
        raise ConfigurationError(
            "confidence", f"must be between 0 and 1 (exclusive), got {confidence!r}"
        )


def escalate_all_threshold(scores: np.ndarray) -> float:
    """A finite threshold above every finite score: every answer escalates."""
    finite = scores[np.isfinite(scores)]
    top = float(finite.max()) if len(finite) else 0.0
    return float(np.nextafter(top, np.inf))


@dataclass(frozen=True)
class ThresholdChoice:
    """The threshold picked on the calibration split and what it looked like there."""

    threshold: float
    certified: bool  # False: no threshold keeping any answer passed; everything escalates
    tested: int  # hypotheses tested (thresholds), the last one failed unless all passed
    calibration_loss: float
    calibration_escalation: float
    pvalue: float  # p-value of the chosen threshold (1.0 when none was certified)
    method: str


def ltt_threshold(
    scores: np.ndarray,
    loss: np.ndarray,
    max_loss: float,
    confidence: float,
) -> ThresholdChoice:
    """The lowest threshold whose quality loss is certified by fixed-sequence testing.

    An answer is kept when `score >= threshold`.

    Args:
        scores: the policy's score of each calibration trace (`-inf` for one the
            router always escalates, e.g. a failed SLM call).
        loss: the loss if that trace's SLM answer is kept, in [0, 1] (1 - quality).
        max_loss: the budget on the expected loss, in (0, 1).
        confidence: the probability the promise holds, in (0, 1).

    Returns:
        A `ThresholdChoice`: the threshold, whether anything was certified, the p-value.

    Raises:
        ConfigurationError: `max_loss` or `confidence` outside (0, 1).
        ValueError: `scores` and `loss` are not 1-d of one length, or a loss is
            outside [0, 1].
    """
    _check_budget(max_loss, confidence)
    scores = np.asarray(scores, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if scores.shape != loss.shape or scores.ndim != 1:
        raise ValueError("scores and loss must be 1-d arrays of the same length")
    if np.any((loss < 0) | (loss > 1)) or not np.all(np.isfinite(loss)):
        raise ValueError("losses must lie in [0, 1]")
    n = len(scores)
    delta = 1.0 - confidence
    binary = bool(np.all((loss == 0) | (loss == 1)))
    method = METHOD.format(pvalue="exact binomial" if binary else "Hoeffding-Bentkus")
    finite = np.isfinite(scores)
    candidates = np.unique(scores[finite])[::-1]  # strictest (highest) first
    order = np.argsort(-scores[finite], kind="mergesort")
    s_sorted = scores[finite][order]
    l_sorted = loss[finite][order]
    cum = np.cumsum(l_sorted)
    # kept at threshold t: every finite score >= t; index of the last one
    last = np.searchsorted(-s_sorted, -candidates, side="right") - 1
    total_loss = cum[last] if len(candidates) else np.zeros(0)
    cdf = binomial_cdf(n, max_loss) if binary else None
    chosen = -1
    pvalue = 1.0
    tested = 0
    for j, lost in enumerate(total_loss):
        tested += 1
        if cdf is not None:
            p = float(cdf[int(round(lost))])
        else:
            p = hoeffding_bentkus_pvalue(float(lost) / n, n, max_loss)
        if p > delta:
            break
        chosen, pvalue = j, p
    if chosen < 0:
        threshold = escalate_all_threshold(scores)
        return ThresholdChoice(threshold, False, tested, 0.0, 1.0, 1.0, method)
    threshold = float(candidates[chosen])
    kept = scores >= threshold
    return ThresholdChoice(
        threshold=threshold,
        certified=True,
        tested=tested,
        calibration_loss=float(np.sum(loss[kept]) / n),
        calibration_escalation=float(1.0 - kept.mean()),
        pvalue=pvalue,
        method=method,
    )


def naive_threshold(scores: np.ndarray, loss: np.ndarray, max_loss: float) -> float:
    """Baseline: the lowest threshold whose *calibration* loss is within budget (no guarantee)."""
    scores = np.asarray(scores, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    n = len(scores)
    finite = np.isfinite(scores)
    candidates = np.unique(scores[finite])[::-1]
    order = np.argsort(-scores[finite], kind="mergesort")
    cum = np.cumsum(loss[finite][order])
    last = np.searchsorted(-scores[finite][order], -candidates, side="right") - 1
    ok = cum[last] / n <= max_loss + 1e-12 if len(candidates) else np.zeros(0, dtype=bool)
    # the loss only grows as the threshold falls: take the last candidate before the first miss
    misses = np.flatnonzero(~ok)
    stop = int(misses[0]) if len(misses) else len(candidates)
    if stop == 0:
        return escalate_all_threshold(scores)
    return float(candidates[stop - 1])


def rate_threshold(scores: np.ndarray, rate: float) -> float:
    """The threshold escalating about `rate` of these scores (ties kept together).

    Raises:
        ConfigurationError: `rate` outside [0, 1].
    """
    if not 0.0 <= rate <= 1.0:
        raise ConfigurationError("escalation", f"must be between 0 and 1, got {rate!r}")
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    n = len(ordered)
    k = int(round(rate * n))
    if k >= n:
        return escalate_all_threshold(ordered)
    if k <= 0:
        low = ordered[np.isfinite(ordered)]
        return float(low[0]) if len(low) else escalate_all_threshold(ordered)
    lo, hi = ordered[k - 1], ordered[k]
    if not np.isfinite(lo):
        return float(hi)
    return float((lo + hi) / 2.0)


# -- labelled traces -------------------------------------------------------------------------


@dataclass
class LabelledTraces:
    """What calibration needs of each trace: signals (None: always escalated) and quality."""

    signals: list[Any]  # Signals | None
    quality: np.ndarray  # quality of the SLM answer against the reference, in [0, 1]
    source: str  # "gold" or "agreement"
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """How many traces."""
        return len(self.signals)

    def take(self, idx: np.ndarray) -> LabelledTraces:
        """Returns the traces at positions `idx`."""
        return LabelledTraces(
            [self.signals[i] for i in idx], self.quality[idx], self.source, dict(self.skipped)
        )


def labelled_traces(
    records: Sequence[dict[str, Any]],
    *,
    quality: str = "correct",
    correct_f1: float = 0.5,
    reference: str = "perfect",
) -> LabelledTraces:
    """Turn trace records into labelled traces.

    Evaluation traces (`confidence-router eval`) are labelled by their gold
    answers: the SLM answer's F1 against the best gold answer, the reference
    being the `perfect` fallback. Recorded traffic (`TraceRecorder`)
    is labelled by agreement with the fallback's answer; only the *audited*
    records (a random share of all traffic, drawn before routing, whose label
    exists for both routes) are used, so the sample stays representative.

    `quality`: `"correct"` (1 when F1 > `correct_f1`, else 0) or `"f1"`.

    Returns:
        The `LabelledTraces`, with the count of records skipped for each reason.

    Raises:
        ConfigurationError: an unknown `quality`, or records labelled both ways
            (gold answers and agreement) mixed.
    """
    from ..signals.token import SIGNAL_NAMES, Signals

    if quality not in ("correct", "f1"):
        raise ConfigurationError("quality", f"must be 'correct' or 'f1', got {quality!r}")
    signals: list[Any] = []
    values: list[float] = []
    sources: set[str] = set()
    skipped: dict[str, int] = {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    for record in records:
        slm = record.get("slm") or {}
        label = record.get("label")
        if isinstance(label, dict):  # recorded traffic
            if not label.get("audit"):
                skip("not audited (no shadow check drawn)")
                continue
            f1 = label.get("f1")
            source = "agreement"
        elif reference in (record.get("fallbacks") or {}):
            f1 = slm.get("f1")
            source = "gold"
        else:
            skip("no label")
            continue
        raw = slm.get("signals")
        failed = bool(slm.get("error")) or raw is None or slm.get("completion_tokens") == 0
        if not failed and slm.get("raw") is not None and not str(slm.get("raw")).strip():
            failed = True  # an empty answer: the router escalates it whatever the score
        if failed:
            signals.append(None)
            values.append(0.0)  # never kept, so never counted
            sources.add(source)
            continue
        if f1 is None or raw is None:
            skip("audited, but the label is missing (shadow check failed or cancelled)")
            continue
        # a signal newer than the trace keeps its no-context default, as in the evaluation
        signals.append(Signals(**{n: float(raw[n]) for n in SIGNAL_NAMES if n in raw}))
        f1 = float(f1)
        if quality == "f1":
            values.append(min(max(f1, 0.0), 1.0))
        elif source == "agreement" and isinstance(label, dict) and label.get("agree") is not None:
            values.append(float(bool(label["agree"])))  # the verdict recorded (F1 bound or judge)
        else:
            values.append(float(f1 > correct_f1))
        sources.add(source)
    if len(sources) > 1:
        raise ConfigurationError(
            "traces",
            "mixes traces labelled by gold answers with traces labelled by agreement with the "
            "fallback; calibrate on one kind at a time",
        )
    return LabelledTraces(
        signals, np.asarray(values), sources.pop() if sources else "none", skipped
    )


# -- the whole procedure: split, fit, calibrate, verify --------------------------------------

MIN_FIT = 20
MIN_HOLDOUT = 20


class InsufficientTracesError(ConfigurationError):
    """Too few labelled traces for the requested guarantee; the message says how many are needed."""

    def __init__(self, message: str, *, needed: int, have: int) -> None:
        super().__init__("traces", message)
        self.detail = message
        self.needed = needed
        self.have = have


def policy_scores(policy: Any, signals: Sequence[Any]) -> np.ndarray:
    """Scores of many traces; `-inf` for traces the router always escalates."""
    out = np.full(len(signals), -np.inf)
    idx = [i for i, s in enumerate(signals) if s is not None]
    if idx:
        rows = [signals[i] for i in idx]
        out[idx] = scores_of(policy, rows)
    return out


@dataclass(frozen=True)
class SplitResult:
    """What a threshold achieves on one split."""

    n: int
    escalation: float
    escalation_ci: tuple[float, float]
    quality_loss: float
    quality_loss_ci: tuple[float, float]
    kept: int
    kept_quality: float | None
    kept_quality_ci: tuple[float, float] | None

    def to_dict(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(float(v), 5)

        return {
            "n": self.n,
            "escalation": r(self.escalation),
            "escalation_ci95": [r(v) for v in self.escalation_ci],
            "quality_loss": r(self.quality_loss),
            "quality_loss_ci95": [r(v) for v in self.quality_loss_ci],
            "kept": self.kept,
            "kept_quality": r(self.kept_quality),
            "kept_quality_ci95": None
            if self.kept_quality_ci is None
            else [r(v) for v in self.kept_quality_ci],
        }


def evaluate_threshold(scores: np.ndarray, quality: np.ndarray, threshold: float) -> SplitResult:
    """Escalation share, quality loss (vs the reference) and kept-answer quality, with 95% CIs."""
    n = len(scores)
    kept = scores >= threshold
    n_kept = int(kept.sum())
    binary = bool(np.all((quality == 0) | (quality == 1)))
    loss = float(np.sum(kept * (1.0 - quality)) / n) if n else 0.0
    loss_ci = wilson_interval(int(round(loss * n)), n) if binary else hoeffding_interval(loss, n)
    kept_q: float | None = None
    kept_ci: tuple[float, float] | None = None
    if n_kept:
        kept_q = float(quality[kept].mean())
        kept_ci = (
            wilson_interval(int(round(kept_q * n_kept)), n_kept)
            if binary
            else hoeffding_interval(kept_q, n_kept)
        )
    esc = 1.0 - n_kept / n if n else 0.0
    return SplitResult(
        n=n,
        escalation=esc,
        escalation_ci=wilson_interval(n - n_kept, n),
        quality_loss=loss,
        quality_loss_ci=loss_ci,
        kept=n_kept,
        kept_quality=kept_q,
        kept_quality_ci=kept_ci,
    )


@dataclass
class CalibrationOutcome:
    """A calibrated policy and the evidence for it."""

    policy: Any
    target: dict[str, Any]
    method: str
    source: str
    n_traces: int
    split: dict[str, int]
    fitted: bool
    choice: ThresholdChoice | None
    calibration: SplitResult
    holdout: SplitResult
    skipped: dict[str, int]

    @property
    def holdout_within_budget(self) -> bool | None:
        """Whether the held-out loss is within the budget (None for an escalation target)."""
        if "max_quality_loss" not in self.target:
            return None
        return self.holdout.quality_loss <= float(self.target["max_quality_loss"])

    def to_dict(self) -> dict[str, Any]:
        """The metadata saved next to the policy (`"calibration"` key of the policy file)."""
        out: dict[str, Any] = {
            "target": self.target,
            "method": self.method,
            "labels": self.source,
            "traces": self.n_traces,
            "split": self.split,
            "fitted": self.fitted,
            "calibration_split": self.calibration.to_dict(),
            "holdout_split": self.holdout.to_dict(),
        }
        if self.choice is not None:
            out["certified"] = self.choice.certified
            out["pvalue"] = round(self.choice.pvalue, 6)
        if self.skipped:
            out["skipped"] = self.skipped
        return out


def calibrate_policy(
    traces: LabelledTraces,
    *,
    policy: Any = None,
    max_quality_loss: float | None = None,
    confidence: float = 0.9,
    escalation: float | None = None,
    fit_share: float = 0.3,
    holdout_share: float = 0.2,
    seed: int = 0,
) -> CalibrationOutcome:
    """Split the traces, fit a policy (unless one is given), choose its threshold, verify it.

    Exactly one of `max_quality_loss` (with `confidence`) and `escalation`.
    The splits are disjoint and drawn at random: the policy is fitted on one
    (`fit_share`; none when `policy` is given), the threshold chosen on the
    calibration split, and the result measured on the held-out split
    (`holdout_share`).

    Returns:
        The `CalibrationOutcome`: the policy with its threshold and the evidence.

    Raises:
        InsufficientTracesError: too few traces for the guarantee (it says how many).
        ConfigurationError: not exactly one target, or shares that leave nothing
            to calibrate on.
    """
    from ..policies.base import LogisticPolicy

    if (max_quality_loss is None) == (escalation is None):
        raise ConfigurationError(
            "target", "give exactly one of max_quality_loss (a budget) or escalation (a share)"
        )
    fit = policy is None
    f_share = fit_share if fit else 0.0
    for name, share in (("fit_share", f_share), ("holdout_share", holdout_share)):
        if not 0.0 <= share < 1.0:
            raise ConfigurationError(name, f"must be in [0, 1), got {share!r}")
    cal_share = 1.0 - f_share - holdout_share
    if cal_share <= 0:
        raise ConfigurationError(
            "holdout_share", "the fit and held-out shares leave nothing to calibrate on"
        )
    n = traces.n
    need_cal = MIN_HOLDOUT
    target: dict[str, Any]
    if max_quality_loss is not None:
        n_min = min_calibration_size(max_quality_loss, confidence)
        need_cal = max(need_cal, n_min)
        target = {"max_quality_loss": max_quality_loss, "confidence": confidence}
    else:
        assert escalation is not None
        target = {"escalation": escalation}

    def sizes(total: int) -> tuple[int, int, int]:
        n_fit = int(round(f_share * total))
        n_hold = int(round(holdout_share * total))
        return n_fit, n_hold, total - n_fit - n_hold

    def enough(total: int) -> bool:
        n_fit, n_hold, n_cal = sizes(total)
        return n_cal >= need_cal and n_hold >= MIN_HOLDOUT and (not fit or n_fit >= MIN_FIT)

    if holdout_share <= 0:
        raise ConfigurationError("holdout_share", "must be > 0: the result is verified on it")
    needed = (
        max(
            math.floor(need_cal / cal_share),
            math.floor(MIN_HOLDOUT / holdout_share),
            math.floor(MIN_FIT / f_share) if fit else 0,
        )
        - 2
    )
    while not enough(needed):
        needed += 1
    if n < needed:
        why = (
            f"a quality-loss budget of {max_quality_loss:g} at {confidence:.0%} confidence needs "
            f"at least {min_calibration_size(max_quality_loss, confidence)} traces in the "
            f"calibration split before a single answer can be kept"
            if max_quality_loss is not None
            else f"the calibration and held-out splits need at least {MIN_HOLDOUT} traces each"
        )
        split = f"{cal_share:.0%} calibration" + (f", {f_share:.0%} fit" if fit else "")
        raise InsufficientTracesError(
            f"too few labelled traces: {n}; {why}, so at least {needed} in all with the "
            f"splits used ({split}, {holdout_share:.0%} held out). Record more traffic "
            "(or raise shadow_rate), relax the budget or the confidence, or change the splits",
            needed=needed,
            have=n,
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    n_fit, n_hold, _ = sizes(n)
    fit_idx, hold_idx, cal_idx = perm[:n_fit], perm[n_fit : n_fit + n_hold], perm[n_fit + n_hold :]
    if fit:
        part = traces.take(fit_idx)
        usable = [i for i, s in enumerate(part.signals) if s is not None]
        labels = part.quality[usable] > 0.5
        if len(usable) < 2 or labels.all() or not labels.any():
            raise InsufficientTracesError(
                f"the fit split ({len(usable)} scorable traces) needs both right and wrong SLM "
                "answers to fit a policy; record more traffic or pass a policy to calibrate",
                needed=needed,
                have=n,
            )
        policy = LogisticPolicy.fit([part.signals[i] for i in usable], labels)
    cal, hold = traces.take(cal_idx), traces.take(hold_idx)
    cal_scores = policy_scores(policy, cal.signals)
    choice: ThresholdChoice | None = None
    if max_quality_loss is not None:
        choice = ltt_threshold(cal_scores, 1.0 - cal.quality, max_quality_loss, confidence)
        threshold = choice.threshold
        method = choice.method
    else:
        assert escalation is not None
        threshold = rate_threshold(cal_scores, escalation)
        method = "escalation-share quantile of the calibration scores (no guarantee)"
    calibrated = policy.with_threshold(threshold)
    hold_scores = policy_scores(calibrated, hold.signals)
    return CalibrationOutcome(
        policy=calibrated,
        target=target,
        method=method,
        source=traces.source,
        n_traces=n,
        split={"fit": len(fit_idx), "calibration": len(cal_idx), "holdout": len(hold_idx)},
        fitted=fit,
        choice=choice,
        calibration=evaluate_threshold(cal_scores, cal.quality, threshold),
        holdout=evaluate_threshold(hold_scores, hold.quality, threshold),
        skipped=traces.skipped,
    )


def save_calibrated(outcome: CalibrationOutcome, path: Any) -> None:
    """Write the policy file: the policy itself plus a `"calibration"` record of the evidence.

    `confidence_router.load_policy` reads it back (the record is ignored).
    """
    import json
    from pathlib import Path

    data = outcome.policy.to_dict()
    data["calibration"] = outcome.to_dict()
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(target)


__all__ = [
    "METHOD",
    "MIN_FIT",
    "MIN_HOLDOUT",
    "CalibrationOutcome",
    "InsufficientTracesError",
    "LabelledTraces",
    "SplitResult",
    "ThresholdChoice",
    "binomial_cdf",
    "binomial_pvalue",
    "calibrate_policy",
    "escalate_all_threshold",
    "evaluate_threshold",
    "hoeffding_bentkus_pvalue",
    "hoeffding_interval",
    "labelled_traces",
    "ltt_threshold",
    "min_calibration_size",
    "naive_threshold",
    "policy_scores",
    "rate_threshold",
    "save_calibrated",
    "wilson_interval",
]

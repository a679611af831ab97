"""From trace records to every number of the report, without running a model.

For one data set and one fallback the analysis builds the per-question
outcomes (quality and cost of keeping the SLM answer or escalating), then
scores each router on them:

* every single signal (fixed direction: higher log-probabilities and margins,
  lower entropy and length mean more confident),
* the seed :class:`ThresholdPolicy` (length, mean entropy, minimum logprob),
* the learned :class:`LogisticPolicy`, k-fold cross-validated: each
  question is scored by a model fitted on the other folds only,
* a query-only router: the same logistic regression on features of the
  question and passage alone, deciding before the SLM runs (so an escalated
  question does not pay for the SLM),
* baselines: SLM-only, fallback-only, random routing, the oracle.

Cost is charged honestly: a cascade pays the SLM for every question and the
fallback on top for escalated ones. Budget calibration fits and calibrates on
one half and reports what the threshold achieves on the other.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..learn import Family, FitReport, candidates_for, fit_chosen, fit_policy, inner_cv_auroc
from ..ledger import Price
from ..policies import (
    LogisticPolicy,
    Policy,
    ThresholdPolicy,
    calibrate_to_escalation_rate,
    fit_logistic_arrays,
)
from ..signals import SIGNAL_NAMES, Signals
from ..types import Usage
from . import metrics
from .metrics import Curve, Outcomes
from .scoring import DATASET_KINDS
from .traces import PERFECT, Record, load_traces

#: Direction of each signal: +1 when larger means more confident.
SIGNAL_DIRECTIONS: Mapping[str, float] = {
    "length": -1.0,
    "mean_logprob": 1.0,
    "min_logprob": 1.0,
    "sum_logprob": 1.0,
    "q10_logprob": 1.0,
    "q25_logprob": 1.0,
    "median_logprob": 1.0,
    "mean_entropy": -1.0,
    "max_entropy": -1.0,
    "first_margin": 1.0,
    "mean_margin": 1.0,
    "context_coverage": 1.0,
    "context_span": 1.0,
    "context_novel_coverage": 1.0,
    "answer_in_question": -1.0,
    "support_sentence_overlap": 1.0,
    "abstention": -1.0,
    "answer_type_match": 1.0,
    "context_words": -1.0,
}

#: Features of the learned policies: every signal, the length-biased sums and means too
#: (cross-validation decides what helps), and the context signals.
LEARNED_FEATURES: tuple[str, ...] = SIGNAL_NAMES

#: The shipped procedure: the mean of the best logistic regression and the best boosted
#: trees, each chosen (with its regularisation) by inner CV.
LEARNED = "learned (nested CV)"
LEARNED_LOGISTIC = "learned logistic (nested CV)"
LEARNED_TREES = "boosted trees (nested CV)"
#: The learned logistic policy of the previous release: log-prob features only, l2 = 1.
LEARNED_V1 = "logistic, log-prob signals only (CV)"
V1_FEATURES: tuple[str, ...] = (
    "length",
    "mean_entropy",
    "max_entropy",
    "min_logprob",
    "q10_logprob",
    "q25_logprob",
    "median_logprob",
    "first_margin",
)
SEED = "seed threshold policy"
QUERY_ONLY = "query-only logistic (CV)"
ORACLE = "oracle"
RANDOM = "random"


@dataclass(frozen=True)
class AnalysisSettings:
    """Knobs of the analysis; the defaults are those of the committed report."""

    correct_f1: float = 0.5
    folds: int = 5
    bootstrap: int = 1000
    seed: int = 0
    slm_price: tuple[float, float] = (0.05, 0.05)
    fallback_price: tuple[float, float] = (0.5, 1.5)
    target_rates: tuple[float, ...] = (0.25, 0.5, 0.75)
    quality_share: float = 0.95
    l2: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


@dataclass
class TraceArrays:
    """The columns of one data set's traces, for one fallback."""

    dataset: str
    fallback: str
    slm_model: str
    ids: list[str]
    slm_f1: np.ndarray
    slm_em: np.ndarray
    fb_f1: np.ndarray
    fb_em: np.ndarray
    correct: np.ndarray
    forced: np.ndarray  # the router escalates these whatever the policy (failed, empty, cut off)
    signals: list[Signals | None]
    signal_matrix: dict[str, np.ndarray]
    query_names: list[str]
    query: np.ndarray
    slm_cost: np.ndarray
    fb_cost: np.ndarray
    slm_latency: np.ndarray
    fb_latency: np.ndarray
    slm_tokens: np.ndarray
    answerable: np.ndarray
    abstained: np.ndarray  # answered "" (no answer), possibly in words

    @property
    def n(self) -> int:
        return len(self.ids)


def _signals_of(record: Record) -> Signals | None:
    """The answer's Signals, or None when the router escalates it whatever the policy:
    the SLM failed, answered nothing, or was cut off by its token limit."""
    slm = record["slm"]
    if slm.get("error") or not slm.get("raw", "").strip() or slm.get("signals") is None:
        return None
    if slm.get("finish_reason") == "length":
        return None
    stored = slm["signals"]
    return Signals(**{name: float(stored[name]) for name in SIGNAL_NAMES if name in stored})


def trace_arrays(
    records: Sequence[Record], fallback: str, settings: AnalysisSettings
) -> TraceArrays:
    """Columns of the records (all of one data set) that carry ``fallback``."""
    if not records:
        raise ValueError("no trace records to analyse")
    missing = [r["id"] for r in records if fallback not in r["fallbacks"]]
    if missing:
        raise ValueError(
            f"{len(missing)} records lack fallback {fallback!r} (e.g. {missing[0]}); "
            "run `confidence-router eval run` with it again to fill them in"
        )
    slm_price = Price(*settings.slm_price)
    fb_price = Price(*settings.fallback_price)
    signals = [_signals_of(r) for r in records]
    query_names = sorted(records[0]["query"])
    fb = [r["fallbacks"][fallback] for r in records]
    slm = [r["slm"] for r in records]

    def latency(values: Iterable[Any]) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in values])

    slm_f1 = np.array([float(s["f1"]) for s in slm])
    return TraceArrays(
        dataset=str(records[0]["dataset"]),
        fallback=fallback,
        slm_model=str(records[0]["config"]["slm"]),
        ids=[r["id"] for r in records],
        slm_f1=slm_f1,
        slm_em=np.array([float(s["em"]) for s in slm]),
        fb_f1=np.array([float(f["f1"]) for f in fb]),
        fb_em=np.array([float(f["em"]) for f in fb]),
        correct=slm_f1 > settings.correct_f1,
        forced=np.array([s is None for s in signals]),
        signals=signals,
        signal_matrix={
            name: np.array([np.nan if s is None else s[name] for s in signals])
            for name in SIGNAL_NAMES
        },
        query_names=query_names,
        query=np.array([[float(r["query"][k]) for k in query_names] for r in records]),
        slm_cost=np.array(
            [slm_price.cost(Usage(s["prompt_tokens"], s["completion_tokens"])) for s in slm]
        ),
        fb_cost=np.array(
            [fb_price.cost(Usage(f["prompt_tokens"], f["completion_tokens"])) for f in fb]
        ),
        slm_latency=latency(s.get("latency_s") for s in slm),
        fb_latency=latency(f.get("latency_s") for f in fb),
        slm_tokens=np.array([float(s["completion_tokens"]) for s in slm]),
        answerable=np.array([bool(r.get("answerable", True)) for r in records]),
        abstained=np.array([not s.get("error") and s.get("answer", "") == "" for s in slm]),
    )


def cascade_outcomes(t: TraceArrays) -> Outcomes:
    """A post-generation router: the SLM always runs; escalation adds the fallback."""
    return Outcomes(t.slm_f1, t.fb_f1, t.slm_cost, t.slm_cost + t.fb_cost)


def query_only_outcomes(t: TraceArrays) -> Outcomes:
    """A pre-generation router: an escalated question goes straight to the fallback.

    A kept question whose SLM call then fails is escalated after all (and
    pays for both), as the Router does.
    """
    keep_q = np.where(t.forced, t.fb_f1, t.slm_f1)
    keep_c = np.where(t.forced, t.slm_cost + t.fb_cost, t.slm_cost)
    return Outcomes(keep_q, t.fb_f1, keep_c, t.fb_cost)


def _with_forced(t: TraceArrays, scores: np.ndarray) -> np.ndarray:
    return np.where(t.forced, -np.inf, scores)


def _folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number of each question, stratified by label."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for value in (False, True):
        idx = np.flatnonzero(labels == value)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


def _can_fit(labels: np.ndarray) -> bool:
    return len(labels) >= 4 and 0 < labels.sum() < len(labels)


def fit_learned(
    rows: Sequence[Signals],
    correct: np.ndarray,
    settings: AnalysisSettings,
    families: Sequence[Family] = ("logistic", "trees"),
) -> tuple[Policy, FitReport]:
    """The shipped fitting procedure (model and regularisation chosen by inner CV)."""
    return fit_policy(
        rows,
        correct,
        features=LEARNED_FEATURES,
        families=families,
        inner_folds=settings.folds,
        seed=settings.seed + 101,
    )


#: Which candidates each learned variant chooses among.
LEARNED_VARIANTS: Mapping[str, tuple[Family, ...]] = {
    LEARNED: ("logistic", "trees"),
    LEARNED_LOGISTIC: ("logistic",),
    LEARNED_TREES: ("trees",),
}

_NESTED_CACHE: dict[tuple[Any, ...], tuple[dict[str, np.ndarray], list[str]]] = {}


def nested_cv_scores(
    t: TraceArrays, settings: AnalysisSettings
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Out-of-fold P(SLM right) of every learned variant, and what the shipped one chose.

    In each outer fold one inner cross-validation on the other folds scores
    every candidate; each variant refits its best candidate on those folds
    and scores the held-out fold. Nothing of the held-out fold reaches the fit.
    The result depends on the SLM answers only, so it is cached per data set.
    """
    key = (t.dataset, tuple(t.ids), tuple(t.correct), tuple(t.forced), settings)
    if key in _NESTED_CACHE:
        return _NESTED_CACHE[key]
    usable = ~t.forced
    out = {name: np.full(t.n, -np.inf) for name in LEARNED_VARIANTS}
    chosen: list[str] = []
    fold = _folds(t.correct, settings.folds, settings.seed)
    rows = np.array(t.signals, dtype=object)
    everything = candidates_for(("logistic", "trees"))
    for k in range(settings.folds):
        train = usable & (fold != k)
        test = usable & (fold == k)
        if not test.any():
            continue
        if not _can_fit(t.correct[train]) or train.sum() < 2 * settings.folds:
            for scores in out.values():
                scores[test] = float(t.correct[train].mean()) if train.any() else 0.5
            continue
        train_rows, train_y = list(rows[train]), t.correct[train]
        results = inner_cv_auroc(
            train_rows,
            train_y,
            everything,
            features=LEARNED_FEATURES,
            inner_folds=settings.folds,
            seed=settings.seed + 101,
        )
        fitted: dict[str, Any] = {}
        for name, families in LEARNED_VARIANTS.items():
            policy, label = fit_chosen(
                train_rows, train_y, results, families, LEARNED_FEATURES, cache=fitted
            )
            out[name][test] = _scores_of(policy, list(rows[test]))
            if name == LEARNED:
                chosen.append(label)
    _NESTED_CACHE[key] = (out, chosen)
    return out, chosen


def learned_scores(t: TraceArrays, settings: AnalysisSettings) -> np.ndarray:
    """Out-of-fold P(SLM right) of the previous release's learned policy: logistic
    regression on log-prob signals only, l2 from the settings, no inner CV."""
    usable = ~t.forced
    scores = np.full(t.n, -np.inf)
    fold = _folds(t.correct, settings.folds, settings.seed)
    rows = np.array(t.signals, dtype=object)
    for k in range(settings.folds):
        train = usable & (fold != k)
        test = usable & (fold == k)
        if not test.any():
            continue
        if not _can_fit(t.correct[train]):
            scores[test] = float(t.correct[train].mean()) if train.any() else 0.5
            continue
        policy = LogisticPolicy.fit(
            list(rows[train]), t.correct[train], features=V1_FEATURES, l2=settings.l2
        )
        scores[test] = policy.scores(list(rows[test]))
    return scores


def _logistic_predict(
    weights: np.ndarray, mean: np.ndarray, std: np.ndarray, x: np.ndarray
) -> np.ndarray:
    z = ((x - mean) / std) @ weights[:-1] + weights[-1]
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def query_only_scores(t: TraceArrays, settings: AnalysisSettings) -> np.ndarray:
    """Out-of-fold P(SLM right) from the query features alone (same regression, same folds)."""
    scores = np.zeros(t.n)
    fold = _folds(t.correct, settings.folds, settings.seed)
    for k in range(settings.folds):
        train, test = fold != k, fold == k
        if not test.any():
            continue
        if not _can_fit(t.correct[train]):
            scores[test] = float(t.correct[train].mean())
            continue
        w, mean, std = fit_logistic_arrays(
            t.query[train], t.correct[train].astype(float), l2=settings.l2
        )
        scores[test] = _logistic_predict(w, mean, std, t.query[test])
    return scores


@dataclass
class RouterResult:
    """Every summary of one router on one data set."""

    name: str
    kind: str  # "signal", "policy", "query", "baseline"
    auroc: float
    auroc_ci: tuple[float, float]
    apgr: float
    apgr_ci: tuple[float, float]
    cpt50: float
    cpt80: float
    avoided: float
    aiq: float
    curve: Curve = field(repr=False)
    scores: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        pick = np.linspace(0, len(self.curve.quality) - 1, 101).round().astype(int)
        return {
            "name": self.name,
            "kind": self.kind,
            "auroc": _num(self.auroc),
            "auroc_ci": [_num(v) for v in self.auroc_ci],
            "apgr": _num(self.apgr),
            "apgr_ci": [_num(v) for v in self.apgr_ci],
            "cpt50": _num(self.cpt50),
            "cpt80": _num(self.cpt80),
            "calls_avoided_at_quality_share": _num(self.avoided),
            "aiq": _num(self.aiq),
            "curve": {
                "escalation_rate": [round(float(v), 4) for v in self.curve.rates[pick]],
                "f1": [round(float(v), 5) for v in self.curve.quality[pick]],
                "cost_per_query": [float(f"{v:.6g}") for v in self.curve.cost[pick]],
            },
        }


def _num(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 5)


@dataclass
class CalibrationRow:
    """A threshold chosen on the calibration half, measured on the held-out half."""

    policy: str
    target: str
    calibration_rate: float
    heldout_rate: float
    heldout_f1: float
    heldout_random_f1: float
    heldout_fallback_f1: float
    heldout_slm_f1: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (_num(v) if isinstance(v, float) else v) for k, v in vars(self).items()}


@dataclass
class DatasetResult:
    """The analysis of one data set against one fallback."""

    dataset: str
    fallback: str
    slm_model: str
    n: int
    n_correct: int
    n_forced: int
    n_unanswerable: int
    n_abstained: int
    n_abstained_correctly: int
    slm_f1: float
    slm_em: float
    fallback_f1: float
    fallback_em: float
    routers: list[RouterResult]
    calibration: list[CalibrationRow]
    latency: dict[str, dict[str, float | None]]
    cost: dict[str, float]
    mean_answer_tokens: float
    fitted_policy: dict[str, Any]
    correct: np.ndarray = field(repr=False)
    settings: AnalysisSettings = field(default_factory=AnalysisSettings, repr=False)

    @property
    def gap(self) -> float:
        return self.fallback_f1 - self.slm_f1

    def router(self, name: str) -> RouterResult:
        for r in self.routers:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "fallback": self.fallback,
            "slm_model": self.slm_model,
            "n": self.n,
            "n_slm_correct": self.n_correct,
            "n_forced_escalations": self.n_forced,
            "n_unanswerable": self.n_unanswerable,
            "n_slm_abstained": self.n_abstained,
            "n_slm_abstained_correctly": self.n_abstained_correctly,
            "slm_f1": _num(self.slm_f1),
            "slm_em": _num(self.slm_em),
            "fallback_f1": _num(self.fallback_f1),
            "fallback_em": _num(self.fallback_em),
            "mean_answer_tokens": _num(self.mean_answer_tokens),
            "routers": [r.to_dict() for r in self.routers],
            "calibration": [c.to_dict() for c in self.calibration],
            "latency_s": self.latency,
            "cost_per_1000_queries": self.cost,
            "fitted_policy": self.fitted_policy,
            "settings": self.settings.to_dict(),
        }


def _evaluate(
    name: str,
    kind: str,
    scores: np.ndarray | None,
    outcomes: Outcomes,
    t: TraceArrays,
    settings: AnalysisSettings,
    cost_range: tuple[float, float],
    curve: Curve | None = None,
    seed_offset: int = 0,
) -> RouterResult:
    q_slm, q_fb = float(t.slm_f1.mean()), float(t.fb_f1.mean())
    if curve is None:
        assert scores is not None
        curve = metrics.score_curve(scores, outcomes)
    auc = metrics.auroc(scores, t.correct) if scores is not None else float("nan")
    auc_ci = apgr_ci = (float("nan"), float("nan"))
    if scores is not None and settings.bootstrap > 0:
        seed = settings.seed + 1 + seed_offset

        def auc_at(idx: np.ndarray) -> float:
            return metrics.auroc(scores[idx], t.correct[idx])

        def apgr_at(idx: np.ndarray) -> float:
            c = metrics.score_curve(scores[idx], outcomes.take(idx))
            return metrics.apgr(c, float(t.slm_f1[idx].mean()), float(t.fb_f1[idx].mean()))

        auc_ci = metrics.bootstrap_ci(auc_at, t.n, settings.bootstrap, seed)
        apgr_ci = metrics.bootstrap_ci(apgr_at, t.n, settings.bootstrap, seed)
    return RouterResult(
        name=name,
        kind=kind,
        auroc=auc,
        auroc_ci=auc_ci,
        apgr=metrics.apgr(curve, q_slm, q_fb),
        apgr_ci=apgr_ci,
        cpt50=metrics.cpt(curve, q_slm, q_fb, 0.5),
        cpt80=metrics.cpt(curve, q_slm, q_fb, 0.8),
        avoided=metrics.calls_avoided(curve, q_fb, settings.quality_share),
        aiq=metrics.aiq(curve, cost_range),
        curve=curve,
        scores=scores,
    )


def _escalate_all_below(scores: np.ndarray, threshold: float) -> np.ndarray:
    return np.asarray(scores < threshold)


def calibrate(t: TraceArrays, settings: AnalysisSettings) -> list[CalibrationRow]:
    """Fit and calibrate on one half (stratified); report the other half."""
    half = _folds(t.correct, 2, settings.seed + 7)
    cal, held = half == 0, half == 1
    rows = np.array(t.signals, dtype=object)
    usable_cal = cal & ~t.forced
    policies: dict[str, Any] = {SEED: ThresholdPolicy()}
    if _can_fit(t.correct[usable_cal]) and usable_cal.sum() >= 2 * settings.folds:
        policies[LEARNED.replace(" (nested CV)", "")] = fit_learned(
            list(rows[usable_cal]), t.correct[usable_cal], settings
        )[0]
    out: list[CalibrationRow] = []
    outcomes = cascade_outcomes(t)

    def score_all(policy: Any, mask: np.ndarray) -> np.ndarray:
        s = np.full(t.n, -np.inf)
        idx = np.flatnonzero(mask & ~t.forced)
        if len(idx) and hasattr(policy, "scores"):
            s[idx] = policy.scores(list(rows[idx]))
        elif len(idx):
            s[idx] = [policy.score(rows[i]) for i in idx]
        return np.asarray(s[mask])

    q_slm_h, q_fb_h = float(t.slm_f1[held].mean()), float(t.fb_f1[held].mean())
    for name, policy in policies.items():
        cal_scores = score_all(policy, cal)
        held_scores_for = score_all(policy, held)
        n_cal = int(cal.sum())
        n_forced_cal = int((cal & t.forced).sum())
        cal_rows = list(rows[usable_cal])
        targets: list[tuple[str, float]] = [(f"rate {r:.0%}", r) for r in settings.target_rates]
        for label, rate in targets:
            free = n_cal - n_forced_cal
            adjusted = (rate * n_cal - n_forced_cal) / free if free else 0.0
            calibrated = calibrate_to_escalation_rate(
                policy, cal_rows, float(np.clip(adjusted, 0.0, 1.0))
            )
            out.append(
                _calibration_row(
                    name,
                    label,
                    calibrated.threshold,
                    cal_scores,
                    held_scores_for,
                    t,
                    cal,
                    held,
                    q_slm_h,
                    q_fb_h,
                )
            )
        # the smallest escalation keeping quality_share of fallback F1 on the calibration half
        cal_out = outcomes.take(np.flatnonzero(cal))
        curve = metrics.score_curve(cal_scores, cal_out)
        target_q = settings.quality_share * float(t.fb_f1[cal].mean())
        hits = np.flatnonzero(curve.quality >= target_q - 1e-12)
        k = int(hits[0]) if len(hits) else n_cal
        ordered = np.sort(cal_scores)
        if k <= 0:
            threshold = float(ordered[0]) if np.isfinite(ordered[0]) else -np.inf
        elif k >= n_cal:
            threshold = float(np.inf)
        else:
            lo, hi = ordered[k - 1], ordered[k]
            threshold = float(hi if not np.isfinite(lo) else (lo + hi) / 2.0)
        out.append(
            _calibration_row(
                name,
                f">= {settings.quality_share:.0%} of fallback F1",
                threshold,
                cal_scores,
                held_scores_for,
                t,
                cal,
                held,
                q_slm_h,
                q_fb_h,
            )
        )
    return out


def _calibration_row(
    name: str,
    label: str,
    threshold: float,
    cal_scores: np.ndarray,
    held_scores: np.ndarray,
    t: TraceArrays,
    cal: np.ndarray,
    held: np.ndarray,
    q_slm_h: float,
    q_fb_h: float,
) -> CalibrationRow:
    esc_h = _escalate_all_below(held_scores, threshold)
    rate_h = float(esc_h.mean())
    f1_h = float(np.where(esc_h, t.fb_f1[held], t.slm_f1[held]).mean())
    return CalibrationRow(
        policy=name,
        target=label,
        calibration_rate=float(_escalate_all_below(cal_scores, threshold).mean()),
        heldout_rate=rate_h,
        heldout_f1=f1_h,
        heldout_random_f1=q_slm_h + rate_h * (q_fb_h - q_slm_h),
        heldout_fallback_f1=q_fb_h,
        heldout_slm_f1=q_slm_h,
    )


def _latency(t: TraceArrays) -> dict[str, dict[str, float | None]]:
    def stats(values: np.ndarray) -> dict[str, float | None]:
        if np.isnan(values).all():
            return {"median": None, "p95": None}
        v = values[~np.isnan(values)]
        return {
            "median": round(float(np.median(v)), 4),
            "p95": round(float(np.percentile(v, 95)), 4),
        }

    return {
        "slm (answer kept)": stats(t.slm_latency),
        "fallback only": stats(t.fb_latency),
        "escalated (slm + fallback)": stats(t.slm_latency + t.fb_latency),
    }


def analyze(
    records: Sequence[Record], fallback: str = PERFECT, settings: AnalysisSettings | None = None
) -> DatasetResult:
    """Every router and summary for one data set's records against ``fallback``."""
    settings = settings or AnalysisSettings()
    t = trace_arrays(records, fallback, settings)
    cascade = cascade_outcomes(t)
    query = query_only_outcomes(t)
    nested, chosen = nested_cv_scores(t, settings)
    learned = _with_forced(t, nested[LEARNED])
    learned_logistic = _with_forced(t, nested[LEARNED_LOGISTIC])
    learned_trees = _with_forced(t, nested[LEARNED_TREES])
    learned_v1 = _with_forced(t, learned_scores(t, settings))
    seed_policy = ThresholdPolicy()
    seed_scores = _with_forced(
        t, np.array([seed_policy.score(s) if s is not None else -np.inf for s in t.signals])
    )
    q_scores = query_only_scores(t, settings)
    oracle = metrics.oracle_scores(cascade)
    # one cost range for every router: from the cheapest to the dearest point of any of them
    candidates = [
        metrics.score_curve(learned, cascade),
        metrics.score_curve(q_scores, query),
        metrics.random_curve(cascade),
    ]
    low = min(float(c.cost.min()) for c in candidates)
    high = max(float(c.cost.max()) for c in candidates)
    cost_range = (low, high)
    routers = [
        _evaluate(LEARNED, "policy", learned, cascade, t, settings, cost_range, seed_offset=1),
        _evaluate(
            LEARNED_LOGISTIC,
            "policy",
            learned_logistic,
            cascade,
            t,
            settings,
            cost_range,
            seed_offset=4,
        ),
        _evaluate(
            LEARNED_TREES, "policy", learned_trees, cascade, t, settings, cost_range, seed_offset=5
        ),
        _evaluate(
            LEARNED_V1, "policy", learned_v1, cascade, t, settings, cost_range, seed_offset=6
        ),
        _evaluate(SEED, "policy", seed_scores, cascade, t, settings, cost_range, seed_offset=2),
        _evaluate(QUERY_ONLY, "query", q_scores, query, t, settings, cost_range, seed_offset=3),
    ]
    for i, name in enumerate(SIGNAL_NAMES):
        scores = _with_forced(t, SIGNAL_DIRECTIONS[name] * np.nan_to_num(t.signal_matrix[name]))
        routers.append(
            _evaluate(name, "signal", scores, cascade, t, settings, cost_range, seed_offset=10 + i)
        )
    routers.append(
        _evaluate(
            ORACLE,
            "baseline",
            None,
            cascade,
            t,
            settings,
            cost_range,
            curve=metrics.score_curve(oracle, cascade),
        )
    )
    routers.append(
        _evaluate(
            RANDOM,
            "baseline",
            None,
            cascade,
            t,
            settings,
            cost_range,
            curve=metrics.random_curve(cascade),
        )
    )
    usable = ~t.forced
    fitted: dict[str, Any] = {}
    if _can_fit(t.correct[usable]) and usable.sum() >= 2 * settings.folds:
        rows = [s for s in t.signals if s is not None]
        policy, report = fit_learned(rows, t.correct[usable], settings)
        fitted = {**report.to_dict(), "outer_folds_chose": chosen, "policy": policy.to_dict()}
    return DatasetResult(
        dataset=t.dataset,
        fallback=fallback,
        slm_model=t.slm_model,
        n=t.n,
        n_correct=int(t.correct.sum()),
        n_forced=int(t.forced.sum()),
        n_unanswerable=int((~t.answerable).sum()),
        n_abstained=int(t.abstained.sum()),
        n_abstained_correctly=int((t.abstained & ~t.answerable).sum()),
        slm_f1=float(t.slm_f1.mean()),
        slm_em=float(t.slm_em.mean()),
        fallback_f1=float(t.fb_f1.mean()),
        fallback_em=float(t.fb_em.mean()),
        routers=routers,
        calibration=calibrate(t, settings),
        latency=_latency(t),
        cost={
            "slm only": round(float(t.slm_cost.sum() / t.n * 1000), 6),
            "fallback only": round(float(t.fb_cost.sum() / t.n * 1000), 6),
            "cascade, all escalated": round(float((t.slm_cost + t.fb_cost).sum() / t.n * 1000), 6),
        },
        mean_answer_tokens=float(t.slm_tokens.mean()),
        fitted_policy=fitted,
        correct=t.correct,
        settings=settings,
    )


def fallbacks_in(records: Sequence[Record]) -> list[str]:
    """Fallbacks every record carries, the perfect one first."""
    names = set.intersection(*(set(r["fallbacks"]) for r in records)) if records else set()
    return sorted(names, key=lambda n: (n != PERFECT, n))


def analyze_files(
    paths: Sequence[Path], settings: AnalysisSettings | None = None
) -> list[DatasetResult]:
    """Analyse each trace file against each fallback all its records carry."""
    results = []
    for path in paths:
        records = load_traces(path)
        if not records:
            raise ValueError(f"{path}: no trace records")
        datasets = {r["dataset"] for r in records}
        if len(datasets) != 1:
            raise ValueError(f"{path}: mixes data sets {sorted(datasets)}; keep one per file")
        for fallback in fallbacks_in(records):
            results.append(analyze(records, fallback, settings))
    order: dict[str, int] = {kind: i for i, kind in enumerate(DATASET_KINDS)}
    return sorted(results, key=lambda r: order.get(r.dataset, len(order)))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def summary_table(results: Sequence[DatasetResult]) -> str:
    """A plain-text headline table for the terminal."""
    head = (
        f"{'data set':<10} {'fallback':<14} {'n':>4} {'SLM F1':>7} {'FB F1':>6} "
        f"{'AUROC':>6} {'APGR':>6} {'oracle':>6} {'query':>6} {'CPT50':>6} {'CPT80':>6} "
        f"{'avoid95':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        learned, oracle, query = r.router(LEARNED), r.router(ORACLE), r.router(QUERY_ONLY)
        lines.append(
            f"{r.dataset:<10} {r.fallback[:14]:<14} {r.n:>4} {_fmt(r.slm_f1):>7} "
            f"{_fmt(r.fallback_f1):>6} {_fmt(learned.auroc):>6} {_fmt(learned.apgr):>6} "
            f"{_fmt(oracle.apgr):>6} {_fmt(query.apgr):>6} {_fmt(learned.cpt50, 2):>6} "
            f"{_fmt(learned.cpt80, 2):>6} {_fmt(learned.avoided, 2):>7}"
        )
    lines.append(
        "AUROC/APGR/CPT/avoid95: learned policy (model and regularisation chosen by inner CV), "
        "out of fold; oracle and query: APGR."
    )
    return "\n".join(lines)


def dump_json(results: Sequence[DatasetResult], path: Path) -> None:
    path.write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")


__all__ = [
    "LEARNED",
    "LEARNED_FEATURES",
    "LEARNED_LOGISTIC",
    "LEARNED_TREES",
    "LEARNED_V1",
    "ORACLE",
    "QUERY_ONLY",
    "RANDOM",
    "SEED",
    "SIGNAL_DIRECTIONS",
    "AnalysisSettings",
    "CalibrationRow",
    "DatasetResult",
    "RouterResult",
    "TraceArrays",
    "analyze",
    "analyze_files",
    "calibrate",
    "cascade_outcomes",
    "dump_json",
    "fallbacks_in",
    "fit_learned",
    "fit_profile_policy",
    "learned_scores",
    "nested_cv_scores",
    "query_only_outcomes",
    "query_only_scores",
    "summary_table",
    "trace_arrays",
]


def fit_profile_policy(
    record_sets: Sequence[Sequence[Record]], settings: AnalysisSettings | None = None
) -> tuple[Policy, dict[str, Any]]:
    """Fit the shipped procedure on the pooled answers of several data sets (one task
    profile), and measure it out of fold on each data set.

    The out-of-fold scores come from the same procedure run inside an outer
    cross-validation over the pooled answers (stratified by data set and
    outcome); the AUROC per data set counts the forced escalations (failed,
    empty or cut-off answers) as the least confident, as the router treats them.
    """
    settings = settings or AnalysisSettings()
    arrays = [trace_arrays(records, PERFECT, settings) for records in record_sets]
    signals = [s for t in arrays for s in t.signals]
    correct = np.concatenate([t.correct for t in arrays])
    forced = np.concatenate([t.forced for t in arrays])
    source = np.concatenate([np.full(t.n, i) for i, t in enumerate(arrays)])
    usable = ~forced
    rows = np.array(signals, dtype=object)
    scores = np.full(len(correct), -np.inf)
    strata = correct * 1000 + source
    rng = np.random.default_rng(settings.seed)
    fold = np.empty(len(strata), dtype=int)
    for value in np.unique(strata):
        idx = np.flatnonzero(strata == value)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % settings.folds
    chosen: list[str] = []
    for k in range(settings.folds):
        train, test = usable & (fold != k), usable & (fold == k)
        policy, report = fit_learned(list(rows[train]), correct[train], settings)
        chosen.append(report.chosen)
        scores[test] = _scores_of(policy, list(rows[test]))
    policy, report = fit_learned(list(rows[usable]), correct[usable], settings)
    per_dataset = {}
    for i, t in enumerate(arrays):
        mask = source == i
        best = max(
            SIGNAL_NAMES,
            key=lambda n: metrics.auroc(
                _with_forced(t, SIGNAL_DIRECTIONS[n] * np.nan_to_num(t.signal_matrix[n])),
                t.correct,
            ),
        )
        best_auc = metrics.auroc(
            _with_forced(t, SIGNAL_DIRECTIONS[best] * np.nan_to_num(t.signal_matrix[best])),
            t.correct,
        )
        per_dataset[t.dataset] = {
            "n": t.n,
            "slm_right": round(float(t.correct.mean()), 4),
            "out_of_fold_auroc": round(metrics.auroc(scores[mask], correct[mask]), 4),
            "best_single_signal": best,
            "best_single_signal_auroc": round(best_auc, 4),
        }
    info = {
        "slm": arrays[0].slm_model,
        "datasets": [t.dataset for t in arrays],
        "n_answers": int(len(correct)),
        "n_fitted": int(usable.sum()),
        "correct_f1": settings.correct_f1,
        "chosen": report.chosen,
        "inner_cv_auroc": report.to_dict()["inner_cv_auroc"],
        "outer_folds_chose": chosen,
        "out_of_fold": per_dataset,
    }
    return policy, info


def _scores_of(policy: Policy, rows: Sequence[Signals]) -> np.ndarray:
    batch = getattr(policy, "scores", None)
    if batch is not None:
        return np.asarray(batch(list(rows)))
    return np.array([policy.score(r) for r in rows])

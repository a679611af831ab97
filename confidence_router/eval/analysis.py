"""From trace records to every number of the report, without running a model.

For one data set and one fallback the analysis builds the per-question
outcomes (quality and cost of keeping the SLM answer or escalating), then
scores each router on them:

* every single signal (fixed direction: higher log-probabilities and margins,
  lower entropy and length mean more confident),
* the seed `ThresholdPolicy` (length, mean entropy, minimum logprob),
* the learned `LogisticPolicy`, k-fold cross-validated: each
  question is scored by a model fitted on the other folds only,
* a query-only router: the same logistic regression on features of the
  question and passage alone, deciding before the SLM runs (so an escalated
  question does not pay for the SLM),
* baselines: SLM-only, fallback-only, random routing, the oracle.

Forced escalations (the SLM failed, answered nothing or was cut off) are
escalated by every router, the query-only one included, and counted on the
escalation axis: every curve starts at their share, from one shared *floor*
(every other answer kept), so no router gets them for free.

Cost is charged honestly: a cascade pays the SLM for every question and the
fallback on top for escalated ones. A token count the server did not report
(`null` in the traces) is unknown, not 0: cost and token figures are over the
questions whose counts are all known, and the report says how many it left
out (`confidence_router.eval.counts`). Budget calibration fits and calibrates on
one half and reports what the threshold achieves on the other. A shipped
policy file can be replayed at its own threshold (an *operating point*): calls
avoided, F1, wall time and tokens per query, as the Router would have done.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..observe.ledger import Price
from ..policies._scoring import scores_of
from ..policies.base import (
    LogisticPolicy,
    Policy,
    ThresholdPolicy,
    calibrate_to_escalation_rate,
    fit_logistic_arrays,
)
from ..policies.fitting import (
    Family,
    FitReport,
    candidates_for,
    fit_chosen,
    fit_policy,
    inner_cv_auroc,
)
from ..scoring import DATASET_KINDS
from ..signals.token import SIGNAL_NAMES, Signals
from ..types import Usage
from . import metrics
from .counts import known_mean, token_counts
from .metrics import Curve, Outcomes
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
    "question_coverage": 1.0,
    "question_sentence_overlap": 1.0,
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
#: The shipped procedure fitted on the other label: SLM at least as good as the fallback.
LEARNED_AS_GOOD = "learned on 'as good as the fallback' (nested CV)"
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
    #: Shares of the fallback's F1 at which fallback calls avoided are reported.
    avoided_shares: tuple[float, ...] = (0.95, 0.98, 1.0)

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
    fb_abstained: np.ndarray
    slm_all_tokens: np.ndarray  # prompt + completion tokens of the SLM call
    fb_all_tokens: np.ndarray  # the same for the fallback call
    as_good: np.ndarray  # the other label: SLM F1 >= the fallback's F1 on the question
    #: every token count of the SLM and the fallback was reported; the costs and token
    #: counts of the other questions are NaN, and cost figures are over these only
    counted: np.ndarray

    @property
    def n(self) -> int:
        """How many questions."""
        return len(self.ids)

    @property
    def kept_f1(self) -> np.ndarray:
        """F1 of each question when the router keeps every answer it can (the floor)."""
        return np.asarray(np.where(self.forced, self.fb_f1, self.slm_f1))

    def label(self, name: str) -> np.ndarray:
        """The label `name`: "right" (SLM F1 > correct_f1) or "as-good" (>= fallback's F1).

        Raises:
            ValueError: an unknown label.
        """
        if name not in LABELS:
            raise ValueError(f"unknown label {name!r}; use one of {', '.join(LABELS)}")
        return self.correct if name == "right" else self.as_good


#: The two labels a policy can be fitted on and is scored against.
LABELS: Mapping[str, str] = {
    "right": "the SLM's answer is right (F1 against the gold answers > correct_f1)",
    "as-good": "the SLM's answer is at least as good as the fallback's (its F1 >= the "
    "fallback's F1 on the same question)",
}


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
    """Columns of the records (all of one data set) that carry `fallback`.

    Raises:
        ValueError: no records, or records without that fallback.
    """
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

    # (n, 2) prompt and completion tokens; NaN: not reported (never 0)
    slm_counts = np.array([token_counts(s) for s in slm], dtype=float).reshape(-1, 2)
    fb_counts = np.array([token_counts(f) for f in fb], dtype=float).reshape(-1, 2)
    counted = np.isfinite(slm_counts).all(axis=1) & np.isfinite(fb_counts).all(axis=1)

    def cost(price: Price, counts: np.ndarray) -> np.ndarray:
        return np.array(
            [
                price.cost(Usage(int(p), int(c))) if ok else np.nan
                for (p, c), ok in zip(counts, counted, strict=True)
            ]
        )

    def tokens(values: np.ndarray) -> np.ndarray:
        return np.where(counted, values, np.nan)

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
        slm_cost=cost(slm_price, slm_counts),
        fb_cost=cost(fb_price, fb_counts),
        slm_latency=latency(s.get("latency_s") for s in slm),
        fb_latency=latency(f.get("latency_s") for f in fb),
        slm_tokens=tokens(slm_counts[:, 1]),
        answerable=np.array([bool(r.get("answerable", True)) for r in records]),
        abstained=np.array([not s.get("error") and s.get("answer", "") == "" for s in slm]),
        fb_abstained=np.array([not f.get("error") and f.get("answer", "") == "" for f in fb]),
        slm_all_tokens=tokens(slm_counts.sum(axis=1)),
        fb_all_tokens=tokens(fb_counts.sum(axis=1)),
        as_good=slm_f1 >= np.array([float(f["f1"]) for f in fb]),
        counted=counted,
    )


def cascade_outcomes(t: TraceArrays) -> Outcomes:
    """A post-generation router: the SLM always runs; escalation adds the fallback."""
    return Outcomes(t.slm_f1, t.fb_f1, t.slm_cost, t.slm_cost + t.fb_cost)


def query_only_outcomes(t: TraceArrays) -> Outcomes:
    """A pre-generation router: an escalated question goes straight to the fallback.

    A kept question whose SLM call then fails is escalated after all (and
    pays for both), as the Router does; it counts as an escalation like every
    forced one (see `query_only_curve` for the cost it saves when the
    query score alone had escalated it).
    """
    both = t.slm_cost + t.fb_cost
    keep_q = np.where(t.forced, t.fb_f1, t.slm_f1)
    return Outcomes(
        keep_q, t.fb_f1, np.where(t.forced, both, t.slm_cost), np.where(t.forced, both, t.fb_cost)
    )


def query_only_curve(scores: np.ndarray, t: TraceArrays, idx: np.ndarray | None = None) -> Curve:
    """The query-only router's curve on the same footing as a cascade's.

    Forced questions are escalated at every point (the SLM fails on them
    whatever the router does) and counted on the escalation axis. At the
    point with m other questions escalated, a forced question whose query
    score is below the next one's was sent to the fallback directly and pays
    the fallback only; the others ran the SLM first and pay both. Costs are
    over the counted questions, as `metrics.score_curve` has them.
    """
    idx = np.arange(t.n) if idx is None else idx
    s, forced = np.asarray(scores)[idx], t.forced[idx]
    curve = metrics.score_curve(s, query_only_outcomes(t).take(idx), forced)
    counted = t.counted[idx]
    if not forced.any() or not counted.any():
        return curve
    free = np.sort(s[~forced])
    thresholds = np.append(free, np.inf)  # point m escalates free[:m]; the next is free[m]
    order = np.argsort(s[forced])
    # the SLM cost saved, summed over the counted questions (the others are not on the cost axis)
    saved = np.where(counted, t.slm_cost[idx], 0.0)[forced][order]
    saved_sorted = np.concatenate(([0.0], np.cumsum(saved)))
    below = np.searchsorted(s[forced][order], thresholds, side="left")
    return Curve(curve.quality, curve.cost - saved_sorted[below] / counted.sum(), curve.start)


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
    t: TraceArrays, settings: AnalysisSettings, label: str = "right"
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Out-of-fold P(label) of every learned variant, and what the shipped one chose.

    In each outer fold one inner cross-validation on the other folds scores
    every candidate; each variant refits its best candidate on those folds
    and scores the held-out fold. Nothing of the held-out fold reaches the fit.
    The result depends on the SLM answers only, so it is cached per data set.
    """
    y = t.label(label)
    key = (t.dataset, tuple(t.ids), tuple(y), tuple(t.forced), settings)
    if key in _NESTED_CACHE:
        return _NESTED_CACHE[key]
    usable = ~t.forced
    out = {name: np.full(t.n, -np.inf) for name in LEARNED_VARIANTS}
    chosen: list[str] = []
    fold = _folds(y, settings.folds, settings.seed)
    rows = np.array(t.signals, dtype=object)
    everything = candidates_for(("logistic", "trees"))
    for k in range(settings.folds):
        train = usable & (fold != k)
        test = usable & (fold == k)
        if not test.any():
            continue
        if not _can_fit(y[train]) or train.sum() < 2 * settings.folds:
            for scores in out.values():
                scores[test] = float(y[train].mean()) if train.any() else 0.5
            continue
        train_rows, train_y = list(rows[train]), y[train]
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
            out[name][test] = scores_of(policy, list(rows[test]))
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
    #: Fallback calls avoided at each share of the fallback's F1, and their intervals.
    avoided_at: dict[float, float] = field(default_factory=dict)
    avoided_ci: dict[float, tuple[float, float]] = field(default_factory=dict)
    #: AUROC of the same score for the other label (SLM at least as good as the fallback).
    auroc_as_good: float = float("nan")
    auroc_as_good_ci: tuple[float, float] = (float("nan"), float("nan"))

    def to_dict(self) -> dict[str, Any]:
        pick = np.linspace(0, len(self.curve.quality) - 1, 101).round().astype(int)
        pick = np.unique(pick)
        return {
            "name": self.name,
            "kind": self.kind,
            "auroc": _num(self.auroc),
            "auroc_ci": [_num(v) for v in self.auroc_ci],
            "auroc_as_good": _num(self.auroc_as_good),
            "auroc_as_good_ci": [_num(v) for v in self.auroc_as_good_ci],
            "apgr": _num(self.apgr),
            "apgr_ci": [_num(v) for v in self.apgr_ci],
            "cpt50": _num(self.cpt50),
            "cpt80": _num(self.cpt80),
            "calls_avoided_at_quality_share": _num(self.avoided),
            "calls_avoided": {
                f"{share:g}": {
                    "value": _num(value),
                    "ci": [_num(v) for v in self.avoided_ci.get(share, (np.nan, np.nan))],
                }
                for share, value in self.avoided_at.items()
            },
            "aiq": _num(self.aiq),
            "curve": {
                "escalation_rate": [round(float(v), 4) for v in self.curve.rates[pick]],
                "f1": [round(float(v), 5) for v in self.curve.quality[pick]],
                "cost_per_query": [  # None: no question's token counts were reported
                    float(f"{v:.6g}") if np.isfinite(v) else None for v in self.curve.cost[pick]
                ],
            },
        }


def _num(value: float | None) -> float | None:
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
class OperatingPoint:
    """One router at one threshold, replayed as the Router would have run it.

    Escalated questions take the fallback's answer; forced ones are always
    escalated. Wall time and tokens are per query, from the traces: a cascade
    pays the SLM on every question and the fallback on escalated ones.
    """

    name: str
    note: str
    escalated: np.ndarray = field(repr=False)
    rate: float
    f1: float
    em: float
    f1_share: float  # F1 as a share of fallback-only F1
    avoided_ci: tuple[float, float]
    f1_share_ci: tuple[float, float]
    wall_median_s: float | None
    wall_mean_s: float | None
    slm_tokens: float  # per query, prompt + completion
    fallback_tokens: float  # per query, prompt + completion, escalated questions only
    parts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def avoided(self) -> float:
        """Fallback calls avoided: the share of questions the SLM's answer is kept on."""
        return 1.0 - self.rate

    @property
    def queries_per_budget(self) -> float:
        """Queries served per fallback call: with a fixed fallback budget, this many times more."""
        return 1.0 / self.rate if self.rate > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "note": self.note,
            "escalation_rate": _num(self.rate),
            "fallback_calls_avoided": _num(self.avoided),
            "fallback_calls_avoided_ci": [_num(v) for v in self.avoided_ci],
            "f1": _num(self.f1),
            "em": _num(self.em),
            "f1_share_of_fallback": _num(self.f1_share),
            "f1_share_ci": [_num(v) for v in self.f1_share_ci],
            "queries_per_fallback_budget": _num(self.queries_per_budget),
            "wall_s_per_query": {
                "median": _num(self.wall_median_s),
                "mean": _num(self.wall_mean_s),
            },
            "tokens_per_query": {
                "slm": _num(self.slm_tokens),
                "fallback": _num(self.fallback_tokens),
            },
            "parts": self.parts,
        }


def operating_point(
    name: str,
    note: str,
    escalated: np.ndarray,
    t: TraceArrays,
    settings: AnalysisSettings,
    seed_offset: int = 0,
) -> OperatingPoint:
    """Everything the seed's table asks of one router at one threshold."""
    esc = np.asarray(escalated, dtype=bool) | t.forced
    f1 = np.where(esc, t.fb_f1, t.slm_f1)
    em = np.where(esc, t.fb_em, t.slm_em)
    q_fb = float(t.fb_f1.mean())
    share = float(f1.mean() / q_fb) if q_fb > 0 else float("nan")
    nan2 = (float("nan"), float("nan"))
    avoided_ci = share_ci = nan2
    if settings.bootstrap > 0:

        def stat(idx: np.ndarray) -> np.ndarray:
            fb = float(t.fb_f1[idx].mean())
            return np.array(
                [1.0 - float(esc[idx].mean()), float(f1[idx].mean()) / fb if fb > 0 else np.nan]
            )

        avoided_ci, share_ci = metrics.bootstrap_cis(
            stat, t.n, settings.bootstrap, settings.seed + 500 + seed_offset
        )
    wall = t.slm_latency + np.where(esc, t.fb_latency, 0.0)
    if np.isnan(t.fb_latency[esc]).any():  # the perfect fallback takes no time: unknown
        wall = np.full(t.n, np.nan)
    parts: dict[str, dict[str, float]] = {}
    if not t.answerable.all():
        for part, mask in (("answerable", t.answerable), ("unanswerable", ~t.answerable)):
            parts[part] = {
                "n": int(mask.sum()),
                "escalation_rate": round(float(esc[mask].mean()), 5),
                "f1": round(float(f1[mask].mean()), 5),
            }
    return OperatingPoint(
        name=name,
        note=note,
        escalated=esc,
        rate=float(esc.mean()),
        f1=float(f1.mean()),
        em=float(em.mean()),
        f1_share=share,
        avoided_ci=avoided_ci,
        f1_share_ci=share_ci,
        wall_median_s=_nan_stat(np.median, wall),
        wall_mean_s=_nan_stat(np.mean, wall),
        slm_tokens=known_mean(t.slm_all_tokens),
        # a kept question calls no fallback (0 tokens); an uncounted one is left out
        fallback_tokens=known_mean(
            np.where(t.counted, np.where(esc, t.fb_all_tokens, 0.0), np.nan)
        ),
        parts=parts,
    )


def _nan_stat(stat: Callable[[np.ndarray], Any], values: np.ndarray) -> float | None:
    """`stat` of the measured values; None when most were not measured (the perfect
    fallback has no latency: a median over the kept answers alone would flatter)."""
    v = values[~np.isnan(values)]
    return float(stat(v)) if len(v) > len(values) / 2 else None


def escalated_at(scores: np.ndarray, forced: np.ndarray, k: int) -> np.ndarray:
    """The k escalations of a curve's point k: every forced one, then the lowest scores."""
    esc = np.asarray(forced, dtype=bool).copy()
    free = np.flatnonzero(~esc)
    order = free[np.argsort(np.asarray(scores)[free], kind="mergesort")]
    esc[order[: max(k - int(esc.sum()), 0)]] = True
    return esc


def answerable_split(t: TraceArrays) -> dict[str, dict[str, float]]:
    """SQuAD 2.0's two parts: each model's EM/F1 and how often it abstained, per part."""
    if t.answerable.all():
        return {}
    out: dict[str, dict[str, float]] = {}
    for part, mask in (
        ("answerable", t.answerable),
        ("unanswerable", ~t.answerable),
        ("all", np.ones(t.n, dtype=bool)),
    ):
        out[part] = {
            "n": int(mask.sum()),
            "slm_f1": round(float(t.slm_f1[mask].mean()), 5),
            "slm_em": round(float(t.slm_em[mask].mean()), 5),
            "slm_abstained": int(t.abstained[mask].sum()),
            "fallback_f1": round(float(t.fb_f1[mask].mean()), 5),
            "fallback_em": round(float(t.fb_em[mask].mean()), 5),
            "fallback_abstained": int(t.fb_abstained[mask].sum()),
            "forced": int(t.forced[mask].sum()),
        }
    return out


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
    cost: dict[str, float | None]  # per 1000 questions, over the counted ones (None: none)
    mean_answer_tokens: float
    fitted_policy: dict[str, Any]
    correct: np.ndarray = field(repr=False)
    settings: AnalysisSettings = field(default_factory=AnalysisSettings, repr=False)
    #: F1 when every answer that is not forced is kept: where every router's curve starts.
    floor_f1: float = float("nan")
    n_as_good: int = 0
    as_good: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    operating_points: list[OperatingPoint] = field(default_factory=list)
    split: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Fallback-only on this machine: wall time and tokens per query.
    fallback_only: dict[str, float | None] = field(default_factory=dict)
    #: The shipped policy replayed (name, file, threshold, what it was fitted on).
    shipped: dict[str, Any] = field(default_factory=dict)
    #: Questions left out of every cost and token figure: a token count was not reported.
    n_unreported: int = 0

    @property
    def gap(self) -> float:
        """What routing can recover: fallback-only F1 minus the floor."""
        floor = self.floor_f1 if np.isfinite(self.floor_f1) else self.slm_f1
        return self.fallback_f1 - floor

    @property
    def forced_share(self) -> float:
        """The share of answers every router escalates (failed, empty or cut off)."""
        return self.n_forced / self.n if self.n else 0.0

    def point(self, name: str) -> OperatingPoint | None:
        """The operating point `name`, or None when it was not measured."""
        for p in self.operating_points:
            if p.name == name:
                return p
        return None

    def router(self, name: str) -> RouterResult:
        """The router `name`; raises `KeyError` when there is none."""
        for r in self.routers:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        unreported = {"n_unreported_token_counts": self.n_unreported} if self.n_unreported else {}
        return {
            "dataset": self.dataset,
            "fallback": self.fallback,
            "slm_model": self.slm_model,
            "n": self.n,
            **unreported,  # questions left out of the cost and token figures
            "n_slm_correct": self.n_correct,
            "n_forced_escalations": self.n_forced,
            "n_unanswerable": self.n_unanswerable,
            "n_slm_abstained": self.n_abstained,
            "n_slm_abstained_correctly": self.n_abstained_correctly,
            "slm_f1": _num(self.slm_f1),
            "slm_em": _num(self.slm_em),
            "fallback_f1": _num(self.fallback_f1),
            "fallback_em": _num(self.fallback_em),
            "floor_f1": _num(self.floor_f1),
            "n_slm_as_good_as_fallback": self.n_as_good,
            "operating_points": [p.to_dict() for p in self.operating_points],
            "answerable_split": self.split,
            "fallback_only_per_query": self.fallback_only,
            "shipped_policy": self.shipped,
            "mean_answer_tokens": _num(self.mean_answer_tokens),
            "routers": [r.to_dict() for r in self.routers],
            "calibration": [c.to_dict() for c in self.calibration],
            "latency_s": self.latency,
            "cost_per_1000_queries": self.cost,
            "fitted_policy": self.fitted_policy,
            "settings": self.settings.to_dict(),
        }


CurveAt = Callable[[np.ndarray | None], Curve]


def _score_curve_at(scores: np.ndarray, outcomes: Outcomes, t: TraceArrays) -> CurveAt:
    """The curve of `scores` on all questions (None) or on a bootstrap resample."""

    def at(idx: np.ndarray | None) -> Curve:
        if idx is None:
            return metrics.score_curve(scores, outcomes, t.forced)
        return metrics.score_curve(scores[idx], outcomes.take(idx), t.forced[idx])

    return at


def _oracle_curve_at(outcomes: Outcomes, t: TraceArrays) -> CurveAt:
    def at(idx: np.ndarray | None) -> Curve:
        o = outcomes if idx is None else outcomes.take(idx)
        forced = t.forced if idx is None else t.forced[idx]
        return metrics.score_curve(metrics.oracle_scores(o), o, forced)

    return at


def _random_curve_at(outcomes: Outcomes, t: TraceArrays) -> CurveAt:
    def at(idx: np.ndarray | None) -> Curve:
        if idx is None:
            return metrics.random_curve(outcomes, t.forced)
        return metrics.random_curve(outcomes.take(idx), t.forced[idx])

    return at


def _evaluate(
    name: str,
    kind: str,
    scores: np.ndarray | None,
    curve_at: CurveAt,
    t: TraceArrays,
    settings: AnalysisSettings,
    cost_range: tuple[float, float],
    seed_offset: int = 0,
) -> RouterResult:
    """Every summary of one router; the intervals resample questions (scores fixed)."""
    floor, q_fb = float(t.kept_f1.mean()), float(t.fb_f1.mean())
    curve = curve_at(None)
    shares = settings.avoided_shares
    auc = metrics.auroc(scores, t.correct) if scores is not None else float("nan")
    auc_good = metrics.auroc(scores, t.as_good) if scores is not None else float("nan")
    nan2 = (float("nan"), float("nan"))
    cis = [nan2] * (3 + len(shares))
    if settings.bootstrap > 0:
        kept = t.kept_f1

        def stat(idx: np.ndarray) -> np.ndarray:
            c = curve_at(idx)
            fb = float(t.fb_f1[idx].mean())
            out = [metrics.apgr(c, float(kept[idx].mean()), fb)]
            out += [metrics.calls_avoided(c, fb, share) for share in shares]
            if scores is not None:
                out += [
                    metrics.auroc(scores[idx], t.correct[idx]),
                    metrics.auroc(scores[idx], t.as_good[idx]),
                ]
            else:
                out += [float("nan"), float("nan")]
            return np.array(out)

        cis = metrics.bootstrap_cis(stat, t.n, settings.bootstrap, settings.seed + 1 + seed_offset)
    return RouterResult(
        name=name,
        kind=kind,
        auroc=auc,
        auroc_ci=cis[-2],
        apgr=metrics.apgr(curve, floor, q_fb),
        apgr_ci=cis[0],
        cpt50=metrics.cpt(curve, floor, q_fb, 0.5),
        cpt80=metrics.cpt(curve, floor, q_fb, 0.8),
        avoided=metrics.calls_avoided(curve, q_fb, settings.quality_share),
        aiq=metrics.aiq(curve, cost_range),
        curve=curve,
        scores=scores,
        avoided_at={share: metrics.calls_avoided(curve, q_fb, share) for share in shares},
        avoided_ci={share: cis[1 + i] for i, share in enumerate(shares)},
        auroc_as_good=auc_good,
        auroc_as_good_ci=cis[-1],
    )


def _escalate_all_below(scores: np.ndarray, threshold: float) -> np.ndarray:
    """What the Router escalates: scores below the threshold, and every forced one (-inf)."""
    return np.asarray((scores < threshold) | np.isneginf(scores))


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
        if len(idx):
            s[idx] = scores_of(policy, list(rows[idx]))
        return np.asarray(s[mask])

    q_slm_h, q_fb_h = float(t.slm_f1[held].mean()), float(t.fb_f1[held].mean())
    for name, policy in policies.items():
        cal_scores = score_all(policy, cal)
        held_scores_for = score_all(policy, held)
        n_cal = int(cal.sum())
        n_forced_cal = int((cal & t.forced).sum())
        cal_rows = list(rows[usable_cal])
        thresholds: list[tuple[str, float]] = []  # (target, threshold chosen for it)
        for rate in settings.target_rates:
            free = n_cal - n_forced_cal
            adjusted = (rate * n_cal - n_forced_cal) / free if free else 0.0
            calibrated = calibrate_to_escalation_rate(
                policy, cal_rows, float(np.clip(adjusted, 0.0, 1.0))
            )
            thresholds.append((f"rate {rate:.0%}", calibrated.threshold))
        # the smallest escalation keeping quality_share of fallback F1 on the calibration half
        cal_out = outcomes.take(np.flatnonzero(cal))
        curve = metrics.score_curve(cal_scores, cal_out, t.forced[cal])
        target_q = settings.quality_share * float(t.fb_f1[cal].mean())
        hits = np.flatnonzero(curve.quality >= target_q - 1e-12)
        k = curve.start + int(hits[0]) if len(hits) else n_cal
        ordered = np.sort(cal_scores)
        if k <= 0:
            threshold = float(ordered[0]) if np.isfinite(ordered[0]) else -np.inf
        elif k >= n_cal:
            threshold = float(np.inf)
        else:
            lo, hi = ordered[k - 1], ordered[k]
            threshold = float(hi if not np.isfinite(lo) else (lo + hi) / 2.0)
        thresholds.append((f">= {settings.quality_share:.0%} of fallback F1", threshold))
        out += (
            _calibration_row(
                name, label, th, cal_scores, held_scores_for, t, cal, held, q_slm_h, q_fb_h
            )
            for label, th in thresholds
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
    # random routing on the same footing: the forced answers escalated, then a random share
    forced_h, floor_h = float(t.forced[held].mean()), float(t.kept_f1[held].mean())
    extra = (rate_h - forced_h) / (1.0 - forced_h) if forced_h < 1.0 else 1.0
    return CalibrationRow(
        policy=name,
        target=label,
        calibration_rate=float(_escalate_all_below(cal_scores, threshold).mean()),
        heldout_rate=rate_h,
        heldout_f1=f1_h,
        heldout_random_f1=floor_h + max(extra, 0.0) * (q_fb_h - floor_h),
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


#: Names of the operating points.
SHIPPED_POINT = "shipped policy at its threshold"
SEED_POINT = "seed thresholds as shipped (threshold 0)"
LEARNED_POINT = "learned (out of fold) at >= 95% of fallback F1"


def shipped_escalations(t: TraceArrays, policy: Policy) -> np.ndarray:
    """What the Router escalates with `policy`: forced answers and scores below its threshold."""
    return _escalate_all_below(_policy_scores(t, policy), policy.threshold)


def _policy_scores(t: TraceArrays, policy: Policy) -> np.ndarray:
    rows = [s for s in t.signals if s is not None]
    scores = np.full(t.n, -np.inf)
    if rows:
        scores[~t.forced] = scores_of(policy, rows)
    return scores


def analyze(
    records: Sequence[Record],
    fallback: str = PERFECT,
    settings: AnalysisSettings | None = None,
    *,
    policy: Policy | None = None,
    policy_info: Mapping[str, Any] | None = None,
) -> DatasetResult:
    """Every router and summary for one data set's records against `fallback`.

    `policy` (a shipped policy, with `policy_info` from its file) is
    replayed at its own threshold as an operating point and scored as a router.
    """
    settings = settings or AnalysisSettings()
    t = trace_arrays(records, fallback, settings)
    cascade = cascade_outcomes(t)
    nested, chosen = nested_cv_scores(t, settings)
    learned = _with_forced(t, nested[LEARNED])
    learned_logistic = _with_forced(t, nested[LEARNED_LOGISTIC])
    learned_trees = _with_forced(t, nested[LEARNED_TREES])
    learned_v1 = _with_forced(t, learned_scores(t, settings))
    seed_policy = ThresholdPolicy()
    seed_scores = _policy_scores(t, seed_policy)
    q_scores = query_only_scores(t, settings)
    # one cost range for every router: from the cheapest to the dearest point of any of them
    candidates = [
        metrics.score_curve(learned, cascade, t.forced),
        query_only_curve(q_scores, t),
        metrics.random_curve(cascade, t.forced),
    ]
    low = min(float(c.cost.min()) for c in candidates)
    high = max(float(c.cost.max()) for c in candidates)
    cost_range = (low, high)

    def cascade_router(name: str, kind: str, scores: np.ndarray, offset: int) -> RouterResult:
        at = _score_curve_at(scores, cascade, t)
        return _evaluate(name, kind, scores, at, t, settings, cost_range, seed_offset=offset)

    routers = [
        cascade_router(LEARNED, "policy", learned, 1),
        cascade_router(LEARNED_LOGISTIC, "policy", learned_logistic, 4),
        cascade_router(LEARNED_TREES, "policy", learned_trees, 5),
        cascade_router(LEARNED_V1, "policy", learned_v1, 6),
        cascade_router(SEED, "policy", seed_scores, 2),
        _evaluate(
            QUERY_ONLY,
            "query",
            q_scores,
            lambda idx: query_only_curve(q_scores, t, idx),
            t,
            settings,
            cost_range,
            seed_offset=3,
        ),
    ]
    if fallback != PERFECT and _can_fit(t.as_good[~t.forced]):
        as_good = _with_forced(t, nested_cv_scores(t, settings, "as-good")[0][LEARNED])
        routers.append(cascade_router(LEARNED_AS_GOOD, "policy", as_good, 7))
    shipped: dict[str, Any] = {}
    if policy is not None:
        shipped = {**(policy_info or {}), "threshold": float(policy.threshold)}
        shipped_name = f"shipped: {shipped.get('name') or type(policy).__name__}"
        shipped["router"] = shipped_name
        routers.append(cascade_router(shipped_name, "policy", _policy_scores(t, policy), 8))
    for i, name in enumerate(SIGNAL_NAMES):
        scores = _with_forced(t, SIGNAL_DIRECTIONS[name] * np.nan_to_num(t.signal_matrix[name]))
        routers.append(cascade_router(name, "signal", scores, 10 + i))
    routers.append(
        _evaluate(ORACLE, "baseline", None, _oracle_curve_at(cascade, t), t, settings, cost_range)
    )
    routers.append(
        _evaluate(RANDOM, "baseline", None, _random_curve_at(cascade, t), t, settings, cost_range)
    )
    points = []
    if policy is not None:
        note = (
            f"{shipped.get('name') or 'the policy'} at its threshold {policy.threshold:.4g}, "
            "as the Router runs it"
        )
        points.append(
            operating_point(SHIPPED_POINT, note, shipped_escalations(t, policy), t, settings, 1)
        )
    points.append(
        operating_point(
            SEED_POINT,
            "ThresholdPolicy() as shipped: length <= 64, mean entropy <= 1, min logprob >= -3",
            _escalate_all_below(seed_scores, 0.0),
            t,
            settings,
            2,
        )
    )
    curve = routers[0].curve
    hits = np.flatnonzero(curve.quality >= 0.95 * float(t.fb_f1.mean()) - 1e-12)
    if len(hits):
        points.append(
            operating_point(
                LEARNED_POINT,
                "the out-of-fold learned score at the smallest escalation rate reaching 95% of "
                "fallback-only F1 on these questions (threshold chosen in hindsight)",
                escalated_at(learned, t.forced, curve.start + int(hits[0])),
                t,
                settings,
                3,
            )
        )
    usable = ~t.forced
    fb_tokens = known_mean(t.fb_all_tokens)
    fitted: dict[str, Any] = {}
    if _can_fit(t.correct[usable]) and usable.sum() >= 2 * settings.folds:
        rows = [s for s in t.signals if s is not None]
        fitted_policy, report = fit_learned(rows, t.correct[usable], settings)
        fitted = {
            **report.to_dict(),
            "outer_folds_chose": chosen,
            "policy": fitted_policy.to_dict(),
        }
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
            "slm only": _per_1000(t.slm_cost, t.counted),
            "fallback only": _per_1000(t.fb_cost, t.counted),
            "cascade, all escalated": _per_1000(t.slm_cost + t.fb_cost, t.counted),
        },
        mean_answer_tokens=known_mean(t.slm_tokens),
        fitted_policy=fitted,
        correct=t.correct,
        settings=settings,
        floor_f1=float(t.kept_f1.mean()),
        n_as_good=int(t.as_good.sum()),
        as_good=t.as_good,
        operating_points=points,
        split=answerable_split(t),
        fallback_only={
            "wall_median_s": _nan_stat(np.median, t.fb_latency),
            "wall_mean_s": _nan_stat(np.mean, t.fb_latency),
            "fallback_tokens": fb_tokens if np.isfinite(fb_tokens) else None,
        },
        shipped=shipped,
        n_unreported=int((~t.counted).sum()),
    )


def _per_1000(cost: np.ndarray, counted: np.ndarray) -> float | None:
    """Cost per 1000 questions over the counted ones; None when no count was reported."""
    n = int(counted.sum())
    return round(float(cost[counted].sum() / n * 1000), 6) if n else None


def fallbacks_in(records: Sequence[Record]) -> list[str]:
    """Fallbacks every record carries, the perfect one first."""
    names = set.intersection(*(set(r["fallbacks"]) for r in records)) if records else set()
    return sorted(names, key=lambda n: (n != PERFECT, n))


ShippedPolicy = tuple[Policy, dict[str, Any]]


def load_shipped_policy(path: Path) -> ShippedPolicy:
    """A policy file (a shipped-policy document or a bare policy) and what it says about itself."""
    from ..policies.registry import policy_from_dict

    document = json.loads(Path(path).read_text())
    policy = policy_from_dict(document)
    fitted = document.get("fitted_on", {}) if isinstance(document, dict) else {}
    info = {
        "name": document.get("name") or Path(path).stem,
        "file": str(path),
        "slm": document.get("slm"),
        "fitted_on_datasets": fitted.get("datasets"),
        "fitted_on_answers": fitted.get("n_answers"),
        "label": fitted.get("label", "right"),
    }
    return policy, info


def analyze_files(
    paths: Sequence[Path],
    settings: AnalysisSettings | None = None,
    policies: Mapping[str, ShippedPolicy] | None = None,
) -> list[DatasetResult]:
    """Analyse each trace file against each fallback all its records carry.

    `policies` maps a data set kind (or "" for every data set) to a shipped
    policy replayed at its threshold.

    Raises:
        ValueError: a file without records, or one that mixes data sets.
    """
    policies = policies or {}
    results = []
    for path in paths:
        records = load_traces(path)
        if not records:
            raise ValueError(f"{path}: no trace records")
        datasets = {r["dataset"] for r in records}
        if len(datasets) != 1:
            raise ValueError(f"{path}: mixes data sets {sorted(datasets)}; keep one per file")
        shipped = policies.get(next(iter(datasets)), policies.get(""))
        for fallback in fallbacks_in(records):
            policy, info = shipped if shipped is not None else (None, None)
            results.append(analyze(records, fallback, settings, policy=policy, policy_info=info))
    order: dict[str, int] = {kind: i for i, kind in enumerate(DATASET_KINDS)}
    return sorted(results, key=lambda r: order.get(r.dataset, len(order)))


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def summary_table(results: Sequence[DatasetResult]) -> str:
    """A plain-text table for the terminal (every router on equal footing, see the module)."""
    head = (
        f"{'data set':<10} {'fallback':<14} {'n':>4} {'SLM F1':>6} {'FB F1':>6} {'floor':>6} "
        f"{'AUROC':>5} {'as-gd':>5} {'APGR':>5} {'query':>5} {'oracle':>6} "
        f"{'av95 lrn/seed/qry/orc':>21} {'shipped':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        learned = r.router(LEARNED)
        avoided = "/".join(
            _fmt(r.router(name).avoided_at.get(0.95), 2)
            for name in (LEARNED, SEED, QUERY_ONLY, ORACLE)
        )
        shipped = r.point(SHIPPED_POINT)
        lines.append(
            f"{r.dataset:<10} {r.fallback[:14]:<14} {r.n:>4} {_fmt(r.slm_f1):>6} "
            f"{_fmt(r.fallback_f1):>6} {_fmt(r.floor_f1):>6} {_fmt(learned.auroc, 2):>5} "
            f"{_fmt(learned.auroc_as_good, 2):>5} {_fmt(learned.apgr, 2):>5} "
            f"{_fmt(r.router(QUERY_ONLY).apgr, 2):>5} {_fmt(r.router(ORACLE).apgr, 2):>6} "
            f"{avoided:>21} {_fmt(shipped.avoided if shipped else None, 2):>7}"
        )
    lines.append(
        "floor: F1 keeping every answer but the forced escalations, where every curve starts. "
        "AUROC (label 'right') / as-gd (label 'as good as the fallback') / APGR: learned policy, "
        "out of fold; av95: fallback calls avoided at >= 95% of fallback F1; shipped: calls "
        "avoided by --policy at its threshold."
    )
    return "\n".join(lines)


def dump_json(results: Sequence[DatasetResult], path: Path) -> None:
    """Write the results as `analysis.json` does."""
    path.write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")


__all__ = [
    "LABELS",
    "LEARNED",
    "LEARNED_AS_GOOD",
    "LEARNED_FEATURES",
    "LEARNED_POINT",
    "SEED_POINT",
    "SHIPPED_POINT",
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
    "OperatingPoint",
    "RouterResult",
    "TraceArrays",
    "analyze",
    "analyze_files",
    "answerable_split",
    "calibrate",
    "cascade_outcomes",
    "dump_json",
    "escalated_at",
    "fallbacks_in",
    "fit_learned",
    "fit_profile_policy",
    "learned_scores",
    "load_shipped_policy",
    "nested_cv_scores",
    "operating_point",
    "query_only_curve",
    "query_only_outcomes",
    "query_only_scores",
    "shipped_escalations",
    "summary_table",
    "trace_arrays",
]


def _real_fallback(record_sets: Sequence[Sequence[Record]], fallback: str | None) -> str:
    """The real fallback the "as-good" label compares with: `fallback`, or the only one."""
    common = set.intersection(*(set(fallbacks_in(records)) for records in record_sets))
    real = sorted(common - {PERFECT})
    if fallback is not None:
        if fallback not in common:
            raise ValueError(
                f"fallback {fallback!r} is not in every trace record; recorded: "
                f"{', '.join(sorted(common)) or 'none'}"
            )
        return fallback
    if len(real) != 1:
        raise ValueError(
            "the 'as-good' label compares the SLM with a real fallback; "
            + (
                f"the traces hold several ({', '.join(real)}): name one with --fallback"
                if real
                else "these traces hold only the perfect fallback"
            )
        )
    return real[0]


def fit_profile_policy(
    record_sets: Sequence[Sequence[Record]],
    settings: AnalysisSettings | None = None,
    label: str = "right",
    fallback: str | None = None,
) -> tuple[Policy, dict[str, Any]]:
    """Fit the shipped procedure on the pooled answers of several data sets (one task
    profile), and measure it out of fold on each data set.

    `label` is what the policy predicts (see `LABELS`): "right" (the
    default) or "as-good", the SLM's answer at least as good as the real
    fallback's (`fallback`, or the only real one in the traces). The
    out-of-fold AUROC is given for both labels whenever a real fallback is there.

    The out-of-fold scores come from the same procedure run inside an outer
    cross-validation over the pooled answers (stratified by data set and
    outcome); the AUROC per data set counts the forced escalations (failed,
    empty or cut-off answers) as the least confident, as the router treats them.

    Raises:
        ValueError: an unknown label.
    """
    settings = settings or AnalysisSettings()
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; use one of {', '.join(LABELS)}")
    if label == "as-good":
        compared: str | None = _real_fallback(record_sets, fallback)
    else:
        try:
            compared = _real_fallback(record_sets, fallback)
        except ValueError:
            compared = None
    arrays = [trace_arrays(records, compared or PERFECT, settings) for records in record_sets]
    signals = [s for t in arrays for s in t.signals]
    correct = np.concatenate([t.label(label) for t in arrays])
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
        scores[test] = scores_of(policy, list(rows[test]))
    policy, report = fit_learned(list(rows[usable]), correct[usable], settings)
    per_dataset = {}
    for i, t in enumerate(arrays):
        mask = source == i
        best = max(
            SIGNAL_NAMES,
            key=lambda n: metrics.auroc(
                _with_forced(t, SIGNAL_DIRECTIONS[n] * np.nan_to_num(t.signal_matrix[n])),
                t.label(label),
            ),
        )
        best_auc = metrics.auroc(
            _with_forced(t, SIGNAL_DIRECTIONS[best] * np.nan_to_num(t.signal_matrix[best])),
            t.label(label),
        )
        per_dataset[t.dataset] = {
            "n": t.n,
            "slm_right": round(float(t.correct.mean()), 4),
            "out_of_fold_auroc": round(metrics.auroc(scores[mask], correct[mask]), 4),
            "best_single_signal": best,
            "best_single_signal_auroc": round(best_auc, 4),
        }
        if compared is not None:
            per_dataset[t.dataset].update(
                slm_as_good=round(float(t.as_good.mean()), 4),
                out_of_fold_auroc_right=round(metrics.auroc(scores[mask], t.correct), 4),
                out_of_fold_auroc_as_good=round(metrics.auroc(scores[mask], t.as_good), 4),
            )
    info = {
        "slm": arrays[0].slm_model,
        "datasets": [t.dataset for t in arrays],
        "n_answers": int(len(correct)),
        "n_fitted": int(usable.sum()),
        "correct_f1": settings.correct_f1,
        "label": label,
        "label_definition": LABELS[label],
        "fallback": compared,
        "chosen": report.chosen,
        "inner_cv_auroc": report.to_dict()["inner_cv_auroc"],
        "outer_folds_chose": chosen,
        "out_of_fold": per_dataset,
    }
    return policy, info

"""Leave-one-model-out (LOMO) measurement of the model-agnostic policy, and its shipped fit.

The question a new user asks is "does the default work for *my* SLM, which
you never saw?". So for every model M the transfer policy (`TransferPolicy`)
is fitted on the answers of the *other* models only and scored on M's answers,
data set by data set. M's own answers are used without their labels, for the per-model
scale, and out of fold: the answers of each fold are scored on a scale
estimated from the other folds (what a user has: earlier unlabelled answers).

It is compared, on the same answers, with

* the seed thresholds (`ThresholdPolicy()`, today's default for an unknown SLM),
* each single-model policy transferred: the shipped fitting procedure
  (`fit_policy` on raw signals) run on one other model's answers and applied
  to M unchanged,
* the transfer policy on its default scale (no answers of M at all),
* for reference, a policy fitted on M's own labelled answers (5-fold CV), which
  a user only has after labelling.

Numbers: AUROC of the score for "SLM right" (F1 > `correct_f1`), with the
answers the router escalates whatever the policy (failed, empty, cut off)
scored lowest, as the evaluation report does; fallback calls avoided at 95%
of the fallback's F1 (the perfect fallback: the gold answer; and the real
fallback where the traces have one); and the transfer policy at its own
threshold 0.5 (escalation rate, F1 as a share of the fallback's).

Models come from the trace files: the SLM of each file, and every fallback
that recorded its own log-probabilities (Qwen2.5-Coder 1.5B in the Qwen
traces), scored as an SLM against the perfect fallback.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..policies._scoring import scores_of
from ..policies.base import Policy, ThresholdPolicy
from ..policies.fitting import fit_policy
from ..policies.transfer import MIN_SCALE_ANSWERS, TransferPolicy
from ..signals.token import SIGNAL_NAMES, Signals
from . import metrics
from .traces import PERFECT, Record, load_traces

#: The transfer policy, each model's scale estimated out of fold from its own answers.
TRANSFER = "transfer (own scale, out of fold)"
#: The transfer policy on the scale of the model's first answers (in recorded order), as a
#: user gets it by calling `with_scale_from` on the first N answers of their traffic.
TRANSFER_FIRST = "transfer (scale from the first {n} answers)"
#: The transfer policy on its default scale: nothing of the held-out model is used.
TRANSFER_DEFAULT = "transfer (default scale)"
SEED = "seed thresholds"
#: A policy fitted on the held-out model's own labelled answers (cross-validated): a reference.
OWN = "own labels (5-fold CV)"
SINGLE_PREFIX = "fitted on "
#: Shares of the fallback's F1 at which calls avoided are reported.
QUALITY_SHARE = 0.95
L2_GRID: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0)
#: How far below the best inner AUROC a stronger regularisation may be and still be chosen.
L2_TOLERANCE = 0.01
#: The data sets an extractive-QA policy is fitted on.
EXTRACTIVE_DATASETS: tuple[str, ...] = ("squad_v1", "squad_v2")


@dataclass
class ModelAnswers:
    """One model's answers to one data set under one prompt, as an SLM would give them."""

    model: str
    prompt: str
    dataset: str
    source: str
    ids: list[str]
    signals: list[Signals | None]  # None: escalated whatever the policy (failed, empty, cut off)
    f1: np.ndarray
    fallback_f1: dict[str, np.ndarray]
    as_fallback: bool = False  # scored from a fallback's own log-probabilities

    @property
    def n(self) -> int:
        """How many answers."""
        return len(self.ids)

    @property
    def forced(self) -> np.ndarray:
        """Which answers every router escalates (no signals: failed, empty or cut off)."""
        return np.array([s is None for s in self.signals])

    def correct(self, correct_f1: float) -> np.ndarray:
        """Which answers are right: F1 above `correct_f1`."""
        return np.asarray(self.f1 > correct_f1)

    @property
    def key(self) -> str:
        """`model | prompt | data set`, the row's name in the tables."""
        return f"{self.model} | {self.prompt} | {self.dataset}"

    def usable(self) -> list[Signals]:
        """The signals of the answers a policy scores (the forced ones left out)."""
        return [s for s in self.signals if s is not None]


def answer_signals(part: Mapping[str, Any]) -> Signals | None:
    """The Signals of a recorded answer (an SLM's or a fallback's), or None when the router
    escalates it whatever the policy: the call failed, answered nothing or was cut off."""
    if part.get("error") or not str(part.get("raw", "")).strip():
        return None
    stored = part.get("signals")
    if stored is None or part.get("finish_reason") == "length":
        return None
    return Signals(**{name: float(stored[name]) for name in SIGNAL_NAMES if name in stored})


def answers_from_records(records: Sequence[Record], source: str = "") -> list[ModelAnswers]:
    """The SLM's answers of one trace file, plus each fallback that logged its own signals.

    A fallback with log-probabilities (for example Qwen2.5-Coder 1.5B behind the
    0.5B) becomes a model of its own, scored as an SLM against the perfect
    fallback; records that lack it are left out of its answers.
    """
    if not records:
        return []
    first = records[0]
    config = first.get("config", {})
    prompt = str(config.get("prompt", "?"))
    dataset = str(first["dataset"])
    real = sorted({name for r in records for name, fb in r["fallbacks"].items() if name != PERFECT})
    slm = ModelAnswers(
        model=str(config.get("slm", "?")),
        prompt=prompt,
        dataset=dataset,
        source=source,
        ids=[r["id"] for r in records if PERFECT in r["fallbacks"]],
        signals=[answer_signals(r["slm"]) for r in records if PERFECT in r["fallbacks"]],
        f1=np.array([float(r["slm"]["f1"]) for r in records if PERFECT in r["fallbacks"]]),
        fallback_f1={},
    )
    for name in [PERFECT, *real]:
        if all(name in r["fallbacks"] for r in records if PERFECT in r["fallbacks"]):
            slm.fallback_f1[name] = np.array(
                [float(r["fallbacks"][name]["f1"]) for r in records if PERFECT in r["fallbacks"]]
            )
    out = [slm]
    for name in real:
        have = [r for r in records if name in r["fallbacks"] and PERFECT in r["fallbacks"]]
        if not any(r["fallbacks"][name].get("signals") is not None for r in have):
            continue  # an API model without log-probabilities: not an SLM here
        out.append(
            ModelAnswers(
                model=name,
                prompt=prompt,
                dataset=dataset,
                source=f"{source} (fallback {name})",
                ids=[r["id"] for r in have],
                signals=[answer_signals(r["fallbacks"][name]) for r in have],
                f1=np.array([float(r["fallbacks"][name]["f1"]) for r in have]),
                fallback_f1={
                    PERFECT: np.array([float(r["fallbacks"][PERFECT]["f1"]) for r in have])
                },
                as_fallback=True,
            )
        )
    return out


def load_model_answers(paths: Sequence[Path]) -> list[ModelAnswers]:
    """Every model's answers in these trace files (see `answers_from_records`)."""
    out: list[ModelAnswers] = []
    for path in paths:
        out += answers_from_records(load_traces(path), str(path))
    return [a for a in out if a.n]


# -- fitting -------------------------------------------------------------------------------


def _group_weights(groups: Sequence[ModelAnswers]) -> list[float]:
    """Each model weighs 1 in total, shared equally by its files (prompts, data sets)."""
    per_model: dict[str, int] = {}
    for g in groups:
        per_model[g.model] = per_model.get(g.model, 0) + 1
    return [1.0 / per_model[g.model] for g in groups]


def _fit_groups(
    groups: Sequence[ModelAnswers], correct_f1: float, l2: float
) -> TransferPolicy | None:
    usable = [g for g in groups if len(g.usable()) >= MIN_SCALE_ANSWERS]
    if not usable:
        return None
    pairs = [(g.usable(), g.correct(correct_f1)[~g.forced]) for g in usable]
    labels = np.concatenate([y for _, y in pairs])
    if labels.all() or not labels.any():
        return None
    return TransferPolicy.fit(pairs, group_weights=_group_weights(usable), l2=l2)


def choose_l2(
    groups: Sequence[ModelAnswers], correct_f1: float, grid: Sequence[float] = L2_GRID
) -> tuple[float, dict[str, float]]:
    """The L2 strength chosen by leaving each training model out in turn (the same question
    one level down: transfer to a model the fit did not see).

    The strongest regularisation whose mean held-out AUROC is within
    `L2_TOLERANCE` of the best: with three or four models the inner
    estimate is noisy, and a simpler model is the safer bet on a model nobody
    has seen (a one-standard-error rule).
    """
    models = sorted({g.model for g in groups})
    if len(models) < 2:
        return 1.0, {}
    results: dict[str, float] = {}
    for l2 in grid:
        aucs: list[float] = []
        for held in models:
            policy = _fit_groups([g for g in groups if g.model != held], correct_f1, l2)
            if policy is None:
                continue
            for g in groups:
                if g.model != held or len(g.usable()) < MIN_SCALE_ANSWERS:
                    continue
                own = policy.with_scale_from(g.usable())
                aucs.append(metrics.auroc(own.scores(g.usable()), g.correct(correct_f1)[~g.forced]))
        finite = [a for a in aucs if np.isfinite(a)]
        results[f"{l2:g}"] = float(np.mean(finite)) if finite else float("nan")
    top = max(np.nan_to_num(results[f"{v:g}"], nan=-1.0) for v in grid)
    near = [v for v in grid if np.nan_to_num(results[f"{v:g}"], nan=-1.0) >= top - L2_TOLERANCE]
    return float(max(near)), results


def fit_transfer_policy(
    groups: Sequence[ModelAnswers], correct_f1: float = 0.5
) -> tuple[TransferPolicy, dict[str, Any]]:
    """Fit the transfer policy on these models' answers, L2 chosen by inner LOMO.

    Raises:
        ValueError: no model has answers with both outcomes.
    """
    l2, inner = choose_l2(groups, correct_f1)
    policy = _fit_groups(groups, correct_f1, l2)
    if policy is None:
        raise ValueError("cannot fit: need answers with both outcomes from at least one model")
    models = sorted({g.model for g in groups})
    source = f"default: the mean of {len(models)} models' scales ({', '.join(models)})"
    policy = policy.with_scale(replace(policy.scale, source=source))
    return policy, {"l2": l2, "inner_lomo_auroc": {k: _r(v) for k, v in inner.items()}}


# -- scoring -------------------------------------------------------------------------------


def _full(a: ModelAnswers, free_scores: np.ndarray) -> np.ndarray:
    """Scores of every answer: forced ones lowest (-inf), as the router escalates them."""
    out = np.full(a.n, -np.inf)
    out[~a.forced] = free_scores
    return out


def _folds(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    fold = np.arange(n) % k
    rng.shuffle(fold)
    return fold


def own_scale_scores(policy: TransferPolicy, a: ModelAnswers, folds: int, seed: int) -> np.ndarray:
    """Scores of a's answers, each fold on a scale estimated from the other folds (no labels)."""
    rows = np.array(a.signals, dtype=object)
    fold = _folds(a.n, folds, seed)
    out = np.full(a.n, -np.inf)
    for k in range(folds):
        test = (fold == k) & ~a.forced
        if not test.any():
            continue
        others = [s for s in rows[(fold != k) & ~a.forced]]
        scaled = policy.with_scale_from(others) if len(others) >= MIN_SCALE_ANSWERS else policy
        out[test] = scaled.scores(list(rows[test]))
    return out


def own_cv_scores(a: ModelAnswers, correct_f1: float, folds: int, seed: int) -> np.ndarray:
    """Reference: the shipped procedure (logistic, inner CV) fitted on a's own labelled answers."""
    y = a.correct(correct_f1)
    rows = np.array(a.signals, dtype=object)
    fold = _folds(a.n, folds, seed + 1)
    out = np.full(a.n, -np.inf)
    for k in range(folds):
        train, test = (fold != k) & ~a.forced, (fold == k) & ~a.forced
        if not test.any():
            continue
        if train.sum() < 2 * folds or y[train].all() or not y[train].any():
            out[test] = float(y[train].mean()) if train.any() else 0.5
            continue
        policy, _ = fit_policy(
            list(rows[train]), y[train], families=("logistic",), inner_folds=folds, seed=seed
        )
        out[test] = scores_of(policy, list(rows[test]))
    return out


@dataclass
class RouterNumbers:
    """One router on one model's answers to one data set."""

    name: str
    auroc: float
    auroc_decided: float  # over the answers the policy decides (forced ones left out)
    avoided: dict[str, float]  # fallback name -> calls avoided at QUALITY_SHARE of its F1
    at_threshold: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "auroc": _r(self.auroc),
            "auroc_decided_answers": _r(self.auroc_decided),
            "calls_avoided_at_95pct": {k: _r(v) for k, v in self.avoided.items()},
            "at_threshold": {k: _r(v) for k, v in self.at_threshold.items()},
        }


def _r(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def calls_avoided(scores: np.ndarray, a: ModelAnswers, fallback: str) -> float:
    """Share of fallback calls avoided at >= 95% of the fallback's F1, escalating lowest first.

    Forced answers are always escalated: they count as calls and can never be avoided.
    """
    fb = a.fallback_f1[fallback]
    forced = a.forced
    keep = np.where(forced, fb, a.f1)
    zeros = np.zeros(a.n)
    curve = metrics.score_curve(scores, metrics.Outcomes(keep, fb, zeros, zeros + 1.0))
    avoided = metrics.calls_avoided(curve, float(fb.mean()), QUALITY_SHARE)
    return min(avoided, 1.0 - float(forced.mean())) if np.isfinite(avoided) else avoided


def router_numbers(
    name: str,
    scores: np.ndarray,
    a: ModelAnswers,
    correct_f1: float,
    threshold: float | None = None,
) -> RouterNumbers:
    y = a.correct(correct_f1)
    free = ~a.forced
    numbers = RouterNumbers(
        name=name,
        auroc=metrics.auroc(scores, y),
        auroc_decided=metrics.auroc(scores[free], y[free]),
        avoided={fb: calls_avoided(scores, a, fb) for fb in a.fallback_f1},
    )
    if threshold is not None:
        esc = a.forced | (scores < threshold)
        for fb, fb_f1 in a.fallback_f1.items():
            f1 = np.where(esc, fb_f1, a.f1)
            share = float(f1.mean() / fb_f1.mean()) if fb_f1.mean() > 0 else float("nan")
            numbers.at_threshold[f"f1_share_of_{fb}"] = share
        numbers.at_threshold["escalation_rate"] = float(esc.mean())
        numbers.at_threshold["threshold"] = threshold
    return numbers


@dataclass
class HeldOut:
    """Every router on one held-out model's answers to one data set."""

    answers: ModelAnswers
    right_share: float
    routers: list[RouterNumbers]
    l2: float
    #: AUROC of the transfer policy on the scale of the first N answers, N -> AUROC.
    scale_sweep: dict[int, float] = field(default_factory=dict)
    #: 95% bootstrap interval (over questions, paired) of AUROC(transfer) - AUROC(seed).
    auroc_gain_ci: tuple[float, float] = (float("nan"), float("nan"))

    def router(self, name: str) -> RouterNumbers:
        """The numbers of the router `name`; raises `StopIteration` when there is none."""
        return next(r for r in self.routers if r.name == name)

    def single_model(self) -> list[RouterNumbers]:
        """The policies fitted on one other model each."""
        return [r for r in self.routers if r.name.startswith(SINGLE_PREFIX)]

    def to_dict(self) -> dict[str, Any]:
        a = self.answers
        return {
            "model": a.model,
            "prompt": a.prompt,
            "dataset": a.dataset,
            "source": a.source,
            "n": a.n,
            "forced": int(a.forced.sum()),
            "slm_right": _r(self.right_share),
            "slm_f1": _r(float(a.f1.mean())),
            "fallback_f1": {k: _r(float(v.mean())) for k, v in a.fallback_f1.items()},
            "l2": self.l2,
            "auroc_by_scale_answers": {str(k): _r(v) for k, v in self.scale_sweep.items()},
            "auroc_gain_over_seed_ci95": [_r(v) for v in self.auroc_gain_ci],
            "routers": [r.to_dict() for r in self.routers],
        }


@dataclass
class TransferSettings:
    """Knobs of the LOMO measurement."""

    correct_f1: float = 0.5
    folds: int = 5
    seed: int = 0
    #: Data sets the policies are fitted on (the held-out model is scored on every data set).
    fit_datasets: tuple[str, ...] = EXTRACTIVE_DATASETS
    #: Also fit each other model alone and transfer it (the slowest part: trees, inner CV).
    single_model: bool = True
    own_cv: bool = True
    #: Answers (in recorded order) the "first N" scale is estimated from.
    first_n: int = 50
    #: Bootstrap resamples of the AUROC gain over the seed thresholds (0: none).
    bootstrap: int = 1000
    #: What is held out at a time: one "model", or a whole "family" (every size of it).
    hold_out: str = "model"
    #: The sizes of the "how many unlabelled answers does the scale need" sweep.
    scale_sizes: tuple[int, ...] = (10, 20, 50, 100, 200)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self).items()}


def auroc_gain_ci(
    scores: np.ndarray, baseline: np.ndarray, labels: np.ndarray, resamples: int, seed: int
) -> tuple[float, float]:
    """95% paired bootstrap interval of AUROC(scores) - AUROC(baseline) over questions."""

    def gain(idx: np.ndarray) -> float:
        y = labels[idx]
        return metrics.auroc(scores[idx], y) - metrics.auroc(baseline[idx], y)

    return metrics.bootstrap_ci(gain, len(labels), resamples, seed)


def _fit_single(groups: Sequence[ModelAnswers], settings: TransferSettings) -> Policy | None:
    rows: list[Signals] = []
    labels: list[np.ndarray] = []
    for g in groups:
        rows += g.usable()
        labels.append(g.correct(settings.correct_f1)[~g.forced])
    y = np.concatenate(labels) if labels else np.zeros(0, dtype=bool)
    if len(rows) < 2 * settings.folds or y.all() or not y.any():
        return None
    policy, _ = fit_policy(rows, y, inner_folds=settings.folds, seed=settings.seed + 101)
    return policy


_SIZE_SUFFIX = re.compile(r"[-_:]\d+(\.\d+)?[bm](-.*)?$", re.IGNORECASE)


def family_of(model: str) -> str:
    """The model family: the name without its size ("qwen2.5-coder-0.5b" -> "qwen2.5-coder")."""
    return _SIZE_SUFFIX.sub("", model) or model


def lomo(answers: Sequence[ModelAnswers], settings: TransferSettings) -> list[HeldOut]:
    """Leave each model (or family) out in turn: fit on the others, score it on each of its
    data sets. Single-model policies of the held-out family are left out too."""
    fit_on = [a for a in answers if a.dataset in settings.fit_datasets]
    models = sorted({a.model for a in answers})

    def unit(model: str) -> str:
        return family_of(model) if settings.hold_out == "family" else model

    singles: dict[str, Policy | None] = {}
    if settings.single_model:
        for m in models:
            singles[m] = _fit_single([a for a in fit_on if a.model == m], settings)
    out: list[HeldOut] = []
    for held in sorted({unit(m) for m in models}):
        training = [a for a in fit_on if unit(a.model) != held]
        if not training:
            continue
        policy, info = fit_transfer_policy(training, settings.correct_f1)
        for a in answers:
            if unit(a.model) != held:
                continue
            y = a.correct(settings.correct_f1)
            rows = a.usable()
            own = own_scale_scores(policy, a, settings.folds, settings.seed)
            early = [r for r in a.signals[: settings.first_n] if r is not None]
            first = policy.with_scale_from(early, min_answers=1) if early else policy
            routers = [
                router_numbers(TRANSFER, own, a, settings.correct_f1, policy.threshold),
                router_numbers(
                    TRANSFER_FIRST.format(n=settings.first_n),
                    _full(a, first.scores(rows)),
                    a,
                    settings.correct_f1,
                    policy.threshold,
                ),
                router_numbers(
                    TRANSFER_DEFAULT,
                    _full(a, policy.scores(rows)),
                    a,
                    settings.correct_f1,
                    policy.threshold,
                ),
                router_numbers(
                    SEED,
                    _full(a, scores_of(ThresholdPolicy(), rows)),
                    a,
                    settings.correct_f1,
                    ThresholdPolicy().threshold,
                ),
            ]
            for other, single in singles.items():
                if unit(other) == held or single is None:
                    continue
                routers.append(
                    router_numbers(
                        SINGLE_PREFIX + other,
                        _full(a, scores_of(single, rows)),
                        a,
                        settings.correct_f1,
                        single.threshold,
                    )
                )
            if settings.own_cv:
                routers.append(
                    router_numbers(
                        OWN,
                        own_cv_scores(a, settings.correct_f1, settings.folds, settings.seed),
                        a,
                        settings.correct_f1,
                    )
                )
            sweep: dict[int, float] = {}
            for size in settings.scale_sizes:
                early = [r for r in a.signals[:size] if r is not None]
                if len(early) >= MIN_SCALE_ANSWERS and size <= a.n:
                    scaled = policy.with_scale_from(early)
                    sweep[size] = metrics.auroc(_full(a, scaled.scores(rows)), y)
            seed_scores = _full(a, scores_of(ThresholdPolicy(), rows))

            ci = auroc_gain_ci(own, seed_scores, y, settings.bootstrap, settings.seed + 7)
            out.append(HeldOut(a, float(y.mean()), routers, float(info["l2"]), sweep, ci))
    return out


# -- verdicts and tables -------------------------------------------------------------------

#: The issue's target: held-out AUROC on SQuAD v1.1 for every model right often enough.
TARGET_AUROC = 0.80
TARGET_MIN_RIGHT = 0.20
TARGET_DATASET = "squad_v1"


def verdicts(results: Sequence[HeldOut]) -> list[dict[str, Any]]:
    """Per held-out model and data set: does the transfer policy meet the targets?"""

    def not_below(t: RouterNumbers, s: RouterNumbers) -> bool:
        return all(
            not (np.isfinite(s.avoided[fb]) and np.isfinite(t.avoided[fb]))
            or t.avoided[fb] >= s.avoided[fb] - 1e-9
            for fb in t.avoided
        )

    out = []
    for h in results:
        t, d, s = h.router(TRANSFER), h.router(TRANSFER_DEFAULT), h.router(SEED)
        row: dict[str, Any] = {
            "key": h.answers.key,
            "auroc_vs_seed": _r(t.auroc - s.auroc),
            "auroc_vs_seed_ci95": [_r(v) for v in h.auroc_gain_ci],
            "beats_seed_auroc": bool(t.auroc >= s.auroc),
            "not_below_seed_calls_avoided": not_below(t, s),
            "default_scale_auroc_vs_seed": _r(d.auroc - s.auroc),
            "default_scale_not_below_seed_calls_avoided": not_below(d, s),
        }
        if h.answers.dataset == TARGET_DATASET and h.right_share >= TARGET_MIN_RIGHT:
            row["auroc_target"] = TARGET_AUROC
            row["meets_auroc_target"] = bool(t.auroc >= TARGET_AUROC)
        out.append(row)
    return out


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _ci(pair: Sequence[float | None]) -> str:
    low, high = pair
    if low is None or high is None:
        return "-"
    return f"{low:+.3f} to {high:+.3f}"


def _pct(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.0f}%"


def markdown(results: Sequence[HeldOut], settings: TransferSettings, command: str = "") -> str:
    """The LOMO tables: AUROC, calls avoided, the operating point at 0.5, verdicts."""
    lines = [
        "# Leave-one-model-out: the model-agnostic policy on models it never saw",
        "",
        "Each row is one model's answers to one data set, scored by policies fitted "
        f"*without that {settings.hold_out}* on {', '.join(settings.fit_datasets)} of the "
        "other models. "
        f"'{TRANSFER}': the transfer policy with the model's log-prob scale estimated from "
        f"its own unlabelled answers ({settings.folds} folds: each fold on the scale of the "
        f"others); 'first {settings.first_n}': the scale of its first {settings.first_n} "
        "answers in recorded order (what `with_scale_from` gets from a user's first answers); "
        "'default scale': no answer of the model used at all; "
        f"'{SEED}': `ThresholdPolicy()`; 'best single': the best of the policies fitted on one "
        "other model alone (the shipped procedure, raw signals) and applied unchanged; "
        f"'{OWN}': a reference that needs the model's own labels. Right = F1 > "
        f"{settings.correct_f1:g}. AUROC counts the answers escalated whatever the policy "
        "(failed, empty, cut off) as lowest scored.",
        "",
        "## AUROC (SLM right)",
        "",
        f"| model | prompt | data set | n | right | transfer | first {settings.first_n} "
        "| default scale | seed | best single (fitted on) | worst single | own CV |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for h in results:
        a = h.answers
        singles = h.single_model()
        best = max(singles, key=lambda r: np.nan_to_num(r.auroc, nan=-1)) if singles else None
        worst = min(singles, key=lambda r: np.nan_to_num(r.auroc, nan=2)) if singles else None
        own = [r for r in h.routers if r.name == OWN]
        lines.append(
            f"| {a.model} | {a.prompt} | {a.dataset} | {a.n} | {_pct(h.right_share)} "
            f"| **{_f(h.router(TRANSFER).auroc)}** "
            f"| {_f(h.router(TRANSFER_FIRST.format(n=settings.first_n)).auroc)} "
            f"| {_f(h.router(TRANSFER_DEFAULT).auroc)} "
            f"| {_f(h.router(SEED).auroc)} "
            f"| {_f(best.auroc) if best else '-'}"
            f"{' (' + best.name[len(SINGLE_PREFIX) :] + ')' if best else ''} "
            f"| {_f(worst.auroc) if worst else '-'} "
            f"| {_f(own[0].auroc) if own else '-'} |"
        )
    lines += [
        "",
        f"## Fallback calls avoided at {QUALITY_SHARE:.0%} of the fallback's F1",
        "",
        "`perfect` is the gold answer (an upper bound on a large model); a named fallback is "
        "the real one recorded in the traces.",
        "",
        "| model | prompt | data set | fallback | transfer | transfer, default scale | seed "
        "| best single | own CV |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for h in results:
        a = h.answers
        singles = h.single_model()
        own = [r for r in h.routers if r.name == OWN]
        for fb in a.fallback_f1:
            best_single = max(
                (r.avoided[fb] for r in singles if np.isfinite(r.avoided[fb])), default=None
            )
            lines.append(
                f"| {a.model} | {a.prompt} | {a.dataset} | {fb} "
                f"| **{_pct(h.router(TRANSFER).avoided[fb])}** "
                f"| {_pct(h.router(TRANSFER_DEFAULT).avoided[fb])} "
                f"| {_pct(h.router(SEED).avoided[fb])} | {_pct(best_single)} "
                f"| {_pct(own[0].avoided[fb]) if own else '-'} |"
            )
    lines += [
        "",
        "## At their own thresholds: the transfer policy at 0.5, the seed at 0",
        "",
        "Escalation rate (forced answers included) and F1 as a share of the perfect "
        "fallback's, as the Router would run them with no calibration.",
        "",
        "| model | prompt | data set | right | transfer: escalated | F1 share "
        "| default scale: escalated | F1 share | seed: escalated | F1 share |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in results:
        a = h.answers
        key = f"f1_share_of_{PERFECT}"
        cells = []
        for name in (TRANSFER, TRANSFER_DEFAULT, SEED):
            at = h.router(name).at_threshold
            cells.append(f"{_pct(at.get('escalation_rate'))} | {_pct(at.get(key))}")
        lines.append(
            f"| {a.model} | {a.prompt} | {a.dataset} | {_pct(h.right_share)} | "
            + " | ".join(cells)
            + " |"
        )
    sizes = settings.scale_sizes
    lines += [
        "",
        "## How many unlabelled answers the scale needs",
        "",
        "AUROC of the transfer policy with the scale estimated from the model's first N "
        "answers (in recorded order, labels unused), against the default scale (no answers).",
        "",
        "| model | prompt | data set | default | " + " | ".join(f"N={n}" for n in sizes) + " |",
        "|---|---|---|---:|" + "---:|" * len(sizes),
    ]
    for h in results:
        a = h.answers
        lines.append(
            f"| {a.model} | {a.prompt} | {a.dataset} | {_f(h.router(TRANSFER_DEFAULT).auroc)} | "
            + " | ".join(_f(h.scale_sweep.get(n)) for n in sizes)
            + " |"
        )
    lines += ["", "## Against the targets", ""]
    for v in verdicts(results):
        parts = [
            f"AUROC {'>=' if v['beats_seed_auroc'] else '<'} seed ({v['auroc_vs_seed']:+.3f}, "
            f"95% CI {_ci(v['auroc_vs_seed_ci95'])})"
            if v["auroc_vs_seed"] is not None
            else "AUROC vs seed: -",
            "calls avoided "
            + ("not below seed" if v["not_below_seed_calls_avoided"] else "BELOW seed"),
        ]
        d = v["default_scale_auroc_vs_seed"]
        parts.append(
            "default scale: AUROC "
            + ("-" if d is None else f"{d:+.3f}")
            + " vs seed, calls avoided "
            + ("not below" if v["default_scale_not_below_seed_calls_avoided"] else "BELOW")
            + " seed"
        )
        if "meets_auroc_target" in v:
            parts.append(
                f"target AUROC >= {TARGET_AUROC:.2f}: "
                + ("met" if v["meets_auroc_target"] else "MISSED")
            )
        lines.append(f"- {v['key']}: " + "; ".join(parts))
    if command:
        lines += ["", "Made with:", "", "```", command, "```"]
    return "\n".join(lines) + "\n"


def write_lomo(
    results: Sequence[HeldOut],
    out: Path,
    settings: TransferSettings,
    command: str = "",
    stem: str = "transfer",
) -> tuple[Path, Path]:
    """Write `STEM.md` and `STEM.json` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / f"{stem}.md", out / f"{stem}.json"
    md.write_text(markdown(results, settings, command))
    js.write_text(
        json.dumps(
            {
                "settings": settings.to_dict(),
                "command": command,
                "results": [h.to_dict() for h in results],
                "verdicts": verdicts(results),
            },
            indent=1,
        )
        + "\n"
    )
    return md, js


def lomo_summary(results: Sequence[HeldOut]) -> list[dict[str, Any]]:
    """The LOMO numbers a shipped policy file records in `fitted_on`."""
    rows = []
    for h in results:
        t, s = h.router(TRANSFER), h.router(SEED)
        rows.append(
            {
                "model": h.answers.model,
                "prompt": h.answers.prompt,
                "dataset": h.answers.dataset,
                "n": h.answers.n,
                "slm_right": _r(h.right_share),
                "auroc": _r(t.auroc),
                "auroc_default_scale": _r(h.router(TRANSFER_DEFAULT).auroc),
                "seed_auroc": _r(s.auroc),
                "calls_avoided_at_95pct": {k: _r(v) for k, v in t.avoided.items()},
                "seed_calls_avoided_at_95pct": {k: _r(v) for k, v in s.avoided.items()},
            }
        )
    return rows


def shipped_document(
    answers: Sequence[ModelAnswers],
    settings: TransferSettings,
    results: Sequence[HeldOut],
    *,
    name: str = "any-slm/extractive-qa",
    description: str = "",
    family_results: Sequence[HeldOut] | None = None,
) -> dict[str, Any]:
    """Fit the transfer policy on every model's answers and wrap it as a shipped policy file.

    `results` (and `family_results`, families held out) are the LOMO
    measurements recorded in `fitted_on`.
    """
    fit_on = [a for a in answers if a.dataset in settings.fit_datasets]
    policy, info = fit_transfer_policy(fit_on, settings.correct_f1)
    models = sorted({a.model for a in fit_on})
    prompts = sorted({a.prompt for a in fit_on})
    _, _, profile = name.partition("/")
    what = (
        f" Fitted on {sum(a.n for a in fit_on)} answers of {', '.join(models)} "
        f"({', '.join(prompts)} prompts; {', '.join(sorted({a.dataset for a in fit_on}))})."
    )
    return {
        "name": name,
        "slm": None,
        "profile": profile or None,
        "description": description
        or (
            f"Model-agnostic: P(answer right, F1 > {settings.correct_f1:g}) from context "
            "signals and log-prob signals placed among the SLM's own answers (per-model "
            "quantiles, no labels needed). The default scale is the mean of the "
            f"{len(models)} training models'; with_scale_from(Signals of your SLM's first "
            "answers) puts it on your SLM's scale. Threshold 0.5: keep when judged more "
            "likely right than wrong." + what
        ),
        "fitted_on": {
            "models": models,
            "datasets": sorted({a.dataset for a in fit_on}),
            "prompts": sorted({a.prompt for a in fit_on}),
            "files": [
                {"model": a.model, "prompt": a.prompt, "dataset": a.dataset, "n": a.n}
                for a in fit_on
            ],
            "n_answers": int(sum(a.n for a in fit_on)),
            "correct_f1": settings.correct_f1,
            **info,
            "leave_one_model_out": lomo_summary(results),
            "verdicts": verdicts(results),
            **(
                {
                    "leave_one_family_out": lomo_summary(family_results),
                    "family_verdicts": verdicts(family_results),
                }
                if family_results is not None
                else {}
            ),
        },
        "policy": policy.to_dict(),
    }


def run_transfer(
    paths: Sequence[Path],
    settings: TransferSettings,
    out: Path,
    *,
    write_policy: Path | None = None,
    name: str = "any-slm/extractive-qa",
    description: str = "",
    command: str = "",
) -> list[Path]:
    """Everything `confidence-router eval transfer` does; returns the files written.

    The LOMO tables go to `out/transfer.{md,json}`; when some family has
    several models (the Qwen pair), the stricter leave-one-family-out tables
    to `out/transfer-family.{md,json}` as well. With `write_policy` the
    policy fitted on every model is written there, both measurements inside.

    Raises:
        ValueError: the answers of fewer than two models.
    """
    answers = load_model_answers(paths)
    models = {a.model for a in answers}
    if len(models) < 2:
        raise ValueError("leave-one-model-out needs the answers of at least two models")
    written: list[Path] = []
    results = lomo(answers, replace(settings, hold_out="model"))
    written += write_lomo(results, out, replace(settings, hold_out="model"), command)
    family_results = None
    if len({family_of(m) for m in models}) < len(models):
        family_settings = replace(settings, hold_out="family")
        family_results = lomo(answers, family_settings)
        written += write_lomo(family_results, out, family_settings, command, "transfer-family")
    if write_policy is not None:
        document = shipped_document(
            answers,
            settings,
            results,
            name=name,
            description=description,
            family_results=family_results,
        )
        document["fitted_on"]["command"] = command
        write_policy.parent.mkdir(parents=True, exist_ok=True)
        write_policy.write_text(json.dumps(document, indent=1) + "\n")
        written.append(write_policy)
    return written


__all__ = [
    "HeldOut",
    "ModelAnswers",
    "TransferSettings",
    "answer_signals",
    "answers_from_records",
    "auroc_gain_ci",
    "family_of",
    "calls_avoided",
    "choose_l2",
    "fit_transfer_policy",
    "load_model_answers",
    "lomo",
    "markdown",
    "run_transfer",
    "shipped_document",
    "verdicts",
    "write_lomo",
]

"""Calibrate and compare ladders (cascades of N models) offline, from traces of every model.

Every model of a ladder answered the same questions (joined by data set and
question id). A ladder's small models are scored by a policy each (the seed
`ThresholdPolicy`, or a policy fitted with `fit_policy` on that model's own
signals, out of fold); stage `k` keeps its answer when its score is at least
`t_k`, else the question climbs; the last model (the top) answers the rest.

**Joint thresholds with a guarantee.** The loss of a question is how much
F1 the ladder's answer loses against the top model's answer,
`max(0, F1_top - F1_ladder)` (in [0, 1]; its mean bounds the mean F1 drop
from above). The thresholds of all stages are chosen together by
Learn-then-Test (Angelopoulos et al. 2021, arXiv:2110.01052), with the same
Hoeffding-Bentkus p-values `confidence-router calibrate` uses for losses in
[0, 1]. The candidates are a grid of threshold vectors (per stage: quantiles
of its scores on a *fit* split, plus "escalate everything"). Two
multiple-testing procedures over that grid:

* `fixed-sequence` (default): on the fit split, order the grid from safest to
  riskiest (a path of points, each with a lower top-model share than the one
  before and the lowest fit-split loss for that share) and test along it on
  the calibration split, each at level delta, stopping at the first failure.
  The order does not depend on the calibration data, so the family-wise
  error stays at most delta;
* `bonferroni`: every grid point tested at delta / |grid|.

Among the certified points the one with the fewest top-model calls on the
calibration split is chosen; none certified means "top model only" (loss 0).
Guarantee: if the calibration questions are an i.i.d. sample of the traffic,
with probability at least 1 - delta the chosen thresholds' expected loss is at
most epsilon. `guarantee_study` checks it over random splits as
`confidence_router.eval.guarantee` does for two models.

**Comparison.** For the full ladder, every two-stage cascade (one small model,
then the top) and the top alone: top-model calls avoided, wall time (sum of
`latency_s` of the models a question reached) and tokens per model at the
operating point with the most calls avoided while mean F1 stays >= 95% of the
top model's (thresholds chosen on the same questions: optimistic, a frontier,
not a promise), and AIQ (area under the cost-quality hull, RouterBench) with
stated per-token prices. Tokens and cost are over the questions whose token
counts were all reported (a `null` count is unknown, not 0); the report says
how many it left out.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration.calibrate import binomial_cdf, policy_scores, wilson_interval
from ..policies.base import LogisticPolicy, ThresholdPolicy
from ..policies.fitting import fit_policy, stratified_folds
from ..signals.token import SIGNAL_NAMES, Signals
from ._markdown import DATASET_TITLES
from .counts import token_counts, unreported_note
from .metrics import Curve, aiq
from .traces import load_traces

Key = tuple[str, str]
#: Assumed prices, per million tokens (input, output): proportional to parameter count.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gemma3-270m": (0.027, 0.027),
    "qwen2.5-coder-0.5b": (0.05, 0.05),
    "qwen2.5-coder-1.5b": (0.15, 0.15),
}


@dataclass(frozen=True)
class Answer:
    """One model's answer to one question, as the ladder needs it."""

    f1: float
    signals: Signals | None  # None: the call failed or the answer was empty (always escalated)
    prompt_tokens: float  # NaN: not reported (never 0)
    completion_tokens: float
    latency_s: float | None


def _signals(raw: Mapping[str, Any] | None) -> Signals | None:
    if not raw:
        return None
    return Signals(**{n: float(raw[n]) for n in SIGNAL_NAMES if n in raw})


def _answer(part: Mapping[str, Any]) -> Answer:
    failed = bool(part.get("error")) or part.get("completion_tokens") == 0
    if part.get("raw") is not None and not str(part.get("raw")).strip():
        failed = True
    prompt, completion = token_counts(part)
    return Answer(
        f1=float(part.get("f1") or 0.0),
        signals=None if failed else _signals(part.get("signals")),
        prompt_tokens=prompt,
        completion_tokens=completion,
        latency_s=None if part.get("latency_s") is None else float(part["latency_s"]),
    )


@dataclass
class AnswerBook:
    """Every recorded answer, by model and question, with the prompt each model was given."""

    answers: dict[str, dict[Key, Answer]] = field(default_factory=dict)
    prompts: dict[str, set[str]] = field(default_factory=dict)

    def add(self, model: str, key: Key, answer: Answer, prompt: str) -> None:
        """Keep one model's answer to one question, with the prompt it answered."""
        self.answers.setdefault(model, {})[key] = answer
        self.prompts.setdefault(model, set()).add(prompt)


def load_answers(
    paths: Sequence[Path], prompt: str | None = "rag-v2", prompt_for: Mapping[str, str] = {}
) -> AnswerBook:
    """The answers of every model in the trace files (SLM answers and real fallbacks).

    Only records whose prompt is `prompt` (or `prompt_for[model]`) count;
    `None` takes any prompt.
    """
    book = AnswerBook()
    for path in paths:
        for record in load_traces(path):
            config = record.get("config") or {}
            used = str(config.get("prompt", "?"))
            key = (str(record.get("dataset", "?")), str(record["id"]))
            slm_model = str(config.get("slm", "slm"))
            parts = [(slm_model, record.get("slm") or {})]
            for name, part in (record.get("fallbacks") or {}).items():
                if name != "perfect" and isinstance(part, dict):
                    parts.append((str(part.get("model") or name), part))
            for model, part in parts:
                wanted = prompt_for.get(model, prompt)
                if wanted is None or used == wanted:
                    book.add(model, key, _answer(part), used)
    return book


@dataclass
class Joined:
    """The questions every model of a ladder answered, as arrays (rows: questions)."""

    dataset: str
    models: tuple[str, ...]
    keys: list[Key]
    f1: np.ndarray  # (n, m)
    signals: list[list[Signals | None]]  # per small model (m - 1), per question
    prompt_tokens: np.ndarray  # (n, m), NaN: not reported
    completion_tokens: np.ndarray  # (n, m), NaN: not reported
    latency: np.ndarray  # (n, m), a missing latency filled with that model's median

    @property
    def n(self) -> int:
        """How many questions."""
        return len(self.keys)

    def take(self, idx: np.ndarray) -> Joined:
        """Returns the questions at positions `idx`."""
        return Joined(
            self.dataset,
            self.models,
            [self.keys[i] for i in idx],
            self.f1[idx],
            [[col[i] for i in idx] for col in self.signals],
            self.prompt_tokens[idx],
            self.completion_tokens[idx],
            self.latency[idx],
        )

    def sub(self, models: Sequence[str]) -> Joined:
        """The same questions, a sub-ladder (its last model must be this ladder's top)."""
        cols = [self.models.index(m) for m in models]
        return Joined(
            self.dataset,
            tuple(models),
            list(self.keys),
            self.f1[:, cols],
            [self.signals[c] for c in cols[:-1]],
            self.prompt_tokens[:, cols],
            self.completion_tokens[:, cols],
            self.latency[:, cols],
        )


def join(book: AnswerBook, models: Sequence[str], dataset: str) -> Joined:
    """Questions of `dataset` answered by every model in `models`, in a stable order.

    Raises:
        ValueError: a model has no answers in the traces.
    """
    missing = [m for m in models if m not in book.answers]
    if missing:
        known = ", ".join(sorted(book.answers)) or "none"
        raise ValueError(f"no answers of {', '.join(missing)} in the traces (models: {known})")
    common = set.intersection(*({k for k in book.answers[m] if k[0] == dataset} for m in models))
    keys = sorted(common)
    rows = [[book.answers[m][k] for m in models] for k in keys]
    lat = np.array(
        [[np.nan if a.latency_s is None else a.latency_s for a in r] for r in rows], dtype=float
    ).reshape(len(keys), len(models))
    for j in range(len(models)):
        col = lat[:, j]
        if np.isnan(col).any():
            fill = float(np.nanmedian(col)) if np.isfinite(col).any() else 0.0
            col[np.isnan(col)] = fill
    return Joined(
        dataset=dataset,
        models=tuple(models),
        keys=keys,
        f1=np.array([[a.f1 for a in r] for r in rows], dtype=float).reshape(len(keys), len(models)),
        signals=[[r[j].signals for r in rows] for j in range(len(models) - 1)],
        prompt_tokens=np.array([[a.prompt_tokens for a in r] for r in rows], dtype=float).reshape(
            len(keys), len(models)
        ),
        completion_tokens=np.array(
            [[a.completion_tokens for a in r] for r in rows], dtype=float
        ).reshape(len(keys), len(models)),
        latency=lat,
    )


# -- scores -----------------------------------------------------------------------------------


def seed_scores(data: Joined) -> np.ndarray:
    """(n, m - 1) scores of the seed ThresholdPolicy (-inf: failed, always escalated)."""
    policy = ThresholdPolicy.seed()
    cols = [policy_scores(policy, col) for col in data.signals]
    return np.stack(cols, axis=1) if cols else np.zeros((data.n, 0))


def oof_scores(
    data: Joined, *, folds: int = 5, seed: int = 0, correct_f1: float = 0.5
) -> np.ndarray:
    """(n, m - 1) out-of-fold scores of `fit_policy` fitted on each model's own signals
    (label: that model's answer is right, F1 > `correct_f1`)."""
    out = np.full((data.n, len(data.signals)), -np.inf)
    for j, col in enumerate(data.signals):
        right = data.f1[:, j] > correct_f1
        fold = stratified_folds(right, folds, seed)
        for k in range(folds):
            train = [i for i in np.flatnonzero(fold != k) if col[i] is not None]
            test = np.flatnonzero(fold == k)
            y = right[train]
            if len(train) < 20 or y.all() or not y.any():
                continue  # too few to fit: this fold's answers are always escalated
            rows = [col[i] for i in train]
            assert all(r is not None for r in rows)
            policy, _ = fit_policy(rows, y, seed=seed)  # type: ignore[arg-type]
            out[test, j] = policy_scores(policy, [col[i] for i in test])
    return out


def fitted_scores(fit: Joined, data: Joined) -> np.ndarray:
    """(n, m - 1) scores of `data` under a LogisticPolicy per stage fitted on `fit` (as the
    two-model guarantee study does); a stage it cannot fit scores -inf (escalates)."""
    cols = []
    for j in range(len(data.signals)):
        usable = [i for i, s in enumerate(fit.signals[j]) if s is not None]
        y = fit.f1[usable, j] > 0.5
        if len(usable) < 2 or y.all() or not y.any():
            cols.append(np.full(data.n, -np.inf))
            continue
        rows = [r for r in (fit.signals[j][i] for i in usable) if r is not None]
        policy = LogisticPolicy.fit(rows, y)
        cols.append(policy_scores(policy, data.signals[j]))
    return np.stack(cols, axis=1) if cols else np.zeros((data.n, 0))


# -- simulating a ladder at given thresholds ------------------------------------------------------


def answered_stage(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Index of the stage that answers each question at each threshold vector.

    `scores`: (n, s) for s small models; `thresholds`: (p, s). Returns (p, n),
    values in 0..s (s: the top model).
    """
    s = scores.shape[1]
    if s == 0:
        return np.zeros((len(thresholds), scores.shape[0]), dtype=int)
    kept = scores[None, :, :] >= thresholds[:, None, :]  # (p, n, s)
    first = np.argmax(kept, axis=2)
    return np.asarray(np.where(kept.any(axis=2), first, s))


def losses(f1: np.ndarray, stage: np.ndarray) -> np.ndarray:
    """(p, n) loss against the top model: max(0, F1_top - F1 of the answering stage)."""
    got = np.take_along_axis(f1[None, :, :].repeat(len(stage), 0), stage[:, :, None], 2)[..., 0]
    return np.asarray(np.clip(f1[None, :, -1] - got, 0.0, 1.0))


def threshold_grid(scores: np.ndarray, points: int) -> np.ndarray:
    """(p, s) threshold vectors: per stage, `points` quantiles of its finite scores plus
    +inf (escalate everything); every combination."""
    axes: list[np.ndarray] = []
    for j in range(scores.shape[1]):
        finite = scores[np.isfinite(scores[:, j]), j]
        qs = np.unique(np.quantile(finite, np.linspace(0, 1, points))) if len(finite) else finite
        axes.append(np.concatenate([np.asarray(qs, dtype=float), [np.inf]]))
    if not axes:
        return np.zeros((1, 0))
    return np.array(list(itertools.product(*axes)), dtype=float)


def hb_pvalues(mean_loss: np.ndarray, n: int, max_loss: float) -> np.ndarray:
    """Hoeffding-Bentkus p-values of H0 "expected loss > max_loss", vectorised; the same
    values as `confidence_router.calibration.hoeffding_bentkus_pvalue`."""
    mean_loss = np.asarray(mean_loss, dtype=float)
    a, b = np.clip(mean_loss, 0.0, 1.0), max_loss
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(a > 0, a * np.log(np.where(a > 0, a, 1.0) / b), 0.0) + np.where(
            a < 1, (1 - a) * np.log(np.where(a < 1, 1 - a, 1.0) / (1 - b)), 0.0
        )
    hoeffding = np.exp(-n * kl)
    k = np.ceil(n * a - 1e-9).astype(int)
    bentkus = math.e * binomial_cdf(n, max_loss)[np.clip(k, 0, n)]
    p = np.minimum(1.0, np.minimum(hoeffding, bentkus))
    return np.asarray(np.where(mean_loss >= max_loss, 1.0, p))


@dataclass(frozen=True)
class LadderChoice:
    """Thresholds chosen on a calibration sample."""

    thresholds: tuple[float, ...]
    certified: bool
    tested: int
    calibration_loss: float
    calibration_top_share: float


def ltt_ladder(
    cal_scores: np.ndarray,
    cal_f1: np.ndarray,
    grid: np.ndarray,
    max_loss: float,
    confidence: float,
    *,
    procedure: str = "fixed-sequence",
    path: np.ndarray | None = None,
) -> LadderChoice:
    """Thresholds of all stages at once, certified by Learn-then-Test on the calibration rows.

    `path` (fixed-sequence): indices into `grid` in testing order, learned on other data
    (see `learn_path`). Falls back to top-only (every threshold +inf) when none passes.

    Raises:
        ValueError: an unknown `procedure`.
    """
    n = len(cal_f1)
    delta = 1.0 - confidence
    stage = answered_stage(cal_scores, grid)
    loss = losses(cal_f1, stage).mean(axis=1)
    top = (stage == cal_scores.shape[1]).mean(axis=1)
    chosen: list[int] = []
    if procedure == "bonferroni":
        p = hb_pvalues(loss, n, max_loss)
        chosen = list(np.flatnonzero(p <= delta / len(grid)))
        tested = len(grid)
    elif procedure == "fixed-sequence":
        order = np.arange(len(grid)) if path is None else path
        p = hb_pvalues(loss[order], n, max_loss)
        fails = np.flatnonzero(p > delta)
        stop = int(fails[0]) if len(fails) else len(order)
        chosen = list(order[:stop])
        tested = min(stop + 1, len(order))
    else:
        raise ValueError(f"procedure must be 'fixed-sequence' or 'bonferroni', got {procedure!r}")
    if not chosen:
        inf = tuple(math.inf for _ in range(cal_scores.shape[1]))
        return LadderChoice(inf, False, tested, 0.0, 1.0)
    best = min(chosen, key=lambda i: (top[i], loss[i]))
    return LadderChoice(
        tuple(float(t) for t in grid[best]), True, tested, float(loss[best]), float(top[best])
    )


def learn_path(fit_scores: np.ndarray, fit_f1: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The fixed-sequence testing order, from the fit split only: grid points by increasing
    fit loss, each kept only if it calls the top model less than every point before it."""
    stage = answered_stage(fit_scores, grid)
    loss = losses(fit_f1, stage).mean(axis=1)
    top = (stage == fit_scores.shape[1]).mean(axis=1)
    order = np.lexsort((top, loss))
    path: list[int] = []
    best_top = math.inf
    for i in order:
        if top[i] < best_top - 1e-12:
            path.append(int(i))
            best_top = float(top[i])
    return np.array(path, dtype=int)


# -- the guarantee over random splits -----------------------------------------------------------


@dataclass(frozen=True)
class LadderGuarantee:
    """Violation share of the promise over random splits, for one ladder on one data set."""

    models: tuple[str, ...]
    dataset: str
    n: int
    splits: int
    max_loss: float
    confidence: float
    procedure: str
    scores: str
    violations: int
    violation_share: float
    violation_ci: tuple[float, float]
    heldout_violation_share: float
    certified_share: float
    mean_loss: float
    mean_top_share: float
    mean_heldout_top_share: float

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def guarantee_study(
    data: Joined,
    *,
    splits: int = 200,
    max_loss: float = 0.05,
    confidence: float = 0.9,
    procedure: str = "fixed-sequence",
    scores: str = "fitted",
    grid_points: int = 12,
    fit_share: float = 0.3,
    calibration_share: float = 0.4,
    seed: int = 0,
) -> LadderGuarantee:
    """As `confidence_router.eval.guarantee.guarantee_study`, for a ladder.

    Per split: a random `fit_share` fits the per-stage policies (`scores="fitted"`;
    `"seed"` fits nothing), sets the grid and learns the testing path; the rest is the
    pool. The promise: a calibration sample drawn with replacement from the pool chooses
    the thresholds; their true loss is computed on the whole pool. The held-out check:
    the pool's first part calibrates, the rest measures.
    """
    n = data.n
    n_fit = int(round(fit_share * n))
    n_cal = int(round(calibration_share * n))
    rng = np.random.default_rng(seed)
    runs: dict[str, list[tuple[float, float, bool]]] = {"pool": [], "held": []}
    for _ in range(splits):
        perm = rng.permutation(n)
        fit, pool = data.take(perm[:n_fit]), data.take(perm[n_fit:])
        if scores == "seed":
            fit_s, pool_s = seed_scores(fit), seed_scores(pool)
        else:
            fit_s, pool_s = fitted_scores(fit, fit), fitted_scores(fit, pool)
        grid = threshold_grid(fit_s, grid_points)
        path = learn_path(fit_s, fit.f1, grid) if procedure == "fixed-sequence" else None
        draw = rng.integers(0, pool.n, size=n_cal)
        for key, cal_idx, test_idx in (
            ("pool", draw, np.arange(pool.n)),
            ("held", np.arange(n_cal), np.arange(n_cal, pool.n)),
        ):
            choice = ltt_ladder(
                pool_s[cal_idx],
                pool.f1[cal_idx],
                grid,
                max_loss,
                confidence,
                procedure=procedure,
                path=path,
            )
            t = np.array([choice.thresholds])
            stage = answered_stage(pool_s[test_idx], t)
            loss = float(losses(pool.f1[test_idx], stage).mean())
            top = float((stage == pool_s.shape[1]).mean())
            runs[key].append((loss, top, choice.certified))
    pool_runs = np.array([r[:2] for r in runs["pool"]])
    held_runs = np.array([r[:2] for r in runs["held"]])
    violations = int(np.sum(pool_runs[:, 0] > max_loss + 1e-12))
    return LadderGuarantee(
        models=data.models,
        dataset=data.dataset,
        n=n,
        splits=splits,
        max_loss=max_loss,
        confidence=confidence,
        procedure=procedure,
        scores=scores,
        violations=violations,
        violation_share=violations / splits,
        violation_ci=wilson_interval(violations, splits),
        heldout_violation_share=float(np.mean(held_runs[:, 0] > max_loss + 1e-12)),
        certified_share=float(np.mean([r[2] for r in runs["pool"]])),
        mean_loss=float(pool_runs[:, 0].mean()),
        mean_top_share=float(pool_runs[:, 1].mean()),
        mean_heldout_top_share=float(held_runs[:, 1].mean()),
    )


# -- the comparison of ladders -----------------------------------------------------------------


@dataclass(frozen=True)
class OperatingPoint:
    """A ladder at one threshold vector, averaged over the questions."""

    thresholds: tuple[float, ...]
    f1: float
    f1_share: float  # of the top model's mean F1
    top_share: float
    answered_share: tuple[float, ...]  # per stage
    wall_s: float  # per question
    tokens: dict[str, float]  # per question, per model (prompt + completion); counted questions
    cost: float  # per question, at the stated prices; counted questions (NaN: none)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _point(data: Joined, stage: np.ndarray, t: np.ndarray, prices: np.ndarray) -> OperatingPoint:
    m = len(data.models)
    reached = np.arange(m)[None, :] <= stage[:, None]  # (n, m)
    f1 = float(np.take_along_axis(data.f1, stage[:, None], 1).mean())
    top_f1 = float(data.f1[:, -1].mean())
    tokens = (data.prompt_tokens + data.completion_tokens) * reached
    cost = (data.prompt_tokens * prices[:, 0] + data.completion_tokens * prices[:, 1]) * reached
    counted = _counted(data)
    if not counted.all():  # over the questions whose counts are known (NaN when none is)
        tokens, cost = tokens[counted], cost[counted]
    return OperatingPoint(
        thresholds=tuple(float(x) for x in t),
        f1=f1,
        f1_share=f1 / top_f1 if top_f1 else float("nan"),
        top_share=float((stage == m - 1).mean()),
        answered_share=tuple(float((stage == j).mean()) for j in range(m)),
        wall_s=float((data.latency * reached).sum(axis=1).mean()),
        tokens={
            model: float(tokens[:, j].mean()) if len(tokens) else float("nan")
            for j, model in enumerate(data.models)
        },
        cost=float(cost.sum(axis=1).mean() / 1e6) if len(cost) else float("nan"),
    )


def _counted(data: Joined) -> np.ndarray:
    """Questions whose token counts were reported by every model of the ladder."""
    known = np.isfinite(data.prompt_tokens) & np.isfinite(data.completion_tokens)
    return np.asarray(known.all(axis=1))


@dataclass(frozen=True)
class LadderSummary:
    """One ladder on one data set: its frontier at >= `share` of the top model's F1, and AIQ."""

    models: tuple[str, ...]
    dataset: str
    n: int
    escalate_all: OperatingPoint  # every question climbs to the top (the top alone: no stage)
    most_avoided: OperatingPoint | None  # most top calls avoided at >= share of top F1
    fastest: OperatingPoint | None  # least wall time at >= share of top F1
    aiq_cost: float
    aiq_time: float
    #: questions left out of tokens, cost and AIQ (cost): a token count was not reported
    unreported: int = 0

    def to_dict(self) -> dict[str, Any]:
        unreported = {"n_unreported_token_counts": self.unreported} if self.unreported else {}
        return {
            "models": list(self.models),
            "dataset": self.dataset,
            "n": self.n,
            **unreported,
            "escalate_all": self.escalate_all.to_dict(),
            "most_avoided": None if self.most_avoided is None else self.most_avoided.to_dict(),
            "fastest": None if self.fastest is None else self.fastest.to_dict(),
            "aiq_cost": self.aiq_cost,
            "aiq_time": self.aiq_time,
        }


def summarise(
    data: Joined,
    scores: np.ndarray,
    prices: Mapping[str, tuple[float, float]],
    *,
    share: float = 0.95,
    grid_points: int = 25,
    cost_range: tuple[float, float] | None = None,
    time_range: tuple[float, float] | None = None,
) -> tuple[LadderSummary, list[OperatingPoint]]:
    """Every grid point of the ladder, its best points at >= `share` of top F1, and AIQ."""
    price = np.array([prices.get(m, (0.0, 0.0)) for m in data.models], dtype=float)
    grid = threshold_grid(scores, grid_points)
    stages = answered_stage(scores, grid)
    points = [_point(data, stages[i], grid[i], price) for i in range(len(grid))]
    every = next(p for p in points if all(math.isinf(t) for t in p.thresholds))
    ok = [p for p in points if p.f1_share >= share - 1e-12]
    most = max(ok, key=lambda p: (1 - p.top_share, -p.wall_s)) if ok else None
    fastest = min(ok, key=lambda p: (p.wall_s, p.top_share)) if ok else None
    quality = np.array([p.f1 for p in points])
    c_range = cost_range or (0.0, every.cost)
    t_range = time_range or (0.0, every.wall_s)
    summary = LadderSummary(
        models=data.models,
        dataset=data.dataset,
        n=data.n,
        escalate_all=every,
        most_avoided=most,
        fastest=fastest,
        aiq_cost=aiq(Curve(quality, np.array([p.cost for p in points])), c_range),
        aiq_time=aiq(Curve(quality, np.array([p.wall_s for p in points])), t_range),
        unreported=int((~_counted(data)).sum()),
    )
    return summary, points


# -- the study and its report ------------------------------------------------------------------


@dataclass
class LadderStudy:
    """Everything the report section says, per data set."""

    ladder: tuple[str, ...]
    prompts: dict[str, list[str]]
    prices: dict[str, tuple[float, float]]
    scores: str
    share: float
    summaries: list[LadderSummary]
    guarantees: list[LadderGuarantee]
    chosen: dict[str, dict[str, Any]]  # per data set: thresholds of the full ladder, all traces

    def to_dict(self) -> dict[str, Any]:
        return {
            "ladder": list(self.ladder),
            "prompts": self.prompts,
            "prices_per_million_tokens": {m: list(p) for m, p in self.prices.items()},
            "scores": self.scores,
            "share_of_top_f1": self.share,
            "summaries": [s.to_dict() for s in self.summaries],
            "guarantee": [g.to_dict() for g in self.guarantees],
            "chosen_on_all_traces": self.chosen,
        }


def sub_ladders(ladder: Sequence[str]) -> list[tuple[str, ...]]:
    """The ladder itself, every (small model, top) pair, and the top alone."""
    top = ladder[-1]
    out: list[tuple[str, ...]] = [tuple(ladder)]
    if len(ladder) > 2:
        out += [(m, top) for m in ladder[:-1]]
    out.append((top,))
    return out


def run_study(
    book: AnswerBook,
    ladder: Sequence[str],
    *,
    datasets: Sequence[str] | None = None,
    scores: str = "oof",
    prices: Mapping[str, tuple[float, float]] | None = None,
    share: float = 0.95,
    splits: int = 200,
    max_loss: float = 0.05,
    confidence: float = 0.9,
    procedure: str = "fixed-sequence",
    seed: int = 0,
) -> LadderStudy:
    """Compare the ladder with its sub-ladders and study its guarantee, per data set.

    Raises:
        ValueError: fewer than two models, or a model without answers.
    """
    if len(ladder) < 2:
        raise ValueError("a ladder needs at least one small model and the top model")
    price_map = dict(DEFAULT_PRICES if prices is None else prices)
    found = sorted({k[0] for m in ladder for k in book.answers.get(m, {})})
    order = list(DATASET_TITLES)
    chosen_sets = [d for d in (datasets or found) if d in found]
    chosen_sets.sort(key=lambda d: order.index(d) if d in order else len(order))
    summaries: list[LadderSummary] = []
    guarantees: list[LadderGuarantee] = []
    chosen: dict[str, dict[str, Any]] = {}
    for dataset in chosen_sets:
        full = join(book, ladder, dataset)
        if full.n < 20:
            continue
        all_scores = seed_scores(full) if scores == "seed" else oof_scores(full, seed=seed)
        alone, _ = summarise(full.sub(ladder[-1:]), all_scores[:, :0], price_map, share=share)
        c_range = (0.0, alone.escalate_all.cost)  # [0, top alone] for every ladder
        t_range = (0.0, alone.escalate_all.wall_s)
        for models in sub_ladders(ladder):
            data = full.sub(models)
            cols = [ladder.index(m) for m in models[:-1]]
            summary, _ = summarise(
                data,
                all_scores[:, cols],
                price_map,
                share=share,
                cost_range=c_range,
                time_range=t_range,
            )
            summaries.append(summary)
            if len(models) > 1:
                guarantees.append(
                    guarantee_study(
                        data,
                        splits=splits,
                        max_loss=max_loss,
                        confidence=confidence,
                        procedure=procedure,
                        scores="seed" if scores == "seed" else "fitted",
                        seed=seed,
                    )
                )
        grid = threshold_grid(all_scores, 12)
        half = np.random.default_rng(seed).permutation(full.n)
        fit_idx, cal_idx = half[: full.n // 3], half[full.n // 3 :]
        path = learn_path(all_scores[fit_idx], full.f1[fit_idx], grid)
        pick = ltt_ladder(
            all_scores[cal_idx],
            full.f1[cal_idx],
            grid,
            max_loss,
            confidence,
            procedure=procedure,
            path=path if procedure == "fixed-sequence" else None,
        )
        chosen[dataset] = {
            "thresholds": list(pick.thresholds),
            "certified": pick.certified,
            "calibration_loss": pick.calibration_loss,
            "calibration_top_share": pick.calibration_top_share,
            "fit": len(fit_idx),
            "calibration": len(cal_idx),
        }
    return LadderStudy(
        ladder=tuple(ladder),
        prompts={m: sorted(book.prompts.get(m, set())) for m in ladder},
        prices={m: price_map.get(m, (0.0, 0.0)) for m in ladder},
        scores=scores,
        share=share,
        summaries=summaries,
        guarantees=guarantees,
        chosen=chosen,
    )


def _name(models: Sequence[str]) -> str:
    return " → ".join(models) if len(models) > 1 else f"{models[0]} alone"


def _tokens(p: OperatingPoint) -> str:
    return ", ".join(
        f"{m} {v:.0f}" if math.isfinite(v) else f"{m} unknown" for m, v in p.tokens.items()
    )


def ladder_markdown(study: LadderStudy, command: str = "") -> str:
    """The report's ladder section."""
    pct = f"{study.share:.0%}"
    prices = "; ".join(f"{m} ${p[0]:g}/{p[1]:g}" for m, p in study.prices.items())
    prompts = ", ".join(f"{m}: {'/'.join(p) or '-'}" for m, p in study.prompts.items())
    score_text = (
        "the seed ThresholdPolicy"
        if study.scores == "seed"
        else "fit_policy (logistic + trees, inner CV) fitted out of fold (5 folds) on each "
        "model's own signals, label F1 > 0.5"
    )
    lines = [
        "## Ladders: more than one small model before the top model\n",
        f"Ladder: {_name(study.ladder)}; prompts: {prompts}. Stage scores: {score_text}. "
        "A stage keeps its answer when its score clears its threshold; the top model answers "
        "the rest. Questions: those every model of the ladder answered (joined by id).\n",
    ]
    if len({tuple(p) for p in study.prompts.values()}) > 1:
        lines.append(
            "**Not every model had the same prompt** (see above): a model recorded with another "
            "prompt stands in until its traces with the ladder's prompt exist, so the comparison "
            "is indicative only.\n"
        )
    lines += [
        f"Operating points: every combination of per-stage thresholds on a grid (25 quantiles "
        f"each, plus escalate-all). *Most avoided*: the point with the most top-model calls "
        f"avoided while mean F1 stays >= {pct} of the top model's; *fastest*: the least wall "
        "time there. Thresholds are picked on the same questions (an optimistic frontier; the "
        "guarantee below is the honest version). Wall time: sum of `latency_s` of the models a "
        "question reached (recorded on this loaded 2-core machine, one question at a time). "
        "Tokens: prompt + completion per question, per model reached. AIQ: area under the "
        "upper convex hull of (cost, mean F1), normalised over [0, top-only cost] "
        f"(RouterBench); assumed prices per million tokens (input/output): {prices}.\n",
    ]
    for dataset in dict.fromkeys(s.dataset for s in study.summaries):
        rows = [s for s in study.summaries if s.dataset == dataset]
        n = rows[0].n
        alone = rows[-1].escalate_all
        lines += [
            f"### {DATASET_TITLES.get(dataset, dataset)} ({n} questions)\n",
            f"| ladder | F1 (share of top) at most avoided | top calls avoided | answered per "
            f"stage | wall s/q (top alone {alone.wall_s:.2f}) | tokens/q per model | "
            f"fastest at >= {pct}: wall s/q, avoided | AIQ (cost) | AIQ (time) |",
            "|---|---:|---:|---|---:|---|---|---:|---:|",
        ]
        for s in rows:
            p, f = s.most_avoided, s.fastest
            if p is None or f is None:
                lines.append(
                    f"| {_name(s.models)} | not reached | - | - | - | - | - | "
                    f"{s.aiq_cost:.3f} | {s.aiq_time:.3f} |"
                )
                continue
            answered = " / ".join(f"{x:.0%}" for x in p.answered_share)
            lines.append(
                f"| {_name(s.models)} | {p.f1:.3f} ({p.f1_share:.0%}) | {1 - p.top_share:.0%} | "
                f"{answered} | {p.wall_s:.2f} | {_tokens(p)} | {f.wall_s:.2f}, "
                f"{1 - f.top_share:.0%} | {s.aiq_cost:.3f} | {s.aiq_time:.3f} |"
            )
        lines.append("")
        lines += [
            f"{_name(s.models)}: {unreported_note(s.unreported, s.n, 'Tokens and cost')}\n"
            for s in rows
            if s.unreported
        ]
        lines.append(_verdict(rows, pct))
        lines.append("")
    if study.guarantees:
        g0 = study.guarantees[0]
        proc = (
            "fixed-sequence testing along a path learned on the fit split (grid points by "
            "increasing fit-split loss, each calling the top model less than the one before), "
            "each test at level delta"
            if g0.procedure == "fixed-sequence"
            else "Bonferroni over the whole grid (each point at delta / grid size)"
        )
        fitted = (
            "seed policy, nothing fitted" if g0.scores == "seed" else "LogisticPolicy per stage"
        )
        lines += [
            "### One guarantee for the whole ladder\n",
            f"Promise: mean F1 loss against the top model alone, max(0, F1_top - F1_ladder) per "
            f"question, at most {g0.max_loss:g} with probability >= {g0.confidence:.0%}. "
            f"Thresholds of all stages chosen jointly by Learn-then-Test with Hoeffding-Bentkus "
            f"p-values (as `confidence-router calibrate`); multiple testing over the threshold "
            f"grid (12 quantiles of each stage's fit-split scores, plus escalate-all): {proc}. "
            f"Over {g0.splits} random splits: 30% fit the per-stage scores "
            f"({fitted})"
            ", grid and path; a calibration sample of 40% of the questions drawn with "
            "replacement from the rest (the pool) chooses the thresholds; the *violation* share "
            "counts splits whose true loss on the pool exceeds the budget (the promise: at most "
            f"{1 - g0.confidence:.0%}). Held-out: the pool's first 40% calibrate, the rest "
            "measure (a noisy sample of the true loss).\n",
            "| data set | ladder | n | violations (true loss) | held-out violations | "
            "certified | mean loss | top-model share (pool / held-out) |",
            "|---|---|---:|---|---:|---:|---:|---|",
        ]
        for g in study.guarantees:
            lines.append(
                f"| {DATASET_TITLES.get(g.dataset, g.dataset)} | {_name(g.models)} | {g.n} | "
                f"{g.violation_share:.1%} [{g.violation_ci[0]:.1%}, {g.violation_ci[1]:.1%}] | "
                f"{g.heldout_violation_share:.1%} | {g.certified_share:.0%} | {g.mean_loss:.3f} | "
                f"{g.mean_top_share:.0%} / {g.mean_heldout_top_share:.0%} |"
            )
        lines.append("")
    if command:
        lines.append(f"Reproduce: `{command}`\n")
    return "\n".join(lines) + "\n"


def _verdict(rows: Sequence[LadderSummary], pct: str) -> str:
    ladders = [s for s in rows if len(s.models) > 1 and s.most_avoided is not None]
    if not ladders:
        return f"No ladder reaches {pct} of the top model's F1 while avoiding any top-model call."
    by_avoided = max(ladders, key=lambda s: 1 - s.most_avoided.top_share)  # type: ignore[union-attr]
    by_time = min(ladders, key=lambda s: s.fastest.wall_s)  # type: ignore[union-attr]
    priced = [s for s in ladders if math.isfinite(s.aiq_cost)]  # NaN: no token count known
    by_aiq = max(priced, key=lambda s: s.aiq_cost) if priced else None
    top_wall = rows[-1].escalate_all.wall_s
    parts = [
        f"Most top-model calls avoided at >= {pct}: {_name(by_avoided.models)} "
        f"({1 - by_avoided.most_avoided.top_share:.0%}).",  # type: ignore[union-attr]
        f"Least wall time at >= {pct}: {_name(by_time.models)} "
        f"({by_time.fastest.wall_s:.2f} s/q against {top_wall:.2f} for the top model alone).",  # type: ignore[union-attr]
        f"Best AIQ (cost): {'unknown' if by_aiq is None else _name(by_aiq.models)}.",
    ]
    full = rows[0]
    if len(full.models) > 2 and full.fastest is not None:
        pairs = [s for s in ladders if len(s.models) == 2]
        best_pair = min(pairs, key=lambda s: s.fastest.wall_s) if pairs else None  # type: ignore[union-attr]
        if best_pair is not None and best_pair.fastest is not None:
            if full.fastest.wall_s > best_pair.fastest.wall_s:
                parts.append(
                    f"The middle stage costs more than it saves here: the full ladder needs "
                    f"{full.fastest.wall_s:.2f} s/q, {_name(best_pair.models)} "
                    f"{best_pair.fastest.wall_s:.2f}."
                )
            else:
                parts.append(
                    f"The middle stage pays for itself: {full.fastest.wall_s:.2f} s/q against "
                    f"{best_pair.fastest.wall_s:.2f} for the best two-stage cascade "
                    f"({_name(best_pair.models)})."
                )
    return " ".join(parts)


def write_ladder(study: LadderStudy, out: Path, command: str = "") -> tuple[Path, Path]:
    """Write ladder.md and ladder.json into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    md, js = out / "ladder.md", out / "ladder.json"
    data = study.to_dict()
    data["command"] = command
    js.write_text(json.dumps(_plain(data), indent=1, allow_nan=False) + "\n")
    md.write_text(ladder_markdown(study, command))
    return md, js


def _plain(value: Any) -> Any:
    """JSON-safe: tuples as lists, numpy scalars as Python, +-inf as "inf"/"-inf", NaN as None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


__all__ = [
    "AnswerBook",
    "Joined",
    "LadderChoice",
    "LadderGuarantee",
    "LadderStudy",
    "LadderSummary",
    "OperatingPoint",
    "answered_stage",
    "guarantee_study",
    "hb_pvalues",
    "join",
    "ladder_markdown",
    "learn_path",
    "load_answers",
    "losses",
    "ltt_ladder",
    "oof_scores",
    "run_study",
    "seed_scores",
    "summarise",
    "threshold_grid",
    "write_ladder",
]

"""Fit a routing policy on traces, choosing the model and its regularisation by inner CV.

`fit_policy` tries every candidate (L2-regularised logistic regression
at several strengths, and a few shapes of boosted shallow trees) by
cross-validation *on the rows it is given*, keeps the candidate with the best
mean held-out AUROC, refits it on all those rows, and (by default) averages
the best logistic model with the best tree model. Called inside an outer
cross-validation loop (as the evaluation does), nothing about the outer
held-out fold reaches the fit. numpy only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..errors import ConfigurationError
from ..signals.token import SIGNAL_NAMES, Signals
from ._scoring import scores_of
from .base import LogisticPolicy, Policy
from .ensemble import AveragePolicy
from .trees import TreeEnsemblePolicy

Family = Literal["logistic", "trees"]


@dataclass(frozen=True)
class Candidate:
    """One model to try: a family and its settings."""

    family: Family
    params: tuple[tuple[str, float], ...]

    @property
    def label(self) -> str:
        """The candidate as the fit report names it, e.g. `logistic(l2=1)`."""
        settings = ", ".join(f"{k}={v:g}" for k, v in self.params)
        return f"{self.family}({settings})"

    def fit(self, rows: Sequence[Signals], y: np.ndarray, features: Sequence[str]) -> Policy:
        """Returns the candidate fitted on `rows` with labels `y`."""
        params = dict(self.params)
        if self.family == "logistic":
            return LogisticPolicy.fit(rows, y, features=features, l2=params["l2"])
        return TreeEnsemblePolicy.fit(
            rows,
            y,
            features=features,
            n_trees=int(params["n_trees"]),
            depth=int(params["depth"]),
            learning_rate=params["learning_rate"],
            min_leaf=int(params.get("min_leaf", 10)),
        )


LOGISTIC_CANDIDATES: tuple[Candidate, ...] = tuple(
    Candidate("logistic", (("l2", l2),)) for l2 in (0.1, 1.0, 10.0, 100.0, 1000.0)
)
TREE_CANDIDATES: tuple[Candidate, ...] = (
    Candidate("trees", (("depth", 1), ("n_trees", 100), ("learning_rate", 0.1))),
    Candidate("trees", (("depth", 2), ("n_trees", 50), ("learning_rate", 0.1))),
    Candidate("trees", (("depth", 2), ("n_trees", 100), ("learning_rate", 0.05))),
)


def candidates_for(families: Sequence[Family]) -> tuple[Candidate, ...]:
    """The candidates of these families; raises `ConfigurationError` for an unknown one."""
    out: tuple[Candidate, ...] = ()
    for family in families:
        if family == "logistic":
            out += LOGISTIC_CANDIDATES
        elif family == "trees":
            out += TREE_CANDIDATES
        else:
            raise ConfigurationError("families", f"unknown model family {family!r}")
    return out


@dataclass
class FitReport:
    """What the inner cross-validation found."""

    chosen: str
    inner_auroc: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "chosen": self.chosen,
            "inner_cv_auroc": {k: round(v, 4) for k, v in self.inner_auroc.items()},
        }


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN without both classes."""
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    # average ranks of ties
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def stratified_folds(labels: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold number of each row, stratified by label."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(labels), dtype=int)
    for value in (False, True):
        idx = np.flatnonzero(np.asarray(labels) == value)
        rng.shuffle(idx)
        fold[idx] = np.arange(len(idx)) % k
    return fold


def inner_cv_auroc(
    rows: Sequence[Signals],
    correct: Sequence[bool] | np.ndarray,
    candidates: Sequence[Candidate],
    *,
    features: Sequence[str] = SIGNAL_NAMES,
    inner_folds: int = 5,
    seed: int = 0,
) -> dict[str, float]:
    """Mean held-out AUROC of every candidate over `inner_folds` stratified folds of `rows`.

    Returns:
        Each candidate's label with its AUROC.

    Raises:
        ConfigurationError: fewer than `2 * inner_folds` rows with both outcomes.
    """
    y = np.asarray(correct, dtype=bool)
    if len(rows) != len(y) or len(rows) < 2 * inner_folds or y.all() or not y.any():
        raise ConfigurationError(
            "rows", f"need at least {2 * inner_folds} rows with both outcomes, got {len(rows)}"
        )
    rows_array = np.array(rows, dtype=object)
    fold = stratified_folds(y, inner_folds, seed)
    results: dict[str, float] = {}
    for cand in candidates:
        aucs = []
        for k in range(inner_folds):
            train, test = fold != k, fold == k
            if y[train].all() or not y[train].any():
                continue
            policy = cand.fit(list(rows_array[train]), y[train], features)
            aucs.append(auroc(scores_of(policy, list(rows_array[test])), y[test]))
        results[cand.label] = float(np.nanmean(aucs)) if aucs else float("nan")
    return results


def best_candidate(results: dict[str, float], candidates: Sequence[Candidate]) -> Candidate:
    """The candidate with the highest inner-CV AUROC (the first one on ties)."""
    return max(candidates, key=lambda c: np.nan_to_num(results[c.label], nan=-1.0))


def fit_policy(
    rows: Sequence[Signals],
    correct: Sequence[bool] | np.ndarray,
    *,
    features: Sequence[str] = SIGNAL_NAMES,
    families: Sequence[Family] = ("logistic", "trees"),
    inner_folds: int = 5,
    seed: int = 0,
) -> tuple[Policy, FitReport]:
    """Fit a policy on labelled answers: each family's best candidate by inner-CV AUROC.

    With one family, that candidate refitted on all `rows`; with several, an
    `AveragePolicy` of each family's best (averaging is steadier than picking
    one family on a few hundred answers: see the evaluation report).

    Args:
        rows: the signals of the SLM's answers.
        correct: whether each answer was right.
        features: the signals the candidates read.
        families: `"logistic"` (L2 in 0.1-1000) and/or `"trees"` (three shapes).
        inner_folds: the folds of the cross-validation that chooses.
        seed: the seed of the folds.

    Returns:
        The policy, and a `FitReport` of every candidate's AUROC and the choice.

    Raises:
        ConfigurationError: an unknown family, or fewer than `2 * inner_folds`
            rows with both outcomes.
    """
    candidates = candidates_for(families)
    results = inner_cv_auroc(
        rows, correct, candidates, features=features, inner_folds=inner_folds, seed=seed
    )
    policy, label = fit_chosen(rows, correct, results, families, features)
    return policy, FitReport(label, results)


def fit_chosen(
    rows: Sequence[Signals],
    correct: Sequence[bool] | np.ndarray,
    results: dict[str, float],
    families: Sequence[Family],
    features: Sequence[str] = SIGNAL_NAMES,
    cache: dict[str, Policy] | None = None,
) -> tuple[Policy, str]:
    """Refit each family's best candidate (by `results`) on `rows`; average them if several."""
    y = np.asarray(correct, dtype=bool)
    cache = {} if cache is None else cache
    members: list[Policy] = []
    labels: list[str] = []
    for family in families:
        best = best_candidate(results, candidates_for((family,)))
        if best.label not in cache:
            cache[best.label] = best.fit(list(rows), y, features)
        members.append(cache[best.label])
        labels.append(best.label)
    if len(members) == 1:
        return members[0], labels[0]
    return AveragePolicy(tuple(members)), f"average({', '.join(labels)})"


__all__ = [
    "Candidate",
    "FitReport",
    "LOGISTIC_CANDIDATES",
    "TREE_CANDIDATES",
    "auroc",
    "best_candidate",
    "candidates_for",
    "fit_chosen",
    "fit_policy",
    "inner_cv_auroc",
    "stratified_folds",
]

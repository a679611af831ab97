"""A small non-linear policy: gradient-boosted shallow trees, stored as plain JSON.

`fit_boosted_trees` fits a few dozen depth-1 to depth-3 regression trees
on the logistic loss (Newton boosting, numpy only, split points at feature
quantiles). `TreeEnsemblePolicy` holds them as flat node lists, scores
one answer in plain Python (tens of microseconds) and many with numpy, and
round-trips through `to_dict`/`policy_from_dict` like the other policies.
The score is P(SLM answer is right).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..signals.token import Signals
from ..types import Decision
from ._decision import probability_decision
from ._fields import check_finite, check_signal


@dataclass(frozen=True)
class Tree:
    """One regression tree as parallel node lists; node 0 is the root.

    A node with `feature[i] == -1` is a leaf worth `value[i]`; otherwise an
    answer goes to `left[i]` when its feature value is `<= threshold[i]`,
    else to `right[i]`.
    """

    feature: tuple[int, ...]
    threshold: tuple[float, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    value: tuple[float, ...]

    def validate(self, where: str, n_features: int) -> None:
        n = len(self.feature)
        if n == 0:
            raise ConfigurationError(where, "a tree needs at least one node")
        for name in ("threshold", "left", "right", "value"):
            if len(getattr(self, name)) != n:
                raise ConfigurationError(f"{where}.{name}", f"must have {n} entries")
        for i in range(n):
            f = self.feature[i]
            check_finite(f"{where}.value[{i}]", self.value[i])
            if f == -1:
                continue
            if not 0 <= f < n_features:
                raise ConfigurationError(f"{where}.feature[{i}]", f"no feature number {f}")
            check_finite(f"{where}.threshold[{i}]", self.threshold[i])
            for side in ("left", "right"):
                child = getattr(self, side)[i]
                if not i < child < n:
                    raise ConfigurationError(
                        f"{where}.{side}[{i}]", f"must point to a later node, got {child}"
                    )

    def predict_one(self, x: Sequence[float]) -> float:
        """The leaf value of one answer's features (plain Python: the router's hot path)."""
        i = 0
        feature, threshold, left, right = self.feature, self.threshold, self.left, self.right
        while feature[i] != -1:
            i = left[i] if x[feature[i]] <= threshold[i] else right[i]
        return self.value[i]

    def predict(self, x: np.ndarray) -> np.ndarray:
        """The leaf values of many answers' features, shape (n, d) -> (n,)."""
        node = np.zeros(len(x), dtype=int)
        feature = np.asarray(self.feature)
        threshold = np.asarray(self.threshold)
        left, right = np.asarray(self.left), np.asarray(self.right)
        for _ in range(len(self.feature)):
            f = feature[node]
            inner = f != -1
            if not inner.any():
                break
            rows = np.flatnonzero(inner)
            go_left = x[rows, f[inner]] <= threshold[node[inner]]
            node[rows] = np.where(go_left, left[node[inner]], right[node[inner]])
        return np.asarray(self.value)[node]

    def to_dict(self) -> dict[str, list[Any]]:
        return {
            "feature": list(self.feature),
            "threshold": list(self.threshold),
            "left": list(self.left),
            "right": list(self.right),
            "value": list(self.value),
        }


@dataclass(frozen=True)
class TreeEnsemblePolicy:
    """P(SLM answer is right) = sigmoid(bias + sum of the trees' leaf values).

    Fit it with `fit`; the default threshold 0.5 escalates when the SLM is more
    likely wrong.

    Raises:
        ConfigurationError: no or unknown features, a malformed tree, or a bias or
            threshold that is not finite.
    """

    features: tuple[str, ...]
    trees: tuple[Tree, ...]
    bias: float
    threshold: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(
            self,
            "trees",
            tuple(
                t if isinstance(t, Tree) else Tree(**{k: tuple(v) for k, v in dict(t).items()})
                for t in self.trees
            ),
        )
        if not self.features:
            raise ConfigurationError("features", "at least one feature is required")
        for i, name in enumerate(self.features):
            check_signal(f"features[{i}]", name)
        for i, tree in enumerate(self.trees):
            tree.validate(f"trees[{i}]", len(self.features))
        check_finite("bias", self.bias)
        check_finite("threshold", self.threshold)

    def _margin(self, signals: Signals) -> float:
        x = [signals[f] for f in self.features]
        return self.bias + math.fsum(t.predict_one(x) for t in self.trees)

    def score(self, signals: Signals) -> float:
        return 0.5 * (1.0 + math.tanh(0.5 * self._margin(signals)))

    def scores(self, rows: Sequence[Signals]) -> np.ndarray:
        """Vectorised scores of many answers (for evaluation)."""
        if not rows:
            return np.zeros(0)
        x = np.array([[s[f] for f in self.features] for s in rows], dtype=np.float64)
        return predict_proba(self, x)

    def decide(self, signals: Signals) -> Decision:
        detail = f" ({len(self.trees)} trees)"
        return probability_decision("trees", self.score(signals), self.threshold, signals, detail)

    def with_threshold(self, threshold: float) -> TreeEnsemblePolicy:
        return replace(self, threshold=threshold)

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "trees",
            "features": list(self.features),
            "bias": self.bias,
            "threshold": self.threshold,
            "trees": [t.to_dict() for t in self.trees],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TreeEnsemblePolicy:
        """Rebuild the policy `to_dict` wrote; raises `ConfigurationError` for bad fields."""
        trees = tuple(
            Tree(**{k: tuple(v) for k, v in dict(t).items()}) for t in data.get("trees", ())
        )
        return cls(
            tuple(data.get("features", ())),
            trees,
            float(data.get("bias", 0.0)),
            float(data.get("threshold", 0.5)),
        )

    @classmethod
    def fit(
        cls,
        rows: Sequence[Signals],
        correct: Sequence[bool] | np.ndarray,
        *,
        features: Sequence[str],
        n_trees: int = 50,
        depth: int = 2,
        learning_rate: float = 0.1,
        min_leaf: int = 10,
        l2: float = 1.0,
        threshold: float = 0.5,
    ) -> TreeEnsemblePolicy:
        """Fit boosted trees on labelled answers (`fit_boosted_trees` on these features).

        Args:
            rows: the signals of the SLM's answers.
            correct: whether each answer was right.
            features: the signals the trees split on.
            n_trees, depth, learning_rate, min_leaf, l2: the boosting's shape and
                regularisation.
            threshold: the threshold of the fitted policy.

        Returns:
            The fitted policy.

        Raises:
            ConfigurationError: an unknown feature.
        """
        for i, name in enumerate(features):
            check_signal(f"features[{i}]", name)
        x = np.array([[s[f] for f in features] for s in rows], dtype=np.float64)
        bias, trees = fit_boosted_trees(
            x,
            np.asarray(correct, dtype=np.float64),
            n_trees=n_trees,
            depth=depth,
            learning_rate=learning_rate,
            min_leaf=min_leaf,
            l2=l2,
        )
        return cls(tuple(features), tuple(trees), bias, threshold)


def predict_proba(policy: TreeEnsemblePolicy, x: np.ndarray) -> np.ndarray:
    """P(SLM answer is right) for each row of features `x` (n, d)."""
    margin = np.full(len(x), policy.bias)
    for tree in policy.trees:
        margin += tree.predict(x)
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * margin)))


def _candidate_splits(column: np.ndarray, bins: int) -> np.ndarray:
    qs = np.unique(np.quantile(column, np.linspace(0, 1, bins + 1)[1:-1]))
    return qs[qs < column.max()] if len(qs) else qs


def fit_boosted_trees(
    x: np.ndarray,
    y: np.ndarray,
    *,
    n_trees: int = 50,
    depth: int = 2,
    learning_rate: float = 0.1,
    min_leaf: int = 10,
    l2: float = 1.0,
    bins: int = 32,
) -> tuple[float, list[Tree]]:
    """Newton-boosted regression trees on the logistic loss; returns `(bias, trees)`.

    Splits are "feature <= split point" at up to `bins - 1` quantiles of each
    feature; a split needs `min_leaf` answers on each side; leaf values are
    `-sum(gradient) / (sum(hessian) + l2)` times `learning_rate`.

    Raises:
        ConfigurationError: fewer than 2 rows, or rows and labels of different lengths.
    """
    n, d = x.shape
    if n < 2 or len(y) != n:
        raise ConfigurationError("rows", f"need at least 2 rows matching labels, got {n}")
    prior = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
    bias = math.log(prior / (1 - prior))
    splits = [_candidate_splits(x[:, j], bins) for j in range(d)]
    # bin index of every value: bin b means split b is the first with value <= split
    binned = np.stack([np.searchsorted(splits[j], x[:, j], side="left") for j in range(d)], axis=1)
    margin = np.full(n, bias)
    trees: list[Tree] = []
    for _ in range(n_trees):
        p = 0.5 * (1.0 + np.tanh(0.5 * margin))
        g = p - y
        h = np.maximum(p * (1 - p), 1e-6)
        tree, update = _grow(binned, splits, g, h, depth, min_leaf, l2, learning_rate)
        trees.append(tree)
        margin += update
    return bias, trees


def _grow(
    binned: np.ndarray,
    splits: list[np.ndarray],
    g: np.ndarray,
    h: np.ndarray,
    depth: int,
    min_leaf: int,
    l2: float,
    rate: float,
) -> tuple[Tree, np.ndarray]:
    feature: list[int] = []
    threshold: list[float] = []
    left: list[int] = []
    right: list[int] = []
    value: list[float] = []
    update = np.zeros(len(g))

    def leaf(idx: np.ndarray) -> int:
        node = len(feature)
        v = float(-g[idx].sum() / (h[idx].sum() + l2) * rate)
        feature.append(-1)
        threshold.append(0.0)
        left.append(-1)
        right.append(-1)
        value.append(v)
        update[idx] = v
        return node

    d = binned.shape[1]
    width = max((len(c) for c in splits), default=0) + 1
    flat = binned + np.arange(d) * width  # one bincount covers every feature's bins
    n_cuts = np.array([len(c) for c in splits])
    valid = np.arange(width - 1)[None, :] < n_cuts[:, None]  # (d, width - 1)

    def build(idx: np.ndarray, level: int) -> int:
        if level >= depth or len(idx) < 2 * min_leaf or width < 2:
            return leaf(idx)
        gi, hi = g[idx], h[idx]
        gs, hs = gi.sum(), hi.sum()
        parent = gs * gs / (hs + l2)
        cells = flat[idx].ravel()
        size = d * width

        def hist(weights: np.ndarray | None) -> np.ndarray:
            w = None if weights is None else np.repeat(weights, d)
            counts = np.bincount(cells, weights=w, minlength=size).reshape(d, width)
            return np.asarray(np.cumsum(counts, axis=1)[:, :-1])

        gl, hl, cl = hist(gi), hist(hi), hist(None)
        ok = valid & (cl >= min_leaf) & (len(idx) - cl >= min_leaf)
        gain = gl**2 / (hl + l2) + (gs - gl) ** 2 / (hs - hl + l2) - parent
        gain = np.where(ok, gain, -np.inf)
        best = int(np.argmax(gain))
        j, k = divmod(best, width - 1)
        if not gain[j, k] > 0.0:
            return leaf(idx)
        node = len(feature)
        feature.append(j)
        threshold.append(float(splits[j][k]))
        left.append(-1)
        right.append(-1)
        value.append(0.0)
        mask = binned[idx, j] <= k
        left[node] = build(idx[mask], level + 1)
        right[node] = build(idx[~mask], level + 1)
        return node

    build(np.arange(len(g)), 0)
    return Tree(tuple(feature), tuple(threshold), tuple(left), tuple(right), tuple(value)), update


__all__ = ["Tree", "TreeEnsemblePolicy", "fit_boosted_trees", "predict_proba"]

"""A routing policy meant for an SLM it was not fitted on: transferable features, per-model scale.

Log-probabilities mean different things for different models: a 0.5B model
that is right half the time and a 135M model that is right one time in ten
sit at different levels and spreads of `mean_logprob`, `min_logprob`,
entropy and margin. A policy fitted on one model's raw values therefore
misplaces its threshold on another. What transfers is the *position of an
answer among that model's own answers*: an answer less sure than most of its
model's answers is more often wrong, whatever the model.

So `TransferPolicy` works on two kinds of features:

* **context signals** (grounding in the passage, echoing the question,
  answer type: `confidence_router.signals.context`), used as they are:
  they describe the answer and its prompt, not the model (all but
  `abstention`, see `UNSCALED_SIGNALS`);
* **log-probability signals** put on a common scale per model: each value
  is replaced by its position among that model's answers (its empirical
  CDF, from 21 stored quantiles: `SignalScale`), a number in
  [-0.5, 0.5]. An increasing affine change of a model's signals (a shift,
  a stretch) changes no position at all; any other increasing change leaves
  the positions of the stored quantiles as they are and moves the others by
  less than one quantile step (5%). The quantiles come from that model's
  answers *without labels*. A user has unlabelled answers from the first
  query on, so the scale of a new model can be estimated from its first few
  dozen answers: `TransferPolicy.with_scale_from`. Until then the
  policy uses its default scale, the average of the scales of the models it
  was fitted on.

On these features a logistic regression estimates P(the SLM's answer is
right). It is fitted on several models' answers at once, each model weighted
equally, put on its own scale and given its own intercept
(`TransferPolicy.fit`); the shipped bias is their mean.

**Using it.** Without labels, put the policy on your SLM's scale from its
first answers, save it, and pass the file as the Router's `policy`:

```python
from confidence_router import load_builtin_policy, save_policy
from confidence_router.signals import compute_signals

shipped = load_builtin_policy("any-slm/extractive-qa")
first = [compute_signals(gen, messages) for messages, gen in first_answers]  # no labels
save_policy(shipped.with_scale_from(first), "my-slm.policy.json")
```

Once shadow checks (`Router(trace=..., shadow_rate=...)`) have labelled
some traffic, `confidence-router calibrate TRACES --policy
my-slm.policy.json --max-quality-loss 0.05 --out calibrated.json` sets the
threshold of this policy for a quality budget, and `confidence-router
calibrate TRACES --out fitted.json` (without `--policy`) fits a policy on
your SLM's own labelled answers, which then replaces the transferred one.

**Threshold.** The score is a probability and the default threshold is 0.5:
the answer is kept when the policy judges it more likely right than wrong.
The probability is calibrated on the pooled training models (their average
accuracy); on a much weaker or much stronger SLM it is an estimate, not a
guarantee, and `confidence-router calibrate` should set the threshold once
shadow checks have labelled some traffic.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from ..signals.token import CONTEXT_SIGNAL_NAMES, LOGPROB_SIGNAL_NAMES, Signals
from ..types import Decision
from ._decision import probability_decision
from ._fields import check_finite, check_linear_fields, check_signal

#: Signals put on a per-model scale: everything computed from log-probabilities (and length).
SCALED_SIGNALS: tuple[str, ...] = LOGPROB_SIGNAL_NAMES
#: Signals used as they are: they describe the answer and its prompt, not the model.
#: `abstention` is left out: whether abstaining is right depends on whether the passage
#: holds the answer (never on SQuAD v1.1, on half of SQuAD 2.0), so its weight learnt on
#: one task or prompt points the wrong way on another. An abstention is scored by its
#: grounding instead, which is low, so it escalates and the fallback decides.
UNSCALED_SIGNALS: tuple[str, ...] = tuple(n for n in CONTEXT_SIGNAL_NAMES if n != "abstention")
#: Every feature of the default transfer policy, scaled ones first.
TRANSFER_FEATURES: tuple[str, ...] = SCALED_SIGNALS + UNSCALED_SIGNALS
#: Fewest usable answers `SignalScale.estimate` accepts (quartiles of fewer are noise).
MIN_SCALE_ANSWERS = 10


def _usable(rows: Sequence[Signals]) -> list[Signals]:
    """Answers with at least one token: empty answers have all-zero statistics and are
    escalated by the router whatever the policy says, so they say nothing about the scale."""
    return [s for s in rows if s.length > 0]


#: Probability levels of the quantiles a `SignalScale` stores: 0, 5%, ..., 100%.
LEVELS: tuple[float, ...] = tuple(i / 20 for i in range(21))


@dataclass(frozen=True)
class SignalScale:
    """Where one model's log-probability signals sit: per signal, its quantiles.

    `quantiles[i]` holds the values of `signals[i]` at the probability
    levels `LEVELS` among the model's answers (order statistics, so a
    monotone change of the signal moves them with it). `position` turns a
    value into its position among those answers, a number in [-0.5, 0.5]
    (0 = the median answer): the empirical CDF, linear between quantiles,
    ties at their middle. Ranks rather than a mean and standard deviation,
    because log-probability signals have long tails and point masses (many
    answers at log-probability 0), and their shape differs between models.
    `n_answers` and `source` say where the scale came from.
    """

    signals: tuple[str, ...]
    quantiles: tuple[tuple[float, ...], ...]
    n_answers: int = 0
    source: str = ""
    #: Per signal, the distinct quantile values and their CDF levels (derived: the hot path).
    _cdf: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "signals", tuple(self.signals))
        object.__setattr__(self, "quantiles", tuple(tuple(q) for q in self.quantiles))
        for i, name in enumerate(self.signals):
            check_signal(f"scale.signals[{i}]", name)
        if len(self.quantiles) != len(self.signals):
            raise ConfigurationError(
                "scale.quantiles",
                f"has {len(self.quantiles)} rows for {len(self.signals)} signals",
            )
        cdf = []
        for i, row in enumerate(self.quantiles):
            if len(row) != len(LEVELS):
                raise ConfigurationError(
                    f"scale.quantiles[{i}]", f"needs {len(LEVELS)} values, got {len(row)}"
                )
            for j, value in enumerate(row):
                check_finite(f"scale.quantiles[{i}][{j}]", value)
            if any(b < a for a, b in zip(row, row[1:])):
                raise ConfigurationError(f"scale.quantiles[{i}]", "must be non-decreasing")
            cdf.append(_distinct_cdf(row))
        object.__setattr__(self, "_cdf", tuple(cdf))

    def position(self, index: int, value: float) -> float:
        """Position of `value` of signal `signals[index]` among the answers, in [-0.5, 0.5]."""
        xs, us = self._cdf[index]
        if value <= xs[0]:
            return us[0] - 0.5
        if value >= xs[-1]:
            return us[-1] - 0.5
        k = bisect.bisect_right(xs, value)  # xs[k-1] <= value < xs[k]
        t = (value - xs[k - 1]) / (xs[k] - xs[k - 1])
        return us[k - 1] + t * (us[k] - us[k - 1]) - 0.5

    def positions(self, index: int, values: np.ndarray) -> np.ndarray:
        """`position` of many values (vectorised)."""
        xs, us = self._cdf[index]
        return np.asarray(np.interp(values, xs, us) - 0.5)

    @classmethod
    def estimate(
        cls,
        rows: Sequence[Signals],
        signals: Sequence[str] = SCALED_SIGNALS,
        *,
        source: str = "",
        min_answers: int = MIN_SCALE_ANSWERS,
    ) -> SignalScale:
        """The scale of these answers (no labels needed); empty answers are left out.

        Raises:
            ConfigurationError: fewer than `min_answers` non-empty answers.
        """
        usable = _usable(rows)
        if len(usable) < min_answers:
            raise ConfigurationError(
                "rows",
                f"estimating a scale needs at least {min_answers} non-empty answers, "
                f"got {len(usable)}",
            )
        x = np.array([[s[name] for name in signals] for s in usable], dtype=np.float64)
        x = x.reshape(len(usable), len(signals))
        q = np.percentile(x, np.asarray(LEVELS) * 100.0, axis=0, method="inverted_cdf")
        return cls(
            tuple(signals),
            tuple(tuple(float(v) for v in q[:, j]) for j in range(len(signals))),
            len(usable),
            source or f"estimated from {len(usable)} unlabelled answers",
        )

    @classmethod
    def average(
        cls,
        scales: Sequence[SignalScale],
        weights: Sequence[float] | None = None,
        *,
        source: str = "",
    ) -> SignalScale:
        """The (weighted) mean of several models' quantiles, level by level: the default scale.

        Raises:
            ConfigurationError: no scale, or scales of different signals.
        """
        if not scales:
            raise ConfigurationError("scales", "need at least one scale to average")
        names = scales[0].signals
        if any(s.signals != names for s in scales):
            raise ConfigurationError("scales", "scales of different signals cannot be averaged")
        w = np.ones(len(scales)) if weights is None else np.asarray(weights, dtype=np.float64)
        q = np.average(
            [np.asarray(s.quantiles).reshape(len(names), len(LEVELS)) for s in scales],
            axis=0,
            weights=w,
        )
        q = np.maximum.accumulate(q, axis=1)  # exact rounding can break the order
        return cls(
            names,
            tuple(tuple(float(v) for v in row) for row in q),
            sum(s.n_answers for s in scales),
            source or f"average of {len(scales)} models' scales",
        )

    def to_dict(self) -> dict[str, Any]:
        """Returns the scale as JSON-ready data (the policy file's `scale`)."""
        return {
            "signals": list(self.signals),
            "levels": list(LEVELS),
            "quantiles": [list(row) for row in self.quantiles],
            "n_answers": self.n_answers,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignalScale:
        """Rebuild the scale `to_dict` wrote; raises `ConfigurationError` for other levels."""
        levels = data.get("levels")
        if levels is not None and [float(v) for v in levels] != list(LEVELS):
            raise ConfigurationError("scale.levels", f"must be {list(LEVELS)}, got {levels!r}")
        return cls(
            tuple(data["signals"]),
            tuple(tuple(row) for row in data["quantiles"]),
            int(data.get("n_answers", 0)),
            str(data.get("source", "")),
        )


def _distinct_cdf(row: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The distinct quantile values and, for each, the middle of the levels it holds."""
    xs: list[float] = []
    us: list[list[float]] = []
    for value, level in zip(row, LEVELS):
        if xs and value == xs[-1]:
            us[-1].append(level)
        else:
            xs.append(value)
            us.append([level])
    return tuple(xs), tuple((u[0] + u[-1]) / 2.0 for u in us)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def fit_weighted_logistic(
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    l2: float = 1.0,
    max_iter: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression with sample weights (Newton's method, numpy only).

    The weights let every training model count equally however many answers
    it has; they are normalised to sum to the number of rows, so `l2` means
    what it means for `fit_logistic_arrays`.
    With `groups` (a group number per row) each group gets its own
    intercept, so the slopes are learnt *within* models: how often a model is
    right at all (from 6% to 72% here) is not something the features of an
    answer can explain, and it would bend the slopes. The returned bias is the
    weighted mean of the groups' intercepts: a model of average accuracy.
    Returns `(weights with the bias last, mean, std)` of the standardisation.
    """
    w_rows = np.asarray(weights, dtype=np.float64)
    w_rows = w_rows * (len(w_rows) / w_rows.sum())
    mean = np.average(x, axis=0, weights=w_rows)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w_rows))
    std[std < 1e-12] = 1.0
    g = np.zeros(len(y), dtype=int) if groups is None else np.asarray(groups, dtype=int)
    n_groups = int(g.max()) + 1
    design = np.hstack([(x - mean) / std, np.eye(n_groups)[g]])
    coef = np.zeros(design.shape[1])
    penalty = np.zeros(design.shape[1])
    penalty[: x.shape[1]] = float(l2)  # the intercepts are not shrunk
    for _ in range(max_iter):
        p = _sigmoid(design @ coef)
        grad = design.T @ (w_rows * (p - y)) + penalty * coef
        hess = (design.T * (w_rows * p * (1 - p))) @ design + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-9 * np.eye(design.shape[1]), grad)
        coef -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    group_weight = np.bincount(g, weights=w_rows, minlength=n_groups)
    bias = float(np.average(coef[x.shape[1] :], weights=group_weight))
    return np.append(coef[: x.shape[1]], bias), mean, std


@dataclass(frozen=True)
class TransferPolicy:
    """P(SLM answer right) from context signals and per-model-scaled log-prob signals.

    `features` are signal names; those in `scale.signals` are replaced by
    their position among the model's answers (`SignalScale.position`,
    in [-0.5, 0.5]), the others are used as they are. Then the features are
    standardised with `mean`/`std` (fitted constants, the same for every
    model) and combined with `weights` and `bias` into a log-odds.

    `scale` starts as the default (the average of the training models'
    scales); `with_scale_from` replaces it with one estimated from the
    user's own unlabelled answers. Threshold 0.5 keeps an answer judged more
    likely right than wrong (see the module docstring).
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: SignalScale
    threshold: float = 0.5
    #: Per feature: its index in `scale.signals`, or None if used as it is (derived).
    _scaled_at: tuple[int | None, ...] = field(init=False, repr=False, compare=False, default=())

    def __post_init__(self) -> None:
        check_linear_fields(self)
        if not isinstance(self.scale, SignalScale):
            raise ConfigurationError("scale", f"must be a SignalScale, got {self.scale!r}")
        missing = [s for s in self.scale.signals if s not in self.features]
        if missing:
            raise ConfigurationError("scale", f"scales signals that are not features: {missing}")
        check_finite("bias", self.bias)
        check_finite("threshold", self.threshold)
        where = {name: i for i, name in enumerate(self.scale.signals)}
        object.__setattr__(self, "_scaled_at", tuple(where.get(f) for f in self.features))

    # -- features ---------------------------------------------------------------------------

    def transform(self, signals: Signals) -> list[float]:
        """The features of one answer after the per-model scale (before standardising)."""
        scale = self.scale
        return [
            signals[name] if at is None else scale.position(at, signals[name])
            for name, at in zip(self.features, self._scaled_at)
        ]

    def transform_many(self, rows: Sequence[Signals]) -> np.ndarray:
        """The features of many answers, (n, d), vectorised (for fitting and evaluation)."""
        return transform_rows(rows, self.features, self.scale)

    # -- scores and decisions ---------------------------------------------------------------

    def _terms(self, signals: Signals) -> list[float]:
        return [
            (v - m) / s * w
            for v, w, m, s in zip(self.transform(signals), self.weights, self.mean, self.std)
        ]

    def score(self, signals: Signals) -> float:
        """Estimated probability that the SLM's answer is right."""
        z = math.fsum(self._terms(signals)) + self.bias
        return 0.5 * (1.0 + math.tanh(0.5 * z))

    def scores(self, rows: Sequence[Signals]) -> np.ndarray:
        """Vectorised scores of many answers (for evaluation)."""
        if not rows:
            return np.zeros(0)
        x = (self.transform_many(rows) - np.asarray(self.mean)) / np.asarray(self.std)
        return _sigmoid(x @ np.asarray(self.weights) + self.bias)

    def decide(self, signals: Signals) -> Decision:
        terms = self._terms(signals)
        score = 0.5 * (1.0 + math.tanh(0.5 * (math.fsum(terms) + self.bias)))
        top = max(range(len(terms)), key=lambda i: abs(terms[i]))
        detail = (
            f"; strongest feature {self.features[top]}={signals[self.features[top]]:.3g} "
            f"(transfer policy, scale: {self.scale.source or 'unnamed'})"
        )
        return probability_decision("transfer", score, self.threshold, signals, detail)

    # -- new policies from this one ---------------------------------------------------------

    def with_threshold(self, threshold: float) -> TransferPolicy:
        return replace(self, threshold=threshold)

    def with_scale(self, scale: SignalScale) -> TransferPolicy:
        """The same model on another scale.

        Raises:
            ConfigurationError: the scale is of other signals than this policy scales.
        """
        if scale.signals != self.scale.signals:
            raise ConfigurationError(
                "scale", f"scales {scale.signals}, this policy scales {self.scale.signals}"
            )
        return replace(self, scale=scale)

    def with_scale_from(
        self, rows: Sequence[Signals], *, min_answers: int = MIN_SCALE_ANSWERS
    ) -> TransferPolicy:
        """The same model on the scale of *your* SLM, estimated from its unlabelled answers.

        Pass the Signals of the SLM's first answers to your own traffic (from
        `compute_signals`, the `signals` of recorded traces, or a
        Decision's `signals` dict as `Signals(**d.signals)`); no labels
        are needed. At least `min_answers` non-empty answers; a few dozen
        give a steady scale (LOMO measures it with a few hundred).

        Raises:
            ConfigurationError: fewer than `min_answers` non-empty answers.
        """
        scale = SignalScale.estimate(rows, self.scale.signals, min_answers=min_answers)
        return self.with_scale(scale)

    # -- fitting ----------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        groups: Sequence[tuple[Sequence[Signals], Sequence[bool] | np.ndarray]],
        *,
        group_weights: Sequence[float] | None = None,
        features: Sequence[str] = TRANSFER_FEATURES,
        scaled: Sequence[str] = SCALED_SIGNALS,
        l2: float = 1.0,
        threshold: float = 0.5,
    ) -> TransferPolicy:
        """Fit on several models' answers: `groups` holds (answers, right?) per model.

        Each group (one model on one task) is put on its own scale, estimated
        from its answers with the labels unused, and has its own intercept in
        the fit (see `fit_weighted_logistic`). Each group weighs
        `group_weights[i]` (default: all the same) however many answers it
        has; the default scale and the bias of the result are the means over
        the groups with the same weights.

        Raises:
            ConfigurationError: no group, weights that do not match the groups or
                are not positive, labels that do not match a group's answers, or
                answers of one outcome only.
        """
        scaled = tuple(s for s in features if s in scaled)
        if not groups:
            raise ConfigurationError("groups", "need the answers of at least one model")
        totals = [1.0] * len(groups) if group_weights is None else list(group_weights)
        if len(totals) != len(groups) or any(check_finite("group_weights", w) <= 0 for w in totals):
            raise ConfigurationError(
                "group_weights", f"need {len(groups)} positive weights, got {group_weights!r}"
            )
        blocks, labels, weights, scales, ids = [], [], [], [], []
        for i, (rows, correct) in enumerate(groups):
            y = np.asarray(correct, dtype=np.float64)
            if len(rows) != len(y) or not len(rows):
                raise ConfigurationError(f"groups[{i}]", f"{len(rows)} answers for {len(y)} labels")
            scale = SignalScale.estimate(rows, scaled)
            scales.append(scale)
            blocks.append(transform_rows(rows, features, scale))
            labels.append(y)
            weights.append(np.full(len(y), totals[i] / len(y)))
            ids.append(np.full(len(y), i))
        y_all = np.concatenate(labels)
        if y_all.min() == y_all.max():
            raise ConfigurationError("groups", "need both right and wrong answers to fit")
        coef, mean, std = fit_weighted_logistic(
            np.vstack(blocks), y_all, np.concatenate(weights), groups=np.concatenate(ids), l2=l2
        )
        return cls(
            tuple(features),
            tuple(float(v) for v in coef[:-1]),
            float(coef[-1]),
            tuple(float(v) for v in mean),
            tuple(float(v) for v in std),
            SignalScale.average(scales, totals),
            threshold,
        )

    # -- serialisation ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "transfer",
            "features": list(self.features),
            "weights": list(self.weights),
            "bias": self.bias,
            "mean": list(self.mean),
            "std": list(self.std),
            "scale": self.scale.to_dict(),
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferPolicy:
        """Rebuild the policy `to_dict` wrote; raises `ConfigurationError` for bad fields."""
        return cls(
            tuple(data["features"]),
            tuple(data["weights"]),
            float(data["bias"]),
            tuple(data["mean"]),
            tuple(data["std"]),
            SignalScale.from_dict(data["scale"]),
            float(data.get("threshold", 0.5)),
        )


def transform_rows(
    rows: Sequence[Signals], features: Sequence[str], scale: SignalScale
) -> np.ndarray:
    """Features of many answers: scaled ones as positions on `scale`, the others as they are."""
    x = np.array([[s[f] for f in features] for s in rows], dtype=np.float64).reshape(
        len(rows), len(features)
    )
    where = {name: i for i, name in enumerate(scale.signals)}
    for j, name in enumerate(features):
        if name in where:
            x[:, j] = scale.positions(where[name], x[:, j])
    return x


__all__ = [
    "LEVELS",
    "MIN_SCALE_ANSWERS",
    "SCALED_SIGNALS",
    "SignalScale",
    "TRANSFER_FEATURES",
    "TransferPolicy",
    "UNSCALED_SIGNALS",
    "fit_weighted_logistic",
    "transform_rows",
]

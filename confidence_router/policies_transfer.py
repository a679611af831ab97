"""A routing policy meant for an SLM it was not fitted on: transferable features, per-model scale.

Log-probabilities mean different things for different models: a 0.5B model
that is right half the time and a 135M model that is right one time in ten
sit at different levels and spreads of ``mean_logprob``, ``min_logprob``,
entropy and margin. A policy fitted on one model's raw values therefore
misplaces its threshold on another. What transfers is the *position of an
answer among that model's own answers*: an answer less sure than most of its
model's answers is more often wrong, whatever the model.

So :class:`TransferPolicy` works on two kinds of features:

* **context signals** (grounding in the passage, echoing the question,
  abstention, answer type: :mod:`confidence_router.context_signals`), used as
  they are: they describe the answer and its prompt, not the model;
* **log-probability signals** put on a common scale per model,
  ``z = (x - median) / IQR`` (clipped to ``[-clip, clip]``), where the median
  and inter-quartile range (:class:`SignalScale`) come from that model's
  answers *without labels*. A user has unlabelled answers from the first
  query on, so the scale of a new model can be estimated from its first few
  dozen answers: :meth:`TransferPolicy.with_scale_from`. Until then the policy
  uses its default scale, the average of the scales of the models it was
  fitted on.

On these features a logistic regression estimates P(the SLM's answer is
right). It is fitted on several models' answers at once, each model weighted
equally and each put on its own scale (:meth:`TransferPolicy.fit`).

**Threshold.** The score is a probability and the default threshold is 0.5:
the answer is kept when the policy judges it more likely right than wrong.
The probability is calibrated on the pooled training models (their average
accuracy); on a much weaker or much stronger SLM it is an estimate, not a
guarantee, and ``confidence-router calibrate`` should set the threshold once
shadow checks have labelled some traffic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .errors import ConfigurationError
from .policies import _check_finite, _check_signal, _route
from .signals import CONTEXT_SIGNAL_NAMES, LOGPROB_SIGNAL_NAMES, Signals
from .types import Decision

#: Signals put on a per-model scale: everything computed from log-probabilities (and length).
SCALED_SIGNALS: tuple[str, ...] = LOGPROB_SIGNAL_NAMES
#: Signals used as they are: they describe the answer and its prompt, not the model.
UNSCALED_SIGNALS: tuple[str, ...] = CONTEXT_SIGNAL_NAMES
#: Every feature of the default transfer policy, scaled ones first.
TRANSFER_FEATURES: tuple[str, ...] = SCALED_SIGNALS + UNSCALED_SIGNALS
#: Fewest usable answers :meth:`SignalScale.estimate` accepts (quartiles of fewer are noise).
MIN_SCALE_ANSWERS = 10
_TINY_SPREAD = 1e-9


def _usable(rows: Sequence[Signals]) -> list[Signals]:
    """Answers with at least one token: empty answers have all-zero statistics and are
    escalated by the router whatever the policy says, so they say nothing about the scale."""
    return [s for s in rows if s.length > 0]


@dataclass(frozen=True)
class SignalScale:
    """Where one model's log-probability signals sit: per signal a centre and a spread.

    ``center`` is the median and ``spread`` the inter-quartile range of the
    model's answers (the spread falls back to the standard deviation, then 1,
    when the quartiles coincide). Robust statistics, because log-probability
    signals have long tails. ``n_answers`` and ``source`` say where it came from.
    """

    signals: tuple[str, ...]
    center: tuple[float, ...]
    spread: tuple[float, ...]
    n_answers: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("signals", "center", "spread"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for i, name in enumerate(self.signals):
            _check_signal(f"scale.signals[{i}]", name)
        for name in ("center", "spread"):
            values = getattr(self, name)
            if len(values) != len(self.signals):
                raise ConfigurationError(
                    f"scale.{name}", f"has {len(values)} values for {len(self.signals)} signals"
                )
            for i, value in enumerate(values):
                _check_finite(f"scale.{name}[{i}]", value)
        for i, value in enumerate(self.spread):
            if value <= 0:
                raise ConfigurationError(f"scale.spread[{i}]", f"must be positive, got {value!r}")

    @classmethod
    def estimate(
        cls,
        rows: Sequence[Signals],
        signals: Sequence[str] = SCALED_SIGNALS,
        *,
        source: str = "",
        min_answers: int = MIN_SCALE_ANSWERS,
    ) -> SignalScale:
        """The scale of these answers (no labels needed); empty answers are left out."""
        usable = _usable(rows)
        if len(usable) < min_answers:
            raise ConfigurationError(
                "rows",
                f"estimating a scale needs at least {min_answers} non-empty answers, "
                f"got {len(usable)}",
            )
        x = np.array([[s[name] for name in signals] for s in usable], dtype=np.float64)
        q25, median, q75 = np.percentile(x, [25.0, 50.0, 75.0], axis=0)
        spread = q75 - q25
        std = x.std(axis=0)
        spread = np.where(spread > _TINY_SPREAD, spread, np.where(std > _TINY_SPREAD, std, 1.0))
        return cls(
            tuple(signals),
            tuple(float(v) for v in median),
            tuple(float(v) for v in spread),
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
        """The (weighted) mean of several models' scales: the default scale of a fit."""
        if not scales:
            raise ConfigurationError("scales", "need at least one scale to average")
        names = scales[0].signals
        if any(s.signals != names for s in scales):
            raise ConfigurationError("scales", "scales of different signals cannot be averaged")
        w = np.ones(len(scales)) if weights is None else np.asarray(weights, dtype=np.float64)
        center = np.average([s.center for s in scales], axis=0, weights=w)
        spread = np.average([s.spread for s in scales], axis=0, weights=w)
        return cls(
            names,
            tuple(float(v) for v in center),
            tuple(float(v) for v in spread),
            sum(s.n_answers for s in scales),
            source or f"average of {len(scales)} models' scales",
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "signals": list(self.signals),
            "center": list(self.center),
            "spread": list(self.spread),
            "n_answers": self.n_answers,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignalScale:
        return cls(
            tuple(data["signals"]),
            tuple(data["center"]),
            tuple(data["spread"]),
            int(data.get("n_answers", 0)),
            str(data.get("source", "")),
        )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)))


def fit_weighted_logistic(
    x: np.ndarray, y: np.ndarray, weights: np.ndarray, *, l2: float = 1.0, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """L2-regularised logistic regression with sample weights (Newton's method, numpy only).

    The weights let every training model count equally however many answers
    it has; they are normalised to sum to the number of rows, so ``l2`` means
    what it means for :func:`~confidence_router.policies.fit_logistic_arrays`.
    Returns ``(weights with the bias last, mean, std)`` of the standardisation.
    """
    w_rows = np.asarray(weights, dtype=np.float64)
    w_rows = w_rows * (len(w_rows) / w_rows.sum())
    mean = np.average(x, axis=0, weights=w_rows)
    std = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w_rows))
    std[std < 1e-12] = 1.0
    design = np.hstack([(x - mean) / std, np.ones((len(y), 1))])
    coef = np.zeros(design.shape[1])
    penalty = np.full(design.shape[1], float(l2))
    penalty[-1] = 0.0  # the bias is not shrunk
    for _ in range(max_iter):
        p = _sigmoid(design @ coef)
        grad = design.T @ (w_rows * (p - y)) + penalty * coef
        hess = (design.T * (w_rows * p * (1 - p))) @ design + np.diag(penalty)
        step = np.linalg.solve(hess + 1e-9 * np.eye(design.shape[1]), grad)
        coef -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return coef, mean, std


@dataclass(frozen=True)
class TransferPolicy:
    """P(SLM answer right) from context signals and per-model-scaled log-prob signals.

    ``features`` are signal names; those in ``scale.signals`` are put on the
    scale ``scale`` first (``(x - center) / spread``, clipped to ``[-clip,
    clip]``), the others are used as they are. Then the features are
    standardised with ``mean``/``std`` (fitted constants, the same for every
    model) and combined with ``weights`` and ``bias`` into a log-odds.

    ``scale`` starts as the default (the average of the training models'
    scales); :meth:`with_scale_from` replaces it with one estimated from the
    user's own unlabelled answers. Threshold 0.5 keeps an answer judged more
    likely right than wrong (see the module docstring).
    """

    features: tuple[str, ...]
    weights: tuple[float, ...]
    bias: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    scale: SignalScale
    clip: float = 4.0
    threshold: float = 0.5
    #: Per feature: (center, spread) if it is scaled, else None; derived, for the hot path.
    _affine: tuple[tuple[float, float] | None, ...] = field(
        init=False, repr=False, compare=False, default=()
    )

    def __post_init__(self) -> None:
        for name in ("features", "weights", "mean", "std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.features:
            raise ConfigurationError("features", "at least one feature is required")
        for i, name in enumerate(self.features):
            _check_signal(f"features[{i}]", name)
        n = len(self.features)
        for name in ("weights", "mean", "std"):
            values = getattr(self, name)
            if len(values) != n:
                raise ConfigurationError(
                    name, f"has {len(values)} values for {n} features {self.features}"
                )
            for i, value in enumerate(values):
                _check_finite(f"{name}[{i}]", value)
        for i, value in enumerate(self.std):
            if value <= 0:
                raise ConfigurationError(f"std[{i}]", f"must be positive, got {value!r}")
        if not isinstance(self.scale, SignalScale):
            raise ConfigurationError("scale", f"must be a SignalScale, got {self.scale!r}")
        missing = [s for s in self.scale.signals if s not in self.features]
        if missing:
            raise ConfigurationError("scale", f"scales signals that are not features: {missing}")
        _check_finite("bias", self.bias)
        if _check_finite("clip", self.clip) <= 0:
            raise ConfigurationError("clip", f"must be positive, got {self.clip!r}")
        _check_finite("threshold", self.threshold)
        where = dict(zip(self.scale.signals, zip(self.scale.center, self.scale.spread)))
        object.__setattr__(self, "_affine", tuple(where.get(f) for f in self.features))

    # -- features ---------------------------------------------------------------------------

    def transform(self, signals: Signals) -> list[float]:
        """The features of one answer after the per-model scale (before standardising)."""
        clip = self.clip
        out: list[float] = []
        for name, affine in zip(self.features, self._affine):
            value = signals[name]
            if affine is not None:
                value = min(max((value - affine[0]) / affine[1], -clip), clip)
            out.append(value)
        return out

    def transform_many(self, rows: Sequence[Signals]) -> np.ndarray:
        """The features of many answers, (n, d), vectorised (for fitting and evaluation)."""
        return transform_rows(rows, self.features, self.scale, self.clip)

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
        route = _route(score, self.threshold)
        verdict = "confident" if route == "slm" else "unsure"
        top = max(range(len(terms)), key=lambda i: abs(terms[i]))
        reason = (
            f"{verdict}: P(slm correct) {score:.2f} vs threshold {self.threshold:.2f}; "
            f"strongest feature {self.features[top]}={signals[self.features[top]]:.3g} "
            f"(transfer policy, scale: {self.scale.source or 'unnamed'})"
        )
        return Decision(route, score, self.threshold, signals.as_dict(), reason, "transfer")

    # -- new policies from this one ---------------------------------------------------------

    def with_threshold(self, threshold: float) -> TransferPolicy:
        return replace(self, threshold=threshold)

    def with_scale(self, scale: SignalScale) -> TransferPolicy:
        """The same model on another scale (its signals must be the ones this policy scales)."""
        if scale.signals != self.scale.signals:
            raise ConfigurationError(
                "scale", f"scales {scale.signals}, this policy scales {self.scale.signals}"
            )
        return replace(self, scale=scale)

    def with_scale_from(
        self, rows: Sequence[Signals], *, min_answers: int = MIN_SCALE_ANSWERS
    ) -> TransferPolicy:
        """The same model on the scale of *your* SLM, estimated from its unlabelled answers.

        Pass the Signals of the SLM's first answers to your own traffic (for
        example ``[d.signals for d in decisions]`` turned back into Signals, or
        the ``signals`` of recorded traces); no labels are needed. At least
        ``min_answers`` non-empty answers; a few dozen give a steady scale.
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
        clip: float = 4.0,
        threshold: float = 0.5,
    ) -> TransferPolicy:
        """Fit on several models' answers: ``groups`` holds (answers, right?) per model.

        Each group (one model on one task) is put on its own scale, estimated
        from its answers with the labels unused. Each group weighs
        ``group_weights[i]`` in the fit (default: all the same) however many
        answers it has, and the default scale of the result is the mean of
        the groups' scales with the same weights.
        """
        scaled = tuple(s for s in features if s in scaled)
        if not groups:
            raise ConfigurationError("groups", "need the answers of at least one model")
        totals = [1.0] * len(groups) if group_weights is None else list(group_weights)
        if len(totals) != len(groups) or any(
            _check_finite("group_weights", w) <= 0 for w in totals
        ):
            raise ConfigurationError(
                "group_weights", f"need {len(groups)} positive weights, got {group_weights!r}"
            )
        blocks, labels, weights, scales = [], [], [], []
        for i, (rows, correct) in enumerate(groups):
            y = np.asarray(correct, dtype=np.float64)
            if len(rows) != len(y) or not len(rows):
                raise ConfigurationError(f"groups[{i}]", f"{len(rows)} answers for {len(y)} labels")
            scale = SignalScale.estimate(rows, scaled)
            scales.append(scale)
            blocks.append(transform_rows(rows, features, scale, clip))
            labels.append(y)
            weights.append(np.full(len(y), totals[i] / len(y)))
        y_all = np.concatenate(labels)
        if y_all.min() == y_all.max():
            raise ConfigurationError("groups", "need both right and wrong answers to fit")
        coef, mean, std = fit_weighted_logistic(
            np.vstack(blocks), y_all, np.concatenate(weights), l2=l2
        )
        return cls(
            tuple(features),
            tuple(float(v) for v in coef[:-1]),
            float(coef[-1]),
            tuple(float(v) for v in mean),
            tuple(float(v) for v in std),
            SignalScale.average(scales, totals),
            clip,
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
            "clip": self.clip,
            "threshold": self.threshold,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TransferPolicy:
        return cls(
            tuple(data["features"]),
            tuple(data["weights"]),
            float(data["bias"]),
            tuple(data["mean"]),
            tuple(data["std"]),
            SignalScale.from_dict(data["scale"]),
            float(data.get("clip", 4.0)),
            float(data.get("threshold", 0.5)),
        )


def transform_rows(
    rows: Sequence[Signals], features: Sequence[str], scale: SignalScale, clip: float
) -> np.ndarray:
    """Features of many answers on ``scale`` (clipped), unscaled features as they are."""
    x = np.array([[s[f] for f in features] for s in rows], dtype=np.float64).reshape(
        len(rows), len(features)
    )
    where = {name: i for i, name in enumerate(scale.signals)}
    for j, name in enumerate(features):
        if name in where:
            k = where[name]
            x[:, j] = np.clip((x[:, j] - scale.center[k]) / scale.spread[k], -clip, clip)
    return x


__all__ = [
    "MIN_SCALE_ANSWERS",
    "SCALED_SIGNALS",
    "SignalScale",
    "TRANSFER_FEATURES",
    "TransferPolicy",
    "UNSCALED_SIGNALS",
    "fit_weighted_logistic",
    "transform_rows",
]

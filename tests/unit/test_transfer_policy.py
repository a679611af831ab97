"""TransferPolicy: per-model scale from unlabelled answers, invariance, serialisation, threshold."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from confidence_router.errors import ConfigurationError
from confidence_router.eval import metrics
from confidence_router.policies import LogisticPolicy, policy_from_dict
from confidence_router.policies.transfer import (
    LEVELS,
    SCALED_SIGNALS,
    TRANSFER_FEATURES,
    SignalScale,
    TransferPolicy,
    fit_weighted_logistic,
)
from confidence_router.signals import SIGNAL_NAMES, Signals

LOGPROB_STATS = (
    "mean_logprob",
    "min_logprob",
    "sum_logprob",
    "q10_logprob",
    "q25_logprob",
    "median_logprob",
)


def sig(**values: float) -> Signals:
    """Signals with every log-prob statistic 0, length 3, and the given values."""
    base = {name: 0.0 for name in SIGNAL_NAMES[:11]}
    base["length"] = 3.0
    base.update(values)
    return Signals(**base)


def linear_scale(low: float = -3.0, high: float = 1.0) -> SignalScale:
    """A mean_logprob scale whose 21 quantiles are evenly spaced: position = (x - mid) / range."""
    step = (high - low) / 20
    return SignalScale(("mean_logprob",), (tuple(low + step * i for i in range(21)),))


def one_feature_policy() -> TransferPolicy:
    """log-odds = 4 x position = mean_logprob + 1 on [-3, 1] (mean 0, std 1, weight 4, bias 0)."""
    return TransferPolicy(("mean_logprob",), (4.0,), 0.0, (0.0,), (1.0,), linear_scale())


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def test_scale_holds_the_quantiles_of_non_empty_answers() -> None:
    rows = [sig(mean_logprob=-float(v)) for v in range(21)]  # -20 .. 0
    rows.append(Signals(*([0.0] * 11)))  # an empty answer: left out
    scale = SignalScale.estimate(rows, ("mean_logprob",))
    assert scale.n_answers == 21
    assert "21 unlabelled answers" in scale.source
    # order statistics: level i/20 is the ceil(21 i / 20)-th smallest answer
    expected = [-20.0] + [-20.0 + math.ceil(21 * i / 20) - 1 for i in range(1, 21)]
    assert scale.quantiles == (tuple(expected),)
    assert scale.position(0, -10.0) == 0.0  # the median answer
    assert scale.position(0, -19.0) == pytest.approx(0.05 - 0.5)
    assert scale.position(0, -19.5) == pytest.approx(0.025 - 0.5)  # linear between quantiles
    assert scale.position(0, 0.0) == 0.5
    assert scale.position(0, -100.0) == -0.5  # beyond every answer: the end of the scale
    values = np.array([-100.0, -19.5, -10.0, 3.0])
    assert scale.positions(0, values) == pytest.approx([scale.position(0, v) for v in values])


def test_tied_answers_sit_in_the_middle_of_their_levels() -> None:
    rows = [sig(min_logprob=-float(v)) for v in range(1, 6)] + [sig(min_logprob=0.0)] * 15
    scale = SignalScale.estimate(rows, ("min_logprob",))
    # 20 answers: -5..-1 hold levels 0-0.25, the fifteen zeros the levels 0.30 .. 1.00
    assert scale.position(0, 0.0) == pytest.approx((0.30 + 1.00) / 2 - 0.5)
    assert scale.position(0, -5.0) == pytest.approx((0.0 + 0.05) / 2 - 0.5)
    assert scale.position(0, -3.0) == pytest.approx(0.15 - 0.5)


def test_scale_needs_enough_answers() -> None:
    with pytest.raises(ConfigurationError, match="at least 10"):
        SignalScale.estimate([sig(mean_logprob=-1.0)] * 9)


def test_scale_average_is_the_weighted_mean_of_each_quantile() -> None:
    a, b = linear_scale(-3.0, 1.0), linear_scale(-7.0, -3.0)
    avg = SignalScale.average([a, b], [3.0, 1.0])
    assert avg.quantiles[0] == pytest.approx(linear_scale(-4.0, 0.0).quantiles[0])
    assert len(LEVELS) == 21


def test_score_is_the_probability_of_the_scaled_log_odds() -> None:
    policy = one_feature_policy()
    assert policy.score(sig(mean_logprob=-1.0)) == pytest.approx(0.5)
    assert policy.score(sig(mean_logprob=-2.0)) == pytest.approx(sigmoid(-1.0))
    assert policy.score(sig(mean_logprob=0.5)) == pytest.approx(sigmoid(1.5))
    # beyond the lowest quantile the position stays at the end of the scale
    assert policy.score(sig(mean_logprob=-100.0)) == pytest.approx(sigmoid(-2.0))
    rows = [sig(mean_logprob=v) for v in (-100.0, -2.0, -1.0, 0.5)]
    assert policy.scores(rows) == pytest.approx([policy.score(r) for r in rows])


def test_threshold_half_keeps_answers_more_likely_right_than_wrong() -> None:
    policy = one_feature_policy()
    assert policy.threshold == 0.5
    at_even_odds = policy.decide(sig(mean_logprob=-1.0))
    assert at_even_odds.route == "slm"  # P = 0.5 exactly: kept (escalate below the threshold)
    assert policy.decide(sig(mean_logprob=-1.01)).route == "llm"
    assert policy.decide(sig(mean_logprob=-0.99)).route == "slm"
    stricter = policy.with_threshold(sigmoid(0.5))
    # a threshold of sigmoid(0.5) keeps answers whose log-odds reach 0.5: mean_logprob >= -0.5
    assert stricter.decide(sig(mean_logprob=-0.45)).route == "slm"
    assert stricter.decide(sig(mean_logprob=-0.55)).route == "llm"
    decision = policy.decide(sig(mean_logprob=-2.0))
    assert decision.policy == "transfer"
    assert decision.score == pytest.approx(sigmoid(-1.0))
    assert "P(slm correct) 0.27" in decision.reason


def _shifted(rows: list[Signals], a: float, b: float) -> list[Signals]:
    """Another model: every log-prob statistic mapped by x -> a x + b (a > 0, monotone)."""
    return [replace(s, **{n: a * s[n] + b for n in LOGPROB_STATS}) for s in rows]


def _bent(rows: list[Signals]) -> list[Signals]:
    """Another model: every log-prob statistic (all <= 0) mapped by x -> -(-x)^1.5, increasing."""
    return [replace(s, **{n: -((-s[n]) ** 1.5) for n in LOGPROB_STATS}) for s in rows]


def _model_rows(seed: int, n: int = 200) -> tuple[list[Signals], np.ndarray]:
    rng = np.random.default_rng(seed)
    right = rng.random(n) < 0.4
    base = -np.abs(np.where(right, rng.normal(-0.5, 0.4, n), rng.normal(-1.5, 0.6, n)))
    rows = [
        sig(
            **{name: float(base[i] * k) for k, name in enumerate(LOGPROB_STATS, 1)},
            length=float(rng.integers(1, 12)),
            mean_entropy=float(rng.random()),
            context_span=float(right[i] * 0.5 + rng.random() * 0.5),
        )
        for i in range(n)
    ]
    return rows, right


def test_a_monotone_per_model_shift_of_logprobs_changes_nothing_once_rescaled() -> None:
    rows, right = _model_rows(0)
    policy = TransferPolicy.fit([(rows, right)], l2=1.0)
    other = _shifted(rows, 3.0, -2.0)
    on_own = policy.with_scale_from(rows).scores(rows)
    on_shifted = policy.with_scale_from(other).scores(other)
    np.testing.assert_allclose(on_shifted, on_own, rtol=1e-9, atol=1e-12)
    # without re-estimating the scale the shift does change the scores (the test can fail)
    assert not np.allclose(policy.with_scale_from(rows).scores(other), on_own)
    # and a raw-signal logistic policy is not invariant at all
    raw = LogisticPolicy.fit(rows, right, features=LOGPROB_STATS)
    assert not np.allclose(raw.scores(other), raw.scores(rows))


def test_a_bent_monotone_shift_moves_positions_by_less_than_one_quantile_step() -> None:
    rows, right = _model_rows(8)
    policy = TransferPolicy.fit([(rows, right)])
    bent = _bent(rows)
    own, other = policy.with_scale_from(rows), policy.with_scale_from(bent)
    x_own, x_bent = own.transform_many(rows), other.transform_many(bent)
    scaled = [i for i, f in enumerate(policy.features) if f in LOGPROB_STATS]
    moved = np.abs(x_bent[:, scaled] - x_own[:, scaled])
    assert moved.max() <= 0.05 + 1e-12
    assert (moved < 1e-12).mean() > 0.04  # the answers at the stored quantiles do not move
    auc_own = metrics.auroc(own.scores(rows), right)
    assert metrics.auroc(other.scores(bent), right) == pytest.approx(auc_own, abs=0.01)


def test_fit_is_invariant_to_a_shift_of_one_training_model() -> None:
    rows_a, right_a = _model_rows(1)
    rows_b, right_b = _model_rows(2)
    plain = TransferPolicy.fit([(rows_a, right_a), (rows_b, right_b)])
    shifted = TransferPolicy.fit([(rows_a, right_a), (_shifted(rows_b, 0.5, 1.0), right_b)])
    np.testing.assert_allclose(shifted.weights, plain.weights, rtol=1e-7, atol=1e-9)
    assert shifted.bias == pytest.approx(plain.bias)
    # the default scale is the mean of the two models' scales, so it moves with the shift
    i = shifted.scale.signals.index("mean_logprob")
    scale_a = SignalScale.estimate(rows_a, shifted.scale.signals)
    scale_b = SignalScale.estimate(_shifted(rows_b, 0.5, 1.0), shifted.scale.signals)
    mean_of_both = (np.asarray(scale_a.quantiles[i]) + np.asarray(scale_b.quantiles[i])) / 2
    assert shifted.scale.quantiles[i] == pytest.approx(mean_of_both)


def test_fit_learns_that_confident_answers_are_right() -> None:
    rows, right = _model_rows(3)
    policy = TransferPolicy.fit([(rows, right)])
    assert policy.features == TRANSFER_FEATURES
    assert policy.scale.signals == SCALED_SIGNALS
    scores = policy.with_scale_from(rows).scores(rows)
    assert scores[right].mean() > scores[~right].mean() + 0.2


def test_group_intercepts_keep_a_models_accuracy_out_of_the_slopes() -> None:
    """Model B is right more often and has larger x, but within each model x says nothing."""
    rng = np.random.default_rng(9)
    n = 400
    group = np.repeat([0, 1], n)
    y = np.concatenate([rng.random(n) < 0.2, rng.random(n) < 0.8]).astype(float)
    x = (group * 2.0 + rng.normal(0, 1, 2 * n))[:, None]
    w = np.ones(2 * n)
    pooled, _, _ = fit_weighted_logistic(x, y, w, l2=0.0)
    within, _, _ = fit_weighted_logistic(x, y, w, groups=group, l2=0.0)
    assert pooled[0] > 0.8  # one intercept: x stands in for the model's accuracy
    assert abs(within[0]) < 0.15  # an intercept per model: no slope left
    # the bias is the mean intercept: logit(0.2) and logit(0.8) average to about 0
    assert abs(within[1]) < 0.2


def test_fit_weighs_each_group_as_told() -> None:
    rows_a, right_a = _model_rows(4, n=300)
    rows_b, right_b = _model_rows(5, n=60)
    equal = TransferPolicy.fit([(rows_a, right_a), (rows_b, right_b)])
    tilted = TransferPolicy.fit([(rows_a, right_a), (rows_b, right_b)], group_weights=[1.0, 9.0])
    assert equal.weights != tilted.weights
    with pytest.raises(ConfigurationError, match="group_weights"):
        TransferPolicy.fit([(rows_a, right_a)], group_weights=[0.0])


def test_with_scale_from_needs_only_unlabelled_signals() -> None:
    rows, right = _model_rows(6)
    policy = TransferPolicy.fit([(rows, right)])
    other = _shifted(rows, 2.0, -1.0)[:40]
    rescaled = policy.with_scale_from(other)
    assert rescaled.weights == policy.weights and rescaled.bias == policy.bias
    assert rescaled.scale == SignalScale.estimate(other, policy.scale.signals)
    assert rescaled.scale.source == "estimated from 40 unlabelled answers"
    assert rescaled.scale != policy.scale
    with pytest.raises(ConfigurationError, match="at least 10"):
        policy.with_scale_from(other[:5])
    with pytest.raises(ConfigurationError, match="scales"):
        policy.with_scale(linear_scale())


def test_round_trip_through_json() -> None:
    rows, right = _model_rows(7)
    policy = TransferPolicy.fit([(rows, right)]).with_threshold(0.4)
    again = policy_from_dict(json.loads(json.dumps(policy.to_dict())))
    assert isinstance(again, TransferPolicy)
    assert again == policy
    assert again.to_dict() == policy.to_dict()
    assert [again.score(r) for r in rows[:20]] == [policy.score(r) for r in rows[:20]]
    wrapped = {"name": "any-slm/extractive-qa", "policy": policy.to_dict()}
    assert policy_from_dict(wrapped) == policy


def test_invalid_policies_are_refused() -> None:
    scale = linear_scale()
    with pytest.raises(ConfigurationError, match="non-decreasing"):
        SignalScale(("mean_logprob",), (tuple(-float(i) for i in range(21)),))
    with pytest.raises(ConfigurationError, match="21 values"):
        SignalScale(("mean_logprob",), ((0.0, 1.0),))
    with pytest.raises(ConfigurationError, match="not features"):
        TransferPolicy(("min_logprob",), (1.0,), 0.0, (0.0,), (1.0,), scale)
    with pytest.raises(ConfigurationError, match="unknown signal"):
        TransferPolicy(("nope",), (1.0,), 0.0, (0.0,), (1.0,), scale)
    with pytest.raises(ConfigurationError, match="weights"):
        TransferPolicy(("mean_logprob",), (1.0, 2.0), 0.0, (0.0,), (1.0,), scale)

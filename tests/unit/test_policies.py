"""Policies decide from signals, reject bad settings by name, and round-trip through JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    LogisticPolicy,
    Signals,
    ThresholdPolicy,
    calibrate_to_escalation_rate,
    load_policy,
    policy_from_dict,
    save_policy,
)
from confidence_router.signals import SIGNAL_NAMES


def _signals(**values: float) -> Signals:
    base = dict.fromkeys(SIGNAL_NAMES, 0.0)
    base.update(values)
    return Signals(**base)


CONFIDENT = _signals(length=3, mean_entropy=0.2, min_logprob=-0.5, mean_logprob=-0.1)
UNSURE = _signals(length=3, mean_entropy=2.5, min_logprob=-6.0, mean_logprob=-2.0)


def test_confident_answer_stays_with_the_slm() -> None:
    decision = ThresholdPolicy().decide(CONFIDENT)
    assert decision.route == "slm"
    assert decision.score is not None and decision.score >= decision.threshold
    assert decision.reason.startswith("confident")
    assert decision.signals["min_logprob"] == -0.5


def test_uncertain_answer_escalates_and_names_the_failed_bounds() -> None:
    decision = ThresholdPolicy().decide(UNSURE)
    assert decision.route == "llm"
    assert "mean_entropy 2.5 > 1" in decision.reason
    assert "min_logprob -6 < -3" in decision.reason
    assert "length" not in decision.reason  # that bound held


def test_all_needs_every_bound_and_any_needs_one() -> None:
    mixed = _signals(length=3, mean_entropy=0.2, min_logprob=-6.0)
    assert ThresholdPolicy.seed(combine="all").decide(mixed).route == "llm"
    assert ThresholdPolicy.seed(combine="any").decide(mixed).route == "slm"


def test_score_is_the_margin_in_signal_units() -> None:
    policy = ThresholdPolicy((Bound("min_logprob", min=-3.0),))
    assert policy.score(_signals(min_logprob=-1.0)) == pytest.approx(2.0)
    length = ThresholdPolicy((Bound("length", max=32),))
    assert length.score(_signals(length=16)) == pytest.approx(1.0)  # 16 tokens = 1 unit


@pytest.mark.parametrize(
    ("kwargs", "field", "words"),
    [
        ({"bounds": (Bound("min_logprob", min=math.nan),)}, "bounds[0].min", "finite"),
        ({"bounds": (Bound("length", max=-1),)}, "bounds[0].max", "negative"),
        ({"bounds": (Bound("confidence", min=0.5),)}, "bounds[0].signal", "unknown signal"),
        ({"bounds": (Bound("min_logprob"),)}, "bounds[0]", "needs a min or a max"),
        ({"bounds": (Bound("length", min=5, max=2),)}, "bounds[0]", "greater than max"),
        ({"bounds": (Bound("length", max=5, scale=0),)}, "bounds[0].scale", "positive"),
        ({"bounds": ()}, "bounds", "at least one"),
        ({"combine": "most"}, "combine", "'all' or 'any'"),
        ({"threshold": math.inf}, "threshold", "finite"),
    ],
)
def test_invalid_threshold_policy_fails_naming_the_field(
    kwargs: dict[str, object], field: str, words: str
) -> None:
    with pytest.raises(ConfigurationError, match=words) as info:
        ThresholdPolicy(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_threshold_policy_round_trips_through_json(tmp_path) -> None:
    policy = ThresholdPolicy.seed(max_length=20, min_logprob=-2.0, combine="any").with_threshold(
        0.3
    )
    path = tmp_path / "policy.json"
    save_policy(policy, path)
    loaded = load_policy(path)
    assert loaded == policy
    for s in (CONFIDENT, UNSURE):
        assert loaded.decide(s) == policy.decide(s)


def _synthetic(n: int, seed: int = 0) -> tuple[list[Signals], np.ndarray]:
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.4
    min_lp = np.where(correct, rng.normal(-0.5, 0.5, n), rng.normal(-3.0, 1.0, n))
    entropy = np.where(correct, rng.normal(0.3, 0.2, n), rng.normal(1.2, 0.4, n))
    rows = [
        _signals(length=float(rng.integers(1, 10)), min_logprob=float(a), mean_entropy=float(b))
        for a, b in zip(min_lp, entropy)
    ]
    return rows, correct


def test_logistic_policy_learns_and_round_trips() -> None:
    rows, correct = _synthetic(2000)
    policy = LogisticPolicy.fit(rows, correct, features=("length", "min_logprob", "mean_entropy"))
    predicted = policy.scores(rows) >= 0.5
    assert (predicted == correct).mean() > 0.9
    assert policy.decide(CONFIDENT).route == "slm"
    assert policy.decide(UNSURE).route == "llm"
    again = policy_from_dict(policy.to_dict())
    assert again == policy
    assert again.score(rows[0]) == pytest.approx(policy.score(rows[0]))


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"features": ("length", "nope")}, "features[1]"),
        ({"weights": (1.0,)}, "weights"),
        ({"std": (1.0, 0.0)}, "std[1]"),
        ({"bias": math.nan}, "bias"),
    ],
)
def test_invalid_logistic_policy_fails_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    base: dict[str, object] = {
        "features": ("length", "min_logprob"),
        "weights": (0.1, 1.0),
        "bias": 0.0,
        "mean": (3.0, -1.0),
        "std": (1.0, 1.0),
    }
    base.update(changes)
    with pytest.raises(ConfigurationError) as info:
        LogisticPolicy(**base)  # type: ignore[arg-type]
    assert info.value.field == field


def test_unknown_policy_type_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="unknown policy type"):
        policy_from_dict({"type": "oracle"})


@pytest.mark.parametrize("rate", [0.1, 0.3, 0.7])
def test_calibration_hits_the_target_rate_on_held_out_data(rate: float) -> None:
    calibration, _ = _synthetic(5000, seed=1)
    held_out, _ = _synthetic(5000, seed=2)
    policy = calibrate_to_escalation_rate(ThresholdPolicy.seed(), calibration, rate)
    achieved = np.mean([policy.decide(s).route == "llm" for s in held_out])
    # binomial standard error at n=5000 is under 0.007; allow about 3 of them
    assert abs(achieved - rate) < 0.02


def test_calibration_extremes_escalate_nothing_or_everything() -> None:
    rows, _ = _synthetic(500)
    never = calibrate_to_escalation_rate(ThresholdPolicy.seed(), rows, 0.0)
    always = calibrate_to_escalation_rate(ThresholdPolicy.seed(), rows, 1.0)
    assert all(never.decide(s).route == "slm" for s in rows)
    assert all(always.decide(s).route == "llm" for s in rows)
    with pytest.raises(ConfigurationError, match="rate"):
        calibrate_to_escalation_rate(ThresholdPolicy.seed(), rows, 1.5)


def test_the_default_policy_is_named_with_where_it_comes_from(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from confidence_router.policies.defaults import choose_policy, transfer_wins

    fitted = choose_policy("gemma3:270m")
    assert (fitted.name, fitted.provenance) == ("gemma3-270m/extractive-qa", "fitted")
    assert fitted.label == "gemma3-270m/extractive-qa (fitted on this SLM)"
    with caplog.at_level("WARNING", logger="confidence_router"):
        unknown = choose_policy("some-new-model:3b")
        again = choose_policy("some-new-model:3b")
    if transfer_wins("extractive-qa"):
        assert (unknown.name, unknown.provenance) == ("any-slm/extractive-qa", "transferred")
    else:
        assert (unknown.name, unknown.provenance) == ("seed-thresholds", "uncalibrated")
    assert again.name == unknown.name
    warnings = [r for r in caplog.records if "some-new-model:3b" in r.getMessage()]
    assert len(warnings) == 1  # once per model, not per call
    assert "confidence-router calibrate" in warnings[0].getMessage()
    multi = choose_policy("some-new-model:3b", "multi-hop")  # no transfer policy for it
    assert (multi.name, multi.provenance) == ("seed-thresholds", "uncalibrated")


def test_the_transferred_policy_is_the_default_only_if_it_beat_the_seed_everywhere() -> None:
    import json
    from importlib import resources

    from confidence_router.policies.defaults import transfer_wins

    shipped = json.loads(
        resources.files("confidence_router.policies.data")
        .joinpath("any-slm.extractive-qa.json")
        .read_text(encoding="utf-8")
    )
    verdicts = shipped["fitted_on"]["verdicts"]
    assert verdicts  # the shipped file records its leave-one-model-out verdicts
    everywhere = all(v["beats_seed_auroc"] and v["not_below_seed_calls_avoided"] for v in verdicts)
    assert transfer_wins("extractive-qa") is everywhere
    assert transfer_wins("multi-hop") is False  # no any-slm/multi-hop is shipped


def test_the_version_is_the_installed_distribution_s() -> None:
    from importlib.metadata import version

    import confidence_router

    assert confidence_router.__version__ == version("confidence-router")

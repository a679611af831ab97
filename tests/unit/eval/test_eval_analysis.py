"""Routing metrics and the trace analysis, on synthetic traces with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from eval_synthetic import synthetic_records

from confidence_router import policy_from_dict
from confidence_router.eval import metrics
from confidence_router.eval.analysis import (
    LEARNED,
    ORACLE,
    QUERY_ONLY,
    RANDOM,
    AnalysisSettings,
    analyze,
    calibrate,
    cascade_outcomes,
    learned_scores,
    trace_arrays,
)
from confidence_router.signals import Signals

FAST = AnalysisSettings(bootstrap=0)


def _binary_outcomes(correct: np.ndarray) -> metrics.Outcomes:
    n = len(correct)
    return metrics.Outcomes(correct.astype(float), np.ones(n), np.full(n, 1.0), np.full(n, 11.0))


def test_auroc_matches_pair_counting_with_ties() -> None:
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    labels = rng.random(60) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert metrics.auroc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)))
    assert np.isnan(metrics.auroc(scores, np.ones(60, dtype=bool)))


def test_perfect_score_gives_auroc_one_and_exactly_the_oracle_apgr() -> None:
    correct = np.zeros(400, dtype=bool)
    correct[:80] = True  # the SLM is right on 20%
    outcomes = _binary_outcomes(correct)
    q_slm, q_fb = 0.2, 1.0
    perfect = metrics.score_curve(correct.astype(float), outcomes)
    oracle = metrics.score_curve(metrics.oracle_scores(outcomes), outcomes)
    assert metrics.auroc(correct.astype(float), correct) == 1.0
    assert metrics.apgr(perfect, q_slm, q_fb) == pytest.approx(metrics.apgr(oracle, q_slm, q_fb))
    # oracle PGR(r) = min(r / w, 1) with w = 0.8 wrong, so APGR = 1 - w / 2 = 0.6 (below 1)
    assert metrics.apgr(oracle, q_slm, q_fb) == pytest.approx(0.6)
    assert metrics.cpt(oracle, q_slm, q_fb, 0.5) == pytest.approx(0.4)
    assert metrics.calls_avoided(oracle, q_fb, 0.95) == pytest.approx(1 - 0.75)


def test_random_score_gives_about_one_half_for_auroc_and_apgr() -> None:
    rng = np.random.default_rng(5)
    correct = rng.random(4000) < 0.3
    outcomes = _binary_outcomes(correct)
    scores = rng.random(4000)
    curve = metrics.score_curve(scores, outcomes)
    q_slm = float(correct.mean())
    assert metrics.auroc(scores, correct) == pytest.approx(0.5, abs=0.03)
    assert metrics.apgr(curve, q_slm, 1.0) == pytest.approx(0.5, abs=0.03)
    line = metrics.random_curve(outcomes)
    assert metrics.apgr(line, q_slm, 1.0) == pytest.approx(0.5, abs=1e-12)
    assert metrics.cpt(line, q_slm, 1.0, 0.8) == pytest.approx(0.8)


def test_a_constant_score_is_exactly_random_routing() -> None:
    correct = np.arange(100) % 3 == 0
    outcomes = _binary_outcomes(correct)
    curve = metrics.score_curve(np.zeros(100), outcomes)
    np.testing.assert_allclose(curve.quality, metrics.random_curve(outcomes).quality)
    assert metrics.auroc(np.zeros(100), correct) == 0.5


def test_aiq_of_a_straight_line_is_its_mean_quality() -> None:
    outcomes = _binary_outcomes(np.arange(50) % 2 == 0)
    line = metrics.random_curve(outcomes)
    assert metrics.aiq(line, (1.0, 11.0)) == pytest.approx((0.5 + 1.0) / 2)
    oracle = metrics.score_curve(metrics.oracle_scores(outcomes), outcomes)
    # the oracle reaches 1.0 at cost 6 and stays there: area = (0.5+1)/2 * 5 + 1 * 5 over 10
    assert metrics.aiq(oracle, (1.0, 11.0)) == pytest.approx(0.875)


def test_analysis_of_a_perfect_signal_matches_the_oracle() -> None:
    correct = np.random.default_rng(2).random(300) < 0.25
    records = synthetic_records(correct, {"min_logprob": np.where(correct, -0.1, -3.0)})
    result = analyze(records, settings=FAST)
    signal = result.router("min_logprob")
    assert signal.auroc == 1.0
    assert signal.apgr == pytest.approx(result.router(ORACLE).apgr)
    assert result.router(ORACLE).apgr < 1.0
    assert result.router(RANDOM).apgr == pytest.approx(0.5)
    assert result.router(LEARNED).auroc > 0.95


def test_cross_validation_does_not_leak_on_pure_noise() -> None:
    correct = np.random.default_rng(8).random(240) < 0.4
    records = synthetic_records(correct, seed=9)  # every signal is noise
    t = trace_arrays(records, "perfect", FAST)
    out_of_fold = metrics.auroc(learned_scores(t, FAST), t.correct)
    assert out_of_fold < 0.6  # fitting and scoring the same rows would look better than chance
    result = analyze(records, settings=FAST)
    assert abs(result.router(QUERY_ONLY).auroc - 0.5) < 0.12


def test_bootstrap_intervals_contain_the_estimate(trace_file) -> None:
    from confidence_router.eval.traces import load_traces

    result = analyze(load_traces(trace_file), settings=AnalysisSettings(bootstrap=200))
    learned = result.router(LEARNED)
    low, high = learned.auroc_ci
    assert low < learned.auroc < high
    assert learned.apgr_ci[0] < learned.apgr < learned.apgr_ci[1]


def test_fitted_logistic_policy_round_trips_through_json(tmp_path, trace_file) -> None:
    from confidence_router import load_policy, save_policy
    from confidence_router.eval.traces import load_traces

    result = analyze(load_traces(trace_file), settings=FAST)
    policy = policy_from_dict(result.fitted_policy)
    path = tmp_path / "policy.json"
    save_policy(policy, path)
    again = load_policy(path)
    probe = Signals(*(-1.0 for _ in Signals.NAMES))
    assert again.score(probe) == pytest.approx(policy.score(probe))
    assert again.to_dict() == policy.to_dict()


def test_calibration_hits_its_target_rate_on_held_out_data() -> None:
    rng = np.random.default_rng(11)
    n = 20000
    correct = rng.random(n) < 0.4
    min_lp = np.where(correct, rng.normal(-0.6, 0.6, n), rng.normal(-1.8, 0.8, n))
    records = synthetic_records(correct, {"min_logprob": min_lp}, seed=12)
    settings = AnalysisSettings(bootstrap=0, target_rates=(0.3, 0.6))
    rows = calibrate(trace_arrays(records, "perfect", settings), settings)
    tolerance = 4 * np.sqrt(0.3 * 0.7 / (n / 2))  # four standard errors of a proportion
    for row in rows:
        if row.target.startswith("rate"):
            target = float(row.target.split()[1].rstrip("%")) / 100
            assert row.calibration_rate == pytest.approx(target, abs=1e-3)
            assert row.heldout_rate == pytest.approx(target, abs=tolerance)
            assert row.heldout_f1 > row.heldout_random_f1  # an informative signal beats random
        else:  # the ">= 95% of fallback F1" budget holds on held-out data up to sampling error
            assert row.heldout_f1 >= 0.95 * row.heldout_fallback_f1 - 0.01


def test_cascade_charges_the_slm_on_escalated_questions() -> None:
    correct = np.array([True, False, False, True])
    t = trace_arrays(synthetic_records(correct), "perfect", FAST)
    outcomes = cascade_outcomes(t)
    np.testing.assert_allclose(outcomes.escalate_cost, t.slm_cost + t.fb_cost)
    result = analyze(synthetic_records(np.arange(40) % 2 == 0), settings=FAST)
    query = result.router(QUERY_ONLY)
    learned = result.router(LEARNED)
    # the pre-generation router's escalate-all point costs the fallback only
    assert query.curve.cost[-1] < learned.curve.cost[-1]


def test_failed_slm_answers_are_always_escalated_first() -> None:
    correct = np.array([True] * 10 + [False] * 10)
    records = synthetic_records(correct, {"min_logprob": np.where(correct, -0.1, -3.0)})
    records[0]["slm"].update(raw="", answer="", f1=0.0, em=0.0, signals=None)
    result = analyze(records, settings=FAST)
    assert result.n_forced == 1
    scores = result.router("min_logprob").scores
    assert scores is not None and np.isneginf(scores[0])


def test_missing_fallback_is_reported() -> None:
    records = synthetic_records(np.array([True, False]))
    with pytest.raises(ValueError, match="lack fallback 'llama3'"):
        analyze(records, "llama3", FAST)

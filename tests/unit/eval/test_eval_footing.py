"""The seed's table on hand-made records whose right numbers are worked out by hand:
forced escalations on equal footing, calls avoided up to 100% of the fallback's F1,
a shipped policy at its threshold, both labels, SQuAD 2.0's two parts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from eval_synthetic import hand_records, synthetic_records, write_records

from confidence_router.cli.eval import main
from confidence_router.eval import metrics
from confidence_router.eval.analysis import (
    LEARNED,
    ORACLE,
    QUERY_ONLY,
    RANDOM,
    SEED,
    SHIPPED_POINT,
    AnalysisSettings,
    analyze,
    fit_profile_policy,
    load_shipped_policy,
    query_only_curve,
    trace_arrays,
)
from confidence_router.policies import Bound, ThresholdPolicy

#: Each call costs its price: the SLM 1, the fallback 10 (see hand_records).
PRICED = AnalysisSettings(bootstrap=0, slm_price=(1.0, 1.0), fallback_price=(10.0, 10.0))
#: Keeps an answer when its min_logprob >= -1.
KEEP_CONFIDENT = ThresholdPolicy(bounds=(Bound("min_logprob", min=-1.0),))


def test_forced_escalations_start_every_curve_at_their_share() -> None:
    # q0 forced (the SLM failed); q1 right, q2 and q3 wrong; the fallback is right on q0-q2
    outcomes = metrics.Outcomes(
        np.array([0.0, 1.0, 0.0, 0.0]), np.array([1.0, 1.0, 1.0, 0.0]), np.ones(4), np.full(4, 11.0)
    )
    forced = np.array([True, False, False, False])
    curve = metrics.score_curve(np.array([9.0, 0.9, 0.1, 0.5]), outcomes, forced)
    assert curve.start == 1
    np.testing.assert_allclose(curve.rates, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.quality, [0.5, 0.75, 0.75, 0.75])
    np.testing.assert_allclose(curve.cost, [14 / 4, 24 / 4, 34 / 4, 11.0])
    # floor 0.5 (q0 escalated, the rest kept), fallback-only 0.75: PGR 0, 1, 1, 1 over
    # rates 0.25-1, so the mean is (0.125 + 0.25 + 0.25) / 0.75
    assert metrics.apgr(curve, 0.5, 0.75) == pytest.approx(5 / 6)
    assert metrics.calls_avoided(curve, 0.75, 1.0) == pytest.approx(0.5)
    line = metrics.random_curve(outcomes, forced)
    np.testing.assert_allclose(line.quality, [0.5, 7 / 12, 8 / 12, 0.75])
    assert metrics.apgr(line, 0.5, 0.75) == pytest.approx(0.5)
    assert metrics.calls_avoided(line, 0.75, 1.0) == 0.0


def test_the_query_only_router_gets_no_forced_escalation_for_free() -> None:
    records = hand_records([0, 1, 0, 0], [1, 1, 1, 0], [-1.0] * 4, forced=[0])
    t = trace_arrays(records, "big", PRICED)
    # query scores: q2 (0.1) < q0 (0.2, forced) < q3 (0.5) < q1 (0.9)
    curve = query_only_curve(np.array([0.2, 0.9, 0.1, 0.5]), t)
    assert curve.start == 1 and curve.rates[0] == 0.25
    np.testing.assert_allclose(curve.quality, [0.5, 0.75, 0.75, 0.75])
    # m=0: q0 ran the SLM, failed, went to the fallback (11), the rest SLM (1 each);
    # m=1: q2 escalated (10), and q0's score 0.2 is below the next one (0.5), so the
    # query router had sent it straight to the fallback (10); and so on
    np.testing.assert_allclose(curve.cost, [14 / 4, 22 / 4, 31 / 4, 40 / 4])


def test_every_router_starts_from_the_same_floor() -> None:
    n = 20
    slm = [float(i % 2) for i in range(n)]
    lp = [-0.1 if s else -3.0 for s in slm]
    records = hand_records(slm, [1.0] * n, lp, forced=[0, 1])
    result = analyze(records, "big", PRICED)
    assert result.n_forced == 2
    # q0 and q1 escalated (F1 1 each), of the others the odd ones right: (2 + 9) / 20
    assert result.floor_f1 == pytest.approx(11 / 20)
    for router in result.routers:
        assert router.curve.rates[0] == pytest.approx(0.1), router.name
        assert router.curve.quality[0] == pytest.approx(11 / 20), router.name
        assert router.curve.rates[-1] == 1.0 and router.curve.quality[-1] == 1.0
    assert result.router(RANDOM).apgr == pytest.approx(0.5)
    assert result.router("min_logprob").apgr == pytest.approx(result.router(ORACLE).apgr)


#: q0-q3 right and confident, q4 right but unsure, q5-q7 wrong (F1 0, 0.4, 0.2),
#: q8 forced, q9 right where the fallback is half right.
AVOID_SLM = [1, 1, 1, 1, 1, 0, 0.4, 0.2, 0, 1]
AVOID_FB = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0.5]
AVOID_LP = [-0.1, -0.1, -0.1, -0.1, -2.0, -3.0, -2.8, -2.9, -1.0, -0.1]


def test_calls_avoided_at_95_98_and_100_percent_of_the_fallback() -> None:
    records = hand_records(AVOID_SLM, AVOID_FB, AVOID_LP, forced=[8])
    result = analyze(records, "big", PRICED)
    # fallback-only 0.95. The signal escalates q8 (forced), then q5, q7, q6: F1 0.76,
    # 0.86, 0.94, 1.0 at 10%-40%; 95% and 98% of 0.95 are first reached at 30%, 100% at 40%
    signal = result.router("min_logprob")
    assert signal.avoided_at == pytest.approx({0.95: 0.7, 0.98: 0.7, 1.0: 0.6})
    assert result.router(ORACLE).avoided_at == pytest.approx({0.95: 0.7, 0.98: 0.7, 1.0: 0.6})
    # random: the line from (10%, 0.76) to (100%, 0.95) reaches 0.9025 at 77.5% (grid: 80%);
    # 0.931 only after 90% (0.9289 there), so at 100%
    assert result.router(RANDOM).avoided_at == pytest.approx({0.95: 0.2, 0.98: 0.0, 1.0: 0.0})


def test_a_shipped_policy_at_its_threshold(tmp_path: Path) -> None:
    records = hand_records(AVOID_SLM, AVOID_FB, AVOID_LP, forced=[8])
    result = analyze(records, "big", PRICED, policy=KEEP_CONFIDENT, policy_info={"name": "p"})
    point = result.point(SHIPPED_POINT)
    assert point is not None
    # keeps q0-q3 and q9; escalates q4-q7 and the forced q8
    assert point.rate == pytest.approx(0.5) and point.avoided == pytest.approx(0.5)
    assert point.f1 == pytest.approx(1.0)  # 4 + 1 kept, 5 escalated to a right fallback
    assert point.f1_share == pytest.approx(1.0 / 0.95)
    assert point.queries_per_budget == pytest.approx(2.0)
    # five queries take 1 s (SLM), five 1 + 3 s; fallback-only takes 3 s each
    assert point.wall_median_s == pytest.approx(2.5) and point.wall_mean_s == pytest.approx(2.5)
    assert result.fallback_only["wall_median_s"] == pytest.approx(3.0)
    assert point.slm_tokens == pytest.approx(1e6) and point.fallback_tokens == pytest.approx(5e5)
    assert result.router("shipped: p").curve.start == 1
    # the perfect fallback takes no time: the cascade's wall time is unknown, not flattered
    perfect = analyze(records, "perfect", PRICED, policy=KEEP_CONFIDENT).point(SHIPPED_POINT)
    assert perfect is not None and perfect.wall_median_s is None and perfect.rate == 0.5
    # the same policy from a shipped-policy document
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"name": "x/qa", "slm": "s", "policy": KEEP_CONFIDENT.to_dict()}))
    policy, info = load_shipped_policy(path)
    assert info["name"] == "x/qa" and policy.to_dict() == KEEP_CONFIDENT.to_dict()


def test_the_two_labels_and_their_aurocs() -> None:
    # right = F1 > 0.5: q0, q1; as good as the fallback = F1 >= the fallback's: q0, q2-q4
    records = hand_records(
        [1, 0.6, 0.4, 0, 0.5], [1, 1, 0.2, 0, 0.5], [-0.1, -0.2, -0.3, -0.4, -0.5]
    )
    result = analyze(records, "big", PRICED)
    assert result.n_correct == 2 and result.n_as_good == 4
    signal = result.router("min_logprob")
    assert signal.auroc == 1.0
    # as-good positives -0.1, -0.3, -0.4, -0.5 against the one negative -0.2: 1 pair of 4
    assert signal.auroc_as_good == pytest.approx(0.25)
    t = trace_arrays(records, "big", PRICED)
    assert t.label("as-good").tolist() == [True, False, True, True, True]
    with pytest.raises(ValueError, match="unknown label"):
        t.label("better")


def test_squad_v2_splits_into_answerable_and_unanswerable() -> None:
    records = hand_records(
        [1, 0, 1, 0],
        [1, 0.5, 0, 1],
        [-0.1, -3.0, -0.1, -3.0],
        answerable=[True, True, False, False],
        slm_answers=["a", "", "", "x"],
        fb_answers=["a", "b c", "y", ""],
        dataset="squad_v2",
    )
    result = analyze(records, "big", PRICED, policy=KEEP_CONFIDENT)
    split = result.split
    assert split["answerable"] == {
        "n": 2,
        "slm_f1": 0.5,
        "slm_em": 0.5,
        "slm_abstained": 1,
        "fallback_f1": 0.75,
        "fallback_em": 0.5,
        "fallback_abstained": 0,
        "forced": 0,
    }
    assert split["unanswerable"]["slm_abstained"] == 1
    assert split["unanswerable"]["fallback_abstained"] == 1
    assert split["unanswerable"]["fallback_f1"] == 0.5
    assert split["all"]["n"] == 4 and split["all"]["slm_abstained"] == 2
    point = result.point(SHIPPED_POINT)
    assert point is not None
    # keeps q0 (right) and q2 (a right abstention); the fallback answers q1 (0.5) and q3 (1)
    assert point.parts["answerable"] == {"n": 2, "escalation_rate": 0.5, "f1": 0.75}
    assert point.parts["unanswerable"] == {"n": 2, "escalation_rate": 0.5, "f1": 1.0}
    v1 = analyze(hand_records([1, 0], [1, 1], [-0.1, -3.0]), "big", PRICED)
    assert v1.split == {}


def _two_label_records(n: int = 160) -> list[dict[str, object]]:
    """Right depends on min_logprob; the fallback failing (so a wrong SLM answer is as
    good) on first_margin: the two labels ask for different policies."""
    rng = np.random.default_rng(4)
    right = rng.random(n) < 0.5
    fb_wrong = rng.random(n) < 0.5
    signals = {
        "min_logprob": np.where(right, rng.normal(0, 0.3, n), rng.normal(-3, 0.3, n)),
        "first_margin": np.where(fb_wrong, rng.normal(3, 0.3, n), rng.normal(0, 0.3, n)),
    }
    records = synthetic_records(right, signals, seed=5)
    for r, bad in zip(records, fb_wrong):
        r["fallbacks"]["big"] = {**r["fallbacks"]["perfect"], "f1": 0.0 if bad else 1.0}
        r["fallbacks"]["big"].update(em=0.0 if bad else 1.0, model="big")
    return records


def test_fit_policy_on_either_label() -> None:
    records = _two_label_records()
    settings = AnalysisSettings(bootstrap=0)
    _, right = fit_profile_policy([records], settings)
    _, good = fit_profile_policy([records], settings, label="as-good")
    r, g = right["out_of_fold"]["squad_v1"], good["out_of_fold"]["squad_v1"]
    assert right["label"] == "right" and good["label"] == "as-good" and good["fallback"] == "big"
    assert r["out_of_fold_auroc"] == r["out_of_fold_auroc_right"] > 0.95
    assert g["out_of_fold_auroc"] == g["out_of_fold_auroc_as_good"] > 0.95
    # each policy predicts its own label better than the other's
    assert g["out_of_fold_auroc_right"] < g["out_of_fold_auroc_as_good"] - 0.1
    assert r["out_of_fold_auroc_as_good"] < r["out_of_fold_auroc_right"] - 0.1
    perfect_only = synthetic_records(np.arange(40) % 2 == 0)
    with pytest.raises(ValueError, match="only the perfect fallback"):
        fit_profile_policy([perfect_only], settings, label="as-good")


def test_report_with_a_policy_puts_the_headline_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = hand_records(
        [1, 0, 1, 0] * 5,
        [1, 0.5, 0, 1] * 5,
        [-0.1, -3.0, -0.1, -3.0] * 5,
        answerable=[True, True, False, False] * 5,
        slm_answers=["a", "", "", "x"] * 5,
        fb_answers=["a", "b c", "y", ""] * 5,
        dataset="squad_v2",
    )
    for i, r in enumerate(records):
        r["id"] = f"q{i}"
    traces = write_records(tmp_path / "squad_v2.jsonl", records)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"name": "s/qa", "policy": KEEP_CONFIDENT.to_dict()}))
    out = tmp_path / "report"
    argv = ["report", str(traces), "--out", str(out), "--bootstrap", "20"]
    assert main([*argv, "--policy", f"squad_v2={policy}", "--guarantee-splits", "0"]) == 0
    printed = capsys.readouterr().out
    assert "| SQuAD 2.0 | big | 20 |" in printed and "| 50% | 140% | 2.00x |" in printed
    report = (out / "report.md").read_text()
    assert report.index("## Headline") < report.index("Definitions") < report.index("## Targets")
    assert "SQuAD 2.0: answerable and unanswerable questions" in report
    assert "What the cascade costs on this machine" in report
    assert "perfect (upper bound)" in report
    assert main([*argv, "--policy", str(tmp_path / "none.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_the_seed_and_learned_routers_are_all_reported() -> None:
    records = hand_records(AVOID_SLM * 3, AVOID_FB * 3, AVOID_LP * 3, forced=[8, 18, 28])
    result = analyze(records, "big", AnalysisSettings(bootstrap=30))
    for name in (LEARNED, SEED, QUERY_ONLY, RANDOM, ORACLE):
        router = result.router(name)
        assert set(router.avoided_at) == {0.95, 0.98, 1.0}
        low, high = router.avoided_ci[0.95]
        assert 0.0 <= low <= high <= 1.0

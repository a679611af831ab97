"""Calibration with a guarantee: p-values, Learn-then-Test on synthetic traces, refusal, CLI.

The synthetic traces have a known score-correctness relation: the score s is
uniform on [0, 1] and the SLM is right with probability s. Keeping every answer
with s >= t then loses (1 - t)^2 / 2 of fallback-only quality (the fallback is
the reference, quality 1), so the true risk of any chosen threshold is exact.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confidence_router import ConfigurationError, LogisticPolicy, load_policy
from confidence_router.calibration import (
    InsufficientTracesError,
    LabelledTraces,
    binomial_cdf,
    calibrate_policy,
    hoeffding_bentkus_pvalue,
    labelled_traces,
    ltt_threshold,
    min_calibration_size,
    naive_threshold,
    wilson_interval,
)
from confidence_router.signals import SIGNAL_NAMES, Signals

ROOT = Path(__file__).resolve().parents[2]


def true_risk(threshold: float) -> float:
    t = min(max(threshold, 0.0), 1.0)
    return (1.0 - t) ** 2 / 2.0


def violation_rates(
    trials: int, n: int, eps: float, confidence: float, *, binary: bool, seed: int = 0
) -> tuple[float, float, float]:
    """Share of calibration draws whose chosen threshold has true risk > eps (LTT, naive),
    and LTT's mean escalation share."""
    rng = np.random.default_rng(seed)
    ltt = naive = 0
    escalation = 0.0
    for _ in range(trials):
        s = rng.uniform(size=n)
        right = rng.uniform(size=n) < s
        # F1-like quality with the same mean given s: halfway between the label and s
        quality = right.astype(float) if binary else (right + s) / 2.0
        loss = 1.0 - quality
        choice = ltt_threshold(s, loss, eps, confidence)
        ltt += true_risk(choice.threshold) > eps
        naive += true_risk(naive_threshold(s, loss, eps)) > eps
        escalation += min(max(choice.threshold, 0.0), 1.0)
    return ltt / trials, naive / trials, escalation / trials


def test_binomial_cdf_matches_the_exact_sum() -> None:
    n, p = 60, 0.07
    exact = [
        sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1)) for k in range(n + 1)
    ]
    assert np.allclose(binomial_cdf(n, p), exact, atol=1e-12)


def test_hoeffding_bentkus_is_never_below_the_binomial_tail_of_a_mean_loss() -> None:
    # for 0/1 losses the exact tail is the tighter p-value; HB is valid for any [0, 1] loss
    for k in range(0, 10):
        exact = float(binomial_cdf(200, 0.05)[k])
        assert hoeffding_bentkus_pvalue(k / 200, 200, 0.05) >= exact - 1e-12
    assert hoeffding_bentkus_pvalue(0.06, 200, 0.05) == 1.0


def test_wilson_interval_covers_and_is_inside_zero_one() -> None:
    low, high = wilson_interval(8, 10)
    assert 0.0 <= low < 0.8 < high <= 1.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(0, 50)[0] == 0.0


@pytest.mark.parametrize("binary", [True, False], ids=["0/1 quality", "F1-like quality"])
def test_the_guarantee_holds_on_synthetic_traces(binary: bool) -> None:
    """Over many calibration draws the budget is broken at most 1 - confidence of the time
    (within three standard errors), while the naive threshold breaks it about half the time."""
    trials, eps, confidence = 400, 0.05, 0.9
    ltt, naive, escalation = violation_rates(trials, 400, eps, confidence, binary=binary)
    delta = 1 - confidence
    assert ltt <= delta + 3 * math.sqrt(delta * (1 - delta) / trials)
    assert naive > 0.3, "the synthetic risk is not tight enough to tell the methods apart"
    # not trivially safe: the oracle escalates 1 - sqrt(2 eps) = 68%; LTT keeps a fair share
    oracle = 1 - math.sqrt(2 * eps)
    assert oracle < escalation < oracle + 0.12


def test_the_guarantee_is_not_loose_for_the_exact_binomial_test() -> None:
    """With 0/1 losses the violation rate comes close to its bound: the test is exact."""
    ltt, _, _ = violation_rates(400, 1000, 0.05, 0.8, binary=True, seed=3)
    assert 0.08 <= ltt <= 0.2 + 3 * math.sqrt(0.2 * 0.8 / 400)


def test_the_minimum_calibration_size_is_exact() -> None:
    eps, confidence = 0.05, 0.9
    n_min = min_calibration_size(eps, confidence)
    assert n_min == 45  # ln(0.1) / ln(0.95) = 44.9
    scores = np.linspace(0.0, 1.0, n_min)
    right = np.zeros(n_min)  # every answer right: the loss is 0 everywhere
    assert ltt_threshold(scores, right, eps, confidence).certified
    assert not ltt_threshold(scores[:-1], right[:-1], eps, confidence).certified


def _signals(value: float) -> Signals:
    base = dict.fromkeys(SIGNAL_NAMES, 0.0)
    base.update(length=3.0, min_logprob=value, q10_logprob=value, mean_logprob=value / 2)
    return Signals(**base)


def _synthetic_traces(n: int, seed: int = 0) -> LabelledTraces:
    rng = np.random.default_rng(seed)
    s = rng.uniform(size=n)
    right = rng.uniform(size=n) < s
    return LabelledTraces([_signals(-5 * (1 - v)) for v in s], right.astype(float), "gold")


def test_calibrate_refuses_below_the_minimum_and_says_how_many_are_needed() -> None:
    with pytest.raises(InsufficientTracesError) as info:
        calibrate_policy(_synthetic_traces(80), max_quality_loss=0.05, confidence=0.9)
    # 20 held out at 20% (rounded: 19.6 -> 20) -> 98 traces; 49 of them calibrate (>= 45)
    assert info.value.needed == 98 and info.value.have == 80
    assert "at least 45 traces in the calibration split" in str(info.value)
    assert "at least 98 in all" in str(info.value)
    # a stricter guarantee needs more
    with pytest.raises(InsufficientTracesError) as strict:
        calibrate_policy(_synthetic_traces(300), max_quality_loss=0.01, confidence=0.99)
    needed = strict.value.needed
    assert abs(needed - 2 * min_calibration_size(0.01, 0.99)) <= 1  # 459 at 50%
    enough = calibrate_policy(_synthetic_traces(needed), max_quality_loss=0.01, confidence=0.99)
    assert enough.split["calibration"] >= 459
    with pytest.raises(InsufficientTracesError):
        calibrate_policy(_synthetic_traces(needed - 1), max_quality_loss=0.01, confidence=0.99)
    outcome = calibrate_policy(_synthetic_traces(100), max_quality_loss=0.05, confidence=0.9)
    assert outcome.split == {"fit": 30, "calibration": 50, "holdout": 20}


def test_calibrate_fits_calibrates_and_verifies_on_disjoint_splits() -> None:
    outcome = calibrate_policy(_synthetic_traces(3000), max_quality_loss=0.05, confidence=0.9)
    assert isinstance(outcome.policy, LogisticPolicy)
    assert outcome.choice is not None and outcome.choice.certified
    assert sum(outcome.split.values()) == 3000
    assert outcome.calibration.quality_loss <= 0.05
    assert outcome.holdout.quality_loss_ci[0] <= 0.05
    assert 0.55 < outcome.holdout.escalation < 0.9
    assert "Learn-then-Test" in outcome.method and "2110.01052" in outcome.method


def test_escalation_target_reaches_the_share_on_held_out_traces() -> None:
    outcome = calibrate_policy(_synthetic_traces(2000), escalation=0.3)
    assert abs(outcome.calibration.escalation - 0.3) < 0.01
    low, high = outcome.holdout.escalation_ci
    assert low <= 0.3 <= high


def _eval_like_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = float(rng.uniform())
        right = bool(rng.uniform() < s)
        out.append(
            {
                "id": f"q{i}",
                "slm": {
                    "raw": "an answer",
                    "error": None,
                    "f1": 1.0 if right else 0.0,
                    "signals": _signals(-5 * (1 - s)).as_dict(),
                    "completion_tokens": 3,
                },
                "fallbacks": {"perfect": {"f1": 1.0}},
            }
        )
    return out


def test_calibrate_command_writes_a_policy_the_router_loads(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    traces.write_text("".join(json.dumps(r) + "\n" for r in _eval_like_records(600)))
    out = tmp_path / "policy.json"
    cmd = [sys.executable, "-m", "confidence_router.cli.main", "calibrate", str(traces)]
    ok = subprocess.run(
        [*cmd, "--out", str(out), "--max-quality-loss", "0.05", "--confidence", "0.9"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stderr
    assert "held out: n=120" in ok.stdout and "Learn-then-Test" in ok.stdout
    saved = json.loads(out.read_text())
    assert saved["calibration"]["target"] == {"max_quality_loss": 0.05, "confidence": 0.9}
    policy = load_policy(out)
    assert policy.threshold == saved["threshold"]
    assert labelled_traces(_eval_like_records(5)).source == "gold"
    refused = subprocess.run(
        [*cmd[:-1], str(tmp_path / "few.jsonl"), "--out", str(tmp_path / "p2.json")]
        + ["--max-quality-loss", "0.05"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        input=None,
    )
    assert refused.returncode == 4  # no such file
    few = tmp_path / "few.jsonl"
    few.write_text("".join(json.dumps(r) + "\n" for r in _eval_like_records(50)))
    refused = subprocess.run(
        [*cmd[:-1], str(few), "--out", str(tmp_path / "p2.json"), "--max-quality-loss", "0.05"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert refused.returncode == 3
    assert "refusing: too few labelled traces: 50" in refused.stderr
    assert "at least 98 in all" in refused.stderr
    assert not (tmp_path / "p2.json").exists()


def test_recorded_traffic_uses_only_audited_records_and_their_verdicts() -> None:
    signals = _signals(-1.0).as_dict()

    def record(audit: bool, f1: float | None, agree: bool | None, **slm: Any) -> dict[str, Any]:
        part = {"raw": None, "error": None, "signals": signals, "completion_tokens": 3, **slm}
        label = {"audit": audit, "f1": f1, "agree": agree, "source": "shadow"}
        return {"id": "x", "slm": part, "fallbacks": {}, "label": label}

    records = [
        record(True, 0.5, True),  # agreement at the bound: the recorded verdict counts
        record(True, 0.2, False),
        record(False, 1.0, True),  # not audited: a biased sample, left out
        record(True, None, None),  # audited, but the shadow check was cancelled
        record(True, None, None, error="slm_timeout", signals=None),  # always escalated
    ]
    traces = labelled_traces(records)
    assert traces.source == "agreement" and traces.n == 3
    assert list(traces.quality) == [1.0, 0.0, 0.0]
    assert traces.signals[2] is None
    assert sum(traces.skipped.values()) == 2
    with pytest.raises(ConfigurationError):
        labelled_traces([*records, *_eval_like_records(2)])

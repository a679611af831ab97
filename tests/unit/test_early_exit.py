"""Incremental signals and early abort, on every committed SLM answer (no model needed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    EarlyExitRule,
    IncrementalSignals,
    LogisticPolicy,
    MonotoneBounds,
    ThresholdPolicy,
    load_early_exit,
    load_policy,
    save_early_exit,
    signals_from_arrays,
)
from confidence_router.eval.replay import TraceAnswer, load_answers, replay
from confidence_router.routing.early_exit import WORSENING_SIDES, checks_for
from confidence_router.signals.incremental import P2Quantile
from tests.support.paths import REPO_ROOT

# The 0.1.0 learned policy (token statistics only, which a prefix can be scored on; the
# current fitted policies also read the context signals, which need the whole answer).
TOKEN_POLICY = REPO_ROOT / "tests" / "data" / "policy_v0.1.0_logistic.json"

TRACES = REPO_ROOT / "bench" / "results" / "traces"
TRACE_FILES = [TRACES / f"{name}.jsonl" for name in ("squad_v1", "squad_v2", "hotpotqa")]

POLICIES = {
    "default": ThresholdPolicy(),
    "seed_short": ThresholdPolicy.seed(max_length=8, max_entropy=None, min_logprob=-2.0),
    "max_entropy": ThresholdPolicy.seed(
        max_length=None, max_entropy=1.5, min_logprob=-2.5, entropy_signal="max_entropy"
    ),
    "sum_logprob_any": ThresholdPolicy(
        (Bound("sum_logprob", min=-3.0), Bound("length", max=6)), combine="any"
    ),
    "shifted_threshold": ThresholdPolicy.seed(max_length=12, min_logprob=-2.0).with_threshold(0.3),
}


@pytest.fixture(scope="module")
def answers() -> list[TraceAnswer]:
    found = load_answers(TRACE_FILES)
    assert len(found) > 1200  # 1300 questions, a few without any token
    return found


def test_running_signals_equal_the_full_computation_on_every_prefix(
    answers: list[TraceAnswer],
) -> None:
    prefixes = 0
    for answer in answers:
        acc = IncrementalSignals()
        for i in range(len(answer.logprobs)):
            acc.push(answer.logprobs[i : i + 1], answer.top_logprobs[i : i + 1])
            want = signals_from_arrays(answer.logprobs[: i + 1], answer.top_logprobs[: i + 1])
            assert acc.snapshot() == want, (answer.id, i)
            assert acc.count == i + 1 and acc.min_logprob == want.min_logprob
            assert acc.sum_logprob == want.sum_logprob and acc.max_entropy == want.max_entropy
            prefixes += 1
    assert prefixes > 10_000


def test_chunks_of_several_tokens_give_the_same_signals(answers: list[TraceAnswer]) -> None:
    for answer in answers[:200]:
        acc = IncrementalSignals()
        for start in range(0, len(answer.logprobs), 3):
            acc.push(answer.logprobs[start : start + 3], answer.top_logprobs[start : start + 3])
        assert acc.snapshot() == answer.signals


def test_empty_and_invalid_input() -> None:
    acc = IncrementalSignals()
    assert acc.snapshot() == signals_from_arrays(np.zeros(0), np.zeros((0, 0)))
    with pytest.raises(ValueError, match="NaN"):
        acc.push(np.array([math.nan]), np.array([[math.nan]]))
    assert acc.count == 0


def test_streaming_quantiles_past_the_exact_buffer_stay_close(answers: list[TraceAnswer]) -> None:
    stream = np.concatenate([a.logprobs for a in answers])
    acc = IncrementalSignals(exact_quantiles_up_to=64)
    for start in range(0, len(stream), 7):
        acc.push(stream[start : start + 7], stream[start : start + 7, None])
    assert not acc.quantiles_exact and acc.count == len(stream)
    exact = np.quantile(stream, [0.10, 0.25, 0.50])
    estimate = np.array(acc.quantile_values())
    # the log-probabilities span about 10 nats; the estimate is within 0.05 nat of each quantile
    assert np.max(np.abs(estimate - exact)) < 0.05, (estimate, exact)
    # the running statistics stay exact
    assert acc.min_logprob == float(stream.min())
    assert acc.sum_logprob == math.fsum(stream.tolist())


def test_p2_estimator_is_exact_for_five_values_and_tracks_a_uniform_stream() -> None:
    est = P2Quantile(0.25)
    for value in (5.0, 1.0, 4.0, 2.0, 3.0):
        est.add(value)
    assert est.value == pytest.approx(np.quantile([1, 2, 3, 4, 5], 0.25))
    values = np.random.default_rng(1).uniform(0, 1, 20_000)
    est = P2Quantile(0.10)
    for value in values:
        est.add(float(value))
    assert est.value == pytest.approx(0.10, abs=0.01)


@pytest.mark.parametrize("name", list(POLICIES))
def test_monotone_bounds_abort_at_the_first_violation_and_agree_with_the_full_answer(
    name: str, answers: list[TraceAnswer]
) -> None:
    policy = POLICIES[name]
    checks = checks_for(policy, True)
    assert checks is not None
    results = replay(answers, policy, checks)
    aborted = 0
    for result in results:
        answer = result.answer
        assert result.early_route == result.full_route, (name, answer.id)
        # the first prefix at which a bound that can only worsen is violated, found
        # independently from the full computation of each prefix
        first = None
        for k in range(1, len(answer.logprobs) + 1):
            s = signals_from_arrays(answer.logprobs[:k], answer.top_logprobs[:k])
            sides = [
                (b, side)
                for b in policy.bounds
                for side in ("min", "max")
                if getattr(b, side) is not None and (b.signal, side) in WORSENING_SIDES
            ]
            violated = {
                id(b)
                for b, side in sides
                if (
                    (s[b.signal] - b.min) if side == "min" else (b.max - s[b.signal])  # type: ignore[operator]
                )
                / b.unit
                < policy.threshold
            }
            if policy.combine == "all" and violated or len(violated) == len(policy.bounds):
                first = k
                break
        assert result.aborted_after == first, (name, answer.id)
        aborted += first is not None
    assert aborted > 0, f"{name}: no answer was stopped early; the test shows nothing"
    assert sum(r.full_route == "llm" for r in results) >= aborted


def test_monotone_check_only_for_bounds_that_can_only_get_worse() -> None:
    assert MonotoneBounds.of(ThresholdPolicy((Bound("mean_entropy", max=1.0),))) is None
    assert MonotoneBounds.of(ThresholdPolicy((Bound("length", min=3),))) is None
    mixed_any = ThresholdPolicy(
        (Bound("min_logprob", min=-3), Bound("mean_entropy", max=1)), combine="any"
    )
    assert MonotoneBounds.of(mixed_any) is None  # the entropy bound can recover
    check = MonotoneBounds.of(ThresholdPolicy())
    assert check is not None
    assert [(check.policy.bounds[i].signal, side) for i, side in check.sides] == [
        ("length", "max"),
        ("min_logprob", "min"),
    ]


def _split(answers: list[TraceAnswer], seed: int = 0) -> tuple[list[TraceAnswer], ...]:
    order = np.random.default_rng(seed).permutation(len(answers))
    half = len(answers) // 2
    return [answers[i] for i in order[:half]], [answers[i] for i in order[half:]]


def test_learned_rule_changes_at_most_the_stated_share_on_its_calibration_split(
    answers: list[TraceAnswer],
) -> None:
    policy = load_policy(TOKEN_POLICY)
    calibration, _ = _split(answers)
    prefixes = [a.prefixes() for a in calibration]
    rule = EarlyExitRule.fit(policy, prefixes, max_changed=0.01)
    stats = rule.evaluate(prefixes)
    assert stats == rule.calibration
    assert 0 < stats["changed_share"] <= 0.005  # half the stated share: safety=0.5
    assert stats["aborted_share_of_escalated"] > 0.2
    looser = EarlyExitRule.fit(policy, prefixes, max_changed=0.05, safety=1.0)
    assert 0.005 < looser.evaluate(prefixes)["changed_share"] <= 0.05
    assert looser.bound >= rule.bound


def test_learned_rule_round_trips_through_json(answers: list[TraceAnswer], tmp_path: Path) -> None:
    policy = LogisticPolicy.fit(
        [a.signals for a in answers], [a.logprobs.min() > -1.5 for a in answers]
    )
    calibration, held_out = _split(answers, seed=3)
    rule = EarlyExitRule.fit(policy, [a.prefixes() for a in calibration[:300]])
    path = tmp_path / "rule.json"
    save_early_exit(rule, path)
    loaded = load_early_exit(path)
    assert loaded.to_dict() == rule.to_dict()
    assert json.loads(path.read_text())["type"] == "early_exit"
    for answer in held_out[:200]:
        scores = [policy.score(s) for s in answer.prefixes()]
        assert loaded.prefix_aborts(scores) == rule.prefix_aborts(scores)


def test_a_rule_for_another_policy_is_refused() -> None:
    rule = EarlyExitRule(ThresholdPolicy(), bound=-0.5, min_tokens=2)
    with pytest.raises(ConfigurationError, match="^early_abort:.*another policy"):
        checks_for(ThresholdPolicy().with_threshold(0.2), rule)
    with pytest.raises(ConfigurationError, match="^early_abort:"):
        checks_for(ThresholdPolicy(), "yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="^min_tokens:"):
        EarlyExitRule(ThresholdPolicy(), bound=0.0, min_tokens=0)
    assert checks_for(ThresholdPolicy(), False) is None

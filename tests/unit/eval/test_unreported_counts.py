"""A token count the server did not report (`null` in a trace) is left out and said, never 0.

Hand-made records whose right numbers are worked out by hand: each reader
(the report's costs and tokens, the curves, the ladder, the latency fit of
the early-abort replay, the self-consistency token bound) computes its
figure over the questions whose counts are known and says how many it left out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eval_synthetic import hand_records, write_records

from confidence_router.errors import SLMUnavailableError
from confidence_router.eval import metrics
from confidence_router.eval.agreement import evaluate, sample_columns
from confidence_router.eval.analysis import SEED_POINT, AnalysisSettings, analyze
from confidence_router.eval.data import QAExample
from confidence_router.eval.ladder import (
    LadderStudy,
    join,
    ladder_markdown,
    load_answers,
    summarise,
)
from confidence_router.eval.replay import load_answers as replay_answers
from confidence_router.eval.replay import speed_from_traces
from confidence_router.eval.report import write_report
from confidence_router.eval.traces import perfect_record, slm_record

#: Each call costs its price: the SLM 1, the fallback 10 (see hand_records).
PRICED = AnalysisSettings(bootstrap=0, slm_price=(1.0, 1.0), fallback_price=(10.0, 10.0))


def test_a_failed_call_and_its_perfect_fallback_record_null_counts() -> None:
    example = QAExample("q1", "squad_v1", "Where?", "In France.", ("France",))
    failed = slm_record(example, None, SLMUnavailableError("connection refused", model="smollm2"))
    assert (failed["prompt_tokens"], failed["completion_tokens"]) == (None, None)
    perfect = perfect_record(example, failed["prompt_tokens"])
    assert perfect["prompt_tokens"] is None and perfect["completion_tokens"] == 2  # an estimate


def test_a_curve_costs_only_the_questions_whose_cost_is_known() -> None:
    # q0 forced; q2's cost unknown. Kept: 1 a question, escalated: 11
    nan = np.nan
    outcomes = metrics.Outcomes(
        np.array([0.0, 1.0, 0.0, 0.0]),
        np.array([1.0, 1.0, 1.0, 0.0]),
        np.array([1.0, 1.0, nan, 1.0]),
        np.array([11.0, 11.0, nan, 11.0]),
    )
    curve = metrics.score_curve(
        np.array([9.0, 0.9, 0.1, 0.5]), outcomes, [True, False, False, False]
    )
    np.testing.assert_allclose(curve.quality, [0.5, 0.75, 0.75, 0.75])  # every question
    # escalation order q2 (unknown cost), q3, q1; costs over q0, q1, q3
    np.testing.assert_allclose(curve.cost, [13 / 3, 13 / 3, 23 / 3, 11.0])
    unknown = metrics.Outcomes(
        outcomes.keep_quality, outcomes.escalate_quality, *[np.full(4, nan)] * 2
    )
    assert np.isnan(metrics.score_curve(np.zeros(4), unknown).cost).all()


def _one_unreported() -> list[dict[str, Any]]:
    """Four questions, every call costs its price; q3's SLM prompt count was not reported."""
    records = hand_records([1, 0, 1, 0], [1, 1, 1, 1], [-0.1, -3.0, -0.1, -3.0])
    records[3]["slm"]["prompt_tokens"] = None
    return records


def test_the_report_costs_the_known_questions_and_says_how_many_it_left_out(
    tmp_path: Path,
) -> None:
    result = analyze(_one_unreported(), "big", PRICED)
    assert result.n_unreported == 1
    # q3 as 0 prompt tokens would make the SLM cost 0.75 a question, not 1
    assert result.cost == {
        "slm only": 1000.0,
        "fallback only": 10000.0,
        "cascade, all escalated": 11000.0,
    }
    assert result.mean_answer_tokens == 1.0
    assert result.fallback_only["fallback_tokens"] == 1e6
    point = result.point(SEED_POINT)
    assert point is not None and point.slm_tokens == pytest.approx(1e6)
    assert result.router("random").curve.cost[0] == pytest.approx(1.0)  # all kept
    # min_logprob escalates q1/q3 (a tie, half a known escalation each), then q0/q2
    np.testing.assert_allclose(
        result.router("min_logprob").curve.cost, [1.0, 8 / 3, 13 / 3, 23 / 3, 11.0]
    )
    shown = result.to_dict()
    assert shown["n_unreported_token_counts"] == 1
    write_report([result], tmp_path, settings=PRICED)
    report = (tmp_path / "report.md").read_text()
    assert "Cost and token figures are over 3 of 4 questions; 1 lacks a reported token count." in (
        report
    )
    assert "Costs are over 3 of 4 questions" in report
    assert "Token figures are over 3 of 4 questions" in report  # the machine cost table


def test_with_no_count_reported_every_cost_is_unknown_not_zero(tmp_path: Path) -> None:
    records = _one_unreported()
    for r in records:
        r["slm"]["prompt_tokens"] = None
    result = analyze(records, "big", PRICED)
    assert result.n_unreported == 4
    assert set(result.cost.values()) == {None}
    assert np.isnan(result.router("random").curve.cost).all()
    json.dumps(result.to_dict(), allow_nan=False)  # unknown is null, not NaN
    write_report([result], tmp_path, settings=PRICED)
    assert "slm only: unknown" in (tmp_path / "report.md").read_text()


def _ladder_record(i: int, top_prompt: int | None) -> dict[str, Any]:
    part = {"f1": 1.0, "raw": "x", "error": None, "latency_s": 1.0, "signals": None}
    return {
        "id": f"q{i}",
        "dataset": "squad_v1",
        "config": {"slm": "small", "prompt": "rag-v2"},
        "slm": {**part, "prompt_tokens": 100, "completion_tokens": 10},
        "fallbacks": {
            "top": {**part, "model": "top", "prompt_tokens": top_prompt, "completion_tokens": 20}
        },
    }


def test_a_ladder_counts_tokens_and_cost_over_the_reported_questions(tmp_path: Path) -> None:
    path = write_records(
        tmp_path / "t.jsonl",
        [_ladder_record(0, 200), _ladder_record(1, 200), _ladder_record(2, None)],
    )
    data = join(load_answers([path]), ["small", "top"], "squad_v1")
    prices = {"small": (1.0, 1.0), "top": (2.0, 2.0)}
    summary, _ = summarise(data, np.array([[0.1], [0.5], [0.9]]), prices)
    # q2's top prompt as 0 would make the top model's tokens (220 + 220 + 20) / 3
    assert summary.escalate_all.tokens == {"small": 110.0, "top": 220.0}
    assert summary.escalate_all.cost == pytest.approx((110 + 2 * 220) / 1e6)
    assert summary.unreported == 1 and summary.to_dict()["n_unreported_token_counts"] == 1
    study = LadderStudy(("small", "top"), {}, prices, "seed", 0.95, [summary], [], {})
    text = "small → top: Tokens and cost are over 2 of 3 questions; 1 lacks a reported token count."
    assert text in ladder_markdown(study)


def _replay_record(i: int, prompt: int | None, completion: int, latency: float) -> dict[str, Any]:
    return {
        "id": f"q{i}",
        "dataset": "squad_v1",
        "slm": {
            "f1": 1.0,
            "logprobs": [-0.1] * completion,
            "top_logprobs": [[-0.1]] * completion,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "latency_s": latency,
        },
    }


def test_the_latency_fit_skips_answers_without_a_prompt_count(tmp_path: Path) -> None:
    def exact(prompt: int, completion: int) -> float:  # 0.1 s + 10 ms a prompt token + 50 ms
        return 0.1 + 0.01 * prompt + 0.05 * completion

    rows = [(100, 2), (300, 5), (50, 9), (800, 1)]
    records = [_replay_record(i, p, c, exact(p, c)) for i, (p, c) in enumerate(rows)]
    records.append(_replay_record(9, None, 3, 0.1))  # as 0 prompt tokens it would bend the fit
    path = write_records(tmp_path / "t.jsonl", records)
    speed, quality = speed_from_traces([path])
    assert (speed.overhead_s, speed.prompt_s_per_token, speed.decode_s_per_token) == pytest.approx(
        (0.1, 0.01, 0.05)
    )
    assert quality["answers"] == 4 and quality["unreported"] == 1
    unknown = [a for a in replay_answers([path]) if a.id == "q9"][0]
    assert unknown.prompt_tokens is None and unknown.completion_tokens == 3
    assert np.isnan(speed.until_fallback(unknown.prompt_tokens, 3))


def test_sample_tokens_of_an_unreported_count_are_left_out_of_the_mean() -> None:
    def record(prompt: int | None) -> dict[str, Any]:
        samples = [{"answer": "a", "prompt_tokens": prompt, "completion_tokens": 2}] * 2
        return {"slm": {"answer": "a", "samples": samples}}

    cols = sample_columns([record(1), record(3), record(None)])
    np.testing.assert_allclose(cols.tokens[:2], [6.0, 10.0])
    assert np.isnan(cols.tokens[2])  # not 4: the prompt counts are unknown
    outcomes = metrics.Outcomes(np.ones(3), np.ones(3), np.ones(3), np.full(3, 2.0))
    scores = np.array([0.1, 0.2, 0.3])
    variant = evaluate(
        scores, np.ones(3, bool), outcomes, cols, threshold=0.0, band=(0.0, 1.0), min_agreement=0.5
    )
    assert variant.extra_tokens == pytest.approx(8.0)  # (6 + 10) / 2, not (6 + 10 + 4) / 3
    assert cols.unreported == 1

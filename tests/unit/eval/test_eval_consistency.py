"""Offline self-consistency analysis on small synthetic trace files with known answers."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eval_synthetic import synthetic_records, write_records

from confidence_router.eval.agreement import (
    choose_band,
    choose_min_agreement,
    combined_scores,
    escalations,
    evaluate,
    sample_columns,
)
from confidence_router.eval.analysis import AnalysisSettings, cascade_outcomes, trace_arrays
from confidence_router.eval.traces import PERFECT, load_traces

REPO = Path(__file__).resolve().parents[3]


def _sample(answer: str, prompt: int = 0, completion: int = 3) -> dict[str, Any]:
    return {
        "raw": answer,
        "answer": answer,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
    }


def _with_samples(records: list[dict[str, Any]], agreeing: np.ndarray, k: int = 4) -> None:
    """Give record i ``agreeing[i]`` samples equal to its answer and the rest different."""
    for record, n in zip(records, agreeing, strict=True):
        record["slm"]["samples"] = [
            _sample("The Answer." if j < n else f"other {j}", prompt=1 if j == 0 else 0)
            for j in range(k)
        ]


def test_agreement_share_and_mean_f1_after_normalisation(tmp_path: Path) -> None:
    records = synthetic_records(np.array([True, False]))
    records[0]["slm"]["samples"] = [
        _sample("the answer"),
        _sample("Answer!"),
        _sample("answer here"),
        _sample("no"),
    ]
    path = write_records(tmp_path / "squad_v1.jsonl", records)
    cols = sample_columns(load_traces(path))
    assert cols.share[0] == pytest.approx(0.5)  # "the answer" and "Answer!" normalise to "answer"
    assert cols.mean_f1[0] == pytest.approx((1 + 1 + 2 / 3 + 0) / 4)
    assert list(cols.k) == [4, 0] and cols.share[1] == 0.0
    assert cols.completion_tokens[0] == 12 and cols.tokens[1] == 0


def test_combined_scores_rank_by_agreement_inside_the_band_only() -> None:
    scores = np.array([-np.inf, 0.1, 0.4, 0.45, 0.5, 0.9])
    agree = np.array([1.0, 1.0, 1.0, 0.0, 0.5, 0.0])
    out = combined_scores(scores, agree, (0.3, 0.6))
    assert out[0] == -np.inf and out[1] == 0.1 and out[5] == 0.9  # outside: unchanged
    inside = out[2:5]
    assert np.all((inside >= 0.4) & (inside < 0.6))
    assert out[3] < out[4] < out[2]  # agreement 0 < 0.5 < 1
    esc = escalations(scores, agree, threshold=0.45, band=(0.3, 0.6), min_agreement=0.5)
    assert list(esc) == [True, True, False, True, False, False]
    assert list(escalations(scores, agree, 0.45, None, 0.5)) == [
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def _synthetic(n: int = 400, seed: int = 3) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Right answers' samples agree (3-4 of 4), wrong ones' do not (0-1); min_logprob is
    weakly informative, so agreement inside the band must help."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.4
    min_lp = np.where(correct, rng.normal(-1.0, 1.0, n), rng.normal(-1.6, 1.0, n))
    records = synthetic_records(correct, {"min_logprob": min_lp}, seed=seed)
    agreeing = np.where(correct, rng.integers(3, 5, n), rng.integers(0, 2, n))
    _with_samples(records, agreeing)
    return records, min_lp


def test_a_band_is_chosen_within_the_token_bound_and_helps_when_agreement_is_informative(
    tmp_path: Path,
) -> None:
    records, scores = _synthetic()
    path = write_records(tmp_path / "squad_v1.jsonl", records)
    loaded = load_traces(path)
    t = trace_arrays(loaded, PERFECT, AnalysisSettings(bootstrap=0))
    cols = sample_columns(loaded)
    outcomes = cascade_outcomes(t)
    assert np.all(cols.tokens == 13)  # 4 samples x 3 tokens + 1 prompt token
    band, value = choose_band(scores, t.correct, outcomes, cols, max_extra_tokens=13 * 0.3)
    assert band is not None
    sampled = (scores >= band[0]) & (scores < band[1])
    assert 13 * sampled.mean() <= 13 * 0.3 + 1e-9
    without = evaluate(
        scores, t.correct, outcomes, cols, threshold=-1.3, band=None, min_agreement=0.5
    )
    cut = choose_min_agreement(scores, t.correct, cols, threshold=-1.3, band=band)
    assert 0.25 < cut <= 0.75  # between the wrong answers' 0-1 of 4 and the right ones' 3-4
    with_ = evaluate(
        scores,
        t.correct,
        outcomes,
        cols,
        threshold=-1.3,
        band=band,
        min_agreement=cut,
        sample_cost=np.full(len(scores), 2.0),
    )
    assert with_.apgr == pytest.approx(value) and with_.apgr > without.apgr + 0.01
    assert with_.auroc > without.auroc
    assert with_.sampled_share == pytest.approx(sampled.mean())
    assert with_.extra_tokens == pytest.approx(13 * sampled.mean())
    assert with_.extra_cost == pytest.approx(2.0 * sampled.mean())
    assert without.extra_tokens == 0.0 and without.sampled_share == 0.0
    # no room for samples: no band
    assert choose_band(scores, t.correct, outcomes, cols, max_extra_tokens=0.0)[0] is None


def test_uninformative_samples_choose_no_band(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    correct = rng.random(300) < 0.4
    min_lp = np.where(correct, rng.normal(-0.5, 0.5, 300), rng.normal(-2.0, 0.5, 300))
    records = synthetic_records(correct, {"min_logprob": min_lp})
    _with_samples(records, np.full(300, 4))  # every sample always agrees: no information
    loaded = load_traces(write_records(tmp_path / "squad_v1.jsonl", records))
    t = trace_arrays(loaded, PERFECT, AnalysisSettings(bootstrap=0))
    band, _ = choose_band(
        min_lp, t.correct, cascade_outcomes(t), sample_columns(loaded), max_extra_tokens=100
    )
    assert band is None


def test_the_bench_script_reports_with_and_without(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("sc_bench", REPO / "bench/self_consistency.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    records, _ = _synthetic(n=120)
    committed, _ = _synthetic(n=300, seed=9)
    for r in committed:
        r["id"] = "c" + r["id"]  # other questions of the same data set
    for folder in ("samples", "committed"):
        (tmp_path / folder).mkdir()
    write_records(tmp_path / "samples" / "squad_v1.jsonl", records)
    write_records(tmp_path / "committed" / "squad_v1.jsonl", committed)
    args = argparse.Namespace(
        traces=tmp_path / "samples",
        committed=tmp_path / "committed",
        max_extra_tokens=4.0,
        splits=3,
        measure="match",
        seed=0,
    )
    result = bench.run(args)
    entry = result["datasets"]["squad_v1"]
    assert entry["n"] == 120 and entry["learned_fitted_on"] == 300 and entry["k"] == 4
    assert entry["auroc_agreement_alone"] > 0.9  # the synthetic samples are built to agree
    for base in ("learned", "seed"):
        mean = entry["bases"][base]["mean"]
        assert mean["with.extra_tokens"] <= 4.0 * 1.5  # chosen on the other half: near the bound
        assert mean["without.extra_tokens"] == 0.0
        assert {"with.auroc", "without.apgr", "with.served_extra_cost"} <= set(mean)
    assert "| squad_v1 | learned | 120 |" in bench.table(result)

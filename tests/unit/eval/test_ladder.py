"""Ladder calibration offline: simulation, joint Learn-then-Test, the CLI on written traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confidence_router.calibration import hoeffding_bentkus_pvalue
from confidence_router.cli.eval import main
from confidence_router.eval.ladder import (
    answered_stage,
    guarantee_study,
    hb_pvalues,
    join,
    learn_path,
    load_answers,
    losses,
    ltt_ladder,
    threshold_grid,
)

MODELS = ("tiny", "mid", "top")


def test_the_first_stage_whose_score_clears_its_threshold_answers() -> None:
    scores = np.array([[0.9, 0.1], [0.1, 0.9], [0.1, 0.1], [-np.inf, 0.9]])
    stage = answered_stage(scores, np.array([[0.5, 0.5], [np.inf, 0.5], [np.inf, np.inf]]))
    assert stage.tolist() == [[0, 1, 2, 1], [2, 1, 2, 1], [2, 2, 2, 2]]
    f1 = np.array([[0.0, 1.0, 1.0], [1.0, 0.5, 0.0], [0.0, 0.0, 0.5], [0.0, 1.0, 1.0]])
    loss = losses(f1, stage)
    # only F1 below the top model's counts; a better answer is no gain
    assert loss.tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0] * 4]


def test_vectorised_pvalues_are_calibrates_hoeffding_bentkus() -> None:
    means = np.array([0.0, 0.01, 0.03, 0.049, 0.05, 0.2])
    expected = [hoeffding_bentkus_pvalue(float(m), 150, 0.05) for m in means]
    assert hb_pvalues(means, 150, 0.05) == pytest.approx(expected)


def _synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two small models whose scores predict whether they match the top model."""
    rng = np.random.default_rng(seed)
    f1 = np.ones((n, 3))
    scores = rng.normal(size=(n, 2))
    for j, p_right in ((0, 0.3), (1, 0.6)):
        right = rng.random(n) < 1 / (
            1 + np.exp(-(scores[:, j] * 3 + np.log(p_right / (1 - p_right))))
        )
        f1[:, j] = right.astype(float)
    return scores, f1


def test_joint_thresholds_keep_the_loss_within_budget_on_fresh_data() -> None:
    scores, f1 = _synthetic(6000, 0)
    fit, cal, test = slice(0, 1000), slice(1000, 2000), slice(2000, None)
    grid = threshold_grid(scores[fit], 12)
    path = learn_path(scores[fit], f1[fit], grid)
    for procedure in ("fixed-sequence", "bonferroni"):
        choice = ltt_ladder(scores[cal], f1[cal], grid, 0.05, 0.9, procedure=procedure, path=path)
        assert choice.certified and choice.calibration_top_share < 0.8
        stage = answered_stage(scores[test], np.array([choice.thresholds]))
        assert losses(f1[test], stage).mean() <= 0.05 + 0.01
        assert (stage == 0).mean() > 0 and (stage == 1).mean() > 0  # both stages answer


def test_too_few_calibration_questions_certify_nothing_and_call_the_top() -> None:
    scores, f1 = _synthetic(30, 1)
    choice = ltt_ladder(scores, f1, threshold_grid(scores, 5), 0.05, 0.9)
    assert not choice.certified and choice.calibration_top_share == 1.0
    assert all(np.isinf(choice.thresholds))


def _write_traces(path: Path, n: int) -> None:
    """Trace records in the evaluation's schema: tiny's file, and mid's with top as fallback."""
    rng = np.random.default_rng(3)
    tiny: list[dict[str, Any]] = []
    mid: list[dict[str, Any]] = []
    for i in range(n):
        base: dict[str, Any] = {"id": f"q{i}", "dataset": "squad_v1", "answers": ["a"]}
        for model, out, with_top in (("tiny", tiny, False), ("mid", mid, True)):
            score = float(rng.normal())
            right = rng.random() < 1 / (1 + np.exp(-3 * score))
            record = dict(base)
            record["config"] = {"slm": model, "prompt": "rag-v2"}
            signals = {"length": 3.0, "mean_logprob": score - 1, "min_logprob": 2 * score - 3}
            signals |= {k: score for k in ("sum_logprob", "q10_logprob", "q25_logprob")}
            signals |= {k: score for k in ("median_logprob", "first_margin", "mean_margin")}
            signals |= {"mean_entropy": 1 - score, "max_entropy": 2 - score}
            record["slm"] = {
                "raw": "a" if right else "b",
                "f1": float(right),
                "error": None,
                "signals": signals,
                "prompt_tokens": 100,
                "completion_tokens": 3,
                "latency_s": 0.5 if model == "tiny" else 2.0,
            }
            record["fallbacks"] = {"perfect": {"f1": 1.0, "model": "perfect"}}
            if with_top:
                record["fallbacks"]["top"] = {
                    "raw": "a",
                    "f1": 1.0,
                    "model": "top",
                    "prompt_tokens": 100,
                    "completion_tokens": 3,
                    "latency_s": 5.0,
                }
            out.append(record)
    path.mkdir()
    for name, rows in (("tiny", tiny), ("mid", mid)):
        (path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_answers_of_every_model_join_by_question(tmp_path: Path) -> None:
    _write_traces(tmp_path / "t", 40)
    book = load_answers([tmp_path / "t" / "tiny.jsonl", tmp_path / "t" / "mid.jsonl"])
    data = join(book, MODELS, "squad_v1")
    assert data.n == 40 and data.f1.shape == (40, 3) and data.f1[:, 2].min() == 1.0
    assert data.latency[:, 2].tolist() == [5.0] * 40
    assert load_answers([tmp_path / "t" / "tiny.jsonl"], prompt="qa-v1").answers == {}
    with pytest.raises(ValueError, match="no answers of mid, top"):
        join(load_answers([tmp_path / "t" / "tiny.jsonl"]), MODELS, "squad_v1")
    study = guarantee_study(data, splits=20, scores="seed")
    assert study.splits == 20 and 0.0 <= study.violation_share <= 1.0


def test_the_cli_writes_the_section_and_the_json(tmp_path: Path) -> None:
    _write_traces(tmp_path / "t", 120)
    out = tmp_path / "ladder"
    code = main(
        ["ladder", str(tmp_path / "t"), "--ladder", "tiny,mid,top", "--splits", "10",
         "--scores", "seed", "--out", str(out), "--price", "top=1/2"]
    )  # fmt: skip
    assert code == 0
    text = (out / "ladder.md").read_text()
    assert "tiny → mid → top" in text and "mid → top" in text and "top alone" in text
    assert "Reproduce: `confidence-router eval ladder" in text
    data = json.loads((out / "ladder.json").read_text())
    assert data["prices_per_million_tokens"]["top"] == [1.0, 2.0]
    assert {tuple(s["models"]) for s in data["summaries"]} == {
        ("tiny", "mid", "top"), ("tiny", "top"), ("mid", "top"), ("top",)
    }  # fmt: skip
    assert len(data["guarantee"]) == 3
    assert main(["ladder", str(tmp_path / "t"), "--ladder", "top"]) == 2

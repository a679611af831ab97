"""Leave-one-model-out measurement: loader (fallbacks scored as SLMs), LOMO numbers, CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eval_synthetic import synthetic_records, write_records

from confidence_router.cli.eval import main
from confidence_router.eval.transfer import (
    SEED,
    TRANSFER,
    TRANSFER_DEFAULT,
    TransferSettings,
    answers_from_records,
    auroc_gain_ci,
    calls_avoided,
    family_of,
    load_model_answers,
    lomo,
)
from confidence_router.policies import policy_from_dict
from confidence_router.policies.transfer import TransferPolicy
from confidence_router.signals import SIGNAL_NAMES


def model_records(
    model: str, seed: int, *, n: int = 120, shift: float = 0.0, stretch: float = 1.0
) -> list[dict[str, Any]]:
    """One model's answers: min_logprob and context_span informative, the log-probs of each
    model on their own scale (``stretch`` x + ``shift``)."""
    rng = np.random.default_rng(seed)
    correct = rng.random(n) < 0.4
    lp = np.where(correct, rng.normal(-0.5, 0.4, n), rng.normal(-2.0, 0.7, n))
    span = np.clip(np.where(correct, 0.8, 0.4) + rng.normal(0, 0.25, n), 0, 1)
    records = synthetic_records(
        correct,
        {"min_logprob": stretch * lp + shift, "context_span": span},
        seed=seed,
    )
    for r in records:
        r["config"]["slm"] = model
    return records


def with_fallback_signals(records: list[dict[str, Any]], name: str, seed: int) -> None:
    """Add a real fallback that logged its own signals (as Qwen 1.5B does behind the 0.5B)."""
    rng = np.random.default_rng(seed)
    for r in records:
        right = bool(rng.random() < 0.7)
        lp = rng.normal(-0.3, 0.2) if right else rng.normal(-1.5, 0.5)
        signals = {k: float(v) for k, v in r["slm"]["signals"].items()}
        signals["min_logprob"] = float(lp)
        r["fallbacks"][name] = {
            "raw": " big answer",
            "answer": "big answer",
            "em": float(right),
            "f1": float(right),
            "error": None,
            "prompt_tokens": 200,
            "completion_tokens": 3,
            "latency_s": 1.0,
            "model": name,
            "finish_reason": "stop",
            "signals": signals,
        }


def test_a_fallback_with_signals_becomes_a_model_of_its_own() -> None:
    records = model_records("small", 0, n=30)
    with_fallback_signals(records, "big", 1)
    records[0]["slm"]["raw"] = ""  # empty: escalated whatever the policy
    records[1]["fallbacks"]["big"]["finish_reason"] = "length"  # cut off: the same
    small, big = answers_from_records(records, "f.jsonl")
    assert (small.model, big.model) == ("small", "big")
    assert set(small.fallback_f1) == {"perfect", "big"}
    assert set(big.fallback_f1) == {"perfect"} and big.as_fallback
    assert small.forced[0] and not small.forced[1]
    assert big.forced[1] and not big.forced[0]
    assert big.f1.tolist() == [r["fallbacks"]["big"]["f1"] for r in records]
    s = big.signals[2]
    assert s is not None
    assert s.min_logprob == records[2]["fallbacks"]["big"]["signals"]["min_logprob"]


def test_a_fallback_without_signals_is_not_a_model() -> None:
    records = model_records("small", 0, n=20)
    for r in records:
        r["fallbacks"]["api"] = {**r["fallbacks"]["perfect"], "model": "api"}
    assert [a.model for a in answers_from_records(records)] == ["small"]


def test_calls_avoided_never_counts_a_forced_answer_as_avoided() -> None:
    records = model_records("m", 0, n=10)
    (a,) = answers_from_records(records)
    # every SLM answer right (F1 1 = the perfect fallback's) except two forced ones
    a.f1 = np.ones(10)
    a.signals[0] = a.signals[1] = None
    scores = np.where(a.forced, -np.inf, 0.0)
    assert calls_avoided(scores, a, "perfect") == pytest.approx(0.8)


@pytest.fixture
def three_models(tmp_path: Path) -> list[Path]:
    folders = []
    for i, (model, shift, stretch) in enumerate(
        [("a", 0.0, 1.0), ("b", -3.0, 2.0), ("c", 1.0, 0.5)]
    ):
        folder = tmp_path / model
        folder.mkdir()
        records = model_records(model, i, shift=shift, stretch=stretch)
        write_records(folder / "squad_v1.jsonl", records)
        folders.append(folder)
    return folders


def test_lomo_scores_each_model_with_a_policy_fitted_without_it(
    three_models: list[Path],
) -> None:
    answers = load_model_answers([f / "squad_v1.jsonl" for f in three_models])
    results = lomo(answers, TransferSettings(single_model=True, own_cv=False))
    assert [h.answers.model for h in results] == ["a", "b", "c"]
    for h in results:
        transfer = h.router(TRANSFER)
        assert transfer.auroc > 0.85  # the signals are as informative for every model
        assert h.router(SEED).auroc < transfer.auroc
        assert {r.name for r in h.single_model()} == {
            f"fitted on {m}" for m in "abc" if m != h.answers.model
        }
        assert transfer.at_threshold["threshold"] == 0.5
        assert 0.0 <= transfer.at_threshold["escalation_rate"] <= 1.0
    # model b's log-probs sit far from the others': its own scale matters, the default less so
    b = results[1]
    assert b.router(TRANSFER).auroc >= b.router(TRANSFER_DEFAULT).auroc


def test_cli_writes_the_tables_and_the_shipped_policy(
    three_models: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, policy_file = tmp_path / "out", tmp_path / "any-slm.json"
    argv = ["transfer", *map(str, three_models), "--out", str(out), "--no-single"]
    assert main([*argv, "--write-policy", str(policy_file)]) == 0
    table = (out / "transfer.md").read_text()
    assert "| a | qa-v1 | squad_v1 | 120 |" in table
    data = json.loads((out / "transfer.json").read_text())
    assert len(data["results"]) == 3 and len(data["verdicts"]) == 3
    document = json.loads(policy_file.read_text())
    assert document["name"] == "any-slm/extractive-qa"
    assert document["fitted_on"]["models"] == ["a", "b", "c"]
    assert len(document["fitted_on"]["leave_one_model_out"]) == 3
    policy = policy_from_dict(document)
    assert isinstance(policy, TransferPolicy)
    assert set(policy.features) <= set(SIGNAL_NAMES)
    assert "wrote" in capsys.readouterr().out


def test_cli_needs_two_models(three_models: list[Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transfer", str(three_models[0])]) == 2
    assert "at least two models" in capsys.readouterr().err
    assert main(["transfer", str(three_models[0]), "--fit-datasets", "trivia"]) == 2


def test_family_of_strips_the_size() -> None:
    assert family_of("qwen2.5-coder-0.5b") == family_of("qwen2.5-coder-1.5b") == "qwen2.5-coder"
    assert family_of("gemma3-270m") == "gemma3"
    assert family_of("llama3.2:1b") == "llama3.2"
    assert family_of("mystery") == "mystery"


def test_holding_out_a_family_leaves_out_every_size_of_it(tmp_path: Path) -> None:
    files = []
    for i, model in enumerate(["fam-1b", "fam-3b", "other-1b"]):
        path = tmp_path / f"{model}.jsonl"
        files.append(write_records(path, model_records(model, i, n=60, shift=-i)))
    answers = load_model_answers(files)
    settings = TransferSettings(single_model=True, own_cv=False, hold_out="family")
    results = {h.answers.model: h for h in lomo(answers, settings)}
    assert set(results) == {"fam-1b", "fam-3b", "other-1b"}
    # the sibling is not a single-model policy for a held-out family member
    assert {r.name for r in results["fam-1b"].single_model()} == {"fitted on other-1b"}
    assert {r.name for r in results["other-1b"].single_model()} == {
        "fitted on fam-1b",
        "fitted on fam-3b",
    }


def test_auroc_gain_interval_is_paired() -> None:
    labels = np.array([True, False] * 20)
    good = np.where(labels, 1.0, 0.0)
    assert auroc_gain_ci(good, good, labels, 200, 0) == (0.0, 0.0)
    low, high = auroc_gain_ci(good, -good, labels, 200, 0)
    assert low == high == 1.0  # AUROC 1 against AUROC 0 on every resample

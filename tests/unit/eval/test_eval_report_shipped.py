"""The report names every shipped policy it replays, with the data sets it replays it on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from eval_synthetic import synthetic_records

from confidence_router import ThresholdPolicy
from confidence_router.eval.analysis import AnalysisSettings, analyze
from confidence_router.eval.report import write_report

FAST = AnalysisSettings(bootstrap=0)


def _info(name: str, datasets: list[str]) -> dict[str, object]:
    return {
        "name": name,
        "file": f"{name.replace('/', '.')}.json",
        "slm": "synthetic",
        "label": "right",
        "threshold": 0.5,
        "fitted_on_datasets": datasets,
        "fitted_on_answers": 100,
    }


def test_a_policy_per_data_set_is_named_with_where_it_is_replayed(tmp_path: Path) -> None:
    correct = np.random.default_rng(3).random(60) < 0.5
    policy = ThresholdPolicy()
    results = [
        analyze(
            synthetic_records(correct, dataset="squad_v1"),
            settings=FAST,
            policy=policy,
            policy_info=_info("m/extractive-qa", ["squad_v1"]),
        ),
        analyze(
            synthetic_records(correct, dataset="hotpotqa"),
            settings=FAST,
            policy=policy,
            policy_info=_info("m/multi-hop", ["hotpotqa"]),
        ),
    ]
    text = (write_report(results, tmp_path, settings=FAST)).read_text("utf-8")
    (line,) = [x for x in text.splitlines() if x.startswith("Shipped router:")]
    assert "`m/extractive-qa`" in line and "on SQuAD v1.1" in line
    assert "`m/multi-hop`" in line and "on HotpotQA" in line
    # one policy for every data set: no per-data-set list
    alone = write_report(results[:1], tmp_path / "one", settings=FAST).read_text("utf-8")
    (line,) = [x for x in alone.splitlines() if x.startswith("Shipped router:")]
    assert "`m/extractive-qa`" in line and " on SQuAD v1.1" not in line

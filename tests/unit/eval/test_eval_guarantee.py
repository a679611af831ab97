"""The report's guarantee section, on the committed traces (few splits: a smoke test with teeth)."""

from __future__ import annotations

from pathlib import Path

from confidence_router.cli.eval import main
from confidence_router.eval.guarantee import END, START, guarantee_study
from confidence_router.eval.traces import load_traces

TRACES = Path(__file__).resolve().parents[3] / "bench" / "results" / "traces"


def test_guarantee_keeps_its_promise_where_the_naive_threshold_does_not() -> None:
    result = guarantee_study(load_traces(TRACES / "squad_v1.jsonl"), splits=60, seed=1)
    assert result.n == 500 and result.split_sizes == {"fit": 150, "calibration": 200, "test": 150}
    # the promise: at most 10% of splits over budget (60 splits: allow sampling error)
    assert result.guaranteed.violation_share <= 0.1 + 3 * (0.1 * 0.9 / 60) ** 0.5
    assert result.naive.violation_share > 0.3
    assert result.guaranteed.mean_escalation > result.naive.mean_escalation
    assert result.guaranteed.mean_loss <= 0.05


def test_eval_guarantee_writes_its_section_into_the_report_once(tmp_path: Path) -> None:
    (tmp_path / "report.md").write_text("# Report\n\n## Reproduce\n\nrun it\n")
    args = ["guarantee", str(TRACES / "hotpotqa.jsonl"), "--out", str(tmp_path)]
    for _ in range(2):  # a second run replaces the section instead of adding one
        assert main([*args, "--guarantee-splits", "5"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert text.count(START) == 1 and text.count(END) == 1
    assert text.index(END) < text.index("## Reproduce")
    assert "| HotpotQA | 300 |" in text
    assert (tmp_path / "guarantee.json").exists()

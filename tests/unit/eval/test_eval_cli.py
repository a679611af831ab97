"""The ``confidence-router eval`` command: argument errors exit 2 with a clear message."""

from __future__ import annotations

from pathlib import Path

import pytest

from confidence_router.cli.eval import main
from confidence_router.cli.main import main as top_main
from tests.support.paths import SQUAD_V1_SAMPLE


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run"], "the following arguments are required: --data"),
        (["run", "--data", "triviaqa=x.jsonl"], "unknown data set kind 'triviaqa'"),
        (["run", "--data", "/no/such/file.jsonl"], "no such file"),
        (
            ["run", "--data", str(SQUAD_V1_SAMPLE), "--limit", "0"],
            "argument --limit: expected a whole number >= 1, got '0'",
        ),
        (
            ["run", "--data", str(SQUAD_V1_SAMPLE), "--top-logprobs", "50"],
            "--top-logprobs must be between 0",
        ),
        (["run", "--data", str(SQUAD_V1_SAMPLE), "--top-k", "50"], "--top-logprobs must be"),
        (["run", "--data", str(SQUAD_V1_SAMPLE), "--slm", "gpt9"], "unknown model spec"),
        (
            ["run", "--data", str(SQUAD_V1_SAMPLE), "--slm", "embedded:gpt9"],
            "--slm 'embedded:gpt9': unknown model spec",  # named as the user wrote it
        ),
        (["run", "--data", str(SQUAD_V1_SAMPLE), "--samples", "-1"], "--samples must be >= 0"),
        (
            ["run", "--data", str(SQUAD_V1_SAMPLE), "--samples", "4", "--temperature", "0"],
            "--temperature > 0",
        ),
        (["analyze", "/no/such/traces"], "no such trace file or folder"),
        (
            ["analyze", "x", "--correct-f1", "1"],
            "argument --correct-f1: expected a number in [0, 1)",
        ),
        (
            ["report", "x", "--fallback-price", "cheap"],
            "argument --fallback-price: expected a price",
        ),
        (["analyze", "x", "--slm-price", "1/2/3"], "IN/OUT (e.g. 0.15/0.60) or one number"),
        (
            ["ladder", "x", "--ladder", "a,b", "--confidence", "1"],
            "argument --confidence: expected a number in (0, 1)",
        ),
        (
            ["ladder", "x", "--ladder", "a,b", "--max-loss", "0"],
            "argument --max-loss: expected a number in (0, 1)",
        ),
        (["ladder", "x", "--ladder", "a,b", "--price", "m=cheap"], "--price: expected a price"),
        (
            ["fit-policy", "x", "--name", "a/b", "--out", "f.json", "--label", "better"],
            "invalid choice: 'better'",
        ),
    ],
)
def test_argument_errors_exit_2_with_a_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "usage: confidence-router eval" in err


def test_the_top_level_command_dispatches_to_eval(capsys: pytest.CaptureFixture[str]) -> None:
    assert top_main(["eval", "--help"]) == 0
    assert "record traces" in capsys.readouterr().out


def test_duplicate_data_sets_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--data", str(SQUAD_V1_SAMPLE), "--data", f"squad_v1={SQUAD_V1_SAMPLE}"]
    assert main(argv) == 2
    assert "give each data set once" in capsys.readouterr().err


def test_analyze_and_report_run_from_traces_alone(
    trace_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    written = tmp_path / "a.json"
    assert main(["analyze", str(trace_file), "--bootstrap", "50", "--output", str(written)]) == 0
    table = capsys.readouterr().out
    assert "squad_v1" in table and "perfect" in table
    assert written.exists()
    assert main(["report", str(trace_file.parent), "--out", str(out), "--bootstrap", "50"]) == 0
    report = (out / "report.md").read_text()
    assert "## Headline" in report and "Perfect fallback" in report
    assert "confidence-router eval report" in report
    for suffix in ("curve", "signals", "hist", "cost"):
        assert (out / f"squad_v1.perfect.{suffix}.png").stat().st_size > 1000
    assert (out / "squad_v1.policy.json").exists()

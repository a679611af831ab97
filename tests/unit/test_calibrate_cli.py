"""``confidence-router calibrate``: --escalation, --policy FILE, --json, and exit codes 2 and 9.

Synthetic evaluation-like traces (the SLM is right with probability s, its
``min_logprob`` is -5 (1 - s)), as in ``test_calibration.py``; the command
runs in process (``main(argv)``) except where the dispatcher's exit code is
the point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from confidence_router import Bound, ThresholdPolicy, load_policy, save_policy
from confidence_router.cli.calibrate import EXIT_OUTPUT, EXIT_USAGE, main
from tests.unit.test_calibration import _eval_like_records

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def traces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calibrate") / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _eval_like_records(600)))
    return path


def test_escalation_target_writes_a_policy_escalating_that_share(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "policy.json"
    assert main([str(traces), "--out", str(out), "--escalation", "0.3"]) == 0
    text = capsys.readouterr().out
    assert "target: escalate 30% of queries" in text and f"wrote {out}" in text
    saved = json.loads(out.read_text())
    calibration = saved["calibration"]
    assert calibration["target"] == {"escalation": 0.3}
    assert calibration["fitted"] is True and saved["type"] == "logistic"
    assert abs(calibration["calibration_split"]["escalation"] - 0.3) <= 0.01
    low, high = calibration["holdout_split"]["escalation_ci95"]
    assert low <= 0.3 <= high
    assert load_policy(out).threshold == saved["threshold"]


def test_a_given_policy_file_is_calibrated_not_refitted(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    given = ThresholdPolicy((Bound("min_logprob", min=-4.0),))
    policy_file = tmp_path / "given.json"
    save_policy(given, policy_file)
    out = tmp_path / "calibrated.json"
    argv = [str(traces), "--out", str(out), "--escalation", "0.4", "--policy", str(policy_file)]
    assert main(argv) == 0
    assert "policy: ThresholdPolicy (given)" in capsys.readouterr().out
    calibrated = load_policy(out)
    assert isinstance(calibrated, ThresholdPolicy)
    assert calibrated.bounds == given.bounds  # same rule...
    assert calibrated.threshold != given.threshold  # ...its threshold chosen on the traces
    saved = json.loads(out.read_text())
    assert saved["calibration"]["fitted"] is False
    assert abs(saved["calibration"]["calibration_split"]["escalation"] - 0.4) <= 0.01


def test_json_prints_one_document_with_the_policy_and_its_evidence(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "policy.json"
    argv = [str(traces), "--out", str(out), "--max-quality-loss", "0.05", "--json"]
    assert main(argv) == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)  # nothing else on stdout
    assert set(doc) == {"policy", "calibration"}
    saved = json.loads(out.read_text())
    assert doc["calibration"] == saved.pop("calibration")
    assert doc["policy"] == saved
    assert doc["calibration"]["target"] == {"max_quality_loss": 0.05, "confidence": 0.9}
    assert doc["calibration"]["method"].startswith("Learn-then-Test")


@pytest.mark.parametrize(
    "content", ["not json", '{"type": "no-such-policy"}', "[1, 2]"], ids=["text", "kind", "list"]
)
def test_a_bad_policy_file_exits_2_naming_it(
    content: str, traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy_file = tmp_path / "bad.json"
    policy_file.write_text(content)
    out = tmp_path / "policy.json"
    argv = [str(traces), "--out", str(out), "--escalation", "0.3", "--policy", str(policy_file)]
    assert main(argv) == EXIT_USAGE == 2
    err = capsys.readouterr().err
    assert f"--policy {str(policy_file)!r}" in err
    assert not out.exists()


def test_a_missing_policy_file_exits_2(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.json"
    argv = [str(traces), "--out", str(tmp_path / "p.json"), "--escalation", "0.3"]
    assert main([*argv, "--policy", str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra",
    [
        [],  # no target
        ["--escalation", "1.5"],
        ["--max-quality-loss", "0"],
        ["--escalation", "0.3", "--max-quality-loss", "0.05"],  # both targets
    ],
    ids=["no-target", "escalation-out-of-range", "zero-loss", "two-targets"],
)
def test_bad_arguments_exit_2_through_the_command(
    extra: list[str], traces: Path, tmp_path: Path
) -> None:
    out = tmp_path / "policy.json"
    cmd = [sys.executable, "-m", "confidence_router.cli.main", "calibrate", str(traces)]
    done = subprocess.run(
        [*cmd, "--out", str(out), *extra], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "usage: confidence-router calibrate" in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "interval"),
    [
        ("--max-quality-loss", "1", "(0, 1)"),
        ("--escalation", "1", "[0, 1)"),
        ("--confidence", "1", "(0, 1)"),
        ("--fit-share", "0", "(0, 1)"),
        ("--holdout", "0", "(0, 1)"),
        ("--correct-f1", "1", "[0, 1)"),
    ],
)
def test_fractions_out_of_their_interval_exit_2_naming_the_flag(
    flag: str,
    value: str,
    interval: str,
    traces: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "policy.json"
    target = [] if flag in ("--max-quality-loss", "--escalation") else ["--escalation", "0.3"]
    with pytest.raises(SystemExit) as info:
        main([str(traces), "--out", str(out), *target, flag, value])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"argument {flag}: expected a number in {interval}, got {value!r}" in err
    assert not out.exists()


def test_an_escalation_target_of_zero_keeps_every_answer(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """0 is a real setting for a share to escalate (1 is not: see the test above)."""
    out = tmp_path / "policy.json"
    assert main([str(traces), "--out", str(out), "--escalation", "0"]) == 0
    assert "target: escalate 0% of queries" in capsys.readouterr().out


def test_an_output_that_cannot_be_written_exits_9(
    traces: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The parent of --out is a file: no one (root included) can write there."""
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    out = a_file / "policy.json"
    assert main([str(traces), "--out", str(out), "--escalation", "0.3"]) == EXIT_OUTPUT == 9
    err = capsys.readouterr().err
    assert f"cannot write {out}" in err
    assert a_file.read_text() == ""

"""`confidence-router calibrate`: fit a policy on traces and choose its threshold.

```text
confidence-router calibrate TRACES... --out policy.json --max-quality-loss 0.05 --confidence 0.9
confidence-router calibrate TRACES... --out policy.json --escalation 0.3
```

TRACES are JSONL trace files: evaluation traces (labelled by gold answers) or
traffic recorded with `Router(trace=..., shadow_rate=...)` (labelled by
agreement with the fallback). See `confidence_router.calibration`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._args import fraction, fraction_or_zero

EXIT_OK, EXIT_USAGE, EXIT_TOO_FEW, EXIT_INPUT, EXIT_OUTPUT = 0, 2, 3, 4, 9


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="confidence-router calibrate",
        description="Fit a routing policy on labelled traces and choose its threshold for a "
        "quality-loss budget (with a finite-sample guarantee: Learn-then-Test, Angelopoulos "
        "et al. 2021) or a target escalation share; verify it on a held-out split.",
    )
    p.add_argument("traces", nargs="+", type=Path, help="JSONL trace files")
    p.add_argument("--out", type=Path, required=True, help="where to write the policy (JSON)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument(
        "--max-quality-loss",
        type=fraction,
        metavar="EPS",
        help="at most EPS below fallback-only quality (e.g. 0.05), with probability --confidence",
    )
    target.add_argument(
        "--escalation",
        type=fraction_or_zero,
        metavar="SHARE",
        help="escalate about this share instead (0 to 1, 1 excluded)",
    )
    p.add_argument(
        "--confidence",
        type=fraction,
        default=0.9,
        help="probability that the budget holds (default: 0.9)",
    )
    p.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="calibrate this saved policy instead of fitting a logistic one",
    )
    p.add_argument(
        "--quality",
        choices=("correct", "f1"),
        default="correct",
        help="quality of an answer: correct (F1 > --correct-f1; default) or its F1",
    )
    p.add_argument(
        "--correct-f1",
        type=fraction_or_zero,
        default=0.5,
        help="F1 above which an answer is right (default: 0.5)",
    )
    p.add_argument(
        "--fit-share",
        type=fraction,
        default=0.3,
        help="share used to fit (none with --policy; default: 0.3)",
    )
    p.add_argument(
        "--holdout", type=fraction, default=0.2, help="share held out to verify (default: 0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random splits")
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return p


def _load(paths: Sequence[Path]) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such trace file")
        lines = path.read_text("utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if number == len(lines):
                    break  # a writer killed mid-line leaves a partial last line
                raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from exc
    return records


def _ci(pair: Sequence[float] | None) -> str:
    return "" if pair is None else f" [{pair[0]:.1%}, {pair[1]:.1%}]"


def _describe(outcome: Any, out: Path) -> str:
    from ..calibration.calibrate import CalibrationOutcome

    assert isinstance(outcome, CalibrationOutcome)
    t = outcome.target
    lines = []
    if "max_quality_loss" in t:
        lines.append(
            f"target: at most {t['max_quality_loss']:.1%} below fallback-only quality, "
            f"with probability >= {t['confidence']:.0%}"
        )
    else:
        lines.append(f"target: escalate {t['escalation']:.0%} of queries")
    lines.append(f"method: {outcome.method}")
    label = {"gold": "gold answers", "agreement": "agreement with the fallback"}.get(
        outcome.source, outcome.source
    )
    split = outcome.split
    lines.append(
        f"traces: {outcome.n_traces} labelled by {label}; split {split['fit']} fit / "
        f"{split['calibration']} calibration / {split['holdout']} held out"
    )
    for why, count in outcome.skipped.items():
        lines.append(f"  left out: {count} ({why})")
    policy = outcome.policy
    kind = "logistic, fitted on the fit split" if outcome.fitted else "given"
    lines.append(f"policy: {type(policy).__name__} ({kind}), threshold {policy.threshold:.6g}")
    if outcome.choice is not None and not outcome.choice.certified:
        lines.append(
            "  no threshold keeping any answer passed the test: every query escalates. "
            "More traces, a larger budget or a lower confidence would let some answers through."
        )
    for name, res in (("calibration", outcome.calibration), ("held out", outcome.holdout)):
        kept = (
            f"; kept answers right {res.kept_quality:.1%}{_ci(res.kept_quality_ci)}"
            if res.kept_quality is not None
            else ""
        )
        lines.append(
            f"{name:>11}: n={res.n}, escalation {res.escalation:.1%}{_ci(res.escalation_ci)}, "
            f"quality loss {res.quality_loss:.1%}{_ci(res.quality_loss_ci)}{kept}"
        )
    verdict = outcome.holdout_within_budget
    if verdict is not None:
        lines.append(
            "held-out quality loss is "
            + ("within" if verdict else "OVER")
            + " the budget"
            + ("" if verdict else " (a held-out split is a sample too: see the interval)")
        )
    lines.append("intervals: 95% (Wilson for shares, Hoeffding for mean F1)")
    lines.append(f"wrote {out}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from ..calibration.calibrate import (
        InsufficientTracesError,
        calibrate_policy,
        labelled_traces,
        save_calibrated,
    )
    from ..errors import ConfigurationError
    from ..policies.registry import load_policy

    args = _parser().parse_args(argv)
    prog = "confidence-router calibrate"
    try:
        records = _load(args.traces)
    except (OSError, ValueError) as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_INPUT
    try:
        policy = load_policy(args.policy) if args.policy is not None else None
    except (OSError, ValueError, TypeError) as exc:
        print(f"{prog}: --policy {str(args.policy)!r}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        traces = labelled_traces(records, quality=args.quality, correct_f1=args.correct_f1)
        outcome = calibrate_policy(
            traces,
            policy=policy,
            max_quality_loss=args.max_quality_loss,
            confidence=args.confidence,
            escalation=args.escalation,
            fit_share=args.fit_share,
            holdout_share=args.holdout,
            seed=args.seed,
        )
    except InsufficientTracesError as exc:
        print(f"{prog}: refusing: {exc.detail}", file=sys.stderr)
        return EXIT_TOO_FEW
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        save_calibrated(outcome, args.out)
    except OSError as exc:
        print(f"{prog}: cannot write {args.out}: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    if args.json:
        doc = {"policy": outcome.policy.to_dict(), "calibration": outcome.to_dict()}
        print(json.dumps(doc, indent=2))
    else:
        print(_describe(outcome, args.out))
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

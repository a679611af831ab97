"""Does the quality-loss guarantee of `confidence-router calibrate` hold on the committed traces?

Over many random splits of one data set's traces into fit / calibration / test
parts, the procedure of `calibrate` runs as a user would run it: fit a
logistic policy on the fit part, choose the threshold on the calibration part
(Learn-then-Test, `confidence_router.calibration.ltt_threshold`), and
measure the realised quality loss and escalation share on the test part. The
share of splits whose realised loss exceeds the budget must stay at or under
the stated risk (1 - confidence). Next to it, the plain baseline: the lowest
threshold whose loss *on the calibration part* is within budget.

The realised test loss is itself a sample: a threshold whose true loss is
exactly the budget exceeds it on about half the test parts. The guarantee
is about the true (expected) loss, so a violation share at or under the risk
on test parts is, if anything, a stricter check.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..calibration.calibrate import (
    labelled_traces,
    ltt_threshold,
    naive_threshold,
    policy_scores,
    wilson_interval,
)
from ..policies.base import LogisticPolicy
from ._markdown import DATASET_TITLES, table
from .traces import load_traces


@dataclass(frozen=True)
class MethodSummary:
    """One threshold rule over all splits."""

    violations: int
    violation_share: float
    violation_ci: tuple[float, float]
    mean_loss: float
    mean_escalation: float
    median_escalation: float


@dataclass(frozen=True)
class GuaranteeResult:
    """The study on one data set."""

    dataset: str
    n: int
    splits: int
    split_sizes: dict[str, int]
    max_loss: float
    confidence: float
    slm_only_loss: float
    guaranteed: MethodSummary  # true loss on the pool the calibration sample was drawn from
    naive: MethodSummary
    guaranteed_heldout: MethodSummary  # realised loss on a disjoint held-out part
    naive_heldout: MethodSummary

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(losses: np.ndarray, escalations: np.ndarray, max_loss: float) -> MethodSummary:
    violations = int(np.sum(losses > max_loss + 1e-12))
    return MethodSummary(
        violations=violations,
        violation_share=violations / len(losses),
        violation_ci=wilson_interval(violations, len(losses)),
        mean_loss=float(losses.mean()),
        mean_escalation=float(escalations.mean()),
        median_escalation=float(np.median(escalations)),
    )


def guarantee_study(
    records: Sequence[dict[str, Any]],
    *,
    splits: int = 500,
    max_loss: float = 0.05,
    confidence: float = 0.9,
    fit_share: float = 0.3,
    calibration_share: float = 0.4,
    seed: int = 0,
) -> GuaranteeResult:
    """Fit / calibrate / measure on `splits` random splits of one data set's traces.

    Each split fits the logistic policy on a random `fit_share` of the traces;
    the other traces are the *pool*. Two measurements per split:

    * **the promise itself**: a calibration sample of `calibration_share * n`
      traces drawn *with replacement* from the pool (an i.i.d. sample of the
      pool's distribution, as the guarantee assumes) chooses the threshold, and
      its true quality loss is computed exactly on the whole pool;
    * **a held-out check**: the first `calibration_share * n` traces of the
      pool (without replacement) calibrate, the rest are the held-out part on
      which the realised loss is measured (a noisy estimate of the true loss).
    """
    traces = labelled_traces(records)
    n = traces.n
    n_fit = int(round(fit_share * n))
    n_cal = int(round(calibration_share * n))
    rng = np.random.default_rng(seed)
    runs: dict[str, tuple[list[float], list[float]]] = {
        k: ([], []) for k in ("ltt", "naive", "ltt_held", "naive_held")
    }

    def choose(scores: np.ndarray, quality: np.ndarray) -> dict[str, float]:
        return {
            "ltt": ltt_threshold(scores, 1.0 - quality, max_loss, confidence).threshold,
            "naive": naive_threshold(scores, 1.0 - quality, max_loss),
        }

    def measure(key: str, scores: np.ndarray, quality: np.ndarray, threshold: float) -> None:
        kept = scores >= threshold
        runs[key][0].append(float(np.mean(kept * (1.0 - quality))))
        runs[key][1].append(float(1.0 - kept.mean()))

    for _ in range(splits):
        perm = rng.permutation(n)
        fit = traces.take(perm[:n_fit])
        usable = [i for i, s in enumerate(fit.signals) if s is not None]
        policy = LogisticPolicy.fit([fit.signals[i] for i in usable], fit.quality[usable] > 0.5)
        pool_idx = perm[n_fit:]
        pool_scores = policy_scores(policy, traces.take(pool_idx).signals)
        pool_quality = traces.quality[pool_idx]
        draw = rng.integers(0, len(pool_idx), size=n_cal)
        for name, t in choose(pool_scores[draw], pool_quality[draw]).items():
            measure(name, pool_scores, pool_quality, t)
        for name, t in choose(pool_scores[:n_cal], pool_quality[:n_cal]).items():
            measure(name + "_held", pool_scores[n_cal:], pool_quality[n_cal:], t)
    forced = np.array([s is None for s in traces.signals])

    def summary(key: str) -> MethodSummary:
        return _summary(np.array(runs[key][0]), np.array(runs[key][1]), max_loss)

    return GuaranteeResult(
        dataset=str(records[0].get("dataset", "?")),
        n=n,
        splits=splits,
        split_sizes={"fit": n_fit, "calibration": n_cal, "test": n - n_fit - n_cal},
        max_loss=max_loss,
        confidence=confidence,
        slm_only_loss=float(np.mean(np.where(forced, 0.0, 1.0 - traces.quality))),
        guaranteed=summary("ltt"),
        naive=summary("naive"),
        guaranteed_heldout=summary("ltt_held"),
        naive_heldout=summary("naive_held"),
    )


def _cell(m: MethodSummary) -> str:
    return f"{m.violation_share:.1%} [{m.violation_ci[0]:.1%}, {m.violation_ci[1]:.1%}]"


def guarantee_markdown(results: Sequence[GuaranteeResult], command: str = "") -> str:
    """The report section: violation share and escalation cost, guarantee vs naive."""
    if not results:
        return ""
    r0 = results[0]
    risk = 1 - r0.confidence
    lines = [
        "## Calibrating with a quality-loss guarantee\n",
        f"`confidence-router calibrate --max-quality-loss {r0.max_loss:g} --confidence "
        f"{r0.confidence:g}` promises: at most {r0.max_loss:.0%} below fallback-only quality "
        f"(here the perfect fallback; quality = the SLM answer is right, F1 > 0.5), with "
        f"probability at least {r0.confidence:.0%} over the calibration sample. Method: "
        "Learn-then-Test with fixed-sequence testing and exact binomial p-values (Angelopoulos "
        "et al. 2021, arXiv:2110.01052). *Naive*: the lowest threshold whose loss on the "
        "calibration sample is within budget.\n",
        f"{r0.splits} random splits per data set. Each fits the logistic policy on a random "
        f"{r0.split_sizes['fit']} traces; the other traces are the *pool*.\n",
        f"- **The promise** (columns *true loss*): {r0.split_sizes['calibration']} calibration "
        "traces drawn with replacement from the pool (an i.i.d. sample, as the guarantee "
        "assumes) choose the threshold; its quality loss is computed exactly on the whole pool. "
        f"*Violations*: share of splits where it exceeds {r0.max_loss:.0%}; the promise is at "
        f"most {risk:.0%}.",
        f"- **A held-out check** (columns *held-out*): the pool's first "
        f"{r0.split_sizes['calibration']} traces calibrate and the other "
        f"{r0.split_sizes['test']} are held out; the realised loss there is a noisy sample of "
        "the true loss, so a threshold whose true loss sits just under the budget still shows "
        "a violation on some held-out parts.\n",
        "Brackets: 95% Wilson intervals over splits (the splits share traces, so indicative). "
        "Escalation: mean share of the pool (or held-out part) sent to the fallback.\n",
    ]
    head = (
        "data set | n | SLM-only loss | violations, true loss (guarantee) "
        "| escalation (guarantee) | violations, true loss (naive) | escalation (naive) "
        "| violations, held-out (guarantee / naive)"
    )
    rows = [
        [
            DATASET_TITLES.get(r.dataset, r.dataset),
            r.n,
            f"{r.slm_only_loss:.1%}",
            _cell(r.guaranteed),
            f"{r.guaranteed.mean_escalation:.1%}",
            _cell(r.naive),
            f"{r.naive.mean_escalation:.1%}",
            f"{r.guaranteed_heldout.violation_share:.1%} / {r.naive_heldout.violation_share:.1%}",
        ]
        for r in results
    ]
    lines.append(table(head, "lrrlrlrl", rows))
    lines.append("")
    lines.append(
        "The price of the promise is the escalation share above the naive one. With an SLM "
        "that is right on only 21-32% of the questions, little can be kept within a 5% loss, "
        "and the guarantee keeps only what a few hundred calibration traces can certify."
    )
    if command:
        lines.append(f"\nReproduce: `{command}`\n")
    return "\n".join(lines) + "\n"


def write_guarantee(
    paths: Sequence[Path], out: Path, *, splits: int = 500, seed: int = 0, command: str = ""
) -> tuple[Path, list[GuaranteeResult]]:
    """Run the study on each trace file; write guarantee.md and guarantee.json into `out`."""
    results = [guarantee_study(load_traces(p), splits=splits, seed=seed) for p in paths]
    order = list(DATASET_TITLES)
    results.sort(key=lambda r: order.index(r.dataset) if r.dataset in order else len(order))
    out.mkdir(parents=True, exist_ok=True)
    (out / "guarantee.json").write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    path = out / "guarantee.md"
    path.write_text(guarantee_markdown(results, command))
    return path, results


START = "<!-- guarantee:start -->"
END = "<!-- guarantee:end -->"


def update_report(out: Path) -> Path | None:
    """Put `guarantee.md` into `out/report.md` (replacing an earlier copy), before
    "## Reproduce"; None when there is no report."""
    report, section = out / "report.md", out / "guarantee.md"
    if not report.exists() or not section.exists():
        return None
    text = report.read_text()
    block = f"{START}\n{section.read_text().rstrip()}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    elif "## Reproduce" in text:
        head, rest = text.split("## Reproduce", 1)
        text = head + block + "\n## Reproduce" + rest
    else:
        text = text.rstrip("\n") + "\n\n" + block
    report.write_text(text)
    return report


__all__ = [
    "GuaranteeResult",
    "guarantee_markdown",
    "guarantee_study",
    "update_report",
    "write_guarantee",
]

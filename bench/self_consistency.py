"""Sampled self-consistency, measured offline: does asking the SLM k more times pay?

Reads traces recorded with samples (``confidence-router eval run --samples K``)
and compares, on held-out questions, the router with and without
self-consistency (``Router(consistency=SelfConsistency(...))``): inside a
score band the samples' agreement with the greedy answer decides, outside it
the policy's score does.

Base scores (higher = keep the SLM's answer), both free of leakage:

* ``learned``: the shipped fitting procedure (``fit_policy``: logistic and
  boosted trees, chosen by inner CV, averaged) fitted on the committed traces
  of the *other* questions of the same data set (``bench/results/traces``,
  500 questions each, minus those sampled here), then applied to the signals
  of the sampled run. Threshold: the policy's (0.5).
* ``seed``: the unfitted ``seed-thresholds`` policy. Threshold 0.

For each of ``--splits`` random halvings (stratified by correctness) the band
is chosen on the calibration half (the best APGR whose mean extra SLM tokens
per query stays <= ``--max-extra-tokens``), then the agreement cut
(``min_agreement``, the one whose keep/escalate decisions are right most
often); AUROC and APGR of the implied ranking, the escalation share and
the kept answers' precision at the threshold, and the extra SLM tokens and
cost per query are reported on the other half, as means over the splits.
Extra tokens are as recorded (llama.cpp evaluates the prompt once for all
samples); ``served`` also prices them as a served SLM would (every sample
re-sends the prompt).

Run from the repository root::

    .venv/bin/python bench/self_consistency.py    # bench/results/self_consistency.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from confidence_router.eval import metrics  # noqa: E402
from confidence_router.eval.agreement import (  # noqa: E402
    choose_band,
    choose_min_agreement,
    evaluate,
    sample_columns,
)
from confidence_router.eval.analysis import (  # noqa: E402
    AnalysisSettings,
    cascade_outcomes,
    fit_learned,
    trace_arrays,
)
from confidence_router.eval.traces import PERFECT, load_traces  # noqa: E402
from confidence_router.observe.ledger import Price  # noqa: E402
from confidence_router.policies.defaults import load_builtin_policy  # noqa: E402
from confidence_router.types import Usage  # noqa: E402

FIELDS = (
    "auroc",
    "apgr",
    "escalation_share",
    "kept_precision",
    "quality",
    "sampled_share",
    "extra_tokens",
    "extra_cost",
)


def _halves(correct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A boolean calibration mask: half of the right and half of the wrong answers."""
    mask = np.zeros(len(correct), bool)
    for value in (False, True):
        idx = np.flatnonzero(correct == value)
        rng.shuffle(idx)
        mask[idx[: len(idx) // 2]] = True
    return mask


def _learned_policy(
    committed: Path, dataset: str, exclude: set[str], settings: AnalysisSettings
) -> Any:
    """The shipped fitting procedure on the committed traces of the other questions."""
    records = [r for r in load_traces(committed / f"{dataset}.jsonl") if r["id"] not in exclude]
    t = trace_arrays(records, PERFECT, settings)
    usable = ~t.forced
    rows = [s for s, ok in zip(t.signals, usable, strict=True) if ok]
    policy, _ = fit_learned(rows, t.correct[usable], settings)
    return policy, int(usable.sum())


def _shown(path: Path) -> str:
    """A path as results record it: relative to the repository when inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = AnalysisSettings(bootstrap=0)
    slm_price = Price(*settings.slm_price)
    seed_policy = load_builtin_policy("seed-thresholds")
    out: dict[str, Any] = {
        "traces": _shown(args.traces),
        "max_extra_tokens": args.max_extra_tokens,
        "splits": args.splits,
        "measure": args.measure,
        "datasets": {},
    }
    for path in sorted(args.traces.glob("*.jsonl")):
        records = [r for r in load_traces(path) if (r.get("slm") or {}).get("samples")]
        if not records:
            continue
        dataset = str(records[0]["dataset"])
        learned, fitted_on = _learned_policy(
            args.committed, dataset, {r["id"] for r in records}, settings
        )
        t = trace_arrays(records, PERFECT, settings)
        cols = sample_columns(records)
        outcomes = cascade_outcomes(t)
        recorded_cost = np.array(
            [
                slm_price.cost(Usage(int(p), int(c)))
                for p, c in zip(cols.prompt_tokens, cols.completion_tokens, strict=True)
            ]
        )
        served_cost = np.array(
            [
                slm_price.cost(Usage(int(r["slm"]["prompt_tokens"]) * int(k), int(c)))
                for r, k, c in zip(records, cols.k, cols.completion_tokens, strict=True)
            ]
        )
        usable = ~t.forced
        bases = {
            "learned": (
                np.where(
                    t.forced,
                    -np.inf,
                    [learned.score(s) if s is not None else -np.inf for s in t.signals],
                ),
                learned.threshold,
            ),
            "seed": (
                np.where(
                    t.forced,
                    -np.inf,
                    [seed_policy.score(s) if s is not None else -np.inf for s in t.signals],
                ),
                seed_policy.threshold,
            ),
        }
        entry: dict[str, Any] = {
            "records_with_samples": len(records),
            "learned_fitted_on": fitted_on,
            "n": t.n,
            "forced": int(t.forced.sum()),
            "k": int(np.median(cols.k)),
            "slm_right": float(t.correct.mean()),
            "greedy_slm_cost_per_query": float(t.slm_cost.mean()),
            "fallback_cost_per_query": float(t.fb_cost.mean()),
            "auroc_agreement_alone": metrics.auroc(
                np.where(usable, cols.share, -np.inf), t.correct
            ),
            "auroc_mean_f1_alone": metrics.auroc(
                np.where(usable, cols.mean_f1, -np.inf), t.correct
            ),
            "sample_tokens_per_sampled_query": {
                "recorded": float(cols.tokens[usable].mean()),
                "served": float(
                    (
                        np.array([r["slm"]["prompt_tokens"] for r in records]) * cols.k
                        + cols.completion_tokens
                    )[usable].mean()
                ),
            },
            "bases": {},
        }
        for name, (scores, threshold) in bases.items():
            rng = np.random.default_rng(args.seed)
            rows: dict[str, list[float]] = {}
            bands: list[Any] = []
            for _ in range(args.splits):
                cal = _halves(t.correct, rng)
                test = ~cal
                band, _ = choose_band(
                    scores[cal],
                    t.correct[cal],
                    outcomes.take(cal),
                    _take(cols, cal),
                    max_extra_tokens=args.max_extra_tokens,
                    measure=args.measure,
                )
                cut = (
                    choose_min_agreement(
                        scores[cal],
                        t.correct[cal],
                        _take(cols, cal),
                        threshold=threshold,
                        band=band,
                        measure=args.measure,
                    )
                    if band is not None
                    else None
                )
                bands.append(None if band is None else [band[0], band[1], cut])
                for label, b in (("without", None), ("with", band)):
                    for cost_name, cost in (("", recorded_cost), ("served_", served_cost)):
                        v = evaluate(
                            scores[test],
                            t.correct[test],
                            outcomes.take(test),
                            _take(cols, test),
                            threshold=threshold,
                            band=b,
                            min_agreement=cut if cut is not None else 0.5,
                            measure=args.measure,
                            sample_cost=cost[test],
                        )
                        for f in FIELDS:
                            if cost_name and f != "extra_cost":
                                continue
                            rows.setdefault(f"{label}.{cost_name}{f}", []).append(getattr(v, f))
            gains = {
                f: np.array(rows[f"with.{f}"]) - np.array(rows[f"without.{f}"])
                for f in ("auroc", "apgr", "escalation_share", "kept_precision", "quality")
            }
            entry["bases"][name] = {
                "threshold": threshold,
                "gain_mean": {f: float(np.nanmean(g)) for f, g in gains.items()},
                "gain_sd": {f: float(np.nanstd(g)) for f, g in gains.items()},
                "apgr_gain_positive_share": float(np.mean(gains["apgr"] > 0)),
                "auroc_full": metrics.auroc(scores, t.correct),
                "mean": {k: float(np.nanmean(v)) for k, v in rows.items()},
                "sd": {k: float(np.nanstd(v)) for k, v in rows.items()},
                "bands_chosen": bands,
                "splits_without_band": sum(b is None for b in bands),
            }
        out["datasets"][dataset] = entry
    return out


def _take(cols: Any, mask: np.ndarray) -> Any:
    from confidence_router.eval.agreement import SampleColumns

    return SampleColumns(
        cols.share[mask],
        cols.mean_f1[mask],
        cols.prompt_tokens[mask],
        cols.completion_tokens[mask],
        cols.k[mask],
    )


def table(result: dict[str, Any]) -> str:
    lines = [
        f"bound: mean extra SLM tokens per query <= {result['max_extra_tokens']:g} "
        f"(as recorded); {result['splits']} random halvings; agreement = {result['measure']}",
        "",
        "| data set | base | n | AUROC without → with | APGR without → with (gain ± sd) | "
        "escalated without → with | kept precision without → with | sampled | "
        "extra SLM tokens/query | extra SLM cost/query (recorded; served) | no band chosen |",
        "|---|---|---:|---|---|---|---|---:|---:|---|---:|",
    ]
    for dataset, entry in result["datasets"].items():
        for base, b in entry["bases"].items():
            m = b["mean"]
            lines.append(
                f"| {dataset} | {base} | {entry['n']} | "
                f"{m['without.auroc']:.3f} → {m['with.auroc']:.3f} | "
                f"{m['without.apgr']:.3f} → {m['with.apgr']:.3f} "
                f"({b['gain_mean']['apgr']:+.3f} ± {b['gain_sd']['apgr']:.3f}) | "
                f"{m['without.escalation_share']:.1%} → {m['with.escalation_share']:.1%} | "
                f"{m['without.kept_precision']:.3f} → {m['with.kept_precision']:.3f} | "
                f"{m['with.sampled_share']:.1%} | {m['with.extra_tokens']:.1f} | "
                f"{m['with.extra_cost']:.2e}; {m['with.served_extra_cost']:.2e} | "
                f"{b['splits_without_band']} of {result['splits']} |"
            )
    lines.append("")
    for dataset, entry in result["datasets"].items():
        lines.append(
            f"{dataset}: {entry['n']} answers, {entry['forced']} forced escalations, "
            f"SLM right {entry['slm_right']:.1%}; AUROC of the agreement alone "
            f"{entry['auroc_agreement_alone']:.3f} (share), {entry['auroc_mean_f1_alone']:.3f} "
            f"(mean F1); learned (fitted on {entry['learned_fitted_on']} other questions) "
            f"alone {entry['bases']['learned']['auroc_full']:.3f}, "
            f"seed {entry['bases']['seed']['auroc_full']:.3f}; sample tokens per sampled "
            f"query {entry['sample_tokens_per_sampled_query']['recorded']:.1f} recorded, "
            f"{entry['sample_tokens_per_sampled_query']['served']:.0f} served; greedy SLM "
            f"cost/query {entry['greedy_slm_cost_per_query']:.2e}, fallback "
            f"{entry['fallback_cost_per_query']:.2e}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=ROOT / "bench/results/traces-samples")
    parser.add_argument("--committed", type=Path, default=ROOT / "bench/results/traces")
    parser.add_argument("--max-extra-tokens", type=float, default=8.0)
    parser.add_argument("--splits", type=int, default=50)
    parser.add_argument("--measure", choices=("match", "f1"), default="match")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/self_consistency.json")
    args = parser.parse_args(argv)
    result = run(args)
    print(table(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", "utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The Markdown report with its tables and PNG plots, written from analysis results.

Everything in it is computed from traces by :mod:`.analysis`; this module
only lays the numbers out and draws them (matplotlib, Agg backend, no display).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .analysis import (
    LEARNED,
    LEARNED_LOGISTIC,
    LEARNED_TREES,
    LEARNED_V1,
    ORACLE,
    QUERY_ONLY,
    RANDOM,
    SEED,
    AnalysisSettings,
    DatasetResult,
    RouterResult,
)
from .traces import PERFECT

DATASET_TITLES = {"squad_v1": "SQuAD v1.1", "squad_v2": "SQuAD 2.0", "hotpotqa": "HotpotQA"}


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.0%}"


def _ci(value: float, ci: tuple[float, float]) -> str:
    if not np.isfinite(value):
        return "n/a"
    if not all(np.isfinite(ci)):
        return _f(value)
    return f"{value:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _title(result: DatasetResult) -> str:
    return DATASET_TITLES.get(result.dataset, result.dataset)


def _slug(result: DatasetResult) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in result.fallback)
    return f"{result.dataset}.{safe}"


def _best_signal(result: DatasetResult) -> RouterResult:
    signals = [r for r in result.routers if r.kind == "signal" and np.isfinite(r.auroc)]
    return max(signals, key=lambda r: r.auroc) if signals else result.router(LEARNED)


# -- plots ------------------------------------------------------------------------------


def _plot_curves(result: DatasetResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = _best_signal(result)
    lines = [
        (result.router(ORACLE), "oracle", "k", ":"),
        (result.router(LEARNED), LEARNED, "C0", "-"),
        (result.router(SEED), "seed threshold policy", "C1", "-"),
        (best, f"best single signal: {best.name}", "C2", "--"),
        (result.router(QUERY_ONLY), "query-only router (CV)", "C3", "-."),
        (result.router(RANDOM), "random", "0.5", "--"),
    ]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for router, label, color, style in lines:
        ax.plot(router.curve.rates, router.curve.quality, style, color=color, label=label, lw=1.6)
    ax.axhline(result.slm_f1, color="0.3", lw=0.8)
    ax.axhline(result.fallback_f1, color="0.3", lw=0.8)
    ax.text(1.0, result.slm_f1, " SLM only", va="center", fontsize=8)
    ax.text(1.0, result.fallback_f1, " fallback only", va="center", fontsize=8)
    ax.set_xlabel("escalation rate (share of questions sent to the fallback)")
    ax.set_ylabel("mean F1")
    ax.set_title(f"{_title(result)}: {result.slm_model} -> {result.fallback} fallback", fontsize=10)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_signals(result: DatasetResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    signals = [r for r in result.routers if r.kind == "signal"]
    colors = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(signals), 2)))
    for router, color in zip(signals, colors):
        ax.plot(
            router.curve.rates,
            router.curve.quality,
            color=color,
            lw=1.1,
            label=f"{router.name} (AUROC {_f(router.auroc, 2)})",
        )
    for name, color, style in ((ORACLE, "k", ":"), (RANDOM, "0.5", "--")):
        router = result.router(name)
        ax.plot(router.curve.rates, router.curve.quality, style, color=color, lw=1.4, label=name)
    ax.set_xlabel("escalation rate")
    ax.set_ylabel("mean F1")
    ax.set_title(f"{_title(result)}: every single signal ({result.fallback} fallback)", fontsize=10)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_cost(result: DatasetResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for name, color, style in (
        (ORACLE, "k", ":"),
        (LEARNED, "C0", "-"),
        (QUERY_ONLY, "C3", "-."),
        (RANDOM, "0.5", "--"),
    ):
        router = result.router(name)
        ax.plot(
            router.curve.cost * 1000,
            router.curve.quality,
            style,
            color=color,
            lw=1.6,
            label=f"{name} (AIQ {_f(router.aiq)})",
        )
    ax.set_xlabel("cost per 1000 questions (assumed prices, see settings)")
    ax.set_ylabel("mean F1")
    ax.set_title(f"{_title(result)}: cost vs quality ({result.fallback} fallback)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_histograms(result: DatasetResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [result.router(LEARNED), result.router("min_logprob"), result.router("mean_entropy")]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.2), dpi=110)
    for ax, router in zip(axes, panels):
        assert router.scores is not None
        finite = np.isfinite(router.scores)
        right = router.scores[finite & result.correct]
        wrong = router.scores[finite & ~result.correct]
        values = router.scores[finite]
        spread = len(values) and values.max() > values.min()
        bins = np.linspace(values.min(), values.max(), 25) if spread else 10
        for group, color, label in ((wrong, "C3", "wrong"), (right, "C2", "right")):
            if len(group):
                ax.hist(
                    group,
                    bins=bins,
                    alpha=0.55,
                    color=color,
                    density=True,
                    label=f"{label} ({len(group)})",
                )
        sign = (
            ""
            if router.name == LEARNED
            else (" (negated)" if router.name == "mean_entropy" else "")
        )
        ax.set_title(f"{router.name}{sign}\nAUROC {_f(router.auroc)}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"{_title(result)}: scores of right vs wrong SLM answers "
        f"(F1 > {result.settings.correct_f1:g})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# -- tables -----------------------------------------------------------------------------


def headline_table(results: Sequence[DatasetResult]) -> str:
    """The README table: one row per data set and fallback."""
    rows = [
        "| data set | fallback | n | SLM-only F1 | SLM right | fallback-only F1 | AUROC (learned) "
        "| APGR learned | APGR oracle | APGR query-only | CPT(50%) | CPT(80%) "
        "| fallback calls avoided at >= 95% of fallback F1 (learned / oracle) |",
        "|---|---|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        learned, oracle, query = r.router(LEARNED), r.router(ORACLE), r.router(QUERY_ONLY)
        avoided = f"{_pct(learned.avoided)} / {_pct(oracle.avoided)}"
        if not r.gap > 0:
            avoided = "n/a (fallback not better than SLM)"
        rows.append(
            f"| {_title(r)} | {r.fallback} | {r.n} | {_f(r.slm_f1)} | {_pct(r.n_correct / r.n)} "
            f"| {_f(r.fallback_f1)} | {_ci(learned.auroc, learned.auroc_ci)} "
            f"| {_ci(learned.apgr, learned.apgr_ci)} | {_f(oracle.apgr)} | {_f(query.apgr)} "
            f"| {_pct(learned.cpt50)} | {_pct(learned.cpt80)} "
            f"| {avoided} |"
        )
    return "\n".join(rows)


#: Targets of issue 11 (out of fold, perfect fallback).
AUROC_TARGETS = {"squad_v1": 0.85, "squad_v2": 0.80, "hotpotqa": 0.78}
APGR_TARGET_SHARE = {"squad_v1": 0.8}


def targets_table(results: Sequence[DatasetResult]) -> str:
    """Each target against what the learned policy reached out of fold."""
    rows = [
        "| data set | AUROC learned (target) | best single signal | learned - best single "
        "(target >= +0.02) | APGR learned (target) | logistic / trees / 0.1.0 logistic "
        "| models the outer folds chose |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.fallback != PERFECT:
            continue
        learned, best = r.router(LEARNED), _best_signal(r)
        target = AUROC_TARGETS.get(r.dataset)
        auc = _f(learned.auroc)
        if target is not None:
            ok = "met" if learned.auroc >= target else f"missed by {target - learned.auroc:.3f}"
            auc += f" (>= {target:.2f}: {ok})"
        lift = learned.auroc - best.auroc
        lift_text = f"{lift:+.3f} ({'met' if lift >= 0.02 else 'missed'})"
        apgr = _f(learned.apgr)
        share = APGR_TARGET_SHARE.get(r.dataset)
        if share is not None:
            goal = 0.5 + share * (r.router(ORACLE).apgr - 0.5)
            ok = "met" if learned.apgr >= goal else f"missed by {goal - learned.apgr:.3f}"
            apgr += f" (>= {goal:.3f}: {ok})"
        others = " / ".join(
            _f(r.router(name).auroc) for name in (LEARNED_LOGISTIC, LEARNED_TREES, LEARNED_V1)
        )
        chose = r.fitted_policy.get("outer_folds_chose", []) if r.fitted_policy else []
        rows.append(
            f"| {_title(r)} | {auc} | `{best.name}` {_f(best.auroc)} | {lift_text} | {apgr} "
            f"| {others} | {'; '.join(chose)} |"
        )
    return "\n".join(rows)


def _router_table(result: DatasetResult) -> str:
    rows = [
        "| router | AUROC [95% CI] | APGR [95% CI] | CPT(50%) | CPT(80%) | calls avoided "
        f"at >= {result.settings.quality_share:.0%} | AIQ |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    order = sorted(
        result.routers, key=lambda r: {"policy": 0, "query": 1, "signal": 2, "baseline": 3}[r.kind]
    )
    for r in order:
        name = {"signal": f"signal `{r.name}`"}.get(r.kind, f"**{r.name}**")
        auc = _ci(r.auroc, r.auroc_ci) if r.kind != "baseline" else ""
        auc = auc or ("0.5" if r.name == RANDOM else "-")
        rows.append(
            f"| {name} | {auc} "
            f"| {_ci(r.apgr, r.apgr_ci)} | {_pct(r.cpt50)} | {_pct(r.cpt80)} | {_pct(r.avoided)} "
            f"| {_f(r.aiq)} |"
        )
    return "\n".join(rows)


def _calibration_table(result: DatasetResult) -> str:
    rows = [
        "| policy | target (on the calibration half) | rate on calibration half "
        "| rate on held-out half | held-out F1 | random at that rate | fallback-only | SLM-only |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for c in result.calibration:
        rows.append(
            f"| {c.policy} | {c.target} | {_pct(c.calibration_rate)} | {_pct(c.heldout_rate)} "
            f"| {_f(c.heldout_f1)} | {_f(c.heldout_random_f1)} | {_f(c.heldout_fallback_f1)} "
            f"| {_f(c.heldout_slm_f1)} |"
        )
    return "\n".join(rows)


def _cost_table(results: Sequence[DatasetResult]) -> str:
    rows = [
        "| data set | AUROC learned / query-only | APGR learned / query-only "
        "| AIQ learned / query-only / random | better at equal cost |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        learned, query, rand = r.router(LEARNED), r.router(QUERY_ONLY), r.router(RANDOM)
        winner = "reading the answer" if learned.aiq > query.aiq else "the query-only router"
        rows.append(
            f"| {_title(r)} | {_f(learned.auroc)} / {_f(query.auroc)} "
            f"| {_f(learned.apgr)} / {_f(query.apgr)} "
            f"| {_f(learned.aiq)} / {_f(query.aiq)} / {_f(rand.aiq)} | {winner} |"
        )
    return "\n".join(rows)


def _latency_cost(result: DatasetResult) -> str:
    rows = ["| route | median latency (s) | p95 latency (s) |", "|---|---:|---:|"]
    for route, stats in result.latency.items():
        rows.append(f"| {route} | {_f(stats['median'])} | {_f(stats['p95'])} |")
    costs = ", ".join(f"{k}: {v:.4g}" for k, v in result.cost.items())
    note = (
        "The perfect fallback is not a model and has no latency; only the SLM's is measured."
        if result.fallback == PERFECT
        else "Latencies are measured, one question at a time, on the shared 2-core machine."
    )
    return "\n".join(rows) + f"\n\n{note} Cost per 1000 questions at the assumed prices: {costs}."


# -- the report -------------------------------------------------------------------------


def _limitations(results: Sequence[DatasetResult]) -> list[str]:
    notes = []
    perfect = [r for r in results if r.fallback == PERFECT]
    if perfect:
        acc = ", ".join(f"{_pct(r.n_correct / r.n)} of {_title(r)}" for r in perfect)
        oracle = ", ".join(f"{_pct(r.router(ORACLE).avoided)} ({_title(r)})" for r in perfect)
        notes.append(
            f"**The SLM is weak.** {perfect[0].slm_model} answers right (F1 > "
            f"{perfect[0].settings.correct_f1:g}) on {acc}. Avoiding 70% of "
            "large-model calls at 95% of large-model quality needs an SLM that is right on well "
            "over 65% of the questions: here even the oracle router, which knows which answers "
            f"are right, avoids only {oracle} of the fallback calls at 95% of the perfect "
            "fallback's F1. What these numbers do show is the router's *discrimination* (AUROC, "
            "APGR relative to the oracle's), which carries over to a stronger pair."
        )
        notes.append(
            "**The fallback line is an upper bound.** No model stronger than the SLM runs on this "
            "machine; the perfect fallback answers with the gold answer (F1 = 1). A real large "
            "model is wrong sometimes, so real gaps are smaller and real APGR/CPT differ."
        )
    v2 = [r for r in perfect if r.dataset == "squad_v2"]
    if v2:
        r = v2[0]
        notes.append(
            "**SQuAD 2.0 abstention.** The prompt shows how to answer `unanswerable`, but the "
            f"base model abstained on {r.n_abstained} of {r.n} questions "
            f"({r.n_abstained_correctly} of them among the {r.n_unanswerable} unanswerable "
            "ones), so most unanswerable questions count as wrong SLM answers."
        )
    weaker = [r for r in results if r.fallback != PERFECT and not r.gap > 0]
    for name in sorted({r.fallback for r in weaker}):
        scores = ", ".join(
            f"{_title(r)} {_f(r.fallback_f1)} vs SLM {_f(r.slm_f1)}"
            for r in weaker
            if r.fallback == name
        )
        notes.append(
            f"**The real fallback {name} is weaker than the SLM** (F1 {scores}): escalating to it "
            'cannot help, so APGR/CPT are undefined (n/a) and every router "avoids" 100% of its '
            "calls. It is there to show that the same command runs with a real model pair, to "
            "measure real escalation latency, and because AUROC (which does not depend on the "
            "fallback) is the same."
        )
    sizes = sorted({r.n for r in results})
    if sizes:
        span = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
        notes.append(
            f"**Sampling error.** With {span} questions per data set the 95% intervals are "
            "several points wide; budget calibration fits on one half and measures on the "
            "other, so held-out rates scatter around their targets."
        )
    return notes


def write_report(
    results: Sequence[DatasetResult],
    out: str | Path,
    *,
    settings: AnalysisSettings | None = None,
    command: str = "",
) -> Path:
    """Write ``report.md``, ``analysis.json``, the plots and the fitted policies into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or (results[0].settings if results else AnalysisSettings())
    (out / "analysis.json").write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    lines: list[str] = []
    add = lines.append
    add("# Confidence routing on SQuAD v1.1, SQuAD 2.0 and HotpotQA\n")
    if results:
        add(
            f"SLM: **{results[0].slm_model}**; fallbacks: "
            + ", ".join(sorted({f"**{r.fallback}**" for r in results}))
            + f". Generated {_dt.date.today().isoformat()} from traces by `confidence-router eval`"
            " (every number below is computed from the committed traces; no model runs at "
            "analysis time).\n"
        )
    if command:
        add(f"Command:\n\n```\n{command}\n```\n")
    add(
        "> **Perfect fallback** = the gold answer stands in for an always-right large model. It is "
        "an upper bound, not a measured model. A real fallback, when configured, is reported next "
        "to it under its own name.\n"
    )
    add(
        "Definitions: an SLM answer is *right* when its official F1 > "
        f"{settings.correct_f1:g}. Routers escalate their lowest-scored answers first. "
        "*APGR*: share of the SLM-to-fallback F1 gap recovered, averaged over escalation rates "
        "0-100% (random routing = 0.5; the oracle's APGR is the ceiling, below 1 when the SLM is "
        "mostly wrong). *CPT(x)*: escalation rate needed to recover x of the gap. *Calls avoided*: "
        f"share of fallback calls saved while keeping >= {settings.quality_share:.0%} of "
        "fallback-only F1. *AIQ*: RouterBench's area under the non-decreasing convex hull of "
        "(cost, F1) points, over a cost range shared by all routers of the data set. Learned and "
        f"query-only routers are scored out-of-fold ({settings.folds}-fold cross-validation). "
        f"95% intervals: percentile bootstrap over questions ({settings.bootstrap} resamples; for "
        "the learned routers the out-of-fold scores are resampled, not refitted). Cost: a "
        "cascade pays the SLM for every question and the fallback on top when it escalates; the "
        "query-only router decides before the SLM runs, so its escalations pay the fallback only. "
        f"Assumed prices per million tokens (input/output): SLM {settings.slm_price[0]:g}/"
        f"{settings.slm_price[1]:g}, fallback {settings.fallback_price[0]:g}/"
        f"{settings.fallback_price[1]:g}; the perfect fallback is charged the SLM's prompt tokens "
        "plus the gold answer's length (4 characters a token).\n"
    )
    add("## Headline\n")
    add(headline_table(results) + "\n")
    if any(r.fallback == PERFECT for r in results):
        add("## Targets\n")
        add(
            f"*{LEARNED}* is the shipped fitting procedure: over every signal (log-probability "
            "statistics and the context signals), the best L2-regularised logistic regression "
            "(l2 in 0.1-1000) and the best boosted shallow trees (three shapes), each chosen by "
            f"an inner {settings.folds}-fold cross-validation on the training folds only, "
            "averaged. Each outer fold is scored by models that never saw it. The alternatives "
            f"beside it: *{LEARNED_LOGISTIC}*, *{LEARNED_TREES}* (each family alone, same inner "
            f"CV) and *{LEARNED_V1}* (the 0.1.0 release's policy). Averaging the two families "
            "was chosen over picking one by inner CV after comparing both on these same traces, "
            "so that one design choice is not out of sample.\n"
        )
        add(targets_table(results) + "\n")
    perfect = [r for r in results if r.fallback == PERFECT]
    if perfect:
        add("## Does looking at the SLM's answer earn its cost?\n")
        add(
            "The learned router reads the SLM's answer (so every question pays for the SLM); "
            "the query-only router decides from the question and passage before any model runs "
            "(an escalated question pays for the fallback only). APGR compares them at equal "
            "escalation rates, AIQ at equal cost (assumed prices above).\n"
        )
        add(_cost_table(perfect) + "\n")
        shares = sorted(r.n_correct / r.n for r in perfect)
        span = _pct(shares[0]) if len(shares) == 1 else f"{_pct(shares[0])}-{_pct(shares[-1])}"
        add(
            "Why the two can disagree: a cascade pays the SLM for every escalated question as "
            f"well, and with an SLM that is right on {span} of the questions most questions end "
            "up escalated at any useful quality. The better the SLM (fewer escalations) and the "
            "cheaper it is next to the fallback, the more reading its answer is worth at equal "
            "cost.\n"
        )
    add("## What the local models cannot show\n")
    for note in _limitations(results):
        add(f"- {note}")
    add("")
    for result in results:
        slug = _slug(result)
        curve_png, cost_png, hist_png = f"{slug}.curve.png", f"{slug}.cost.png", f"{slug}.hist.png"
        signals_png = f"{slug}.signals.png"
        _plot_curves(result, out / curve_png)
        _plot_signals(result, out / signals_png)
        _plot_cost(result, out / cost_png)
        _plot_histograms(result, out / hist_png)
        if result.fitted_policy:
            (out / f"{result.dataset}.policy.json").write_text(
                json.dumps(result.fitted_policy, indent=2) + "\n"
            )
        add(f"## {_title(result)}, {result.fallback} fallback\n")
        extra = ""
        if result.n_unanswerable:
            extra = (
                f" {result.n_unanswerable} questions are unanswerable; the SLM abstained on "
                f"{result.n_abstained} ({result.n_abstained_correctly} correctly)."
            )
        add(
            f"{result.n} questions. SLM-only F1 {_f(result.slm_f1)} (EM {_f(result.slm_em)}), "
            f"right on {result.n_correct} ({_pct(result.n_correct / result.n)}); fallback-only F1 "
            f"{_f(result.fallback_f1)} (EM {_f(result.fallback_em)}). Mean SLM answer length "
            f"{result.mean_answer_tokens:.1f} tokens; {result.n_forced} answers were empty, "
            f"failed or cut off by the token limit and are always escalated.{extra}\n"
        )
        add(_router_table(result) + "\n")
        add(f"![quality vs escalation]({curve_png})\n")
        add(f"![every single signal]({signals_png})\n")
        add(f"![score histograms]({hist_png})\n")
        add(f"![cost vs quality]({cost_png})\n")
        add(
            "**Budget calibration** (policy fitted and threshold chosen on one stratified half, "
            "measured on the other):\n"
        )
        add(_calibration_table(result) + "\n")
        add("**Latency and cost**\n")
        add(_latency_cost(result) + "\n")
        if result.fitted_policy:
            add(
                f"The learned policy fitted on all {result.n} questions is saved as "
                f"[`{result.dataset}.policy.json`]({result.dataset}.policy.json) (load it with "
                "`confidence_router.load_policy`).\n"
            )
    add("## Reproduce\n")
    add(
        "```\n"
        "pip install 'confidence-router[local,eval]'\n"
        "confidence-router eval all \\\n"
        "  --data squad_v1=PATH/squad_v1_dev_sample500.jsonl \\\n"
        "  --data squad_v2=PATH/squad_v2_dev_sample500.jsonl \\\n"
        "  --data hotpotqa=PATH/hotpotqa_dev_distractor_sample300.jsonl \\\n"
        "  --slm gemma3 --fallback smollm2 \\\n"
        "  --traces bench/results/traces --out bench/results/eval\n"
        "```\n"
    )
    add(
        "(`--fallback smollm2` adds the embedded SmolLM2-135M as a real but weak fallback; "
        "leave it out for the perfect-fallback tables alone.) "
        "The same command runs on a real pair, for example an Ollama SLM and an 8B fallback: "
        "`--slm ollama:qwen2.5:1.5b --fallback ollama:llama3.1:8b --traces runs/qwen --out "
        "runs/qwen/report` (`--ollama-host` or `OLLAMA_HOST` names the server; a base model "
        "served by Ollama takes `--slm-format completion`; the perfect fallback is always "
        "recorded next to the real one). Traces are cached: re-running skips questions already "
        "answered, and adding a `--fallback` later runs only that model. "
        "`confidence-router eval report TRACES...` re-analyses traces without any model; a "
        "hosted fallback can be recorded from Python with `confidence_router.eval.run_traces(..., "
        "fallbacks={name: any object with agenerate})`.\n"
    )
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


__all__ = ["headline_table", "write_report"]

"""The Markdown report with its tables and PNG plots, written from analysis results.

Everything in it is computed from traces by `analysis`; this module
only lays the numbers out and draws them (matplotlib, Agg backend, no display).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ._markdown import DATASET_TITLES, table
from .analysis import (
    LEARNED,
    LEARNED_AS_GOOD,
    LEARNED_LOGISTIC,
    LEARNED_TREES,
    LEARNED_V1,
    ORACLE,
    QUERY_ONLY,
    RANDOM,
    SEED,
    SEED_POINT,
    SHIPPED_POINT,
    AnalysisSettings,
    DatasetResult,
    OperatingPoint,
    RouterResult,
)
from .counts import unreported_note
from .traces import PERFECT


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


def _shipped_sentence(shipped: Mapping[str, Any], titles: Sequence[str] | None) -> str:
    """One shipped policy: name, file, what it was fitted on, threshold (and where used)."""
    fitted = shipped.get("fitted_on_datasets")
    return (
        f"`{shipped.get('name')}` (`{shipped.get('file')}`, fitted for "
        f"{shipped.get('slm')} on label '{shipped.get('label')}'"
        + (
            f" over {', '.join(fitted)}, {shipped.get('fitted_on_answers')} answers"
            if fitted
            else ""
        )
        + f") at its threshold {_f(shipped.get('threshold'), 4)}"
        + (f" on {', '.join(titles)}" if titles else "")
    )


def _slug(result: DatasetResult) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in result.fallback)
    return f"{result.dataset}.{safe}"


def _fb_label(result: DatasetResult) -> str:
    """The fallback's name; the perfect one is always labelled as the upper bound it is."""
    if result.fallback == PERFECT:
        return "perfect fallback (gold answer, upper bound)"
    return f"{result.fallback} fallback"


def _real_first(results: Sequence[DatasetResult]) -> list[DatasetResult]:
    """Results in data-set order, the real fallbacks before the perfect upper bound."""
    datasets = list(dict.fromkeys(r.dataset for r in results))
    return sorted(results, key=lambda r: (datasets.index(r.dataset), r.fallback == PERFECT))


def _best_signal(result: DatasetResult) -> RouterResult:
    signals = [r for r in result.routers if r.kind == "signal" and np.isfinite(r.auroc)]
    return max(signals, key=lambda r: r.auroc) if signals else result.router(LEARNED)


# -- plots ------------------------------------------------------------------------------


@contextmanager
def _figure(
    path: Path, *, columns: int = 1, size: tuple[float, float] = (6.4, 4.4)
) -> Iterator[tuple[Any, Any]]:
    """A new figure (matplotlib, Agg backend) and its axes, saved to `path` on exit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=size, dpi=110)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _quality_axes(
    ax: Any, xlabel: str, title: str, *, legend_size: float = 8, **legend: Any
) -> None:
    """Label a quality-vs-escalation plot: mean F1 over the rate, grid and legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean F1")
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, loc="lower right", **legend)


def _plot_curves(result: DatasetResult, path: Path) -> None:
    best = _best_signal(result)
    shipped = [r for r in result.routers if r.name.startswith("shipped: ")]
    lines = [
        (result.router(ORACLE), "oracle", "k", ":"),
        (result.router(LEARNED), LEARNED, "C0", "-"),
        *((r, f"{r.name}, every threshold", "C4", "-") for r in shipped),
        (result.router(SEED), "seed threshold policy", "C1", "-"),
        (best, f"best single signal: {best.name}", "C2", "--"),
        (result.router(QUERY_ONLY), "query-only router (CV)", "C3", "-."),
        (result.router(RANDOM), "random", "0.5", "--"),
    ]
    with _figure(path) as (_, ax):
        for router, label, color, style in lines:
            ax.plot(
                router.curve.rates, router.curve.quality, style, color=color, label=label, lw=1.6
            )
        markers = ((SHIPPED_POINT, "C0", "o"), (SEED_POINT, "C1", "s"))
        for name, color, marker in markers:
            point = result.point(name)
            if point is not None:
                label = "shipped policy at its threshold" if name == SHIPPED_POINT else name
                ax.plot([point.rate], [point.f1], marker, color=color, ms=7, mec="k", label=label)
        ax.axhline(result.slm_f1, color="0.3", lw=0.8)
        ax.axhline(result.fallback_f1, color="0.3", lw=0.8)
        ax.axhline(0.95 * result.fallback_f1, color="0.6", lw=0.6, ls=":")
        ax.text(1.0, result.slm_f1, " SLM only", va="center", fontsize=8)
        ax.text(1.0, result.fallback_f1, " fallback only", va="center", fontsize=8)
        ax.text(1.0, 0.95 * result.fallback_f1, " 95%", va="center", fontsize=7, color="0.4")
        if result.n_forced:
            ax.axvline(result.forced_share, color="0.6", lw=0.8, ls="--")
            ax.text(result.forced_share, ax.get_ylim()[0], " forced", fontsize=7, color="0.4")
        _quality_axes(
            ax,
            "escalation rate (share of questions sent to the fallback)",
            f"{_title(result)}: {result.slm_model} -> {_fb_label(result)}",
        )


def _plot_signals(result: DatasetResult, path: Path) -> None:
    with _figure(path) as (_, ax):
        import matplotlib.pyplot as plt

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
            ax.plot(
                router.curve.rates, router.curve.quality, style, color=color, lw=1.4, label=name
            )
        _quality_axes(
            ax,
            "escalation rate",
            f"{_title(result)}: every single signal ({result.fallback} fallback)",
            legend_size=6.5,
            ncol=2,
        )


def _plot_cost(result: DatasetResult, path: Path) -> None:
    with _figure(path) as (_, ax):
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


def _plot_histograms(result: DatasetResult, path: Path) -> None:
    panels = [result.router(LEARNED), result.router("min_logprob"), result.router("mean_entropy")]
    with _figure(path, columns=len(panels), size=(10, 3.2)) as (fig, axes):
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


# -- tables -----------------------------------------------------------------------------


def _avoided(router: RouterResult, share: float, ci: bool = False) -> str:
    value = router.avoided_at.get(share, float("nan"))
    if not np.isfinite(value):
        return "n/a"
    low, high = router.avoided_ci.get(share, (float("nan"), float("nan")))
    if ci and np.isfinite(low) and np.isfinite(high):
        return f"{value:.0%} [{low:.0%}, {high:.0%}]"
    return f"{value:.0%}"


def _budget(point: OperatingPoint) -> str:
    value = point.queries_per_budget
    return "all kept" if not np.isfinite(value) else f"{value:.2f}x"


def headline_table(results: Sequence[DatasetResult]) -> str:
    """The seed's table, measured: the README's first screen quotes it.

    One row per data set and fallback, the real fallback first and the perfect
    one (the gold answer) as its upper bound.
    """
    head = (
        "data set | fallback | n | SLM EM / F1 | fallback EM / F1 "
        "| shipped router: fallback calls avoided | F1 as share of fallback's "
        "| queries per fallback budget "
        "| calls avoided at >= 95% of fallback F1: learned / seed / oracle"
    )
    rows = []
    for r in _real_first(results):
        point = r.point(SHIPPED_POINT)
        if point is None:  # one cell for the three shipped-router columns
            shipped = "no `--policy` | | "
        else:
            shipped = f"{_pct(point.avoided)} | {_pct(point.f1_share)} | {_budget(point)}"
        rows.append(
            [
                _title(r),
                "perfect (upper bound)" if r.fallback == PERFECT else r.fallback,
                r.n,
                f"{_f(r.slm_em, 2)} / {_f(r.slm_f1, 2)}",
                f"{_f(r.fallback_em, 2)} / {_f(r.fallback_f1, 2)}",
                shipped,
                " / ".join(_avoided(r.router(n), 0.95) for n in (LEARNED, SEED, ORACLE)),
            ]
        )
    return table(head, "llrllrrrl", rows)


def apgr_table(results: Sequence[DatasetResult]) -> str:
    """Discrimination and APGR: one row per data set and fallback."""
    head = (
        "data set | fallback | n | SLM-only F1 | SLM right | forced | floor F1 "
        "| fallback-only F1 | AUROC (learned) | APGR learned | APGR oracle | APGR query-only "
        "| CPT(50%) | CPT(80%) "
        "| fallback calls avoided at >= 95% of fallback F1 (learned / oracle)"
    )
    rows = []
    for r in _real_first(results):
        learned, oracle, query = r.router(LEARNED), r.router(ORACLE), r.router(QUERY_ONLY)
        avoided = f"{_pct(learned.avoided)} / {_pct(oracle.avoided)}"
        if not r.gap > 0:
            avoided = "n/a (fallback not better than SLM)"
        rows.append(
            [
                _title(r),
                r.fallback,
                r.n,
                _f(r.slm_f1),
                _pct(r.n_correct / r.n),
                _pct(r.forced_share),
                _f(r.floor_f1),
                _f(r.fallback_f1),
                _ci(learned.auroc, learned.auroc_ci),
                _ci(learned.apgr, learned.apgr_ci),
                _f(oracle.apgr),
                _f(query.apgr),
                _pct(learned.cpt50),
                _pct(learned.cpt80),
                avoided,
            ]
        )
    return table(head, "llrrrrrrllrrrrr", rows)


#: Targets of issue 11 (out of fold, perfect fallback).
AUROC_TARGETS = {"squad_v1": 0.85, "squad_v2": 0.80, "hotpotqa": 0.78}
APGR_TARGET_SHARE = {"squad_v1": 0.8}


def targets_table(results: Sequence[DatasetResult]) -> str:
    """Each target against what the learned policy reached out of fold."""
    head = (
        "data set | AUROC learned (target) | best single signal "
        "| learned - best single (target >= +0.02) | APGR learned (target) "
        "| logistic / trees / 0.1.0 logistic | models the outer folds chose"
    )
    rows = []
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
        apgr = _f(learned.apgr)
        share = APGR_TARGET_SHARE.get(r.dataset)
        if share is not None:
            goal = 0.5 + share * (r.router(ORACLE).apgr - 0.5)
            ok = "met" if learned.apgr >= goal else f"missed by {goal - learned.apgr:.3f}"
            apgr += f" (>= {goal:.3f}: {ok})"
        others = (LEARNED_LOGISTIC, LEARNED_TREES, LEARNED_V1)
        chose = r.fitted_policy.get("outer_folds_chose", []) if r.fitted_policy else []
        rows.append(
            [
                _title(r),
                auc,
                f"`{best.name}` {_f(best.auroc)}",
                f"{lift:+.3f} ({'met' if lift >= 0.02 else 'missed'})",
                apgr,
                " / ".join(_f(r.router(name).auroc) for name in others),
                "; ".join(chose),
            ]
        )
    return table(head, "lllllll", rows)


#: Targets of issue 20 (out of fold, the real fallback).
ORACLE_SHARE_TARGETS = {"squad_v1": 0.75, "squad_v2": 0.75, "hotpotqa": 0.60}
RIGHT_AUROC_TARGETS = {"squad_v1": 0.85, "squad_v2": 0.85, "hotpotqa": 0.80}
SEED_CLAIM = 0.70


def _met(value: float, target: float) -> str:
    if not np.isfinite(value):
        return "n/a"
    return "met" if value >= target - 1e-12 else f"missed by {target - value:.3f}"


def oracle_share(router: RouterResult, oracle: RouterResult, share: float = 0.95) -> float:
    """The share of the oracle's avoided calls a router reaches (NaN if the oracle avoids none)."""
    mine, best = router.avoided_at.get(share, np.nan), oracle.avoided_at.get(share, np.nan)
    return float(mine / best) if np.isfinite(best) and best > 0 else float("nan")


def real_targets_table(results: Sequence[DatasetResult]) -> str:
    """Issue 20's targets against the real fallback, out of fold."""
    head = (
        "data set | fallback | oracle avoids (>= 95%) | learned avoids [95% CI] "
        "| share of the oracle's (target) | the seed's 70% | AUROC 'SLM right' (target) "
        "| learned beats seed / query-only (calls avoided at >= 95%; APGR)"
    )
    rows = []
    for r in results:
        if r.fallback == PERFECT:
            continue
        learned, oracle = r.router(LEARNED), r.router(ORACLE)
        share = oracle_share(learned, oracle)
        goal = ORACLE_SHARE_TARGETS.get(r.dataset)
        share_text = _pct(share) + (f" (>= {goal:.0%}: {_met(share, goal)})" if goal else "")
        avoided = learned.avoided_at.get(0.95, float("nan"))
        seed_claim = (
            ("met" if avoided >= SEED_CLAIM else f"missed: {_pct(avoided)} of 70%")
            if np.isfinite(avoided)
            else "n/a"
        )
        auc_goal = RIGHT_AUROC_TARGETS.get(r.dataset)
        auc = _f(learned.auroc) + (
            f" (>= {auc_goal:.2f}: {_met(learned.auroc, auc_goal)})" if auc_goal else ""
        )
        beats = []
        for other in (SEED, QUERY_ONLY):
            o = r.router(other)
            a, b = avoided, o.avoided_at.get(0.95, float("nan"))
            verdict = (
                "yes"
                if a > b and learned.apgr > o.apgr
                else ("no" if a < b and learned.apgr < o.apgr else "mixed")
            )
            beats.append(
                f"{verdict} ({_pct(a)} vs {_pct(b)}; {_f(learned.apgr, 2)} vs {_f(o.apgr, 2)})"
            )
        rows.append(
            [
                _title(r),
                r.fallback,
                _avoided(oracle, 0.95),
                _avoided(learned, 0.95, ci=True),
                share_text,
                seed_claim,
                auc,
                " / ".join(beats),
            ]
        )
    return table(head, "llrlllll", rows)


def _avoided_routers(result: DatasetResult) -> list[RouterResult]:
    names = [LEARNED, SEED, QUERY_ONLY, RANDOM, ORACLE]
    names += [r.name for r in result.routers if r.name.startswith("shipped: ")]
    names += [LEARNED_AS_GOOD] if any(r.name == LEARNED_AS_GOOD for r in result.routers) else []
    return [result.router(n) for n in names]


def avoided_table(result: DatasetResult) -> str:
    """Fallback calls avoided at each share of the fallback's F1, with bootstrap intervals."""
    shares = result.settings.avoided_shares
    head = " | ".join(
        [
            "router",
            *(f">= {s:.0%} of fallback F1" if s < 1 else "100% of fallback F1" for s in shares),
            "share of the oracle's at >= 95%",
        ]
    )
    oracle = result.router(ORACLE)
    rows = [
        [
            r.name,
            *(_avoided(r, s, ci=True) for s in shares),
            "-" if r.name == ORACLE else _pct(oracle_share(r, oracle)),
        ]
        for r in _avoided_routers(result)
    ]
    align = "l" + "l" * len(shares) + "r"
    return table(head, align, rows)


def labels_table(results: Sequence[DatasetResult]) -> str:
    """AUROC of each score for both labels: "SLM right" and "SLM as good as the fallback"."""
    head = (
        "data set | fallback | SLM right | SLM as good as the fallback "
        "| learned (fitted on 'right'): AUROC right / as-good "
        "| learned fitted on 'as-good': right / as-good | seed thresholds: right / as-good "
        "| shipped policy: right / as-good"
    )

    def pair(r: DatasetResult, name: str) -> str:
        for router in r.routers:
            if router.name == name or (name == "shipped" and router.name.startswith("shipped: ")):
                return (
                    f"{_ci(router.auroc, router.auroc_ci)} / "
                    f"{_ci(router.auroc_as_good, router.auroc_as_good_ci)}"
                )
        return "-"

    rows = [
        [
            _title(r),
            r.fallback,
            _pct(r.n_correct / r.n),
            _pct(r.n_as_good / r.n),
            *(pair(r, name) for name in (LEARNED, LEARNED_AS_GOOD, SEED, "shipped")),
        ]
        for r in _real_first(results)
    ]
    return table(head, "llrrllll", rows)


def split_table(result: DatasetResult) -> str:
    """SQuAD 2.0 in two parts: answerable and unanswerable questions."""
    points = result.operating_points
    head = " | ".join(
        [
            "part | n | SLM F1 | SLM abstained | fallback F1 | fallback abstained",
            *(f"router F1 (escalated): {p.name}" for p in points),
        ]
    )
    rows = []
    for part, row in result.split.items():
        cells = []
        for p in points:
            if part == "all":
                cells.append(f"{_f(p.f1)} ({_pct(p.rate)})")
            else:
                got = p.parts.get(part, {})
                cells.append(f"{_f(got.get('f1'))} ({_pct(got.get('escalation_rate'))})")
        rows.append(
            [
                part,
                row["n"],
                _f(row["slm_f1"]),
                row["slm_abstained"],
                _f(row["fallback_f1"]),
                row["fallback_abstained"],
                *cells,
            ]
        )
    return table(head, "lrrrrr" + "r" * len(points), rows)


def machine_cost_table(results: Sequence[DatasetResult]) -> str:
    """Wall time and tokens per query: fallback-only against the cascade, from the traces."""
    head = (
        "data set | route | F1 | fallback calls per query | wall s per query: median | mean "
        "| SLM tokens per query | fallback tokens per query"
    )
    rows: list[list[object]] = []
    for r in results:
        if r.fallback == PERFECT:
            continue
        fb = r.fallback_only
        rows.append(
            [
                _title(r),
                f"fallback only ({r.fallback})",
                _f(r.fallback_f1),
                "1.00",
                _f(fb.get("wall_median_s"), 2),
                _f(fb.get("wall_mean_s"), 2),
                0,
                _f(fb.get("fallback_tokens"), 0),
            ]
        )
        rows += (
            [
                _title(r),
                f"cascade: {p.name}",
                _f(p.f1),
                _f(p.rate, 2),
                _f(p.wall_median_s, 2),
                _f(p.wall_mean_s, 2),
                _f(p.slm_tokens, 0),
                _f(p.fallback_tokens, 0),
            ]
            for p in r.operating_points
        )
    notes = [
        f"{_title(r)}: {unreported_note(r.n_unreported, r.n, 'Token figures')}"
        for r in results
        if r.fallback != PERFECT and r.n_unreported
    ]
    return "\n\n".join([table(head, "llrrrrrr", rows), *notes])


def points_table(result: DatasetResult) -> str:
    """Each operating point: what the Router would have done on these questions."""
    head = (
        "operating point | fallback calls avoided [95% CI] | F1 (EM) "
        "| F1 as share of fallback's [95% CI] | queries per fallback budget"
    )
    rows = [
        [
            f"{p.name}: {p.note}",
            f"{_pct(p.avoided)} [{_pct(p.avoided_ci[0])}, {_pct(p.avoided_ci[1])}]",
            f"{_f(p.f1)} ({_f(p.em)})",
            f"{_pct(p.f1_share)} [{_pct(p.f1_share_ci[0])}, {_pct(p.f1_share_ci[1])}]",
            _budget(p),
        ]
        for p in result.operating_points
    ]
    return table(head, "llllr", rows)


def _router_table(result: DatasetResult) -> str:
    head = (
        "router | AUROC [95% CI] | APGR [95% CI] | CPT(50%) | CPT(80%) "
        f"| calls avoided at >= {result.settings.quality_share:.0%} | AIQ"
    )
    order = sorted(
        result.routers, key=lambda r: {"policy": 0, "query": 1, "signal": 2, "baseline": 3}[r.kind]
    )
    rows = []
    for r in order:
        name = {"signal": f"signal `{r.name}`"}.get(r.kind, f"**{r.name}**")
        auc = _ci(r.auroc, r.auroc_ci) if r.kind != "baseline" else ""
        auc = auc or ("0.5" if r.name == RANDOM else "-")
        rows.append(
            [
                name,
                auc,
                _ci(r.apgr, r.apgr_ci),
                _pct(r.cpt50),
                _pct(r.cpt80),
                _pct(r.avoided),
                _f(r.aiq),
            ]
        )
    return table(head, "lllrrrr", rows)


def _calibration_table(result: DatasetResult) -> str:
    head = (
        "policy | target (on the calibration half) | rate on calibration half "
        "| rate on held-out half | held-out F1 | random at that rate | fallback-only | SLM-only"
    )
    rows = [
        [
            c.policy,
            c.target,
            _pct(c.calibration_rate),
            _pct(c.heldout_rate),
            _f(c.heldout_f1),
            _f(c.heldout_random_f1),
            _f(c.heldout_fallback_f1),
            _f(c.heldout_slm_f1),
        ]
        for c in result.calibration
    ]
    return table(head, "llrrrrrr", rows)


def _cost_table(results: Sequence[DatasetResult]) -> str:
    head = (
        "data set | AUROC learned / query-only | APGR learned / query-only "
        "| AIQ learned / query-only / random | better at equal cost"
    )
    rows = []
    for r in results:
        learned, query, rand = r.router(LEARNED), r.router(QUERY_ONLY), r.router(RANDOM)
        rows.append(
            [
                _title(r),
                f"{_f(learned.auroc)} / {_f(query.auroc)}",
                f"{_f(learned.apgr)} / {_f(query.apgr)}",
                f"{_f(learned.aiq)} / {_f(query.aiq)} / {_f(rand.aiq)}",
                "n/a"  # no cost known (no token count reported)
                if not (np.isfinite(learned.aiq) and np.isfinite(query.aiq))
                else "reading the answer"
                if learned.aiq > query.aiq
                else "the query-only router",
            ]
        )
    return table(head, "lllll", rows)


def _latency_cost(result: DatasetResult) -> str:
    head = "route | median latency (s) | p95 latency (s)"
    rows = [
        [route, _f(stats["median"]), _f(stats["p95"])] for route, stats in result.latency.items()
    ]
    costs = ", ".join(
        f"{k}: {'unknown' if v is None else format(v, '.4g')}" for k, v in result.cost.items()
    )
    left_out = unreported_note(result.n_unreported, result.n, "Costs")
    note = (
        "The perfect fallback is not a model and has no latency; only the SLM's is measured."
        if result.fallback == PERFECT
        else "Latencies are measured, one question at a time, on the shared 2-core machine."
    )
    return (
        table(head, "lrr", rows)
        + f"\n\n{note} Cost per 1000 questions at the assumed prices: {costs}."
        + (f" {left_out}" if left_out else "")
    )


# -- the report -------------------------------------------------------------------------


def _limitations(results: Sequence[DatasetResult]) -> list[str]:
    """What the numbers do not say, from the numbers themselves."""
    notes = []
    perfect = [r for r in results if r.fallback == PERFECT]
    real = [r for r in results if r.fallback != PERFECT and r.gap > 0]
    if perfect:
        acc = ", ".join(f"{_pct(r.n_correct / r.n)} of {_title(r)}" for r in perfect)
        oracle = ", ".join(f"{_avoided(r.router(ORACLE), 0.95)} ({_title(r)})" for r in perfect)
        notes.append(
            f"**How often the SLM is right bounds everything.** {perfect[0].slm_model} answers "
            f"right (F1 > {perfect[0].settings.correct_f1:g}) on {acc}. Even the oracle router, "
            "which knows which answers are right, avoids only "
            f"{oracle} of the calls at 95% of the *perfect* fallback's F1; against a real "
            "fallback, which is wrong too, more calls can be avoided."
        )
    if perfect and not real:
        notes.append(
            "**The fallback line is an upper bound.** No real fallback better than the SLM is "
            "in these traces; the perfect fallback answers with the gold answer (F1 = 1). A "
            "real large model is wrong sometimes, so real gaps are smaller and real APGR/CPT "
            "differ."
        )
    if real:
        notes.append(
            "**Operating points read off a curve are optimistic.** Calls avoided at >= 95% take "
            "the best threshold in hindsight on these questions (the scores themselves are out "
            "of fold); the budget-calibration tables choose the threshold on one half and "
            "measure it on the other, which is what a shipped threshold faces."
        )
    weaker = [r for r in results if r.fallback != PERFECT and not r.gap > 0]
    for name in sorted({r.fallback for r in weaker}):
        scores = ", ".join(
            f"{_title(r)} {_f(r.fallback_f1)} vs SLM {_f(r.slm_f1)}"
            for r in weaker
            if r.fallback == name
        )
        notes.append(
            f"**The real fallback {name} is not better than the SLM** (F1 {scores}): escalating "
            'to it cannot help, so APGR/CPT are undefined (n/a) and every router "avoids" all '
            "the calls it can. AUROC for the label 'right' does not depend on the fallback."
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


def _definitions(settings: AnalysisSettings) -> str:
    shares = ", ".join(f"{v:.0%}" for v in settings.avoided_shares)
    return (
        "Definitions. *Labels*: an SLM answer is *right* when its official F1 against the gold "
        f"answers is > {settings.correct_f1:g}; it is *as good as the fallback* when its F1 is at "
        "least the fallback's on the same question. Learned policies predict *right* unless "
        "named otherwise. *Forced escalations*: answers the Router escalates whatever the "
        "policy says (the SLM failed, answered nothing, or was cut off by its token limit). "
        "Every router, the query-only one included, escalates them and counts them on the "
        "escalation axis, so every curve starts at their share, from the same *floor* (F1 with "
        "every other answer kept); routers escalate their lowest-scored other answers first. "
        "*Fallback calls avoided at s*: 1 - the smallest escalation rate at which the router's "
        f"F1 reaches s x fallback-only F1 (s = {shares}; at most 1 - the forced share; the "
        "threshold is read off the curve, so it is an operating point the router can reach, "
        "not one calibrated in advance: for that see the budget-calibration tables). *Share of "
        "the oracle's*: a router's calls avoided over the oracle's at >= 95%. *Queries per "
        "fallback budget*: 1 / escalation rate, how many more queries a fixed number of "
        'fallback calls serves (the seed\'s "3x"). *APGR*: share of the floor-to-fallback F1 '
        "gap recovered, averaged over the escalation rates every router can reach (from the "
        "forced share to 100%; random routing = 0.5 exactly; the oracle's APGR is the ceiling). "
        "*CPT(x)*: escalation rate needed to recover x of that gap. *AIQ*: RouterBench's area "
        "under the non-decreasing convex hull of (cost, F1) points, over a cost range shared "
        "by all routers of the data set. Learned and query-only routers are scored out of fold "
        f"({settings.folds}-fold cross-validation). 95% intervals: percentile bootstrap over "
        f"questions ({settings.bootstrap} resamples; out-of-fold scores are resampled, not "
        "refitted). Cost: a cascade pays the SLM for every question and the fallback on top "
        "when it escalates; the query-only router decides before the SLM runs, so its "
        "escalations pay the fallback only (a forced question it had kept pays both). Assumed "
        f"prices per million tokens (input/output): SLM {settings.slm_price[0]:g}/"
        f"{settings.slm_price[1]:g}, fallback {settings.fallback_price[0]:g}/"
        f"{settings.fallback_price[1]:g}; the perfect fallback is charged the SLM's prompt "
        "tokens plus the gold answer's length (4 characters a token). Wall time and tokens on "
        "this machine are measured in the traces (`latency_s`, token counts).\n"
    )


def write_report(
    results: Sequence[DatasetResult],
    out: str | Path,
    *,
    settings: AnalysisSettings | None = None,
    command: str = "",
) -> Path:
    """Write `report.md`, `analysis.json`, the plots and the fitted policies into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = settings or (results[0].settings if results else AnalysisSettings())
    (out / "analysis.json").write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")
    lines: list[str] = []
    add = lines.append
    real = [r for r in results if r.fallback != PERFECT]
    perfect = [r for r in results if r.fallback == PERFECT]
    add("# Confidence routing on SQuAD v1.1, SQuAD 2.0 and HotpotQA\n")
    if results:
        add(
            f"SLM: **{results[0].slm_model}**; fallbacks: "
            + ", ".join(sorted({f"**{r.fallback}**" for r in real}) or ["none real"])
            + ", and the **perfect** fallback (the gold answer: an upper bound, not a model). "
            f"Generated {_dt.date.today().isoformat()} from traces by `confidence-router eval` "
            "(every number below is computed from the traces; no model runs at analysis time).\n"
        )
    add("## Headline\n")
    add(headline_table(results) + "\n")
    by_name: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for r in results:
        if r.shipped:
            entry = by_name.setdefault(str(r.shipped.get("name")), (r.shipped, []))
            if _title(r) not in entry[1]:
                entry[1].append(_title(r))
    if by_name:
        add(
            "Shipped router: "
            + "; ".join(
                _shipped_sentence(shipped, titles if len(by_name) > 1 else None)
                for shipped, titles in by_name.values()
            )
            + ", replayed on these answers as the Router runs it. When a policy was fitted on "
            "these same traces, its numbers are in-sample; the learned / seed / oracle columns "
            "are out of fold.\n"
        )
    else:
        add("No `--policy` was given: the shipped-router columns are empty.\n")
    if command:
        add(f"Command:\n\n```\n{command}\n```\n")
    add(
        "> **Perfect fallback** = the gold answer stands in for an always-right large model. It is "
        "an upper bound, not a measured model; each real fallback is reported next to it under "
        "its own name.\n"
    )
    add(_definitions(settings))
    if real:
        add("## Targets against the real fallback\n")
        add(real_targets_table(real) + "\n")
        add("## Fallback calls avoided\n")
        add(
            "Per data set, against the real fallback; the same tables for the perfect fallback "
            "are in its sections below.\n"
        )
        for r in real:
            add(f"**{_title(r)}**, {_fb_label(r)} ({r.n} questions, {r.n_forced} forced):\n")
            add(avoided_table(r) + "\n")
        if by_name:
            fitted_on = "; ".join(
                f"{name}: {', '.join(shipped.get('fitted_on_datasets') or ['not stated'])}"
                for name, (shipped, _) in by_name.items()
            )
            add(
                "The shipped policy's rows sweep its threshold over these answers; they are "
                f"in-sample when it was fitted on these traces (it says: {fitted_on}).\n"
            )
    add("## Discrimination and APGR\n")
    add(apgr_table(results) + "\n")
    add("## Two labels: right, or as good as the fallback\n")
    add(
        "AUROC of each score for both labels (perfect fallback: *as good* means the SLM's F1 "
        "is 1). A policy can be fitted on either: `confidence-router eval fit-policy ... "
        "--label right|as-good`.\n"
    )
    add(labels_table(results) + "\n")
    split = [r for r in _real_first(results) if r.split]
    if split:
        add("## SQuAD 2.0: answerable and unanswerable questions\n")
        add(
            'Abstaining (the empty answer; with the `rag-v2` prompt "not in the documents", '
            "which scoring maps to it) is right on an unanswerable question and wrong on an "
            "answerable one. Router F1 per operating point, with the share escalated in each "
            "part.\n"
        )
        for r in split:
            add(f"**{_title(r)}**, {_fb_label(r)}:\n")
            add(split_table(r) + "\n")
    if real:
        add("## What the cascade costs on this machine\n")
        add(
            "Per query, from the traces (one question at a time on the shared 2-core machine): "
            "fallback-only against the cascade, which pays the SLM on every question and the "
            "fallback on top when it escalates.\n"
        )
        add(machine_cost_table(real) + "\n")
    if perfect and any(r.fallback == PERFECT for r in results):
        add("## Targets of the perfect-fallback evaluation (issue 11)\n")
        add(
            f"*{LEARNED}* is the shipped fitting procedure: over every signal (log-probability "
            "statistics and the context signals), the best L2-regularised logistic regression "
            "(l2 in 0.1-1000) and the best boosted shallow trees (three shapes), each chosen by "
            f"an inner {settings.folds}-fold cross-validation on the training folds only, "
            "averaged. Each outer fold is scored by models that never saw it. The alternatives "
            f"beside it: *{LEARNED_LOGISTIC}*, *{LEARNED_TREES}* (each family alone, same inner "
            f"CV) and *{LEARNED_V1}* (the 0.1.0 release's policy).\n"
        )
        add(targets_table(results) + "\n")
    compared = real or perfect
    if compared:
        add("## Does looking at the SLM's answer earn its cost?\n")
        add(
            "The learned router reads the SLM's answer (so every question pays for the SLM); "
            "the query-only router decides from the question and passage before any model runs "
            "(an escalated question pays for the fallback only). Both escalate the forced "
            "answers and count them. APGR compares them at equal escalation rates, AIQ at equal "
            "cost (assumed prices above)"
            + (", against the real fallback" if real else ", against the perfect fallback")
            + ".\n"
        )
        add(_cost_table(compared) + "\n")
    add("## What these numbers cannot show\n")
    for note in _limitations(results):
        add(f"- {note}")
    add("")
    for result in _real_first(results):
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
        add(f"## {_title(result)}, {_fb_label(result)}\n")
        extra = ""
        if result.n_unanswerable:
            extra = (
                f" {result.n_unanswerable} questions are unanswerable; the SLM abstained on "
                f"{result.n_abstained} ({result.n_abstained_correctly} correctly)."
            )
        if result.n_unreported:  # cost and token figures leave them out, and say so
            extra += f" {unreported_note(result.n_unreported, result.n)}"
        add(
            f"{result.n} questions. SLM-only F1 {_f(result.slm_f1)} (EM {_f(result.slm_em)}), "
            f"right on {result.n_correct} ({_pct(result.n_correct / result.n)}), as good as the "
            f"fallback on {result.n_as_good} ({_pct(result.n_as_good / result.n)}); "
            f"fallback-only F1 {_f(result.fallback_f1)} (EM {_f(result.fallback_em)}). Mean SLM "
            f"answer length {_f(result.mean_answer_tokens, 1)} tokens; {result.n_forced} answers "
            f"({_pct(result.forced_share)}) were empty, failed or cut off by the token limit and "
            f"are always escalated, so every curve starts there at F1 {_f(result.floor_f1)}."
            f"{extra}\n"
        )
        if result.operating_points:
            add(points_table(result) + "\n")
        if result.fallback == PERFECT:
            add(avoided_table(result) + "\n")
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
        "bench/record_traces.sh      # records bench/results/traces-qwen (hours on 2 cores)\n"
        "confidence-router eval fit-policy bench/results/traces-qwen/squad_v1.jsonl \\\n"
        "  bench/results/traces-qwen/squad_v2.jsonl --name qwen2.5-coder-0.5b/extractive-qa \\\n"
        "  --out confidence_router/policies/data/qwen2.5-coder-0.5b.extractive-qa.json\n"
        "confidence-router eval report bench/results/traces-qwen \\\n"
        "  --policy confidence_router/policies/data/qwen2.5-coder-0.5b.extractive-qa.json \\\n"
        "  --out bench/results/eval\n"
        "```\n"
    )
    add(
        "`--policy KIND=FILE` gives one data set its own policy (for example "
        "`hotpotqa=...multi-hop.json`); `--label as-good` fits a policy on the other label. "
        "Traces are cached: re-running `confidence-router eval run` skips questions already "
        "answered, and adding a `--fallback` later runs only that model. The same commands run "
        "on any pair: `--slm ollama:MODEL --fallback ollama:MODEL` or `openai:MODEL@URL` "
        "(see `confidence-router eval run --help`); a hosted fallback can be recorded from "
        "Python with `confidence_router.eval.run_traces(..., fallbacks={name: any object with "
        "agenerate})`.\n"
    )
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


__all__ = [
    "apgr_table",
    "avoided_table",
    "headline_table",
    "labels_table",
    "machine_cost_table",
    "oracle_share",
    "points_table",
    "real_targets_table",
    "split_table",
    "write_report",
]

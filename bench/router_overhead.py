"""Router overhead: what deciding costs next to the SLM call it decides on.

Two measurements, one run, medians only:

1. **Decision time per answer**: ``compute_signals`` plus the policy's
   ``decide`` (threshold and logistic), and the Router's whole decision step,
   on real SmolLM2-135M answers of 5, 20 and 100 tokens with top-k 5 and 20,
   against the median latency of the SLM call that produced such an answer.
   With every non-sampling signal: the same with the context signals measured
   against a real prompt (a three-passage RAG prompt over ``examples/docs``,
   about 2,700 characters, and the longest HotpotQA prompt of the committed
   sample, about 9,000), decided by the shipped ``gemma3-270m/extractive-qa``
   policy (logistic regression and 100 boosted trees, averaged). Timed cold
   (the first decision on a prompt, which indexes the prompt's words) and warm
   (another answer to the same prompt: a streamed prefix or a sample).
2. **Async throughput**: ``Router.abatch`` against calling the SLM backend's
   ``agenerate`` directly with the same concurrency (in-process SmolLM2; a
   policy that keeps every answer, so both do the same model work).

Targets: the router adds under 1% to an SLM call and under 100 microseconds
per decision. Run from the repository root::

    .venv/bin/python bench/router_overhead.py            # writes bench/results/router_overhead.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from confidence_router import (
    Bound,
    Generation,
    LlamaCppSLM,
    LogisticPolicy,
    Message,
    Policy,
    Router,
    ThresholdPolicy,
    compute_signals,
    signals_from_arrays,
)

#: Decision times are CPU time of the measuring thread (see per_call_seconds).
CLOCK = time.thread_time
LENGTHS = (5, 20, 100)
#: One-word answers end at the first line or full stop: an answer cut off by the token
#: limit would escalate (finish_reason "length"), which the keep-all comparison must avoid.
STOP = ["\n", "."]
TOP_KS = (5, 20)
STORY = [Message("user", "Write a long story about a dragon who learns to cook. Begin now.")]
QUESTIONS = [
    Message("user", f"In one word, what colour is {thing}?")
    for thing in ("the sky", "grass", "snow", "coal", "blood", "the sun", "an orange", "milk")
]


def per_call_seconds(
    fn: Callable[[], object], *, repeats: int = 9, budget_s: float = 0.2
) -> tuple[float, float]:
    """Median and minimum, over ``repeats`` timed loops, of the mean time per call.

    Timed with :data:`CLOCK`: the CPU time of this thread, which a loaded shared
    machine does not inflate the way it inflates wall-clock time (the thread is
    not charged while another process runs)."""
    fn()
    start = CLOCK()
    calls = 0
    while CLOCK() - start < budget_s / 5:
        fn()
        calls += 1
    loops = max(10, calls * 5 // repeats)
    samples = []
    for _ in range(repeats):
        t0 = CLOCK()
        for _ in range(loops):
            fn()
        samples.append((CLOCK() - t0) / loops)
    return statistics.median(samples), min(samples)


def _with_top_k(gen: Generation, k: int) -> Generation:
    return replace(gen, top_logprobs=np.ascontiguousarray(gen.top_logprobs[:, :k]))


def _logistic_policy() -> LogisticPolicy:
    """A fitted logistic policy (fixed synthetic training data: only its timing matters)."""
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(200):
        n = int(rng.integers(1, 30))
        top = -np.sort(rng.exponential(1.0, (n, 5)), axis=1)
        rows.append(signals_from_arrays(top[:, 0].copy(), top))
    labels = [s.min_logprob > -0.5 for s in rows]
    return LogisticPolicy.fit(rows, labels)


def _prompts() -> dict[str, list[Message]]:
    """Real prompts to measure the context signals against."""
    from confidence_router.eval.data import load_examples
    from confidence_router.eval.prompts import build_prompt

    root = Path(__file__).resolve().parents[1]
    docs = root / "examples" / "docs"
    passages = [
        (docs / "normans.md").read_text(encoding="utf-8")[:900],
        (docs / "rhine.md").read_text(encoding="utf-8")[:900],
        (docs / "oxygen.md").read_text(encoding="utf-8")[:900],
    ]
    rag = [
        Message("system", "Answer the question in a few words, using only the context."),
        Message(
            "user",
            "Context: " + "\n\n".join(passages) + "\nQuestion: Who did Rollo sign the treaty "
            "of Saint-Clair-sur-Epte with?\nAnswer:",
        ),
    ]
    hotpot = load_examples(root / "data" / "hotpotqa_dev_distractor_sample300.jsonl", "hotpotqa")
    longest = max(hotpot, key=lambda ex: len(ex.context))
    return {"rag": rag, "hotpotqa": [Message("user", build_prompt(longest))]}


def decision_rows(slm: LlamaCppSLM, calls: int) -> list[dict[str, Any]]:
    """Decision time per answer next to the SLM call, per answer length and top-k."""
    from confidence_router.policies.defaults import load_builtin_policy
    from confidence_router.signals.context import forget_prompts

    threshold = ThresholdPolicy()
    logistic = _logistic_policy()
    shipped: Policy = load_builtin_policy("gemma3-270m/extractive-qa")
    router = Router(slm, lambda messages: "unused", policy=threshold)
    shipped_router = Router(slm, lambda messages: "unused", policy=shipped)
    prompts = _prompts()
    rows = []
    for length in LENGTHS:
        generations = [slm.generate(STORY, max_tokens=length) for _ in range(calls)]
        latencies = [g.latency_s for g in generations]
        slm_median, slm_fastest = statistics.median(latencies), min(latencies)
        for k in TOP_KS:
            gen = _with_top_k(generations[0], k)
            timings = {
                "signals": per_call_seconds(lambda g=gen: compute_signals(g)),
                "signals_plus_threshold": per_call_seconds(
                    lambda g=gen: threshold.decide(compute_signals(g))
                ),
                "signals_plus_logistic": per_call_seconds(
                    lambda g=gen: logistic.decide(compute_signals(g))
                ),
                "router_decision_step": per_call_seconds(
                    lambda g=gen: router._pipeline.decide(g, None)
                ),
            }
            for label, msgs in prompts.items():
                # cold: the first decision on a prompt, which indexes the prompt's words
                timings[f"all_signals_{label}"] = per_call_seconds(
                    lambda g=gen, m=msgs: (forget_prompts(), compute_signals(g, m))
                )
                timings[f"all_signals_plus_shipped_{label}"] = per_call_seconds(
                    lambda g=gen, m=msgs: (forget_prompts(), shipped.decide(compute_signals(g, m)))
                )
                timings[f"router_decision_step_shipped_{label}"] = per_call_seconds(
                    lambda g=gen, m=msgs: (
                        forget_prompts(),
                        shipped_router._pipeline.decide(g, None, m),
                    )
                )
                # warm: another answer to the same prompt (a streamed prefix, a sample)
                timings[f"router_decision_step_shipped_warm_{label}"] = per_call_seconds(
                    lambda g=gen, m=msgs: shipped_router._pipeline.decide(g, None, m)
                )
            worst = max(median for median, _ in timings.values())
            row: dict[str, Any] = {"answer_tokens": len(gen.token_logprobs), "top_k": k}
            for name, (median, fastest) in timings.items():
                row[f"{name}_us"] = median * 1e6
                row[f"{name}_min_us"] = fastest * 1e6
            row.update(
                {
                    "slm_call_ms": slm_median * 1e3,
                    "slm_call_fastest_ms": slm_fastest * 1e3,
                    "slm_call_all_ms": [v * 1e3 for v in latencies],
                    "overhead_vs_slm_call": worst / slm_median,
                    "overhead_vs_fastest_slm_call": worst / slm_fastest,
                }
            )
            rows.append(row)
    return rows


async def _direct(slm: LlamaCppSLM, n: int, concurrency: int, max_tokens: int) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Generation:
        async with semaphore:
            return await slm.agenerate(
                [QUESTIONS[i % len(QUESTIONS)]], max_tokens=max_tokens, stop=STOP
            )

    await asyncio.gather(*(one(i) for i in range(n)))


async def _routed(router: Router, n: int, concurrency: int, max_tokens: int) -> None:
    inputs = [[QUESTIONS[i % len(QUESTIONS)]] for i in range(n)]
    results = await router.abatch(
        inputs, max_concurrency=concurrency, max_tokens=max_tokens, stop=STOP
    )
    assert all(r.route == "slm" for r in results), "the keep-all policy escalated"


def throughput(
    slm: LlamaCppSLM, *, n: int, concurrency: int, max_tokens: int, rounds: int
) -> dict[str, Any]:
    """Router.abatch against direct agenerate: wall time and this process's CPU time.

    Rounds alternate which side goes first, and each round's ratio compares
    two runs made seconds apart, so slow drifts of a shared machine cancel;
    CPU time counts only this process's work (llama.cpp threads included).
    """
    keep_all = ThresholdPolicy((Bound("length", max=1e9),))

    def never_called(messages: list[Message]) -> str:
        raise AssertionError("the keep-all policy escalated")

    router = Router(slm, never_called, policy=keep_all, max_concurrency=concurrency)
    runs: dict[str, list[tuple[float, float]]] = {"direct": [], "router": []}

    async def timed(side: str) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        if side == "direct":
            await _direct(slm, n, concurrency, max_tokens)
        else:
            await _routed(router, n, concurrency, max_tokens)
        runs[side].append((time.perf_counter() - wall, time.process_time() - cpu))

    async def run() -> None:
        await _direct(slm, concurrency, concurrency, max_tokens)  # warm-up
        for i in range(rounds):
            for side in ("direct", "router") if i % 2 == 0 else ("router", "direct"):
                await timed(side)

    asyncio.run(run())
    wall_ratios = [r[0] / d[0] for d, r in zip(runs["direct"], runs["router"])]
    cpu_ratios = [r[1] / d[1] for d, r in zip(runs["direct"], runs["router"])]
    direct_wall = statistics.median(w for w, _ in runs["direct"])
    router_wall = statistics.median(w for w, _ in runs["router"])
    return {
        "queries": n,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "direct_runs_wall_cpu_s": runs["direct"],
        "router_runs_wall_cpu_s": runs["router"],
        "direct_qps": n / direct_wall,
        "router_qps": n / router_wall,
        "router_over_direct_wall_median_of_rounds": statistics.median(wall_ratios),
        "router_over_direct_cpu_median_of_rounds": statistics.median(cpu_ratios),
    }


def _table(rows: list[dict[str, Any]], tp: dict[str, Any]) -> str:
    head = (
        f"{'tokens':>6} {'top-k':>5} {'signals':>9} {'+threshold':>11} {'+logistic':>10} "
        f"{'router step':>12} {'SLM call':>10} {'fastest':>9} {'overhead':>9}"
    )
    lines = [
        "median time per answer (signals; signals + policy.decide; the Router's decision step)",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r['answer_tokens']:>6} {r['top_k']:>5} {r['signals_us']:>7.1f}us "
            f"{r['signals_plus_threshold_us']:>9.1f}us {r['signals_plus_logistic_us']:>8.1f}us "
            f"{r['router_decision_step_us']:>10.1f}us {r['slm_call_ms']:>8.1f}ms "
            f"{r['slm_call_fastest_ms']:>7.1f}ms {r['overhead_vs_fastest_slm_call']:>9.4%}"
        )
    lines.append("overhead: slowest median decision time / fastest SLM call of that length")
    lines.append("")
    lines.append(
        "with the context signals (every non-sampling signal) and the shipped policy "
        "(signals; + decide; the Router's decision step), per prompt"
    )
    for r in rows:
        for label in ("rag", "hotpotqa"):
            lines.append(
                f"{r['answer_tokens']:>6} {r['top_k']:>5} {label:>9} "
                f"{r[f'all_signals_{label}_us']:>7.1f}us "
                f"{r[f'all_signals_plus_shipped_{label}_us']:>8.1f}us "
                f"{r[f'router_decision_step_shipped_{label}_us']:>8.1f}us "
                f"(same prompt again: {r[f'router_decision_step_shipped_warm_{label}_us']:.1f}us)"
            )
    lines.append(
        f"abatch, {tp['queries']} queries at concurrency {tp['concurrency']}: router "
        f"{tp['router_qps']:.2f} q/s, direct agenerate {tp['direct_qps']:.2f} q/s (medians of "
        f"{tp['rounds']} rounds); router/direct per round (median): wall time "
        f"{tp['router_over_direct_wall_median_of_rounds']:.3f}, process CPU time "
        f"{tp['router_over_direct_cpu_median_of_rounds']:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/router_overhead.json"))
    parser.add_argument("--calls", type=int, default=7, help="SLM calls per answer length")
    parser.add_argument("--queries", type=int, default=12, help="queries per abatch round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    slm = LlamaCppSLM.smollm2(top_logprobs=20, max_tokens=100)
    rows = decision_rows(slm, args.calls)
    tp = throughput(
        slm, n=args.queries, concurrency=args.concurrency, max_tokens=24, rounds=args.rounds
    )
    result = {
        "slm": slm.model,
        "decisions": rows,
        "abatch": tp,
        "targets": {"decision_us": 100.0, "overhead_vs_slm_call": 0.01},
        "max_decision_us": max(
            max(v for k, v in r.items() if k.endswith("_us") and not k.endswith("_min_us"))
            for r in rows
        ),
        "max_overhead_vs_fastest_slm_call": max(r["overhead_vs_fastest_slm_call"] for r in rows),
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
    }
    print(_table(rows, tp))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Router overhead: what deciding costs next to the SLM call it decides on.

Two measurements, one run, medians only:

1. **Decision time per answer**: ``compute_signals`` plus the policy's
   ``decide`` (threshold and logistic), and the Router's whole decision step,
   on real SmolLM2-135M answers of 5, 20 and 100 tokens with top-k 5 and 20,
   against the median latency of the SLM call that produced such an answer.
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
    Router,
    ThresholdPolicy,
    compute_signals,
    signals_from_arrays,
)

LENGTHS = (5, 20, 100)
TOP_KS = (5, 20)
STORY = [Message("user", "Write a long story about a dragon who learns to cook. Begin now.")]
QUESTIONS = [
    Message("user", f"In one word, what colour is {thing}?")
    for thing in ("the sky", "grass", "snow", "coal", "blood", "the sun", "an orange", "milk")
]


def per_call_seconds(
    fn: Callable[[], object], *, repeats: int = 7, budget_s: float = 0.15
) -> float:
    """Median over ``repeats`` timed loops of the mean time per call."""
    fn()
    start = time.perf_counter()
    calls = 0
    while time.perf_counter() - start < budget_s / 5:
        fn()
        calls += 1
    loops = max(10, calls * 5 // repeats)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - t0) / loops)
    return statistics.median(samples)


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


def decision_rows(slm: LlamaCppSLM, calls: int) -> list[dict[str, Any]]:
    """Decision time per answer next to the SLM call, per answer length and top-k."""
    threshold = ThresholdPolicy()
    logistic = _logistic_policy()
    router = Router(slm, lambda messages: "unused", policy=threshold)
    rows = []
    for length in LENGTHS:
        generations = [slm.generate(STORY, max_tokens=length) for _ in range(calls)]
        slm_s = statistics.median(g.latency_s for g in generations)
        for k in TOP_KS:
            gen = _with_top_k(generations[0], k)
            signals = compute_signals(gen)
            t_signals = per_call_seconds(lambda g=gen: compute_signals(g))
            t_threshold = per_call_seconds(lambda g=gen: threshold.decide(compute_signals(g)))
            t_logistic = per_call_seconds(lambda g=gen: logistic.decide(compute_signals(g)))
            t_router = per_call_seconds(lambda g=gen: router._decide(g, None))
            rows.append(
                {
                    "answer_tokens": len(gen.token_logprobs),
                    "top_k": k,
                    "signals_us": t_signals * 1e6,
                    "threshold_decide_us": (t_threshold - t_signals) * 1e6,
                    "signals_plus_threshold_us": t_threshold * 1e6,
                    "signals_plus_logistic_us": t_logistic * 1e6,
                    "router_decision_step_us": t_router * 1e6,
                    "slm_call_ms": slm_s * 1e3,
                    "overhead_vs_slm_call": max(t_threshold, t_logistic, t_router) / slm_s,
                    "score": threshold.score(signals),
                }
            )
    return rows


async def _direct(slm: LlamaCppSLM, n: int, concurrency: int, max_tokens: int) -> float:
    semaphore = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Generation:
        async with semaphore:
            return await slm.agenerate([QUESTIONS[i % len(QUESTIONS)]], max_tokens=max_tokens)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - t0


async def _routed(router: Router, n: int, concurrency: int, max_tokens: int) -> float:
    inputs = [[QUESTIONS[i % len(QUESTIONS)]] for i in range(n)]
    t0 = time.perf_counter()
    results = await router.abatch(inputs, max_concurrency=concurrency, max_tokens=max_tokens)
    elapsed = time.perf_counter() - t0
    assert all(r.route == "slm" for r in results), "the keep-all policy escalated"
    return elapsed


def throughput(
    slm: LlamaCppSLM, *, n: int, concurrency: int, max_tokens: int, rounds: int
) -> dict[str, Any]:
    """Queries per second of Router.abatch and of direct agenerate, alternating rounds."""
    keep_all = ThresholdPolicy((Bound("length", max=1e9),))

    def never_called(messages: list[Message]) -> str:
        raise AssertionError("the keep-all policy escalated")

    router = Router(slm, never_called, policy=keep_all, max_concurrency=concurrency)
    direct, routed = [], []

    async def run() -> None:
        await _direct(slm, concurrency, concurrency, max_tokens)  # warm-up
        for _ in range(rounds):
            direct.append(await _direct(slm, n, concurrency, max_tokens))
            routed.append(await _routed(router, n, concurrency, max_tokens))

    asyncio.run(run())
    d, r = statistics.median(direct), statistics.median(routed)
    return {
        "queries": n,
        "concurrency": concurrency,
        "max_tokens": max_tokens,
        "rounds": rounds,
        "direct_s": direct,
        "router_s": routed,
        "direct_qps": n / d,
        "router_qps": n / r,
        "router_over_direct_time": r / d,
    }


def _table(rows: list[dict[str, Any]], tp: dict[str, Any]) -> str:
    head = (
        f"{'tokens':>6} {'top-k':>5} {'signals':>9} {'+threshold':>11} {'+logistic':>10} "
        f"{'router step':>12} {'SLM call':>10} {'overhead':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['answer_tokens']:>6} {r['top_k']:>5} {r['signals_us']:>7.1f}us "
            f"{r['signals_plus_threshold_us']:>9.1f}us {r['signals_plus_logistic_us']:>8.1f}us "
            f"{r['router_decision_step_us']:>10.1f}us {r['slm_call_ms']:>8.1f}ms "
            f"{r['overhead_vs_slm_call']:>9.3%}"
        )
    lines.append(
        f"abatch, {tp['queries']} queries at concurrency {tp['concurrency']}: router "
        f"{tp['router_qps']:.2f} q/s, direct agenerate {tp['direct_qps']:.2f} q/s, "
        f"router/direct time {tp['router_over_direct_time']:.3f}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/router_overhead.json"))
    parser.add_argument("--calls", type=int, default=5, help="SLM calls per answer length")
    parser.add_argument("--queries", type=int, default=16, help="queries per abatch round")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    slm = LlamaCppSLM.smollm2(top_logprobs=20, max_tokens=100)
    rows = decision_rows(slm, args.calls)
    tp = throughput(
        slm, n=args.queries, concurrency=args.concurrency, max_tokens=8, rounds=args.rounds
    )
    result = {
        "slm": slm.model,
        "decisions": rows,
        "abatch": tp,
        "targets": {"decision_us": 100.0, "overhead_vs_slm_call": 0.01},
        "max_decision_us": max(
            max(
                r["signals_plus_logistic_us"],
                r["signals_plus_threshold_us"],
                r["router_decision_step_us"],
            )
            for r in rows
        ),
        "max_overhead_vs_slm_call": max(r["overhead_vs_slm_call"] for r in rows),
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

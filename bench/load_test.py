"""Load test: hundreds of concurrent async queries through the Router, with faults mixed in.

Every query is started at once (``asyncio.gather`` over ``Router.ainvoke``, no
semaphore) against the Ollama-compatible test server on 127.0.0.1: the SLM is
SmolLM2-135M and the fallback Gemma 3 270M, both over HTTP through the real
``ollama`` client, answers of two tokens. A share of the requests draw a fault
(HTTP 500, a hang-up, a dropped or broken stream, no logprobs, a short stall),
so every kind of outcome happens under load. Checked afterwards:

* every query has exactly one outcome: a RoutedResult or a typed
  ``ConfidenceRouterError`` (no raw client exception, nothing lost);
* the ledger agrees with the outcomes (answered by the SLM, escalated, errors,
  SLM failures);
* nothing is left behind once the clients are closed: open sockets (file
  descriptors in /proc/self/fd), asyncio tasks, the server's connection
  threads; resident memory is back within a margin of its level after a
  warm-up (200 queries with the same mix, then the full concurrency once with
  every query failing fast), with freed heap handed back to the OS
  (``malloc_trim``) before each reading so that the allocator's cache does not
  pass for a leak.

Throughput and p50/p95 latency (from the common start, so queueing included)
go to ``bench/results/load_test.json`` and ``.md``. Run from the repository root::

    .venv/bin/python bench/load_test.py                 # 500 queries, writes the results
    ./scripts/test -m load tests/load                   # the same checks as a pytest test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``tests.support`` importable
    sys.path.insert(0, str(ROOT))

from confidence_router import (  # noqa: E402
    ConfidenceRouterError,
    OllamaSLM,
    RoutedResult,
    Router,
)
from tests.support.leaks import open_sockets, other_tasks, rss_bytes  # noqa: E402
from tests.support.ollama_server import OllamaTestServer  # noqa: E402

SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"
COMMAND = ".venv/bin/python bench/load_test.py --queries 500"
RESULTS = ROOT / "bench" / "results"

#: (kind, model, rate, extra parameters): each request draws each fault independently.
FAULT_MIX: tuple[tuple[str, str, float, dict[str, Any]], ...] = (
    ("status", SMOLLM2, 0.05, {}),
    ("hangup", SMOLLM2, 0.03, {}),
    ("no_logprobs", SMOLLM2, 0.04, {}),
    ("drop_mid", SMOLLM2, 0.03, {}),
    ("error_line", SMOLLM2, 0.03, {}),
    ("stall", SMOLLM2, 0.02, {"seconds": 1.0}),  # only slower: the answer still comes
    ("status", GEMMA3, 0.06, {}),
    ("hangup", GEMMA3, 0.02, {}),
)


@dataclass
class LoadReport:
    """What one run did, what it measured, and whether every check held."""

    queries: int
    max_tokens: int
    wall_s: float
    throughput_qps: float
    latency_p50_s: float
    latency_p95_s: float
    latency_max_s: float
    outcomes: dict[str, int]
    routes: dict[str, int]
    ledger: dict[str, Any]
    fault_hits: dict[str, int]
    sockets_before: int
    sockets_after: int
    tasks_left: int
    server_threads_left: int
    rss_before_mib: float
    rss_peak_delta_mib: float
    rss_after_delta_mib: float
    failures: list[str] = field(default_factory=list)
    machine: dict[str, Any] = field(default_factory=dict)
    command: str = COMMAND

    @property
    def ok(self) -> bool:
        return not self.failures


def _trimmed_rss() -> int:
    """RSS after a full collection and glibc's ``malloc_trim`` (where there is one)."""
    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc is not None:
        with contextlib.suppress(OSError, AttributeError):  # not glibc: no malloc_trim
            ctypes.CDLL(libc).malloc_trim(0)
    return rss_bytes()


def _question(i: int) -> str:
    return f"Question {i}: what is {i % 97} plus {i % 89}?"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _burst(router: Router, count: int, max_tokens: int, offset: int = 0) -> list[Any]:
    """``count`` queries at once; each outcome with its latency from the common start."""
    started = time.perf_counter()

    async def one(i: int) -> tuple[Any, float]:
        try:
            outcome: Any = await router.ainvoke(_question(offset + i), max_tokens=max_tokens)
        except Exception as exc:  # kept as the outcome, checked below
            outcome = exc
        return outcome, time.perf_counter() - started

    return await asyncio.gather(*(one(i) for i in range(count)))


async def _settle(server: OllamaTestServer, sockets: int, within: float = 10.0) -> None:
    """Give the server's handler threads time to see their connections closed."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and (server.connection_threads() or open_sockets() > sockets):
        await asyncio.sleep(0.05)


def _check(report: LoadReport, results: list[Any], router: Router, rss_margin_mib: float) -> None:
    fail = report.failures.append
    outcomes = [r for r, _ in results]
    if len(outcomes) != report.queries:
        fail(f"{len(outcomes)} outcomes for {report.queries} queries")
    if len({id(o) for o in outcomes}) != len(outcomes):
        fail("an outcome object was handed to two queries")
    untyped = [
        o
        for o in outcomes
        if isinstance(o, BaseException) and not isinstance(o, ConfidenceRouterError)
    ]
    if untyped:
        fail(f"{len(untyped)} untyped errors, e.g. {type(untyped[0]).__name__}: {untyped[0]}")
    answered = [o for o in outcomes if isinstance(o, RoutedResult)]
    errors = [o for o in outcomes if isinstance(o, ConfidenceRouterError)]
    if len(answered) + len(errors) != len(outcomes):
        fail("some outcome is neither an answer nor a typed error")
    s = router.stats
    expected = {
        "queries": len(outcomes),
        "answered_by_slm": sum(r.route == "slm" for r in answered),
        "escalations": sum(r.route == "llm" for r in answered),
        "errors": len(errors),
        "slm_failures": sum(r.slm_error is not None for r in answered)
        + sum("the SLM had failed too" in str(e) for e in errors),
    }
    for name, value in expected.items():
        if getattr(s, name) != value:
            fail(f"ledger {name}={getattr(s, name)} but the outcomes say {value}")
    for kind, hits in report.fault_hits.items():
        if hits == 0:
            fail(f"fault {kind} never fired: the mix did not happen")
    if not answered or not errors:
        fail("a run needs both answers and errors to test anything")
    if report.sockets_after > report.sockets_before:
        fail(f"open sockets grew: {report.sockets_before} -> {report.sockets_after}")
    if report.tasks_left:
        fail(f"{report.tasks_left} asyncio tasks left behind")
    if report.server_threads_left:
        fail(f"{report.server_threads_left} server connection threads still running")
    if report.rss_after_delta_mib > rss_margin_mib:
        fail(
            f"RSS stayed {report.rss_after_delta_mib:.1f} MiB above its level "
            f"(margin {rss_margin_mib} MiB)"
        )


async def run_load(
    server: OllamaTestServer,
    *,
    queries: int = 500,
    max_tokens: int = 2,
    warmup: int = 200,
    rss_margin_mib: float = 48.0,
) -> LoadReport:
    """Run the scenario against a started server; the faults are cleared afterwards."""

    def make_router() -> tuple[Router, OllamaSLM, OllamaSLM]:
        slm = OllamaSLM(SMOLLM2, host=server.host, max_tokens=max_tokens, timeout=300)
        fallback = OllamaSLM(
            GEMMA3, host=server.host, prompt_format="completion", max_tokens=max_tokens, timeout=300
        )
        return Router(slm, fallback, fallback_timeout=300), slm, fallback

    async def close(*models: OllamaSLM) -> None:
        for model in models:
            await model.aclose()
            model.close()

    def set_faults() -> dict[str, Any]:
        return {
            f"{kind}@{model}": server.faults.set(kind, model=model, rate=rate, **extra)
            for kind, model, rate, extra in FAULT_MIX
        }

    server.faults.clear()
    # Warm-up: the same mix at lower concurrency (models, llama.cpp buffers and Python's
    # arenas reach their working size: measured, the first run grows RSS by about
    # 60 MiB and the next ones by little), then the full concurrency once with every
    # request failing fast, so that connection pools and thread stacks have been seen.
    router, slm, fallback = make_router()
    set_faults()
    await _burst(router, warmup, max_tokens, offset=10_000)
    server.faults.clear()
    with server.faults.inject("status"):
        await _burst(router, queries, max_tokens, offset=20_000)
    await close(slm, fallback)
    await _settle(server, 0, within=5.0)
    rss_before = _trimmed_rss()
    sockets_before, tasks_before = open_sockets(), other_tasks()

    faults = set_faults()
    router, slm, fallback = make_router()
    peak = rss_bytes()
    started = time.perf_counter()
    burst = asyncio.ensure_future(_burst(router, queries, max_tokens))
    while not burst.done():
        peak = max(peak, rss_bytes())
        await asyncio.sleep(0.1)
    results = burst.result()
    wall = time.perf_counter() - started
    server.faults.clear()

    await close(slm, fallback)
    del slm, fallback, burst
    await _settle(server, sockets_before)
    rss_after = _trimmed_rss()
    latencies = [t for _, t in results]
    outcomes = [o for o, _ in results]
    report = LoadReport(
        queries=queries,
        max_tokens=max_tokens,
        wall_s=round(wall, 3),
        throughput_qps=round(queries / wall, 2),
        latency_p50_s=round(statistics.median(latencies), 3),
        latency_p95_s=round(_percentile(latencies, 0.95), 3),
        latency_max_s=round(max(latencies), 3),
        outcomes=dict(
            Counter("answer" if isinstance(o, RoutedResult) else type(o).__name__ for o in outcomes)
        ),
        routes=dict(Counter(o.route for o in outcomes if isinstance(o, RoutedResult))),
        ledger={k: v for k, v in router.stats.to_dict().items() if k != "tokens_by_model"},
        fault_hits={name: fault.hits for name, fault in faults.items()},
        sockets_before=sockets_before,
        sockets_after=open_sockets(),
        tasks_left=len(other_tasks() - tasks_before),
        server_threads_left=len(server.connection_threads()),
        rss_before_mib=round(rss_before / 2**20, 1),
        rss_peak_delta_mib=round((peak - rss_before) / 2**20, 1),
        rss_after_delta_mib=round((rss_after - rss_before) / 2**20, 1),
        machine={
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        },
    )
    _check(report, results, router, rss_margin_mib)
    return report


def _fallback_errors(report: LoadReport) -> int:
    return sum(v for k, v in report.outcomes.items() if k.startswith("Fallback"))


def write_results(report: LoadReport, directory: Path = RESULTS) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    data = asdict(report) | {"ok": report.ok}
    json_path = directory / "load_test.json"
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path = directory / "load_test.md"
    answers = report.outcomes.get("answer", 0)
    md_path.write_text(
        "# Load test\n\n"
        f"{report.queries} concurrent `Router.ainvoke` queries (all started at once), "
        f"SmolLM2-135M -> Gemma 3 270M over HTTP on the Ollama-compatible test server, "
        f"{report.max_tokens}-token answers, faults mixed in (see `FAULT_MIX` in "
        f"`bench/load_test.py`); {report.machine.get('cpus')} shared CPU cores, "
        f"load average {report.machine.get('load_average_1m_at_end')} at the end.\n\n"
        "| queries | wall (s) | throughput (q/s) | p50 latency (s) | p95 latency (s) "
        "| answers | typed errors | escalated | RSS after (MiB over start) |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
        f"| {report.queries} | {report.wall_s} | {report.throughput_qps} "
        f"| {report.latency_p50_s} | {report.latency_p95_s} | {answers} "
        f"| {report.queries - answers} | {report.routes.get('llm', 0)} "
        f"| {report.rss_after_delta_mib} |\n\n"
        f"Latency is measured from the common start, so it includes queueing behind "
        f"the other queries. Every check held: {report.ok}. "
        f"Fallback errors: {_fallback_errors(report)}.\n\n"
        f"Reproduce: `{report.command}` (or `./scripts/test -m load tests/load`).\n",
        encoding="utf-8",
    )
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--max-tokens", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    # The router warns once per SLM failure; hundreds are expected here.
    logging.getLogger("confidence_router").setLevel(logging.ERROR)
    with OllamaTestServer() as server:
        report = asyncio.run(run_load(server, queries=args.queries, max_tokens=args.max_tokens))
    summary = {k: v for k, v in asdict(report).items() if k not in ("machine",)}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    if not args.no_write:
        for path in write_results(report):
            sys.stdout.write(f"wrote {path.relative_to(ROOT)}\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

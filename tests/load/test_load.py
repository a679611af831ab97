"""The load test as a pytest test (marked ``load``: not in the default run).

Run it with ``./scripts/test -m load tests/load``. The scenario and its checks
live in ``bench/load_test.py``, which also records the figures in
``bench/results/`` when run as a script.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.ollama_server import OllamaTestServer

pytestmark = [pytest.mark.load, pytest.mark.allow_hosts(["127.0.0.1"])]


def _bench() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "bench" / "load_test.py"
    spec = importlib.util.spec_from_file_location("bench_load_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


async def test_500_concurrent_queries_each_get_exactly_one_outcome_and_leave_nothing_behind(
    ollama_server: OllamaTestServer,
) -> None:
    bench = _bench()
    report = await bench.run_load(ollama_server, queries=500, max_tokens=2)
    assert report.ok, "\n".join(report.failures)
    assert (
        report.outcomes.get("answer", 0)
        + sum(n for kind, n in report.outcomes.items() if kind != "answer")
        == 500
    )
    assert report.ledger["queries"] == 500

"""The cascade's ledger: per-stage counts, calls avoided, cost and the top-model-only baseline."""

from __future__ import annotations

import asyncio
import threading

import pytest

from confidence_router import CascadeResult, Decision, Generation, StageRecord, Usage
from confidence_router.observe.cascade_ledger import CascadeLedger

MODELS = ("tiny", "small", "large")


def _result(answered: int, *, fallback_error: str | None = None) -> CascadeResult:
    """A result answered at stage ``answered`` (3: the top model), 10+2 tokens per stage."""
    records = []
    for stage in range(1, answered + 1):
        outcome = "escalated" if stage < answered else ("answered" if stage == 3 else "kept")
        records.append(
            StageRecord(
                stage=stage,
                model=MODELS[stage - 1],
                outcome=outcome,  # type: ignore[arg-type]
                score=None if stage == 3 else 0.5,
                threshold=None if stage == 3 else 0.0,
                reason="r",
                usage=Usage(10, 2),
                latency_s=0.1 * stage,
                cost=float(stage),
                generation=Generation.without_logprobs("x", MODELS[stage - 1], usage=Usage(10, 2)),
                error="slm_error: down" if stage == 2 and answered == 3 else None,
            )
        )
    gen = records[-1].generation
    assert gen is not None
    return CascadeResult(
        text="x",
        decision=Decision("slm", 0.5, 0.0, {}, "r"),
        slm=gen,
        fallback=None,
        latency_s=1.0,
        usage_by_model={r.model: r.usage for r in records},
        cost=sum(r.cost for r in records),
        fallback_error=fallback_error,
        stages=tuple(records),
    )


def test_each_query_counts_once_at_every_stage_it_reached() -> None:
    ledger = CascadeLedger(MODELS)
    for answered in (1, 2, 2, 3):
        ledger.record(_result(answered), baseline_cost=3.0)
    ledger.record_error()
    ledger.record_cancelled()
    s = ledger.snapshot()
    assert (s.queries, s.answered, s.errors, s.cancelled) == (5, 4, 1, 1)
    assert s.answered_by_stage == (1, 2, 1)
    assert [x.reached for x in s.stages] == [4, 3, 1]
    assert [x.escalated for x in s.stages] == [3, 1, 0]
    assert [x.calls_avoided for x in s.stages] == [0, 1, 3]
    assert s.top_calls_avoided == 3
    assert [x.failures for x in s.stages] == [0, 1, 0]
    assert s.tokens_by_model["small"] == Usage(30, 6)
    assert dict(s.cost_by_model) == {"tiny": 4.0, "small": 6.0, "large": 3.0}
    assert s.cost == pytest.approx(13.0) and s.baseline_cost == pytest.approx(12.0)
    assert s.saved == pytest.approx(-1.0)
    data = s.to_dict()
    assert data["answered_by_stage"] == [1, 2, 1] and data["top_calls_avoided"] == 3


def test_a_rescued_answer_avoided_no_call_above_it() -> None:
    ledger = CascadeLedger(MODELS)
    ledger.record(_result(2, fallback_error="top failed"), baseline_cost=0.0)
    assert [x.calls_avoided for x in ledger.snapshot().stages] == [0, 0, 0]


def test_counts_survive_threads_and_tasks() -> None:
    ledger = CascadeLedger(MODELS)

    def work() -> None:
        for i in range(200):
            ledger.record(_result(1 + i % 3), baseline_cost=1.0)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()

    async def tasks() -> None:
        async def one(i: int) -> None:
            await asyncio.sleep(0)
            ledger.record(_result(1 + i % 3), baseline_cost=1.0)

        await asyncio.gather(*(one(i) for i in range(300)))

    asyncio.run(tasks())
    for t in threads:
        t.join()
    s = ledger.snapshot()
    assert s.queries == 1100
    assert sum(s.answered_by_stage) == 1100
    assert s.stages[0].reached == 1100
    assert s.baseline_cost == pytest.approx(1100.0)
    ledger.reset()
    assert ledger.snapshot().queries == 0 and ledger.snapshot().stages[0].reached == 0

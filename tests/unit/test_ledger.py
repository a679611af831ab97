"""The ledger's totals are exact under threads and asyncio, and prices are validated."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from confidence_router import ConfigurationError, Decision, Generation, Ledger, Price, Usage
from confidence_router.types import RoutedResult


def _result(route: str) -> RoutedResult:
    slm = Generation.without_logprobs("a", "small", usage=Usage(10, 2))
    fallback = (
        Generation.without_logprobs("b", "large", usage=Usage(10, 5)) if route == "llm" else None
    )
    usage = {"small": slm.usage} | ({"large": fallback.usage} if fallback else {})
    decision = Decision(route, 0.0, 0.0, {}, "test")  # type: ignore[arg-type]
    return RoutedResult("x", decision, slm, fallback, 0.1, usage, cost=1.0)


def test_ledger_counts_exactly_under_threads() -> None:
    ledger = Ledger()

    def work(i: int) -> None:
        ledger.record(_result("llm" if i % 4 == 0 else "slm"), baseline_cost=2.0)
        if i % 10 == 0:
            ledger.record_error()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(2000)))
    snap = ledger.snapshot()
    assert snap.queries == 2000 + 200
    assert snap.escalations == 500 and snap.answered_by_slm == 1500
    assert snap.fallback_calls_avoided == 1500
    assert snap.errors == 200
    assert snap.tokens_by_model["small"] == Usage(20000, 4000)
    assert snap.tokens_by_model["large"] == Usage(5000, 2500)
    assert snap.cost == pytest.approx(2000.0)
    assert snap.saved == pytest.approx(2000.0)
    assert snap.escalation_rate == pytest.approx(0.25)


async def test_ledger_counts_exactly_under_asyncio() -> None:
    ledger = Ledger()

    async def work(i: int) -> None:
        await asyncio.sleep(0)
        ledger.record(_result("slm"), baseline_cost=0.5)

    await asyncio.gather(*(work(i) for i in range(500)))
    assert ledger.snapshot().queries == 500
    ledger.reset()
    assert ledger.snapshot().queries == 0


def test_price_computes_cost_per_million_tokens_and_rejects_negatives() -> None:
    assert Price(2.0, 10.0).cost(Usage(1_000_000, 100_000)) == pytest.approx(3.0)
    with pytest.raises(ConfigurationError, match="Price.output_per_million"):
        Price(1.0, -1.0)


def test_ledger_counts_the_consistency_band_separately_and_in_the_totals() -> None:
    """Samples drawn for self-consistency: their own counters, and the SLM's tokens too."""
    from confidence_router.types import ConsistencyCheck

    samples = tuple(Generation.without_logprobs("a", "small", usage=Usage(p, 3)) for p in (1, 0, 0))
    check = ConsistencyCheck(
        samples,
        agreeing=1,
        agreement=1 / 3,
        mean_f1=0.5,
        keep=False,
        usage=Usage(1, 9),
        policy_route="slm",
    )
    slm = Generation.without_logprobs("a", "small", usage=Usage(10, 2))
    fallback = Generation.without_logprobs("b", "large", usage=Usage(10, 5))
    decision = Decision("llm", 0.1, 0.0, {}, "escalated: 1 of 3 samples agree", consistency=check)
    usage = {"small": slm.usage + check.usage, "large": fallback.usage}
    ledger = Ledger()
    ledger.record(
        RoutedResult("b", decision, slm, fallback, 0.1, usage, 1.0), 2.0, consistency_cost=0.25
    )
    ledger.record(_result("slm"), baseline_cost=2.0)  # no samples: no consistency counts
    snap = ledger.snapshot()
    assert snap.consistency_checks == 1 and snap.consistency_changed == 1
    assert (snap.consistency_prompt_tokens, snap.consistency_completion_tokens) == (1, 9)
    assert snap.consistency_tokens == 10 and snap.consistency_cost == 0.25
    assert snap.tokens_by_model["small"] == Usage(10 + 1 + 10, 2 + 9 + 2)
    assert snap.cost == 2.0  # the samples' cost is inside the query's cost, not added twice
    assert snap.to_dict()["consistency"] == {
        "checks": 1,
        "changed": 1,
        "prompt_tokens": 1,
        "completion_tokens": 9,
        "tokens": 10,
        "cost": 0.25,
    }
    kept = ConsistencyCheck(samples, 3, 1.0, 1.0, keep=True, policy_route="slm")
    assert not kept.changed and check.changed


# -- unknown is not zero ---------------------------------------------------------------------


def test_an_unreported_count_is_carried_as_unknown_through_sums() -> None:
    unknown_prompt = Usage.reported(None, 4)  # e.g. a stream without a usage chunk
    assert (unknown_prompt.prompt_tokens, unknown_prompt.prompt_unknown_calls) == (0, 1)
    assert not unknown_prompt.exact and Usage(3, 4).exact
    total = unknown_prompt + Usage(10, 2)
    assert total == Usage(10, 6, prompt_unknown_calls=1)
    assert total.to_dict() == {
        "prompt_tokens": None,
        "completion_tokens": 6,
        "prompt_tokens_known": 10,
        "prompt_unknown_calls": 1,
    }
    assert Usage(3, 4).to_dict() == {"prompt_tokens": 3, "completion_tokens": 4}
    assert unknown_prompt.describe() == "unknown prompt + 4 completion tokens"
    assert total.describe() == ">= 10 prompt (1 call(s) unreported) + 6 completion tokens"


def test_the_ledger_shows_unknown_counts_as_null_and_says_its_costs_leave_them_out() -> None:
    ledger = Ledger()
    slm = Generation.without_logprobs("a", "small", usage=Usage.reported(None, 2))
    decision = Decision("slm", 0.0, 0.0, {}, "test")
    ledger.record(RoutedResult("a", decision, slm, None, 0.1, {"small": slm.usage}, 0.0), 0.0)
    snap = ledger.snapshot()
    assert snap.unknown_token_calls == 1 and not snap.costs_exact
    shown = snap.to_dict()
    assert shown["costs_exact"] is False
    assert shown["tokens_by_model"] == {
        "small": {
            "prompt_tokens": None,
            "completion_tokens": 2,
            "prompt_tokens_known": 0,
            "prompt_unknown_calls": 1,
        }
    }
    routing = RoutedResult("a", decision, slm, None, 0.1, {"small": slm.usage}, 0.0).to_dict()
    assert routing["cost_exact"] is False
    assert routing["usage"] == shown["tokens_by_model"]
    assert _result("slm").to_dict().get("cost_exact", True) is True  # exact: no flag


def test_a_cancelled_query_counts_outside_queries() -> None:
    ledger = Ledger()
    ledger.record_cancelled()
    snap = ledger.snapshot()
    assert (snap.queries, snap.cancelled) == (0, 1)
    assert snap.to_dict()["cancelled"] == 1


def test_the_rag_summary_says_when_costs_leave_unknown_counts_out() -> None:
    pytest.importorskip("rich")
    from confidence_router_rag.display import Display, Summary

    ledger = Ledger()
    slm = Generation.without_logprobs("a", "small", usage=Usage.reported(None, 2))
    decision = Decision("slm", 0.0, 0.0, {}, "test")
    ledger.record(RoutedResult("a", decision, slm, None, 0.1, {"small": slm.usage}, 0.0), 0.0)
    summary = Summary.build([], ledger.snapshot(), 0.0, 0.0, 0.0)
    assert summary.unknown_token_calls == 1
    display = Display(machine=False, progress=False)
    prices = {p: {"input_per_million": 0.0, "output_per_million": 0.0} for p in ("slm", "fallback")}
    with display.out.capture() as captured:
        display.summary(summary, prices)
    assert "unknown for 1 model call(s)" in captured.get()


@pytest.mark.parametrize("recent", [-1, 2.5, True, "200"])
def test_a_bad_recent_window_fails_naming_the_field(recent: object) -> None:
    with pytest.raises(ConfigurationError, match="recent: must be an int >= 0"):
        Ledger(recent)  # type: ignore[arg-type]


def test_a_zero_recent_window_keeps_no_recent_precision() -> None:
    ledger = Ledger(recent=0)
    ledger.record_shadow("agree")
    snap = ledger.snapshot()
    assert snap.kept_precision == 1.0 and snap.recent_kept_precision is None

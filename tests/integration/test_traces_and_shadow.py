"""Recording traffic as traces and shadow-checking kept answers, with real models.

SmolLM2 answers in process; Gemma 3 is the fallback, in process or over HTTP
through the Ollama-compatible test server (whose ``stall`` switch makes it hang).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from confidence_router import (
    Bound,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    OpenAICompatibleSLM,
    Price,
    RoutedResult,
    Router,
    ThresholdPolicy,
    compute_signals,
    save_policy,
)
from confidence_router.calibration import labelled_traces
from confidence_router.observe.recorder import EVAL_KEYS, TraceRecorder, build_record
from tests.support.leaks import client_connections, settled_client_connections, wait_until
from tests.support.ollama_server import OllamaTestServer

ROOT = Path(__file__).resolve().parents[2]
GEMMA3 = "gemma3:270m"
TOKENS = 16  # room for a whole answer: a cut-off answer escalates whatever the policy
MARKER = "Zanzibarquux"
QUESTION = [Message("user", f"{MARKER}: what is the capital of France? Answer in a few words.")]
#: every real answer is kept (length <= 1000), or every one escalates (length <= 0)
KEEP = ThresholdPolicy((Bound("length", max=1000),))
ALWAYS_LLM = ThresholdPolicy((Bound("length", max=0),))


def eval_record() -> dict[str, Any]:
    """A committed evaluation trace with a real (non-perfect) fallback."""
    path = ROOT / "bench" / "results" / "traces" / "squad_v1.jsonl"
    with path.open(encoding="utf-8") as handle:
        return dict(json.loads(handle.readline()))


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


@pytest.fixture
def gemma_http(ollama_host: str) -> Iterator[OllamaSLM]:
    fallback = OllamaSLM(
        GEMMA3, host=ollama_host, prompt_format="completion", max_tokens=TOKENS, timeout=60
    )
    yield fallback
    fallback.close()


# -- the trace recorder ----------------------------------------------------------------------


def test_records_have_the_evaluation_schema_and_the_real_signals(
    tmp_path: Path, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    path = tmp_path / "traces.jsonl"
    recorder = TraceRecorder(path)
    kept_router = Router(smollm2_slm, gemma3_slm, KEEP, trace=recorder)
    kept = kept_router.invoke(QUESTION, max_tokens=TOKENS)
    escalated = Router(smollm2_slm, gemma3_slm, ALWAYS_LLM, trace=recorder).invoke(
        QUESTION, max_tokens=TOKENS
    )
    assert recorder.flush()
    kept_rec, esc_rec = lines(path)
    reference = eval_record()
    real_fallback = reference["fallbacks"]["smollm2-135m"]
    for record, result in ((kept_rec, kept), (esc_rec, escalated)):
        assert set(EVAL_KEYS) == set(reference)
        assert set(record) == set(reference) | {"routing", "label", "time"}
        assert set(record["slm"]) == set(reference["slm"])
        assert record["routing"]["route"] == result.route
        assert record["slm"]["signals"] == pytest.approx(compute_signals(result.slm).as_dict())
        assert record["slm"]["logprobs"] == pytest.approx(list(result.slm.token_logprobs), abs=1e-4)
        assert record["slm"]["completion_tokens"] == result.slm.usage.completion_tokens
        assert record["config"] == {
            "slm": "smollm2-135m",
            "prompt": "router",
            "top_k": 5,
            "max_tokens": TOKENS,
        }
    assert kept_rec["fallbacks"] == {}
    assert set(esc_rec["fallbacks"]["gemma3-270m"]) == set(real_fallback)
    # an escalated answer is labelled by agreement, whether or not it was audited
    assert esc_rec["label"]["source"] == "escalation" and esc_rec["label"]["audit"] is False
    assert kept_rec["label"]["source"] is None
    recorder.close()


def test_by_default_no_prompt_or_answer_text_is_written(
    tmp_path: Path, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    private, verbose = tmp_path / "private.jsonl", tmp_path / "verbose.jsonl"
    results: list[RoutedResult] = []
    for path, store in ((private, False), (verbose, True)):
        with Router(
            smollm2_slm,
            gemma3_slm,
            ALWAYS_LLM,
            trace=TraceRecorder(path, store_text=store),
            early_abort=False,  # the whole SLM answer, not one token stopped early
        ) as router:
            results.append(router.invoke(QUESTION, max_tokens=TOKENS))
    text = private.read_text("utf-8")
    assert MARKER not in text
    result = results[0]
    for answer in (result.slm.text.strip(), result.text.strip()):  # type: ignore[union-attr]
        assert len(answer) >= 4 and json.dumps(answer)[1:-1] not in text
    record = lines(private)[0]
    assert record["question"] is None and record["slm"]["tokens"] is None
    assert record["slm"]["raw"] is None and record["meta"] == {}
    shown = lines(verbose)[0]
    assert MARKER in shown["question"] and shown["slm"]["raw"] == results[1].slm.text  # type: ignore[union-attr]


def test_trace_files_rotate_by_size(tmp_path: Path, smollm2_slm: LlamaCppSLM) -> None:
    path = tmp_path / "traces.jsonl"
    result = Router(smollm2_slm, smollm2_slm, KEEP).invoke(QUESTION, max_tokens=TOKENS)
    one = len(json.dumps(build_record(result, None, store_text=False, dataset="x")))
    recorder = TraceRecorder(path, max_bytes=3 * one + 100, backups=2)
    for _ in range(12):
        recorder.write(build_record(result, None, store_text=False, dataset="x"))
    recorder.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["traces.jsonl", "traces.jsonl.1", "traces.jsonl.2"]
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert 0 < size <= 3 * one + 100
        assert all(r["dataset"] == "x" for r in lines(tmp_path / name))
    assert recorder.written == 12 and not recorder.stopped


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_a_full_disk_warns_once_and_stops_recording_while_queries_go_on(
    smollm2_slm: LlamaCppSLM, caplog: pytest.LogCaptureFixture
) -> None:
    """Every write to /dev/full fails with ENOSPC, as on a full disk."""
    recorder = TraceRecorder("/dev/full")
    router = Router(smollm2_slm, smollm2_slm, KEEP, trace=recorder)
    with caplog.at_level(logging.WARNING, logger="confidence_router"):
        first = router.invoke(QUESTION, max_tokens=TOKENS)
        assert wait_until(lambda: recorder.stopped, within=10)
        second = router.invoke(QUESTION, max_tokens=TOKENS)
        router.close()
    assert first.text and second.text and router.stats.answered_by_slm == 2
    warnings = [r for r in caplog.records if "trace recorder" in r.getMessage()]
    assert len(warnings) == 1
    assert "disk full" in warnings[0].getMessage()
    assert recorder.error is not None and "No space left" in recorder.error
    assert recorder.written == 0


def test_router_loads_a_policy_file_by_path(tmp_path: Path, smollm2_slm: LlamaCppSLM) -> None:
    path = tmp_path / "policy.json"
    save_policy(ALWAYS_LLM, path)
    router = Router(smollm2_slm, smollm2_slm, str(path))
    assert router.policy == ALWAYS_LLM
    assert router.invoke(QUESTION, max_tokens=TOKENS).route == "llm"


# -- shadow checks ---------------------------------------------------------------------------


def test_shadow_checks_label_kept_answers_and_appear_in_the_ledger(
    tmp_path: Path, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    path = tmp_path / "traces.jsonl"
    router = Router(
        smollm2_slm,
        gemma3_slm,
        KEEP,
        trace=path,
        shadow_rate=1.0,
        fallback_price=Price(1.0, 2.0),
    )
    for _ in range(2):
        assert router.invoke(QUESTION, max_tokens=TOKENS).route == "slm"
    assert router.monitor is not None and router.monitor.wait(120)
    stats = router.stats
    assert stats.shadow_checks == 2 and stats.answered_by_slm == 2
    assert stats.kept_precision in (0.0, 0.5, 1.0)
    low, high = stats.kept_precision_ci  # type: ignore[misc]
    assert low <= stats.kept_precision <= high  # type: ignore[operator]
    # the extra fallback calls are counted apart from the routed queries
    assert set(stats.shadow_tokens) == {"gemma3-270m"}
    assert "gemma3-270m" not in stats.tokens_by_model
    assert stats.shadow_cost > 0 and stats.cost == 0
    router.close()
    records = lines(path)
    assert [r["label"]["shadow"] for r in records] == ["done", "done"]
    assert all(r["label"]["source"] == "shadow" for r in records)
    assert all("gemma3-270m" in r["fallbacks"] for r in records)
    labelled = labelled_traces(records)
    assert labelled.source == "agreement" and labelled.n == 2
    assert stats.to_dict()["shadow"]["checks"] == 2  # type: ignore[index]


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_a_stalled_shadow_check_never_delays_the_answer_and_cancels_on_close(
    mode: str,
    tmp_path: Path,
    ollama_server: OllamaTestServer,
    smollm2_slm: LlamaCppSLM,
    gemma_http: OllamaSLM,
) -> None:
    port = ollama_server.port
    baseline = settled_client_connections(port)
    fault = ollama_server.faults.set("stall", seconds=30, model=GEMMA3)
    path = tmp_path / "traces.jsonl"
    router = Router(smollm2_slm, gemma_http, KEEP, trace=path, shadow_rate=1.0)
    started = time.perf_counter()
    if mode == "invoke":
        result = router.invoke(QUESTION, max_tokens=TOKENS)
    else:
        result = await router.ainvoke(QUESTION, max_tokens=TOKENS)
    waited = time.perf_counter() - started
    assert result.route == "slm"
    # the answer took the SLM's time, not the 30 s stall of the shadow fallback
    assert result.slm is not None and waited - result.slm.latency_s < 2.5
    assert wait_until(lambda: fault.hits == 1, within=10), "the shadow call reached the server"
    assert router.monitor is not None and router.monitor.pending == 1
    closing = time.perf_counter()
    await router.aclose()
    assert time.perf_counter() - closing < 10  # cancelled, not waited out (30 s)
    assert router.stats.shadow_cancelled == 1 and router.stats.shadow_checks == 0
    assert wait_until(lambda: client_connections(port) <= baseline, within=5.0)
    assert not [t for t in threading.enumerate() if t.name == "confidence-router-shadow"]
    (record,) = lines(path)
    assert record["label"]["shadow"] == "cancelled" and record["label"]["f1"] is None


async def test_async_judge_decides_agreement(
    tmp_path: Path, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    seen: list[tuple[str, str]] = []

    async def judge(messages: list[Message], slm_answer: str, fallback_answer: str) -> bool:
        await asyncio.sleep(0)
        seen.append((slm_answer, fallback_answer))
        return True

    router = Router(smollm2_slm, gemma3_slm, KEEP, trace=tmp_path / "t.jsonl", shadow_rate=1.0,
                    shadow_judge=judge)  # fmt: skip
    result = await router.ainvoke(QUESTION, max_tokens=TOKENS)
    assert router.monitor is not None and router.monitor.wait(120)
    await router.aclose()
    assert seen and seen[0][0] == result.text
    assert router.stats.kept_precision == 1.0
    (record,) = lines(tmp_path / "t.jsonl")
    assert record["label"]["source"] == "judge" and record["label"]["agree"] is True


def test_a_program_that_never_closes_the_router_still_writes_its_records(tmp_path: Path) -> None:
    """At interpreter exit the running shadow check is cancelled and its record written."""
    script = tmp_path / "script.py"
    script.write_text(
        "import sys\n"
        "from confidence_router import Bound, Router, ThresholdPolicy\n"
        "from tests.support.models import shared_slm\n"
        "slm = shared_slm('smollm2')\n"
        "keep = ThresholdPolicy((Bound('length', max=1000),))\n"
        "router = Router(slm, slm, keep, trace=sys.argv[1], shadow_rate=1.0)\n"
        "router.invoke('What is the capital of France? Answer in a few words.', max_tokens=16)\n"
    )
    trace = tmp_path / "traces.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(script), str(trace)], cwd=ROOT, env=env, timeout=300,
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = lines(trace)
    assert record["routing"]["route"] == "slm"
    assert record["label"]["shadow"] in ("done", "cancelled")


def test_shadow_checks_beyond_the_limit_are_skipped_and_counted(
    tmp_path: Path,
    ollama_server: OllamaTestServer,
    smollm2_slm: LlamaCppSLM,
    gemma_http: OllamaSLM,
) -> None:
    fault = ollama_server.faults.set("stall", seconds=30, model=GEMMA3)
    router = Router(smollm2_slm, gemma_http, KEEP, trace=tmp_path / "t.jsonl", shadow_rate=1.0)
    assert router.monitor is not None
    router.monitor.max_pending = 1
    for _ in range(2):
        assert router.invoke(QUESTION, max_tokens=TOKENS).route == "slm"
    assert wait_until(lambda: fault.hits == 1, within=10)
    assert router.stats.shadow_skipped == 1 and router.monitor.pending == 1
    router.close()
    shadows = sorted(r["label"]["shadow"] for r in lines(tmp_path / "t.jsonl"))
    assert shadows == ["cancelled", "skipped"]


# -- a count the server did not report is null in the record, never 0 -----------------------


SMOLLM2 = "smollm2:135m"


def test_an_unreported_token_count_is_recorded_as_null_not_zero(
    tmp_path: Path, ollama_server: OllamaTestServer, gemma3_slm: LlamaCppSLM
) -> None:
    """Three real ways a count goes unreported: an Ollama stream stopped early (no prompt
    count), a stream from a server that sends no usage (as llama-cpp-python's), and a
    failed SLM call (no counts at all). The counts that were reported stay numbers."""
    path = tmp_path / "traces.jsonl"
    recorder = TraceRecorder(path)
    host = ollama_server.host
    stopped = OllamaSLM(SMOLLM2, host=host, max_tokens=TOKENS, timeout=60)
    # length <= 2: the third token stops the stream early and the query escalates
    early = Router(stopped, gemma3_slm, ThresholdPolicy((Bound("length", max=2),)), trace=recorder)
    escalated = early.invoke(QUESTION, max_tokens=3)
    assert escalated.route == "llm" and escalated.slm is not None
    assert escalated.slm.finish_reason == "early_abort"
    no_usage = OpenAICompatibleSLM(
        SMOLLM2, base_url=f"{host}/v1", timeout=60, stream_usage=False, max_tokens=TOKENS
    )
    chunks = list(Router(no_usage, gemma3_slm, KEEP, trace=recorder).stream(QUESTION))
    kept = chunks[-1].result
    assert kept is not None and kept.route == "slm" and kept.slm is not None
    ollama_server.faults.set("status", status=500, model=SMOLLM2)
    failed = early.invoke(QUESTION, max_tokens=3)
    assert failed.route == "llm" and failed.slm is None and failed.slm_error
    assert recorder.flush()
    early_rec, kept_rec, failed_rec = lines(path)
    # stopped early: the prompt count is unknown; the 3 tokens it generated are counted
    assert early_rec["slm"]["prompt_tokens"] is None
    assert early_rec["slm"]["completion_tokens"] == len(escalated.slm.token_logprobs) == 3
    assert early_rec["routing"]["usage"][SMOLLM2]["prompt_tokens"] is None
    fallback = early_rec["fallbacks"]["gemma3-270m"]  # llama.cpp in process counts its own
    assert fallback["prompt_tokens"] > 0 and fallback["completion_tokens"] > 0
    # no usage in the stream: the prompt unknown, the completion from the logprob entries
    assert kept_rec["slm"]["prompt_tokens"] is None
    assert kept_rec["slm"]["completion_tokens"] == len(kept.slm.token_logprobs) > 0
    # the call failed: nothing is known about its tokens
    assert (failed_rec["slm"]["prompt_tokens"], failed_rec["slm"]["completion_tokens"]) == (
        None,
        None,
    )
    assert failed_rec["slm"]["error"] and failed_rec["fallbacks"]["gemma3-270m"]["prompt_tokens"]
    for record in (early_rec, kept_rec, failed_rec):
        assert set(record) >= set(EVAL_KEYS)  # the schema is unchanged: the keys stay
        assert {"prompt_tokens", "completion_tokens"} <= set(record["slm"])
    recorder.close()
    for slm in (stopped, no_usage):
        slm.close()

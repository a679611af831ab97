"""``confidence-router rag`` end to end on the real embedded models (and the Ollama test server).

Few questions per run: every answer is a real llama.cpp call on shared CPUs.
``--threshold`` forces a route where a test needs one (+1000: always escalate,
-1000: always keep the SLM's answer), so assertions do not depend on what
SmolLM2 happens to be sure of.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confidence_router_rag.cli import SCHEMA, Exit

pytestmark = pytest.mark.filterwarnings("ignore:.*langchain-community.*:DeprecationWarning")

RunRag = Callable[..., Any]  # the run_rag fixture: (*argv, stdin="") -> Run(code, out, err)

LATIN = "What is the Latin name for Black Death?"
RHINE = "What is the Rhine called in Dutch?"
ALWAYS_ESCALATE = ("--threshold", "1000")
NEVER_ESCALATE = ("--threshold", "-1000")

ANSWER_KEYS = {
    "question", "answer", "route", "answered_by", "score", "threshold", "reason",
    "latency_s", "sources", "input_tokens", "output_tokens", "signals", "slm_error",
    "expected", "right",
}  # fmt: skip
SUMMARY_KEYS = {
    "questions", "answered_locally", "escalated", "fallback_calls_avoided", "escalation_rate",
    "cost", "baseline_cost", "cost_saved", "index_time_s", "answer_time_s", "total_time_s",
    "mean_latency_s", "slm_judged", "slm_right", "fallback_judged", "fallback_right",
    "unknown_token_calls",
}  # fmt: skip


def _json(run: Any) -> dict[str, Any]:
    assert run.code == 0, run.err
    report: dict[str, Any] = json.loads(run.out)  # the whole of stdout is one document
    return report


@pytest.mark.disable_socket  # offline by default: any network access fails the test
def test_json_report_has_the_documented_schema(run_rag: RunRag, example_docs: Path) -> None:
    stdin = f"# a comment\n{LATIN}\n\n{RHINE}\n"
    report = _json(run_rag(example_docs, "--json", stdin=stdin))

    assert set(report) == {"schema", "documents", "models", "prices", "answers", "summary"}
    assert report["schema"] == SCHEMA
    docs = report["documents"]
    assert docs["folder"] == str(example_docs)
    assert docs["files"] == 6 and docs["chunks"] > 6
    assert (docs["retriever"], docs["k"]) == ("bm25", 3)
    assert report["models"]["slm"] == "smollm2-135m"
    assert "gemma" in report["models"]["fallback"]
    assert report["prices"]["fallback"] == {"input_per_million": 0.15, "output_per_million": 0.6}

    answers = report["answers"]
    assert [a["question"] for a in answers] == [LATIN, RHINE]
    for item in answers:
        assert set(item) == ANSWER_KEYS
        assert item["route"] in ("slm", "llm")
        assert isinstance(item["answer"], str) and item["answer"]
        assert item["latency_s"] > 0
        assert item["reason"]
        assert 1 <= len(item["sources"]) <= 3
        assert all(set(s) == {"source", "start_index"} for s in item["sources"])
        if item["route"] == "slm":
            assert item["answered_by"] == "smollm2-135m"
            assert item["score"] >= item["threshold"]
            assert set(item["signals"]) >= {"mean_logprob", "min_logprob", "mean_entropy"}
        else:
            assert "gemma" in item["answered_by"]
    assert answers[0]["sources"][0]["source"] == "black_death.txt"
    assert answers[1]["sources"][0]["source"] == "rhine.md"

    summary = report["summary"]
    assert set(summary) == SUMMARY_KEYS
    local = sum(a["route"] == "slm" for a in answers)
    assert summary["questions"] == 2
    assert summary["answered_locally"] == summary["fallback_calls_avoided"] == local
    assert summary["escalated"] == 2 - local
    assert summary["total_time_s"] >= summary["answer_time_s"] > 0


@pytest.mark.parametrize("route", ["slm", "llm"])
def test_forced_routes_and_the_savings_they_imply(
    run_rag: RunRag, example_docs: Path, route: str
) -> None:
    force = NEVER_ESCALATE if route == "slm" else ALWAYS_ESCALATE
    # room for SmolLM2's whole answer when it is kept: a cut-off answer always escalates
    budget = "48" if route == "slm" else "16"
    report = _json(run_rag(example_docs, "--json", "-q", LATIN, *force, "--max-tokens", budget))
    (item,) = report["answers"]
    summary = report["summary"]
    assert item["route"] == route
    assert item["answer"]  # Gemma too: the worked example keeps it from answering "\n"
    assert item["output_tokens"] > 0  # both models report usage, ChatLlamaCpp included
    if route == "slm":
        # The SLM is free by default: the whole fallback bill is saved.
        assert item["answered_by"] == "smollm2-135m"
        assert summary["fallback_calls_avoided"] == 1
        assert summary["cost"] == 0
        assert summary["baseline_cost"] > 0
        assert summary["cost_saved"] == pytest.approx(summary["baseline_cost"])
    else:
        assert "gemma" in item["answered_by"]
        assert item["reason"].startswith("unsure")
        assert summary["fallback_calls_avoided"] == 0
        assert summary["baseline_cost"] > 0
        assert summary["cost"] == pytest.approx(summary["baseline_cost"])
        assert summary["cost_saved"] == pytest.approx(0)


def test_failing_fallback_exits_8_and_writes_nothing(
    run_rag: RunRag, example_docs: Path, tmp_path: Path, dead_host: str
) -> None:
    output = tmp_path / "report.json"
    output.write_text("previous report\n")
    result = run_rag(
        example_docs, "-q", LATIN, "--json", "--output", output, "--max-tokens", "8",
        *ALWAYS_ESCALATE, "--fallback", "ollama:gemma3:270m", "--ollama-host", dead_host,
    )  # fmt: skip
    assert result.code == Exit.FALLBACK == 8
    assert "question 1" in result.err and "ollama:gemma3:270m" in result.err
    assert result.out == ""
    assert output.read_text() == "previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_ollama_slm_and_fallback_through_the_test_server(
    run_rag: RunRag, example_docs: Path, ollama_host: str
) -> None:
    """``--slm ollama:`` is the core OllamaSLM; ``--fallback ollama:`` goes through
    LangChain's init_chat_model (ChatOllama). Both talk HTTP to the test server."""
    report = _json(
        run_rag(
            example_docs,
            "--json",
            "-q",
            LATIN,
            *ALWAYS_ESCALATE,
            "--max-tokens",
            "16",
            "--slm",
            "ollama:smollm2:135m",
            "--fallback",
            "ollama:gemma3:270m",
            "--ollama-host",
            ollama_host,
        )  # fmt: skip
    )
    (item,) = report["answers"]
    about = report["models"].pop("policy_about")
    assert report["models"] == {
        "slm": "smollm2:135m",
        "fallback": "gemma3:270m",
        "policy": "smollm2-135m/extractive-qa",  # the shipped policy of the same model
        "policy_provenance": "fitted",
        "policy_type": "AveragePolicy",
    }
    assert about.startswith("default for smollm2:135m: SmolLM2-135M-Instruct answering")
    assert (item["route"], item["answered_by"]) == ("llm", "gemma3:270m")
    assert item["score"] is not None and item["signals"]  # the SLM was scored from its logprobs
    assert item["answer"]


def test_a_pdf_is_retrieved_with_its_page(
    run_rag: RunRag, tmp_path: Path, make_pdf: Callable[[str], bytes]
) -> None:
    (tmp_path / "vault.pdf").write_bytes(make_pdf("The vault code is 4721."))
    (tmp_path / "garden.md").write_text("# Garden\n\nThe roses bloom in June.\n")
    report = _json(run_rag(tmp_path, "--json", "-q", "What is the vault code?", *NEVER_ESCALATE))
    (item,) = report["answers"]
    assert item["sources"][0] == {"source": "vault.pdf", "start_index": 0, "page": 0}


def test_installed_script_end_to_end(example_docs: Path, tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "confidence-router"
    assert script.is_file(), "the console script is installed with the package"
    output = tmp_path / "report.json"
    env = {**os.environ, "COLUMNS": "100"}
    done = subprocess.run(
        [str(script), "rag", str(example_docs), "--output", str(output)],
        input=f"{LATIN}\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bars off a terminal, no llama.cpp chatter
    out = done.stdout
    assert out.startswith("Indexed 6 files")
    assert f"Q1 {LATIN}" in out
    assert out.count("why: ") == 1
    for row in ("Summary", "answered locally (SLM)", "fallback calls avoided", "cost saved"):
        assert row in out
    report = json.loads(output.read_text())
    assert [a["question"] for a in report["answers"]] == [LATIN]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_ollama_specs_with_a_url_name_their_server_for_slm_and_fallback(
    run_rag: RunRag, example_docs: Path, ollama_host: str
) -> None:
    """``ollama:MODEL@URL`` means the same for ``--fallback`` as for ``--slm``: that
    model on that server (no --ollama-host, no OLLAMA_HOST needed)."""
    report = _json(
        run_rag(
            example_docs,
            "--json",
            "-q",
            LATIN,
            *ALWAYS_ESCALATE,
            "--max-tokens",
            "16",
            "--slm",
            f"ollama:smollm2:135m@{ollama_host}",
            "--fallback",
            f"ollama:gemma3:270m@{ollama_host}",
        )  # fmt: skip
    )
    (item,) = report["answers"]
    assert (report["models"]["slm"], report["models"]["fallback"]) == (
        "smollm2:135m",
        "gemma3:270m",
    )
    assert (item["route"], item["answered_by"]) == ("llm", "gemma3:270m")
    assert item["answer"]


def test_openai_compatible_slm_and_fallback_through_the_test_server(
    run_rag: RunRag, example_docs: Path, ollama_host: str
) -> None:
    """``--slm openai:MODEL@URL`` is the core OpenAICompatibleSLM; ``--fallback
    openai:MODEL@URL`` is ChatOpenAI pointed at that URL. Both speak the test
    server's OpenAI-compatible /v1."""
    pytest.importorskip("langchain_openai")
    v1 = f"{ollama_host}/v1"
    report = _json(
        run_rag(
            example_docs,
            "--json",
            "-q",
            LATIN,
            *ALWAYS_ESCALATE,
            "--max-tokens",
            "16",
            "--slm",
            f"openai:smollm2:135m@{v1}",
            "--fallback",
            f"openai:gemma3:270m@{v1}",
        )  # fmt: skip
    )
    (item,) = report["answers"]
    assert report["models"]["slm"] == "smollm2:135m"
    assert (item["route"], item["answered_by"]) == ("llm", "gemma3:270m")
    assert item["score"] is not None and item["signals"]  # the SLM was scored from its logprobs
    assert item["answer"]


def test_unreachable_openai_compatible_slm_exits_7(
    run_rag: RunRag, example_docs: Path, dead_host: str
) -> None:
    result = run_rag(example_docs, "-q", LATIN, "--slm", f"openai:smollm2:135m@{dead_host}/v1")
    assert result.code == Exit.OLLAMA == 7
    assert "openai:smollm2:135m" in result.err and "cannot reach" in result.err


# not disable_socket: the shadow checks' event loop needs asyncio's self-pipe socketpair
def test_trace_and_shadow_checks_record_a_calibratable_trace(
    run_rag: RunRag, example_docs: Path, tmp_path: Path
) -> None:
    from confidence_router.calibration import labelled_traces

    trace = tmp_path / "traces.jsonl"
    report = _json(
        run_rag(example_docs, "--json", "-q", LATIN, *NEVER_ESCALATE, "--max-tokens", "48",
                "--trace", trace, "--shadow-rate", "1")
    )  # fmt: skip
    shadow = report["shadow"]
    assert shadow["checks"] == 1 and shadow["kept_precision"] in (0.0, 1.0)
    assert shadow["cost"] > 0 and report["summary"]["cost"] == 0  # counted apart
    (record,) = [json.loads(line) for line in trace.read_text().splitlines()]
    assert record["dataset"] == "rag" and record["question"] is None
    assert "Latin" not in trace.read_text()
    assert record["label"]["shadow"] == "done"
    assert labelled_traces([record]).n == 1

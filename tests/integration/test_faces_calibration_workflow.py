"""Both faces take a calibrated policy file, record traces and run shadow checks.

Real parts: SmolLM2 in process as the SLM; Gemma 3 over HTTP (the test server)
behind LangChain's ``ChatOllama`` and LlamaIndex's ``Ollama`` as the fallback.
The shadow checks run those clients on the router's own background event loop.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from confidence_router import Bound, LlamaCppSLM, ThresholdPolicy
from confidence_router.calibration import labelled_traces

MAX_TOKENS = 16  # room for SmolLM2's whole answer: a cut-off answer escalates
QUESTION = "What is the capital of France? Answer in a few words."
KEEP = ThresholdPolicy((Bound("length", max=1000),))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A policy file as ``confidence-router calibrate`` writes it: the policy plus its evidence."""
    path = tmp_path / "policy.json"
    data: dict[str, Any] = KEEP.to_dict()
    data["calibration"] = {"target": {"max_quality_loss": 0.05, "confidence": 0.9}}
    path.write_text(json.dumps(data))
    return path


def _check_trace(path: Path, stats: Any) -> None:
    assert stats.answered_by_slm == 1 and stats.shadow_checks == 1
    assert stats.kept_precision is not None
    (record,) = [json.loads(line) for line in path.read_text().splitlines()]
    assert record["routing"]["route"] == "slm" and record["label"]["shadow"] == "done"
    assert record["question"] is None  # privacy default
    assert labelled_traces([record]).source == "agreement"


def test_langchain_face_loads_the_policy_file_and_records(
    tmp_path: Path, policy_file: Path, ollama_host: str, smollm2_slm: LlamaCppSLM
) -> None:
    from langchain_ollama import ChatOllama

    from langchain_confidence_router import ConfidenceRouterChat

    trace = tmp_path / "lc.jsonl"
    llm = ConfidenceRouterChat(
        slm=smollm2_slm,
        fallback=ChatOllama(
            model="gemma3:270m", base_url=ollama_host, num_predict=MAX_TOKENS, temperature=0
        ),
        policy=str(policy_file),
        trace=str(trace),
        shadow_rate=1.0,
        max_tokens=MAX_TOKENS,
    )
    assert llm.router.policy == KEEP
    msg = llm.invoke(QUESTION)
    assert msg.response_metadata["routing"]["route"] == "slm"
    assert llm.router.monitor is not None and llm.router.monitor.wait(120)
    llm.router.close()
    _check_trace(trace, llm.stats)


def test_llamaindex_face_loads_the_policy_file_and_records(
    tmp_path: Path, policy_file: Path, ollama_host: str, smollm2_slm: LlamaCppSLM
) -> None:
    from llama_index.llms.ollama import Ollama

    from llamaindex_confidence_router import ConfidenceRouterLLM

    trace = tmp_path / "li.jsonl"
    llm = ConfidenceRouterLLM(
        smollm2_slm,
        Ollama(
            model="gemma3:270m",
            base_url=ollama_host,
            request_timeout=120.0,
            temperature=0.0,
            additional_kwargs={"num_predict": MAX_TOKENS},
        ),
        policy=policy_file,
        trace=trace,
        shadow_rate=1.0,
        num_output=MAX_TOKENS,
    )
    assert llm.router.policy == KEEP
    response = llm.complete(QUESTION)
    assert response.additional_kwargs["routing"]["route"] == "slm"
    assert llm.router.monitor is not None and llm.router.monitor.wait(120)
    llm.router.close()
    _check_trace(trace, llm.stats)


def test_faces_reject_a_bad_policy_path_naming_the_field(
    tmp_path: Path, smollm2_slm: LlamaCppSLM
) -> None:
    from confidence_router import ConfigurationError
    from llamaindex_confidence_router import ConfidenceRouterLLM, EmbeddedLLM

    with pytest.raises(ConfigurationError) as info:
        ConfidenceRouterLLM(
            smollm2_slm, EmbeddedLLM(smollm2_slm), policy=str(tmp_path / "missing.json")
        )
    assert info.value.field == "policy" and "missing.json" in str(info.value)

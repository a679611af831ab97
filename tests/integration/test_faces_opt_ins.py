"""The Router's opt-in features through both faces: hedged fallback and self-consistency.

SmolLM2 in process as the SLM; Gemma 3 on the test server behind LangChain's
``ChatOllama`` and LlamaIndex's ``Ollama`` as the fallback.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from langchain_ollama import ChatOllama
from llama_index.core.llms import ChatMessage
from llama_index.llms.ollama import Ollama

from confidence_router import (
    Bound,
    ConfigurationError,
    Hedge,
    LlamaCppSLM,
    SelfConsistency,
    ThresholdPolicy,
)
from langchain_confidence_router import ConfidenceRouterChat
from llamaindex_confidence_router import ConfidenceRouterLLM
from tests.support.fallbacks import llamaindex_gemma

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

GEMMA3 = "gemma3:270m"
# A short whole answer: a kept answer must end by itself (a cut-off one always escalates).
QUESTION = "What is the capital of France? Answer in a few words."
KEEP = ThresholdPolicy((Bound("length", max=100),))  # every whole answer here is kept
SHORT = ThresholdPolicy((Bound("length", max=2),))  # stopped at the 3rd token: escalated
SAMPLED = SelfConsistency(band=(-math.inf, math.inf), k=2, temperature=0.7)
HEDGED = Hedge(after_tokens=1)  # the grey zone is the whole score range
TOKENS = 16


def _chat_ollama(host: str) -> ChatOllama:
    return ChatOllama(model=GEMMA3, base_url=host, num_predict=TOKENS, temperature=0)


def _li_ollama(host: str) -> Ollama:
    return llamaindex_gemma(host, TOKENS)


def _sampled(routing: dict[str, Any]) -> None:
    assert "samples at temperature 0.7 decided" in routing["reason"]
    assert routing["consistency"]["k"] == 2
    assert len(routing["consistency"]["samples"]) == 2
    assert routing["consistency"]["completion_tokens"] > 0


def test_langchain_face_draws_samples_and_counts_them(
    smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    llm = ConfidenceRouterChat(
        slm=smollm2_slm,
        fallback=_chat_ollama(ollama_host),
        policy=KEEP,
        max_tokens=TOKENS,
        consistency=SAMPLED,
    )
    message = llm.invoke(QUESTION)
    routing = message.response_metadata["routing"]
    _sampled(routing)
    stats = llm.stats
    assert stats.consistency_checks == 1
    assert stats.consistency_completion_tokens == routing["consistency"]["completion_tokens"]
    # the samples are SLM work: in the SLM's token count beside the greedy answer
    slm_tokens = stats.tokens_by_model["smollm2-135m"].completion_tokens
    assert slm_tokens > stats.consistency_completion_tokens > 0
    plain = ConfidenceRouterChat(
        slm=smollm2_slm, fallback=_chat_ollama(ollama_host), policy=KEEP, max_tokens=TOKENS
    )
    assert "consistency" not in plain.invoke(QUESTION).response_metadata["routing"]
    assert plain.stats.consistency_checks == 0


async def test_langchain_face_hedges_async_calls(
    smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    llm = ConfidenceRouterChat(
        slm=smollm2_slm,
        fallback=_chat_ollama(ollama_host),
        policy=SHORT,
        max_tokens=TOKENS,
        hedge=HEDGED,
    )
    routing = (await llm.ainvoke(QUESTION)).response_metadata["routing"]
    assert routing["route"] == "llm" and routing["models"]["answered_by"] == GEMMA3
    assert "hedged: the fallback was started after 1 SLM tokens" in routing["reason"]


def test_llamaindex_face_draws_samples_and_counts_them(
    smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    llm = ConfidenceRouterLLM(
        smollm2_slm, _li_ollama(ollama_host), policy=KEEP, num_output=TOKENS, consistency=SAMPLED
    )
    response = llm.chat([ChatMessage(role="user", content=QUESTION)])
    routing = response.additional_kwargs["routing"]
    _sampled(routing)
    assert llm.stats.consistency_checks == 1


async def test_llamaindex_face_hedges_async_calls(
    smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    llm = ConfidenceRouterLLM(
        smollm2_slm, _li_ollama(ollama_host), policy=SHORT, num_output=TOKENS, hedge=HEDGED
    )
    response = await llm.achat([ChatMessage(role="user", content=QUESTION)])
    routing = response.additional_kwargs["routing"]
    assert routing["route"] == "llm" and routing["models"]["answered_by"] == GEMMA3
    assert "hedged: the fallback was started after 1 SLM tokens" in routing["reason"]


@pytest.mark.parametrize("field", ["hedge", "consistency"])
def test_faces_refuse_a_wrong_opt_in_naming_the_field(
    field: str, smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    with pytest.raises(ConfigurationError, match=f"^{field}: "):
        ConfidenceRouterChat(slm=smollm2_slm, fallback=_chat_ollama(ollama_host), **{field: 0.5})
    with pytest.raises(ConfigurationError, match=f"^{field}: "):
        ConfidenceRouterLLM(smollm2_slm, _li_ollama(ollama_host), **{field: 0.5})

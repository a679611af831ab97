"""Early abort through both faces: the first streamed piece carries the routing, reason included.

SmolLM2 in process as the SLM; Gemma 3 on the test server behind LangChain's
``ChatOllama`` and LlamaIndex's ``Ollama`` as the fallback.
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_ollama import ChatOllama
from llama_index.core.llms import ChatMessage

from confidence_router import Bound, LlamaCppSLM, ThresholdPolicy
from langchain_confidence_router import ConfidenceRouterChat
from llamaindex_confidence_router import ConfidenceRouterLLM
from tests.support.fallbacks import llamaindex_gemma

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

STORY = "Write a long story about a dragon who learns to cook. Begin now."
SHORT = ThresholdPolicy((Bound("length", max=3),))  # the story passes 3 tokens: stop at 4
TOKENS = 8
GEMMA3 = "gemma3:270m"


def _check(routing: dict[str, Any]) -> None:
    assert routing["route"] == "llm"
    assert routing["reason"].startswith("unsure: length 4 > 3")
    assert "early abort after 4 SLM tokens" in routing["reason"]
    assert routing["models"]["answered_by"] == GEMMA3
    assert routing["signals"]["length"] == 4


@pytest.mark.parametrize("mode", ["invoke", "stream", "astream"])
async def test_langchain_face_stops_the_slm_early(
    mode: str, smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    fallback = ChatOllama(model=GEMMA3, base_url=ollama_host, num_predict=TOKENS, temperature=0)
    llm = ConfidenceRouterChat(slm=smollm2_slm, fallback=fallback, policy=SHORT, max_tokens=64)
    if mode == "invoke":
        _check(llm.invoke(STORY).response_metadata["routing"])
    else:
        if mode == "stream":
            chunks = list(llm.stream(STORY))
        else:
            chunks = [c async for c in llm.astream(STORY)]
        first = chunks[0]
        assert "routing" in first.response_metadata, "the decision must come with the first chunk"
        _check(first.response_metadata["routing"])
    assert llm.stats.tokens_by_model["smollm2-135m"].completion_tokens == 4
    off = ConfidenceRouterChat(
        slm=smollm2_slm, fallback=fallback, policy=SHORT, max_tokens=TOKENS, early_abort=False
    )
    routing = off.invoke(STORY).response_metadata["routing"]
    assert routing["route"] == "llm" and "early abort" not in routing["reason"]
    assert off.stats.tokens_by_model["smollm2-135m"].completion_tokens == TOKENS


@pytest.mark.parametrize("mode", ["chat", "stream_chat", "astream_chat"])
async def test_llamaindex_face_stops_the_slm_early(
    mode: str, smollm2_slm: LlamaCppSLM, ollama_host: str
) -> None:
    fallback = llamaindex_gemma(ollama_host, TOKENS)
    llm = ConfidenceRouterLLM(smollm2_slm, fallback, policy=SHORT, num_output=64)
    messages = [ChatMessage(role="user", content=STORY)]
    if mode == "chat":
        _check(llm.chat(messages).additional_kwargs["routing"])
    else:
        if mode == "stream_chat":
            pieces = list(llm.stream_chat(messages))
        else:
            pieces = [r async for r in await llm.astream_chat(messages)]
        _check(pieces[0].additional_kwargs["routing"])
    assert llm.stats.tokens_by_model["smollm2-135m"].completion_tokens == 4
    off = ConfidenceRouterLLM(
        smollm2_slm, fallback, policy=SHORT, num_output=TOKENS, early_abort=False
    )
    routing = off.chat(messages).additional_kwargs["routing"]
    assert routing["route"] == "llm" and "early abort" not in routing["reason"]

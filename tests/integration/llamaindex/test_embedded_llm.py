"""EmbeddedLLM: the in-process Gemma 3 270M as a LlamaIndex LLM, alone and as the
router's fallback (the configuration of examples/llamaindex_query_engine.py)."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from confidence_router import LlamaCppSLM, Message
from llamaindex_confidence_router import EmbeddedLLM

PROMPT = "Question: What is the capital of France?\nAnswer:"
CHAT = [ChatMessage(role=MessageRole.USER, content=PROMPT)]


@pytest.fixture(scope="module")
def gemma(gemma3_slm: LlamaCppSLM) -> EmbeddedLLM:
    return EmbeddedLLM(gemma3_slm, num_output=12)


def check_answer(final: Any, text: str, slm: LlamaCppSLM) -> None:
    usage = final.raw["usage"]
    assert usage["prompt_tokens"] == len(slm.tokenize_prompt([Message("user", PROMPT)]))
    assert 0 < usage["completion_tokens"] <= 12
    assert final.logprobs is not None and len(final.logprobs) == usage["completion_tokens"]
    assert all(p[0].logprob <= 0 for p in final.logprobs)
    assert text.strip()


def test_every_method_answers_with_logprobs_and_usage(
    gemma: EmbeddedLLM, gemma3_slm: LlamaCppSLM
) -> None:
    chat = gemma.chat(CHAT)
    complete = gemma.complete(PROMPT)
    assert chat.message.content == complete.text  # one user message either way
    check_answer(chat, complete.text, gemma3_slm)
    check_answer(complete, complete.text, gemma3_slm)
    pieces = list(gemma.stream_complete(PROMPT))
    assert "".join(p.delta for p in pieces) == pieces[-1].text == complete.text
    check_answer(pieces[-1], pieces[-1].text, gemma3_slm)
    chat_pieces = list(gemma.stream_chat(CHAT))
    assert chat_pieces[-1].message.content == complete.text


async def test_async_methods_match_the_sync_ones(gemma: EmbeddedLLM) -> None:
    expected = gemma.complete(PROMPT).text
    assert (await gemma.achat(CHAT)).message.content == expected
    assert (await gemma.acomplete(PROMPT)).text == expected
    pieces = [p async for p in await gemma.astream_complete(PROMPT)]
    assert "".join(p.delta for p in pieces) == expected
    chat_pieces = [p async for p in await gemma.astream_chat(CHAT)]
    assert chat_pieces[-1].message.content == expected


async def test_as_the_routers_fallback_it_answers_escalations(
    smollm2_slm: LlamaCppSLM, gemma: EmbeddedLLM, make_router: Any, escalate_policy: Any
) -> None:
    llm = make_router(smollm2_slm, gemma, escalate_policy)
    assert llm.metadata.context_window == min(smollm2_slm.n_ctx, gemma.context_window)
    response = await llm.acomplete(PROMPT)
    routing = response.additional_kwargs["routing"]
    assert routing["route"] == "llm"
    assert routing["models"] == {
        "slm": smollm2_slm.model,
        "llm": gemma3_model(gemma),
        "answered_by": gemma3_model(gemma),
    }
    assert response.text == gemma.complete(PROMPT).text
    pieces = list(llm.stream_complete(PROMPT))
    assert "".join(p.delta for p in pieces) == response.text
    assert llm.stats.escalations == 2


def gemma3_model(gemma: EmbeddedLLM) -> str:
    return gemma.metadata.model_name

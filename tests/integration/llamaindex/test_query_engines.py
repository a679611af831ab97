"""The router as the generator of real LlamaIndex query and chat engines.

Documents: SQuAD v1.1 contexts; retrieval: BM25 (offline, no embedding model);
SLM: SmolLM2-135M in process; fallback: LlamaIndex's ``Ollama`` LLM on the test
server (Gemma 3 270M). Query engines return text only, so every check of the route
goes through a real instrumentation handler on the root dispatcher.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core import Settings, SummaryIndex
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.chat_engine import CondensePlusContextChatEngine
from llama_index.core.instrumentation.events.llm import (
    LLMChatStartEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.llms import LLM, ChatMessage
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import BaseNode
from llama_index.retrievers.bm25 import BM25Retriever

from llamaindex_confidence_router import ConfidenceRouterLLM

QUESTION = "Which NFL team represented the NFC at Super Bowl 50?"
FOLLOW_UP = "Where was that game played?"
MODES = ["compact", "refine", "tree_summarize"]
#: LLM calls each response mode makes for two retrieved chunks that fit one prompt.
CALLS = {"compact": 1, "refine": 2, "tree_summarize": 1}


def _end_text(event: Any) -> str:
    response = event.response
    return response.message.content if hasattr(response, "message") else response.text


def check_routed_calls(
    recorder: Any, llm: ConfidenceRouterLLM, queries_before: int, answer: str, expected: int
) -> None:
    """Every LLM call of the engine went through the router and said which model answered."""
    ends = recorder.routed_ends()
    decisions = recorder.routing_decisions()
    assert len(ends) == len(decisions) == expected
    assert llm.stats.queries - queries_before == expected
    for end, decision in zip(ends, decisions):
        routing = end.response.additional_kwargs["routing"]
        assert routing == decision.routing
        assert routing["route"] in ("slm", "llm")
        assert routing["models"]["answered_by"] == (
            routing["models"]["slm"] if routing["route"] == "slm" else "gemma3:270m"
        )
        assert end.response.raw["usage"]["total_tokens"] > 0
    assert answer == _end_text(ends[-1])  # the engine's answer is the last routed answer


def check_sources(source_nodes: list[Any]) -> None:
    assert len(source_nodes) == 2
    assert source_nodes[0].node.metadata["title"] == "Super_Bowl_50"


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("mode", MODES)
def test_query_engine_sync(
    retriever: BM25Retriever,
    router_llm: ConfidenceRouterLLM,
    recorder: Any,
    mode: str,
    streaming: bool,
) -> None:
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=router_llm, response_mode=mode, streaming=streaming
    )
    before = router_llm.stats.queries
    response = engine.query(QUESTION)
    if streaming:
        assert isinstance(response, StreamingResponse)
        answer = "".join(response.response_gen)
    else:
        assert isinstance(response, Response)
        answer = response.response or ""
    check_sources(response.source_nodes)
    check_routed_calls(recorder, router_llm, before, answer, CALLS[mode])


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("mode", MODES)
async def test_query_engine_async(
    retriever: BM25Retriever,
    router_llm: ConfidenceRouterLLM,
    recorder: Any,
    mode: str,
    streaming: bool,
) -> None:
    engine = RetrieverQueryEngine.from_args(
        retriever, llm=router_llm, response_mode=mode, streaming=streaming
    )
    before = router_llm.stats.queries
    response = await engine.aquery(QUESTION)
    if streaming:
        assert isinstance(response, AsyncStreamingResponse)
        answer = "".join([piece async for piece in response.async_response_gen()])
    else:
        assert isinstance(response, Response)
        answer = response.response or ""
    check_sources(response.source_nodes)
    check_routed_calls(recorder, router_llm, before, answer, CALLS[mode])


@pytest.fixture
def router_as_settings_llm(router_llm: ConfidenceRouterLLM) -> Iterator[ConfidenceRouterLLM]:
    previous = Settings._llm
    Settings.llm = router_llm
    try:
        yield router_llm
    finally:
        Settings._llm = previous


def test_settings_llm_is_used_by_engines_built_without_llm(
    retriever: BM25Retriever, router_as_settings_llm: ConfidenceRouterLLM, recorder: Any
) -> None:
    assert Settings.llm is router_as_settings_llm
    engine = RetrieverQueryEngine.from_args(retriever, response_mode="compact")
    before = router_as_settings_llm.stats.queries
    response = engine.query(QUESTION)
    check_routed_calls(recorder, router_as_settings_llm, before, response.response or "", 1)


def test_index_as_query_engine_with_llm_argument_and_with_settings(
    nodes: list[BaseNode],
    router_llm: ConfidenceRouterLLM,
    recorder: Any,
    router_as_settings_llm: ConfidenceRouterLLM,
) -> None:
    # A real index over one article's chunks (a summary index needs no embeddings).
    article = [n for n in nodes if n.metadata["title"] == "Super_Bowl_50"]
    index = SummaryIndex(article)
    before = router_llm.stats.queries
    first = index.as_query_engine(llm=router_llm).query(QUESTION)
    second = index.as_query_engine().query(QUESTION)  # Settings.llm
    assert first.response == second.response  # same router, greedy models
    ends = recorder.routed_ends()
    assert len(ends) == router_llm.stats.queries - before >= 2
    assert [_end_text(e) for e in ends][-1] == second.response


def _chat_engine(retriever: BM25Retriever, llm: LLM) -> CondensePlusContextChatEngine:
    return CondensePlusContextChatEngine.from_defaults(
        retriever=retriever, llm=llm, system_prompt="Answer in one short sentence."
    )


def check_second_turn_saw_the_first(recorder: Any, first_answer: str) -> None:
    """Turn 2 condenses the question with the history, then answers with the history."""
    calls = recorder.router_starts()[-2:]
    condense, answer = calls
    assert isinstance(condense, LLMCompletionStartEvent)
    assert QUESTION in condense.prompt and FOLLOW_UP in condense.prompt
    assert isinstance(answer, LLMChatStartEvent)
    turns = [(m.role.value, m.content) for m in answer.messages]
    assert ("user", QUESTION) in turns
    assert ("assistant", first_answer) in turns
    assert answer.messages[0].role.value == "system"


def test_chat_engine_two_turns_sync_then_streamed(
    retriever: BM25Retriever, router_llm: ConfidenceRouterLLM, recorder: Any
) -> None:
    engine = _chat_engine(retriever, router_llm)
    before = router_llm.stats.queries
    first = engine.chat(QUESTION)
    assert first.response
    streamed = engine.stream_chat(FOLLOW_UP)
    answer = "".join(streamed.response_gen)
    history: list[ChatMessage] = engine.chat_history
    assert [m.role.value for m in history] == ["user", "assistant", "user", "assistant"]
    # LlamaIndex's chat memory keeps a streamed answer stripped of surrounding white space
    assert history[1].content == first.response and history[3].content == answer.strip()
    check_second_turn_saw_the_first(recorder, first.response)
    # turn 1: answer; turn 2: condense the question with the history, then answer
    check_routed_calls(recorder, router_llm, before, answer, 3)


async def test_chat_engine_two_turns_async_then_streamed(
    retriever: BM25Retriever, router_llm: ConfidenceRouterLLM, recorder: Any
) -> None:
    engine = _chat_engine(retriever, router_llm)
    before = router_llm.stats.queries
    first = await engine.achat(QUESTION)
    assert first.response
    streamed = await engine.astream_chat(FOLLOW_UP)
    answer = "".join([piece async for piece in streamed.async_response_gen()])
    check_second_turn_saw_the_first(recorder, first.response)
    check_routed_calls(recorder, router_llm, before, answer, 3)
    history = await engine._memory.aget_all()
    assert [m.role.value for m in history] == ["user", "assistant", "user", "assistant"]

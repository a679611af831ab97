"""Message conversion and result shaping of the LangChain face: pure functions, no model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)

from confidence_router import (
    Decision,
    Generation,
    InvalidInputError,
    Message,
    RouteChunk,
    RoutedResult,
    Usage,
)
from langchain_confidence_router._messages import SourcedMessage, to_core, to_langchain
from langchain_confidence_router._results import chat_result, openai_logprobs, stream_chunk


def test_each_langchain_role_maps_to_a_core_role() -> None:
    messages = [
        SystemMessage("be brief"),
        HumanMessage("hi", name="ann"),
        AIMessage("hello", tool_calls=[{"name": "f", "args": {}, "id": "c1"}]),
        ToolMessage("42", tool_call_id="c1"),
        ChatMessage(role="user", content="and?"),
    ]
    core = to_core(messages)
    assert [(m.role, m.content) for m in core] == [
        ("system", "be brief"),
        ("user", "hi"),
        ("assistant", "hello"),
        ("tool", "42"),
        ("user", "and?"),
    ]


def test_text_blocks_are_joined_and_plain_strings_kept() -> None:
    message = HumanMessage(content=["Context: ", {"type": "text", "text": "Paris."}])
    assert to_core([message])[0].content == "Context: Paris."


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image_url", "image_url": {"url": "https://example.org/a.png"}},
        {"type": "image", "base64": "AAAA", "mime_type": "image/png"},
        {"type": "file", "base64": "AAAA", "mime_type": "application/pdf"},
    ],
)
def test_non_text_content_is_an_error_that_names_the_block_type(block: dict) -> None:
    message = HumanMessage(content=[{"type": "text", "text": "what is this?"}, block])
    with pytest.raises(InvalidInputError, match=repr(block["type"])):
        to_core([message])


def test_an_unroutable_message_type_is_an_error() -> None:
    with pytest.raises(InvalidInputError, match="RemoveMessage"):
        to_core([RemoveMessage(id="1")])


def test_the_fallback_gets_the_original_messages_back() -> None:
    original = [
        HumanMessage("hi", name="ann"),
        AIMessage("", tool_calls=[{"name": "f", "args": {"x": 1}, "id": "c1"}]),
        ToolMessage("42", tool_call_id="c1"),
    ]
    back = to_langchain(to_core(original))
    assert all(a is b for a, b in zip(back, original))
    assert isinstance(to_core(original)[0], Message)  # still a core Message for the SLM


def test_core_messages_without_an_original_are_rebuilt() -> None:
    back = to_langchain([Message("system", "s"), Message("user", "u"), Message("assistant", "a")])
    assert [type(m) for m in back] == [SystemMessage, HumanMessage, AIMessage]
    assert [m.content for m in back] == ["s", "u", "a"]


def test_sourced_messages_compare_by_role_and_content_only() -> None:
    a = SourcedMessage("user", "hi", source=HumanMessage("hi", id="1"))
    b = SourcedMessage("user", "hi", source=HumanMessage("hi", id="2"))
    assert a == b


# -- results ---------------------------------------------------------------------------

SLM = Generation(
    text="Paris.",
    model="smollm2:135m",
    token_logprobs=np.array([-0.1, -0.5]),
    top_logprobs=np.array([[-0.1, -2.5, -np.inf], [-0.5, -1.0, -4.0]]),
    tokens=("Paris", "."),
    top_tokens=(("Paris", "Lyon"), (".", "!", ",")),
    usage=Usage(20, 2),
    finish_reason="stop",
    has_logprobs=True,
)
LLM = Generation.without_logprobs("Paris", "big-model", usage=Usage(25, 3))


def _decision(route: Any) -> Decision:
    signals = {"length": 2.0, "mean_logprob": -0.3}
    score = 0.4 if route == "slm" else -0.2
    return Decision(route, score, 0.0, signals, f"{route} reason", "threshold")


def _result(route: str) -> RoutedResult:
    fallback = LLM if route == "llm" else None
    usage = {"smollm2:135m": SLM.usage, **({"big-model": LLM.usage} if fallback else {})}
    return RoutedResult(
        text=(fallback or SLM).text,
        decision=_decision(route),
        slm=SLM,
        fallback=fallback,
        latency_s=0.25,
        usage_by_model=usage,
        cost=0.001,
    )


def test_logprobs_take_openai_shape_without_padding() -> None:
    content = openai_logprobs(SLM)["content"]
    assert [e["token"] for e in content] == ["Paris", "."]
    assert content[0]["logprob"] == pytest.approx(-0.1)
    assert content[0]["bytes"] == list(b"Paris")
    # the -inf padding of the first row is not a real alternative
    assert [t["token"] for t in content[0]["top_logprobs"]] == ["Paris", "Lyon"]
    assert len(content[1]["top_logprobs"]) == 3
    assert all(math.isfinite(t["logprob"]) for e in content for t in e["top_logprobs"])


@pytest.mark.parametrize("route", ["slm", "llm"])
def test_invoke_result_carries_routing_usage_and_answering_model(route: str) -> None:
    result = _result(route)
    chat = chat_result(result)
    message = chat.generations[0].message
    assert message.content == result.text
    meta = message.response_metadata
    assert meta["routing"] == result.to_dict()
    assert meta["routing"]["route"] == route
    assert meta["model_name"] == ("smollm2:135m" if route == "slm" else "big-model")
    assert ("logprobs" in meta) == (route == "slm")
    total = result.usage
    assert message.usage_metadata == {
        "input_tokens": total.prompt_tokens,
        "output_tokens": total.completion_tokens,
        "total_tokens": total.total_tokens,
    }
    assert chat.generations[0].generation_info["routing"]["route"] == route
    assert chat.llm_output == {"routing": result.to_dict(), "model_name": meta["model_name"]}


def _stream(route: Any) -> list[RouteChunk]:
    result = _result(route)
    words = ["Par", "is."] if route == "slm" else ["Pa", "ris"]
    decision = result.decision
    pieces = [
        RouteChunk(w, route, decision, models=result.models) if i == 0 else RouteChunk(w, route)
        for i, w in enumerate(words)
    ]
    return [*pieces, RouteChunk("", route, None, result=result, done=True)]


@pytest.mark.parametrize("route", ["slm", "llm"])
def test_merged_stream_equals_invoke_and_no_value_is_doubled(route: str) -> None:
    chunks = [c for c in (stream_chunk(p) for p in _stream(route)) if c is not None]
    messages = [c.message for c in chunks]
    assert sum("route" in m.response_metadata.get("routing", {}) for m in messages) == 1
    assert "route" in messages[0].response_metadata["routing"]
    answered_by = "smollm2:135m" if route == "slm" else "big-model"
    assert messages[0].response_metadata["routing"]["models"]["answered_by"] == answered_by
    assert [m.chunk_position for m in messages] == [None] * (len(messages) - 1) + ["last"]
    for key in ("model_name", "finish_reason", "logprobs"):
        assert sum(key in m.response_metadata for m in messages) <= 1
    assert sum(m.usage_metadata is not None for m in messages) == 1

    merged = messages[0]
    for m in messages[1:]:
        merged = merged + m
    assert isinstance(merged, AIMessageChunk)
    invoked = chat_result(_result(route)).generations[0].message
    assert merged.content == invoked.content
    assert merged.response_metadata == invoked.response_metadata
    assert merged.usage_metadata == invoked.usage_metadata


def test_empty_silent_pieces_are_dropped_but_a_decision_is_never_lost() -> None:
    assert stream_chunk(RouteChunk("", "llm")) is None
    result = _result("llm")
    only_end = stream_chunk(RouteChunk("", "llm", result.decision, result=result, done=True))
    assert only_end is not None
    assert only_end.message.response_metadata["routing"] == result.to_dict()

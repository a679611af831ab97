"""Message, logprob and usage conversion between LlamaIndex types and the core (no model)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from confidence_router import Generation, InvalidInputError, Message, Usage
from llamaindex_confidence_router._convert import (
    chat_response,
    finish_reason_from_response,
    generation_logprobs,
    logprobs_from_arrays,
    to_chat_messages,
    to_completion_response,
    to_core_messages,
    usage_from_response,
)


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        (MessageRole.SYSTEM, "system"),
        (MessageRole.DEVELOPER, "system"),
        (MessageRole.USER, "user"),
        (MessageRole.ASSISTANT, "assistant"),
        (MessageRole.CHATBOT, "assistant"),
        (MessageRole.MODEL, "assistant"),
        (MessageRole.TOOL, "tool"),
        (MessageRole.FUNCTION, "tool"),
    ],
)
def test_every_llamaindex_role_maps_to_a_core_role(role: MessageRole, expected: str) -> None:
    assert to_core_messages([ChatMessage(role=role, content="x")]) == [Message(expected, "x")]


def test_every_message_role_is_covered() -> None:
    for role in MessageRole:
        to_core_messages([ChatMessage(role=role, content="x")])


def test_multi_turn_chat_keeps_order_roles_and_text() -> None:
    chat = [
        ChatMessage(role=MessageRole.SYSTEM, content="You answer in French."),
        ChatMessage(role=MessageRole.USER, content="Capital of Italy?"),
        ChatMessage(role=MessageRole.ASSISTANT, content="Rome."),
        ChatMessage(role=MessageRole.USER, content="And of Spain?"),
    ]
    assert to_core_messages(chat) == [
        Message("system", "You answer in French."),
        Message("user", "Capital of Italy?"),
        Message("assistant", "Rome."),
        Message("user", "And of Spain?"),
    ]


def test_text_blocks_are_joined_like_chatmessage_content() -> None:
    message = ChatMessage(role="user", blocks=[TextBlock(text="line one"), TextBlock(text="two")])
    [converted] = to_core_messages([message])
    assert converted.content == message.content == "line one\ntwo"


def test_empty_message_becomes_empty_text() -> None:
    assert to_core_messages([ChatMessage(role="user", blocks=[])]) == [Message("user", "")]


def test_thinking_blocks_of_earlier_turns_are_dropped() -> None:
    message = ChatMessage(
        role="assistant", blocks=[ThinkingBlock(content="hmm"), TextBlock(text="Paris.")]
    )
    assert to_core_messages([message]) == [Message("assistant", "Paris.")]


@pytest.mark.parametrize(
    "block",
    [
        ImageBlock(image=b"\x89PNG", image_mimetype="image/png"),
        ToolCallBlock(tool_name="search", tool_kwargs={"q": "x"}),
    ],
)
def test_non_text_block_is_refused_naming_message_and_block(block: object) -> None:
    messages = [
        ChatMessage(role="system", content="Be brief."),
        ChatMessage(role="user", blocks=[TextBlock(text="What is this?"), block]),
    ]
    with pytest.raises(InvalidInputError, match=r"messages\[1\].*" + type(block).__name__):
        to_core_messages(messages)


def test_a_non_chatmessage_is_refused() -> None:
    with pytest.raises(InvalidInputError, match=r"messages\[0\].*str"):
        to_core_messages(["hello"])  # type: ignore[list-item]


def test_core_messages_round_trip_through_chatmessages() -> None:
    core = [
        Message("system", "s"),
        Message("user", "u"),
        Message("assistant", "a"),
        Message("tool", "t"),
    ]
    assert to_core_messages(to_chat_messages(core)) == core


def test_logprobs_list_the_chosen_token_first_and_keep_every_position() -> None:
    tokens = ("Par", "is", "!")
    chosen = np.array([-0.1, -0.5, -2.0])
    top_tokens = (("Par", "Lon", "Ber"), ("is", "es"), ("?", "."))
    top = np.array([[-0.1, -2.5, -3.0], [-0.5, -1.2, -np.inf], [-0.3, -1.6, -np.inf]])
    positions = logprobs_from_arrays(tokens, chosen, top_tokens, top)
    assert len(positions) == 3
    assert [[lp.token for lp in p] for p in positions] == [
        ["Par", "Lon", "Ber"],
        ["is", "es"],  # the -inf padding is dropped
        ["!", "?", "."],  # the chosen token was not in the top-k: still first
    ]
    assert positions[2][0].logprob == -2.0
    assert positions[0][1].logprob == -2.5
    assert positions[0][0].bytes == list(b"Par")


def test_generation_logprobs_follow_has_logprobs() -> None:
    without = Generation.without_logprobs("Paris", "big")
    assert generation_logprobs(without) is None
    assert generation_logprobs(None) is None
    gen = Generation(
        text="Paris",
        model="small",
        token_logprobs=np.array([-0.2]),
        top_logprobs=np.array([[-0.2, -1.9]]),
        tokens=("Paris",),
        top_tokens=(("Paris", "London"),),
        has_logprobs=True,
    )
    positions = generation_logprobs(gen)
    assert positions is not None
    assert [(lp.token, lp.logprob) for lp in positions[0]] == [("Paris", -0.2), ("London", -1.9)]


def _response(raw: object = None, **additional: object) -> ChatResponse:
    return ChatResponse(
        message=ChatMessage(role="assistant", content="x"), raw=raw, additional_kwargs=additional
    )


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # llama-index-llms-ollama: raw dict with "usage" (and Ollama's counters)
        (
            _response(
                {
                    "prompt_eval_count": 7,
                    "eval_count": 3,
                    "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10},
                }
            ),
            Usage(7, 3),
        ),
        # Ollama's counters alone (a streamed chunk before usage was added)
        (_response({"prompt_eval_count": 5, "eval_count": 2}), Usage(5, 2)),
        # OpenAI-style raw object with a usage attribute
        (
            _response(
                SimpleNamespace(usage=SimpleNamespace(prompt_tokens=11, completion_tokens=4))
            ),
            Usage(11, 4),
        ),
        # Anthropic-style input/output tokens
        (_response({"usage": {"input_tokens": 9, "output_tokens": 1}}), Usage(9, 1)),
        # counts in additional_kwargs
        (_response(None, prompt_tokens=2, completion_tokens=6), Usage(2, 6)),
        # nothing reported
        (_response({"model": "x"}), None),
        (_response(None), None),
    ],
)
def test_usage_is_found_wherever_the_integration_put_it(
    response: ChatResponse, expected: Usage | None
) -> None:
    assert usage_from_response(response) == expected


def test_finish_reason_is_read_from_ollama_or_openai_raw() -> None:
    assert finish_reason_from_response(_response({"done_reason": "length"})) == "length"
    assert finish_reason_from_response(_response({"finish_reason": "stop"})) == "stop"
    assert finish_reason_from_response(_response(None)) is None


def test_completion_response_keeps_logprobs_raw_and_routing() -> None:
    gen = Generation(
        text="Paris",
        model="small",
        token_logprobs=np.array([-0.2]),
        top_logprobs=np.array([[-0.2]]),
        tokens=("Paris",),
        top_tokens=(("Paris",),),
        has_logprobs=True,
    )
    response = chat_response(
        "Paris",
        delta="is",
        raw={"usage": {"prompt_tokens": 1}},
        additional_kwargs={"routing": {"route": "slm"}},
        logprobs=generation_logprobs(gen),
    )
    completion = to_completion_response(response)
    assert completion.text == "Paris"
    assert completion.delta == "is"
    assert completion.additional_kwargs == {"routing": {"route": "slm"}}
    assert completion.raw == {"usage": {"prompt_tokens": 1}}
    assert completion.logprobs == response.logprobs and completion.logprobs is not None

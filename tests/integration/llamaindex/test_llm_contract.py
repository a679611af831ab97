"""The LLM contract of ConfidenceRouterLLM, on real models: SmolLM2 in process as the SLM,
a real LlamaIndex ``Ollama`` LLM (Gemma 3 270M on the Ollama-compatible test server) as
the fallback. All eight methods, sync/async parity, streams, events, failures."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    ImageBlock,
    MessageRole,
    TextBlock,
)
from llama_index.core.callbacks import CallbackManager, TokenCountingHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatInProgressEvent,
    LLMCompletionEndEvent,
)

from confidence_router import (
    FallbackError,
    InvalidInputError,
    LlamaCppSLM,
    Message,
    ModelNotFoundError,
    OllamaSLM,
)
from llamaindex_confidence_router import ConfidenceRouterLLM
from llamaindex_confidence_router._convert import to_core_messages

CHAT = [
    ChatMessage(role=MessageRole.SYSTEM, content="Answer in a few words."),
    ChatMessage(role=MessageRole.USER, content="What is the capital of France?"),
]
PROMPT = "Name one planet of the solar system."
FALLBACK_MODEL = "gemma3:270m"


def _text(response: ChatResponse | CompletionResponse) -> str:
    if isinstance(response, ChatResponse):
        return response.message.content or ""
    return response.text


def call_sync(llm: ConfidenceRouterLLM, method: str) -> list[Any]:
    """Every response a method gives (one, or every streamed piece)."""
    if method == "chat":
        return [llm.chat(CHAT)]
    if method == "complete":
        return [llm.complete(PROMPT)]
    if method == "stream_chat":
        return list(llm.stream_chat(CHAT))
    return list(llm.stream_complete(PROMPT))


async def call_async(llm: ConfidenceRouterLLM, method: str) -> list[Any]:
    if method == "achat":
        return [await llm.achat(CHAT)]
    if method == "acomplete":
        return [await llm.acomplete(PROMPT)]
    if method == "astream_chat":
        return [r async for r in await llm.astream_chat(CHAT)]
    return [r async for r in await llm.astream_complete(PROMPT)]


SYNC = ["chat", "complete", "stream_chat", "stream_complete"]
ASYNC = ["achat", "acomplete", "astream_chat", "astream_complete"]


def check_final(responses: list[Any], route: str, slm_model: str) -> dict[str, Any]:
    """What every method's answer must carry, whichever model answered."""
    final = responses[-1]
    routing = final.additional_kwargs["routing"]
    assert routing["route"] == route
    assert routing["models"]["slm"] == slm_model
    assert routing["models"]["answered_by"] == (slm_model if route == "slm" else FALLBACK_MODEL)
    assert routing["reason"] and routing["policy"] == "threshold"
    assert final.raw["routing"] == routing
    usage = final.raw["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert set(final.raw["usage_by_model"]) == (
        {slm_model} if route == "slm" else {slm_model, FALLBACK_MODEL}
    )
    if route == "slm":
        # one candidate list per generated SLM token, chosen token first
        assert final.logprobs is not None
        assert len(final.logprobs) == final.raw["usage_by_model"][slm_model]["completion_tokens"]
        assert all(p and p[0].logprob <= 0 for p in final.logprobs)
        assert len(final.logprobs[0]) > 1  # the alternatives are there too
    else:
        assert final.logprobs is None
    if len(responses) > 1:  # a stream: deltas spell the text, which is cumulative
        pieces = [r.delta for r in responses]
        assert all(isinstance(p, str) for p in pieces)
        assert "".join(pieces) == _text(final)
        running = ""
        for r in responses:
            running += r.delta
            assert _text(r) == running
            assert r.additional_kwargs["routing"]["route"] == route  # on every piece
        assert final.delta == ""
    return routing


@pytest.mark.parametrize("method", SYNC)
def test_sync_methods_keep_a_confident_slm_answer(
    keep_llm: ConfidenceRouterLLM, smollm2_slm: LlamaCppSLM, method: str
) -> None:
    responses = call_sync(keep_llm, method)
    assert isinstance(responses[0], ChatResponse if "chat" in method else CompletionResponse)
    check_final(responses, "slm", smollm2_slm.model)


@pytest.mark.parametrize("method", ASYNC)
async def test_async_methods_keep_a_confident_slm_answer(
    keep_llm: ConfidenceRouterLLM, smollm2_slm: LlamaCppSLM, method: str
) -> None:
    responses = await call_async(keep_llm, method)
    assert isinstance(responses[0], ChatResponse if "chat" in method else CompletionResponse)
    check_final(responses, "slm", smollm2_slm.model)


@pytest.mark.parametrize("method", SYNC)
def test_sync_methods_escalate_to_the_llamaindex_fallback(
    escalate_llm: ConfidenceRouterLLM, smollm2_slm: LlamaCppSLM, method: str
) -> None:
    routing = check_final(call_sync(escalate_llm, method), "llm", smollm2_slm.model)
    assert routing["reason"].startswith("unsure")


@pytest.mark.parametrize("method", ASYNC)
async def test_async_methods_escalate_to_the_llamaindex_fallback(
    escalate_llm: ConfidenceRouterLLM, smollm2_slm: LlamaCppSLM, method: str
) -> None:
    check_final(await call_async(escalate_llm, method), "llm", smollm2_slm.model)


@pytest.mark.parametrize("llm_name", ["router_llm", "escalate_llm"])
async def test_sync_and_async_make_the_same_decision_and_answer(
    request: pytest.FixtureRequest, llm_name: str
) -> None:
    llm: ConfidenceRouterLLM = request.getfixturevalue(llm_name)
    pairs = [
        (llm.chat(CHAT), await llm.achat(CHAT)),
        (llm.complete(PROMPT), await llm.acomplete(PROMPT)),
        (list(llm.stream_chat(CHAT))[-1], [r async for r in await llm.astream_chat(CHAT)][-1]),
    ]
    for sync, async_ in pairs:
        a, b = sync.additional_kwargs["routing"], async_.additional_kwargs["routing"]
        assert (a["route"], a["score"], a["signals"], a["reason"]) == (
            b["route"],
            b["score"],
            b["signals"],
            b["reason"],
        )
        assert _text(sync) == _text(async_)
    # streamed and not streamed: the same decision and the same text
    streamed = list(llm.stream_complete(PROMPT))[-1]
    whole = llm.complete(PROMPT)
    assert streamed.text == whole.text
    assert (
        streamed.additional_kwargs["routing"]["score"]
        == whole.additional_kwargs["routing"]["score"]
    )


def test_complete_sends_the_prompt_as_one_user_message(
    keep_llm: ConfidenceRouterLLM, smollm2_slm: LlamaCppSLM
) -> None:
    completion = keep_llm.complete(PROMPT)
    chat = keep_llm.chat([ChatMessage(role=MessageRole.USER, content=PROMPT)])
    assert completion.text == chat.message.content
    assert completion.raw["usage"] == chat.raw["usage"]
    user_only = [Message("user", PROMPT)]
    assert completion.raw["usage"]["prompt_tokens"] == len(smollm2_slm.tokenize_prompt(user_only))


def test_system_prompt_and_history_reach_the_slm(
    keep_llm: ConfidenceRouterLLM, smollm2_slm: LlamaCppSLM
) -> None:
    history = [
        *CHAT,
        ChatMessage(role=MessageRole.ASSISTANT, content="Paris."),
        ChatMessage(role=MessageRole.USER, content="And of Italy?"),
    ]
    response = keep_llm.chat(history)
    # The SLM saw exactly these four turns through its chat template.
    prompt_tokens = len(smollm2_slm.tokenize_prompt(to_core_messages(history)))
    assert response.raw["usage"]["prompt_tokens"] == prompt_tokens
    shorter = keep_llm.chat(history[-1:])
    assert shorter.raw["usage"]["prompt_tokens"] < prompt_tokens


def test_events_carry_the_routing_to_an_instrumentation_handler(
    router_llm: ConfidenceRouterLLM, recorder: Any
) -> None:
    response = router_llm.chat(CHAT)
    [end] = [e for e in recorder.of(LLMChatEndEvent) if "routing" in e.response.additional_kwargs]
    assert end.response.additional_kwargs["routing"] == response.additional_kwargs["routing"]
    [decision] = recorder.routing_decisions()
    assert decision.routing == response.additional_kwargs["routing"]
    assert decision.route == response.additional_kwargs["routing"]["route"]
    assert decision.span_id == end.span_id  # inside the span of the chat call
    fallback_ends = [e for e in recorder.of(LLMChatEndEvent) if e is not end]
    # an escalation shows the fallback's own call too, nested in the router's call
    assert len(fallback_ends) == (1 if decision.route == "llm" else 0)


def test_completion_and_stream_events_carry_the_routing(
    keep_llm: ConfidenceRouterLLM, recorder: Any
) -> None:
    completion = keep_llm.complete(PROMPT)
    pieces = list(keep_llm.stream_chat(CHAT))
    [end] = recorder.of(LLMCompletionEndEvent)
    assert end.response.additional_kwargs["routing"] == completion.additional_kwargs["routing"]
    [stream_end] = recorder.of(LLMChatEndEvent)
    assert stream_end.response is pieces[-1]  # the last piece: full routing, usage, logprobs
    assert stream_end.response.additional_kwargs["routing"]["models"]["answered_by"]
    assert len(recorder.of(LLMChatInProgressEvent)) == len(pieces)
    assert [d.route for d in recorder.routing_decisions()] == ["slm", "slm"]


def test_token_counting_handler_sees_the_usage(
    keep_llm: ConfidenceRouterLLM,
) -> None:
    counter = TokenCountingHandler()
    keep_llm.callback_manager = CallbackManager([counter])
    try:
        response = keep_llm.chat(CHAT)
    finally:
        keep_llm.callback_manager = CallbackManager([])
    assert counter.prompt_llm_token_count == response.raw["usage"]["prompt_tokens"]
    assert counter.completion_llm_token_count == response.raw["usage"]["completion_tokens"]


def test_the_ledger_counts_every_call(escalate_llm: ConfidenceRouterLLM) -> None:
    before = escalate_llm.stats
    escalate_llm.complete(PROMPT)
    list(escalate_llm.stream_complete(PROMPT))
    after = escalate_llm.stats
    assert after.queries == before.queries + 2
    assert after.escalations == before.escalations + 2
    assert after.cost > before.cost  # the fallback has a price


def test_non_text_content_is_refused_before_any_model_call(
    keep_llm: ConfidenceRouterLLM,
) -> None:
    before = keep_llm.stats.queries
    message = ChatMessage(
        role=MessageRole.USER,
        blocks=[
            TextBlock(text="What is this?"),
            ImageBlock(image=b"\x89PNG", image_mimetype="image/png"),
        ],
    )
    with pytest.raises(InvalidInputError, match="ImageBlock"):
        keep_llm.chat([message])
    with pytest.raises(InvalidInputError, match="empty"):
        keep_llm.chat([])
    assert keep_llm.stats.queries == before


def test_a_failing_fallback_raises_fallback_error(
    smollm2_slm: LlamaCppSLM, make_fallback: Any, make_router: Any, escalate_policy: Any
) -> None:
    unknown = make_fallback(model="no-such-model:1b", context_window=2048)
    llm = make_router(smollm2_slm, unknown, escalate_policy)
    with pytest.raises(FallbackError, match="no-such-model"):
        llm.chat(CHAT)
    with pytest.raises(FallbackError):
        list(llm.stream_complete(PROMPT))


def test_slm_given_by_ollama_model_name_routes_over_http(
    ollama_host: str, fallback: Any, make_router: Any, keep_policy: Any
) -> None:
    llm = make_router("smollm2:135m", fallback, keep_policy, base_url=ollama_host)
    response = llm.complete(PROMPT)
    routing = response.additional_kwargs["routing"]
    assert routing["route"] == "slm"
    assert routing["models"]["slm"] == "smollm2:135m"
    assert response.logprobs and len(response.logprobs[0]) > 1


async def test_an_unknown_slm_escalates_with_reason_or_raises_when_strict(
    ollama_host: str, fallback: Any, make_router: Any
) -> None:
    lenient = make_router(OllamaSLM("no-such-slm:1b", host=ollama_host), fallback)
    response = await lenient.acomplete(PROMPT)
    routing = response.additional_kwargs["routing"]
    assert routing["route"] == "llm"
    assert "model_not_found" in routing["reason"]
    assert routing["score"] is None
    strict = make_router(OllamaSLM("no-such-slm:1b", host=ollama_host), fallback, strict=True)
    with pytest.raises(ModelNotFoundError):
        await strict.acomplete(PROMPT)


def test_metadata_takes_the_smaller_context_window_of_the_two_models(
    router_llm: ConfidenceRouterLLM, fallback: Any, smollm2_slm: LlamaCppSLM, max_tokens: int
) -> None:
    meta = router_llm.metadata
    assert meta.context_window == min(smollm2_slm.context_window, fallback.metadata.context_window)
    assert meta.num_output == max_tokens
    assert meta.is_chat_model is True
    assert meta.model_name == f"confidence-router:{smollm2_slm.model}->{FALLBACK_MODEL}"

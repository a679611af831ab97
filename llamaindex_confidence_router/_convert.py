"""Translating between LlamaIndex's message and response types and the core's plain data."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    LogProb,
    MessageRole,
    TextBlock,
    ThinkingBlock,
)

from confidence_router import InvalidInputError, Message, Usage
from confidence_router.types import FloatArray, Generation, Role

#: Every LlamaIndex role, mapped to the four roles of the core.
ROLE_TO_CORE: Mapping[MessageRole, Role] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}

_CORE_TO_ROLE: Mapping[str, MessageRole] = {
    "system": MessageRole.SYSTEM,
    "user": MessageRole.USER,
    "assistant": MessageRole.ASSISTANT,
    "tool": MessageRole.TOOL,
}

# Blocks that carry no text for the model to read: a provider's cache hint and a
# previous turn's private reasoning. They are dropped, not refused.
_SKIPPED_BLOCKS = (CachePoint, ThinkingBlock)


def to_core_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """ChatMessages as core Messages: text blocks joined by newlines (as `.content` does).

    Images, audio, documents and tool calls cannot reach a text-only SLM: they raise
    `InvalidInputError` naming the message and the block, rather than being lost.
    """
    converted: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise InvalidInputError(
                f"messages[{index}] must be a llama_index ChatMessage, got {type(message).__name__}"
            )
        role = ROLE_TO_CORE.get(MessageRole(message.role))
        if role is None:  # pragma: no cover - a role added by a future LlamaIndex
            raise InvalidInputError(f"messages[{index}] has an unsupported role {message.role!r}")
        texts: list[str] = []
        for block in message.blocks:
            if isinstance(block, TextBlock):
                texts.append(block.text)
            elif not isinstance(block, _SKIPPED_BLOCKS):
                raise InvalidInputError(
                    f"messages[{index}] ({role}) contains a {type(block).__name__}: "
                    "confidence-router routes text only; send text blocks"
                )
        converted.append(Message(role, "\n".join(texts)))
    return converted


def prompt_messages(
    prompt: str, formatted: bool, completion_to_prompt: Callable[[str], str] | None
) -> list[Message]:
    """What `complete` sends: the prompt as one user message (after the LLM's
    `completion_to_prompt` unless `formatted`; LlamaIndex's default leaves it as is)."""
    if not isinstance(prompt, str):
        raise InvalidInputError(f"prompt must be a str, got {type(prompt).__name__}")
    if not formatted and completion_to_prompt is not None:
        prompt = completion_to_prompt(prompt)
    return [Message("user", prompt)]


def to_chat_messages(messages: Sequence[Message]) -> list[ChatMessage]:
    """Core Messages as ChatMessages, for a LlamaIndex fallback."""
    return [ChatMessage(role=_CORE_TO_ROLE[m.role], content=m.content) for m in messages]


def usage_dict(usage: Usage) -> dict[str, int]:
    """Token usage under the keys LlamaIndex's token counter reads.

    Unknown is not zero: a count some call did not report is left out (with
    `*_known` and `*_unknown_calls` saying what is known), so LlamaIndex's
    counter estimates it itself instead of reading 0; `total_tokens` only
    when every count is known.
    """
    data = {k: v for k, v in usage.to_dict().items() if v is not None}
    if usage.exact:
        data["total_tokens"] = usage.total_tokens
    return data


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _field(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None)


def usage_from_response(response: ChatResponse) -> Usage | None:
    """The token usage a LlamaIndex LLM reported, wherever its integration put it.

    Looks in `raw["usage"]` (OpenAI-style objects or dicts, and llama-index-llms-ollama),
    then Ollama's raw `prompt_eval_count`/`eval_count`, then `additional_kwargs`.
    """
    raw = response.raw
    candidates = [_field(raw, "usage"), _field(raw, "usage_metadata"), response.additional_kwargs]
    for usage in candidates:
        if usage is None:
            continue
        prompt = _as_int(_field(usage, "prompt_tokens"))
        if prompt is None:
            prompt = _as_int(_field(usage, "input_tokens"))
        completion = _as_int(_field(usage, "completion_tokens"))
        if completion is None:
            completion = _as_int(_field(usage, "output_tokens"))
        if prompt is not None or completion is not None:
            return Usage(prompt or 0, completion or 0)
    prompt = _as_int(_field(raw, "prompt_eval_count"))
    completion = _as_int(_field(raw, "eval_count"))
    if prompt is not None or completion is not None:
        return Usage(prompt or 0, completion or 0)
    return None


def finish_reason_from_response(response: ChatResponse) -> str | None:
    """`done_reason` (Ollama) or `finish_reason` (OpenAI-style) if the raw reply has one."""
    raw = response.raw
    for key in ("done_reason", "finish_reason"):
        value = _field(raw, key)
        if isinstance(value, str) and value:
            return value
    return None


def _logprob(token: str, value: float) -> LogProb:
    return LogProb(token=token, logprob=float(value), bytes=list(token.encode("utf-8")))


def logprobs_from_arrays(
    tokens: Sequence[str],
    token_logprobs: FloatArray,
    top_tokens: Sequence[Sequence[str]],
    top_logprobs: FloatArray,
) -> list[list[LogProb]]:
    """One list of candidates per generated token: the chosen token first, then the
    other top-k alternatives (`-inf` padding dropped). No position is dropped."""
    positions: list[list[LogProb]] = []
    chosen_values = np.asarray(token_logprobs, dtype=np.float64)
    top = np.asarray(top_logprobs, dtype=np.float64)
    for i, value in enumerate(chosen_values):
        token = tokens[i] if i < len(tokens) else ""
        candidates = [_logprob(token, value)]
        alternatives = top_tokens[i] if i < len(top_tokens) else ()
        skipped_chosen = False
        for j, alt in enumerate(alternatives):
            if top.ndim != 2 or i >= top.shape[0] or j >= top.shape[1]:
                break
            alt_value = float(top[i, j])
            if not math.isfinite(alt_value):
                continue
            if not skipped_chosen and alt == token and math.isclose(alt_value, value, abs_tol=1e-6):
                skipped_chosen = True  # already listed first
                continue
            candidates.append(_logprob(alt, alt_value))
        positions.append(candidates)
    return positions


def generation_logprobs(generation: Generation | None) -> list[list[LogProb]] | None:
    """The typed `logprobs` of a response, or None for a model that reported none."""
    if generation is None or not generation.has_logprobs:
        return None
    return logprobs_from_arrays(
        generation.tokens,
        generation.token_logprobs,
        generation.top_tokens,
        generation.top_logprobs,
    )


def chat_response(
    text: str,
    *,
    delta: str | None = None,
    raw: dict[str, Any] | None = None,
    additional_kwargs: dict[str, Any] | None = None,
    logprobs: list[list[LogProb]] | None = None,
) -> ChatResponse:
    """An assistant ChatResponse (`text` is cumulative in streams, `delta` the new piece)."""
    return ChatResponse(
        message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
        delta=delta,
        raw=raw,
        additional_kwargs=additional_kwargs or {},
        logprobs=logprobs,
    )


def to_completion_response(response: ChatResponse) -> CompletionResponse:
    """The same answer as a CompletionResponse, logprobs and metadata kept.

    LlamaIndex's own chat-to-completion helpers drop `logprobs`; this one does not.
    """
    return CompletionResponse(
        text=response.message.content or "",
        delta=response.delta,
        raw=response.raw,
        additional_kwargs=response.additional_kwargs,
        logprobs=response.logprobs,
    )


__all__ = [
    "ROLE_TO_CORE",
    "chat_response",
    "finish_reason_from_response",
    "generation_logprobs",
    "logprobs_from_arrays",
    "prompt_messages",
    "to_chat_messages",
    "to_completion_response",
    "to_core_messages",
    "usage_dict",
    "usage_from_response",
]

"""LangChain messages to core Messages and back, text only and never lossy in silence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from confidence_router import InvalidInputError, Message
from confidence_router.types import Role

# LangChain message `type` (or ChatMessage `role`) -> core role.
_ROLE_BY_TYPE: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "tool": "tool",
    "function": "tool",
}
_TEXT_BLOCKS = ("text", "input_text", "output_text")


@dataclass(frozen=True)
class SourcedMessage(Message):
    """A core Message that remembers the LangChain message it came from.

    The SLM reads `role`/`content`; the fallback gets `source` back
    untouched, so tool calls, names and ids reach it as the user wrote them.
    """

    source: BaseMessage | None = field(default=None, compare=False, repr=False)


def _text_of(message: BaseMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for i, block in enumerate(content):
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in _TEXT_BLOCKS:
            parts.append(str(block.get("text", "")))
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise InvalidInputError(
                f"{type(message).__name__} content block {i} has type {kind!r}: the small "
                f"model reads text only; send text blocks or plain strings"
            )
    return "".join(parts)


def _role_of(message: BaseMessage) -> Role:
    kind = message.type
    if kind == "chat":
        kind = str(getattr(message, "role", ""))
    role = _ROLE_BY_TYPE.get(kind)
    if role is None:
        raise InvalidInputError(
            f"cannot route a {type(message).__name__} (type {kind!r}); use system, human, "
            f"ai or tool messages"
        )
    return role


def to_core(messages: Sequence[BaseMessage]) -> list[Message]:
    """Core messages for the router, each keeping its LangChain original."""
    return [SourcedMessage(_role_of(m), _text_of(m), source=m) for m in messages]


def _rebuild(message: Message) -> BaseMessage:
    if message.role == "system":
        return SystemMessage(message.content)
    if message.role == "assistant":
        return AIMessage(message.content)
    if message.role == "tool":
        return ToolMessage(message.content, tool_call_id="")
    return HumanMessage(message.content)


def to_langchain(messages: Sequence[Message]) -> list[BaseMessage]:
    """The original LangChain messages where known, else rebuilt from role and text."""
    out: list[BaseMessage] = []
    for m in messages:
        source: Any = getattr(m, "source", None)
        out.append(source if isinstance(source, BaseMessage) else _rebuild(m))
    return out


__all__ = ["SourcedMessage", "to_core", "to_langchain"]

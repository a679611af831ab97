"""Any LlamaIndex LLM as the core's Escalator: the model the router escalates to."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import ChatResponse

from confidence_router import Generation, IncompleteResponseError, Message, TokenChunk, Usage

from ._convert import (
    finish_reason_from_response,
    to_chat_messages,
    usage_from_response,
)


class LlamaIndexEscalator:
    """Calls the fallback through its chat API (every LlamaIndex LLM has one).

    `stop` and `max_tokens` from the router are not forwarded: LlamaIndex has no
    per-call convention for them, so the fallback generates with its own settings
    (for example `Ollama(..., additional_kwargs={"num_predict": 128})`).
    """

    def __init__(self, llm: BaseLLM, model: str) -> None:
        self.llm = llm
        self.model = model

    def __repr__(self) -> str:
        return f"LlamaIndexEscalator({type(self.llm).__name__}, model={self.model!r})"

    def _generation(self, response: ChatResponse, started: float) -> Generation:
        if marks_its_end(self.llm) and not _ended(response):
            raise IncompleteResponseError(
                f"the fallback {self.model!r} answered without its finish marker "
                f"(no done / finish reason): the answer is incomplete",
                model=self.model,
            )
        return Generation.without_logprobs(
            response.message.content or "",
            self.model,
            usage=usage_from_response(response) or Usage.reported(None, None),
            latency_s=time.perf_counter() - started,
            finish_reason=finish_reason_from_response(response) or "stop",
        )

    def generate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        started = time.perf_counter()
        return self._generation(self.llm.chat(to_chat_messages(messages)), started)

    async def agenerate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        started = time.perf_counter()
        return self._generation(await self.llm.achat(to_chat_messages(messages)), started)

    def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[TokenChunk]:
        deltas = _Deltas(marks_its_end(self.llm))
        for response in self.llm.stream_chat(to_chat_messages(messages)):
            chunk = deltas.step(response)
            if chunk is not None:
                yield chunk
        yield deltas.last()

    async def astream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        deltas = _Deltas(marks_its_end(self.llm))
        async for response in await self.llm.astream_chat(to_chat_messages(messages)):
            chunk = deltas.step(response)
            if chunk is not None:
                yield chunk
        yield deltas.last()


def marks_its_end(llm: BaseLLM) -> bool:
    """Whether this LLM's streams always end with a finish marker (llama-index-llms-ollama:
    Ollama's `done: true` object). Other LLMs may mark nothing, so theirs are trusted."""
    return type(llm).__module__.startswith("llama_index.llms.ollama")


def _ended(response: ChatResponse) -> bool:
    """Whether this response carries its LLM's finish marker (Ollama's `done: true`)."""
    raw = response.raw
    done = raw.get("done") if isinstance(raw, dict) else getattr(raw, "done", None)
    return done is True or finish_reason_from_response(response) is not None


class _Deltas:
    """Turns streamed ChatResponses into TokenChunks; shared by the sync and async streams.

    Uses `delta` when the integration sets it, else the growth of the cumulative text.
    `marks_end`: the LLM ends its streams with a marker, so a stream without it was
    cut, and the closing chunk says so (no finish reason: the router raises).
    """

    def __init__(self, marks_end: bool = False) -> None:
        self.text = ""
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.marks_end = marks_end
        self.ended = False

    def step(self, response: ChatResponse) -> TokenChunk | None:
        usage = usage_from_response(response)
        if usage is not None:
            self.usage = usage
        self.finish_reason = finish_reason_from_response(response) or self.finish_reason
        self.ended = self.ended or _ended(response)
        content = response.message.content or ""
        delta = response.delta
        if delta is None:
            delta = content[len(self.text) :] if content.startswith(self.text) else content
        self.text += delta
        return TokenChunk(text=delta) if delta else None

    def last(self) -> TokenChunk:
        if self.marks_end and not self.ended:
            return TokenChunk(text="", finish_reason=None, usage=self.usage)
        return TokenChunk(text="", finish_reason=self.finish_reason or "stop", usage=self.usage)


def fallback_model_name(llm: BaseLLM, metadata: Any) -> str:
    """A readable name for the fallback: its metadata's model name, else its class."""
    name = getattr(metadata, "model_name", None)
    if isinstance(name, str) and name and name != "unknown":
        return name
    model = getattr(llm, "model", None)
    return model if isinstance(model, str) and model else type(llm).__name__


__all__ = ["LlamaIndexEscalator", "fallback_model_name"]

"""Core results to LangChain outputs: the AIMessage, its metadata, usage and logprobs.

Streamed chunks are merged by LangChain (strings concatenated, numbers added,
dicts merged key by key), so every value is put on exactly one chunk:

* the first chunk: `response_metadata["routing"]` with the Decision
  (route, score, threshold, signals, reason, policy) and `models`
  (which models ran, `answered_by`): all known before any text is sent;
* the last chunk (`chunk_position="last"`): the rest of the routing record
  (latency_s, cost, slm_error), `model_name`, `finish_reason`,
  `logprobs` (when the SLM answered) and `usage_metadata`.

Merged, a stream's message carries the same metadata as `invoke`'s.
"""

from __future__ import annotations

import math
from typing import Any

from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

from confidence_router import Generation, RouteChunk, RoutedResult, Usage

# What the first chunk of a stream carries; the last chunk carries the rest.
_FIRST_CHUNK_KEYS = ("route", "score", "threshold", "signals", "reason", "policy", "models")


def usage_metadata(usage: Usage) -> UsageMetadata | None:
    """LangChain's usage: the reported counts. Unknown is not zero: LangChain has no
    "unknown", so when a call's count went unreported the numbers are a lower bound
    (`routing["usage"]` shows that count as null, `routing["cost_exact"]` False),
    and no usage is given at all when all that is known of a count is nothing."""
    if (usage.prompt_unknown_calls and not usage.prompt_tokens) or (
        usage.completion_unknown_calls and not usage.completion_tokens
    ):
        return None
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _entry(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def openai_logprobs(gen: Generation) -> dict[str, list[dict[str, Any]]]:
    """The SLM's token logprobs in OpenAI's shape, which LangChain merges correctly."""
    chosen = gen.token_logprobs.tolist()
    top = gen.top_logprobs.tolist() if gen.top_logprobs.ndim == 2 else []
    content = []
    for i, (token, logprob) in enumerate(zip(gen.tokens, chosen)):
        alternatives = zip(
            gen.top_tokens[i] if i < len(gen.top_tokens) else (),
            top[i] if i < len(top) else (),
        )
        entry = _entry(token, logprob)
        entry["top_logprobs"] = [_entry(t, lp) for t, lp in alternatives if math.isfinite(lp)]
        content.append(entry)
    return {"content": content}


def _outcome(result: RoutedResult) -> dict[str, Any]:
    """Everything the last message/chunk says about who answered and what it cost."""
    answer = result.answered_by
    meta: dict[str, Any] = {
        "model_name": answer.model,
        "finish_reason": answer.finish_reason or "stop",
    }
    if answer.has_logprobs:  # the SLM's answer (fallbacks report none)
        meta["logprobs"] = openai_logprobs(answer)
    return meta


def chat_result(result: RoutedResult) -> ChatResult:
    """The ChatResult of one routed `invoke`."""
    routing = result.to_dict()
    outcome = _outcome(result)
    message = AIMessage(
        content=result.text,
        response_metadata={"routing": routing, **outcome},
        usage_metadata=usage_metadata(result.usage),
    )
    generation = ChatGeneration(
        message=message,
        generation_info={"routing": routing, "finish_reason": outcome["finish_reason"]},
    )
    return ChatResult(
        generations=[generation],
        llm_output={"routing": routing, "model_name": outcome["model_name"]},
    )


def stream_chunk(piece: RouteChunk) -> ChatGenerationChunk | None:
    """The LangChain chunk for one routed chunk (None for an empty, silent one)."""
    if piece.done:
        assert piece.result is not None
        full = piece.result.to_dict()
        routing = (
            full
            if piece.decision is not None  # no text came before: the decision goes here
            else {k: v for k, v in full.items() if k not in _FIRST_CHUNK_KEYS}
        )
        outcome = _outcome(piece.result)
        message = AIMessageChunk(
            content=piece.text,
            response_metadata={"routing": routing, **outcome},
            usage_metadata=usage_metadata(piece.result.usage),
            chunk_position="last",
        )
        return ChatGenerationChunk(
            message=message,
            generation_info={"routing": routing, "finish_reason": outcome["finish_reason"]},
        )
    if piece.decision is not None:
        decision: dict[str, Any] = piece.decision.to_dict()
        if piece.models is not None:
            decision["models"] = dict(piece.models)
        return ChatGenerationChunk(
            message=AIMessageChunk(content=piece.text, response_metadata={"routing": decision}),
            generation_info={"routing": decision},
        )
    if not piece.text:
        return None
    return ChatGenerationChunk(message=AIMessageChunk(content=piece.text))


__all__ = ["chat_result", "openai_logprobs", "stream_chunk", "usage_metadata"]

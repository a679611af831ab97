"""OpenAI's JSON, both ways, for the test server's ``/v1`` endpoints.

Requests (``POST /v1/chat/completions``, ``POST /v1/completions``) become the
same ``InferenceRequest`` the Ollama endpoints use, so one engine and one set
of fault switches serve both APIs. Responses are built from the engine's
Ollama objects. Shapes follow OpenAI's API reference as the official
``openai`` client (1.x/2.x) parses it:

* chat: ``choices[0].message.content`` and ``choices[0].logprobs.content[]``
  of ``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}``
  (``logprobs`` null when not asked for; ``top_logprobs`` ``[]`` for k = 0);
* completions: ``choices[0].text`` and ``choices[0].logprobs`` with parallel
  ``tokens``, ``token_logprobs``, ``top_logprobs`` (one ``{token: logprob}``
  dict per position) and ``text_offset``;
* streams: Server-Sent Events, ``data: {chunk}`` per token (chat chunks open
  with a ``delta.role`` chunk and end with one carrying ``finish_reason``),
  an optional usage chunk with ``choices: []`` when
  ``stream_options.include_usage``, then ``data: [DONE]``;
* errors: ``{"error": {"message", "type", "param", "code"}}``.

Like vLLM, unknown request fields are ignored (OpenAI itself rejects them).
Test-server extension: a top-level ``num_ctx`` shrinks the context, as
Ollama's option does, so a test can overflow it with a short prompt.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from confidence_router import Message

from .ollama_wire import BadRequest, GenOptions, InferenceRequest

OPENAI_DEFAULT_TEMPERATURE = 1.0
FINGERPRINT = "fp_confidence_router_test"
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_REFUSED = ("tools", "functions", "tool_choice", "function_call", "audio", "modalities")


class OpenAIError(BadRequest):
    """A request the server refuses, with OpenAI's error ``type`` and ``code``."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status)
        self.type = type_
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, param=self.param, code=self.code)


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def context_error(n_prompt: int | None, n_ctx: int) -> OpenAIError:
    """OpenAI's wording (vLLM's is the same sentence) for a prompt that does not fit."""
    used = f"However, your messages resulted in {n_prompt} tokens. " if n_prompt else ""
    return OpenAIError(
        f"This model's maximum context length is {n_ctx} tokens. {used}"
        f"Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )


def model_not_found(name: str) -> OpenAIError:
    return OpenAIError(
        f"The model `{name}` does not exist or you do not have access to it.",
        404,
        code="model_not_found",
    )


def _field(body: Mapping[str, Any], name: str, kinds: tuple[type, ...], what: str) -> Any:
    value = body.get(name)
    if value is None:
        return None
    wrong_bool = isinstance(value, bool) and bool not in kinds  # JSON true is not a number
    if wrong_bool or not isinstance(value, kinds):
        raise OpenAIError(
            f"Invalid type for '{name}': expected {what}, but got {type(value).__name__}.",
            param=name,
            code="invalid_type",
        )
    return value


def _options(body: Mapping[str, Any], max_field: str | None) -> GenOptions:
    max_tokens = _field(body, "max_tokens", (int,), "an integer")
    if max_field is not None:
        max_tokens = _field(body, max_field, (int,), "an integer") or max_tokens
    if max_tokens is not None and max_tokens < 1:
        raise OpenAIError(
            f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, "
            f"but got {max_tokens} instead.",
            param="max_tokens",
            code="integer_below_min_value",
        )
    temperature = _field(body, "temperature", (int, float), "a decimal")
    if temperature is not None and not (math.isfinite(temperature) and 0 <= temperature <= 2):
        raise OpenAIError(
            f"Invalid 'temperature': decimal out of range. Expected a value between 0 and 2, "
            f"but got {temperature} instead.",
            param="temperature",
            code="decimal_above_max_value",
        )
    seed = _field(body, "seed", (int,), "an integer")
    stop = body.get("stop")
    if isinstance(stop, str):
        stops: tuple[str, ...] = (stop,)
    elif stop is None:
        stops = ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise OpenAIError("Invalid 'stop': expected a string or an array of strings.", param="stop")
    num_ctx = _field(body, "num_ctx", (int,), "an integer")  # test-server extension
    return GenOptions(
        num_predict=max_tokens,
        temperature=OPENAI_DEFAULT_TEMPERATURE if temperature is None else float(temperature),
        seed=seed if seed is not None and seed >= 0 else None,
        stop=stops,
        num_ctx=num_ctx if num_ctx is not None and num_ctx > 0 else None,
    )


def _common(body: Mapping[str, Any]) -> dict[str, Any]:
    model = _field(body, "model", (str,), "a string")
    if not model:
        raise OpenAIError(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    n = _field(body, "n", (int,), "an integer")
    if n not in (None, 1):
        raise OpenAIError("Only one completion choice is allowed", param="n")
    refused = [name for name in _REFUSED if body.get(name) is not None]
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") not in (None, "text"):
        refused.append("response_format")
    if refused:
        raise OpenAIError(
            f"the test server does not support {', '.join(refused)}", param=refused[0]
        )
    stream = bool(_field(body, "stream", (bool,), "a boolean"))
    stream_options = _field(body, "stream_options", (dict,), "an object")
    if stream_options is not None and not stream:
        raise OpenAIError(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    return {
        "model": model,
        "stream": stream,
        "keep_alive": None,
        "think": False,
        "format": None,
        "tools": (),
        "images": False,
    }


def include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, Mapping) and bool(options.get("include_usage"))


def _content(item: Mapping[str, Any], index: int) -> str:
    content = item.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise OpenAIError(
            f"Invalid type for 'messages[{index}].content'.", param=f"messages[{index}].content"
        )
    texts = []
    for part in content:
        if not isinstance(part, Mapping) or part.get("type") != "text":
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise OpenAIError(
                f"the test server reads text only; messages[{index}] has a {kind!r} part",
                param=f"messages[{index}].content",
            )
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def parse_chat(body: Mapping[str, Any]) -> tuple[InferenceRequest, Mapping[str, Any]]:
    """A ``/v1/chat/completions`` body as an InferenceRequest (endpoint ``chat``)."""
    common = _common(body)
    raw = _field(body, "messages", (list,), "an array")
    if not raw:
        raise OpenAIError("[] is too short - 'messages'", param="messages", code="empty_array")
    messages = []
    for index, item in enumerate(raw):
        if not isinstance(item, Mapping) or item.get("role") not in _ROLES:
            role = item.get("role") if isinstance(item, Mapping) else None
            raise OpenAIError(
                f"Invalid value for 'messages[{index}].role': {role!r} is not supported here.",
                param=f"messages[{index}].role",
            )
        messages.append(Message(_ROLES[item["role"]], _content(item, index)))  # type: ignore[arg-type]
    logprobs = bool(_field(body, "logprobs", (bool,), "a boolean"))
    top = _field(body, "top_logprobs", (int,), "an integer")
    if top is not None and not 0 <= top <= 20:
        raise OpenAIError(
            f"Invalid 'top_logprobs': expected a value between 0 and 20, but got {top} instead.",
            param="top_logprobs",
        )
    if top is not None and not logprobs:
        raise OpenAIError("top_logprobs requires logprobs to be set to true", param="top_logprobs")
    request = InferenceRequest(
        "chat",
        logprobs=logprobs,
        top_logprobs=top or 0,
        options=_options(body, "max_completion_tokens"),
        messages=tuple(messages),
        **common,
    )
    return request, body


def parse_completion(body: Mapping[str, Any]) -> tuple[InferenceRequest, Mapping[str, Any]]:
    """A ``/v1/completions`` body as a raw ``generate`` request (no template, like vLLM)."""
    common = _common(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise OpenAIError("the test server takes one string 'prompt'", param="prompt")
    if body.get("echo") or body.get("suffix") or body.get("best_of") not in (None, 1):
        raise OpenAIError("the test server does not support echo, suffix or best_of")
    k = _field(body, "logprobs", (int,), "an integer")
    if k is not None and not 0 <= k <= 20:
        raise OpenAIError(
            f"Invalid 'logprobs': expected a value between 0 and 20, but got {k} instead.",
            param="logprobs",
        )
    request = InferenceRequest(
        "generate",
        logprobs=k is not None,
        top_logprobs=k or 0,
        options=_options(body, None),
        prompt=prompt,
        raw=True,
        **common,
    )
    return request, body


# -- responses ------------------------------------------------------------------------


def _bytes(entry: Mapping[str, Any]) -> list[int] | None:
    data = entry.get("bytes")
    return list(data) if data else None


def chat_logprobs(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Ollama logprob entries as ``choices[].logprobs`` of a chat answer."""
    return {
        "content": [
            {
                "token": e["token"],
                "logprob": e["logprob"],
                "bytes": _bytes(e),
                "top_logprobs": [
                    {"token": a["token"], "logprob": a["logprob"], "bytes": _bytes(a)}
                    for a in e.get("top_logprobs", ())
                ],
            }
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: Sequence[Mapping[str, Any]], offset: int = 0) -> dict[str, Any]:
    """Ollama logprob entries as the legacy completions ``logprobs`` object."""
    tops: list[dict[str, float]] = []
    offsets = []
    for e in entries:
        top: dict[str, float] = {}
        for a in e.get("top_logprobs", ()):
            top.setdefault(a["token"], a["logprob"])  # same text twice: the likelier one
        tops.append(top)
        offsets.append(offset)
        offset += len(e["token"])
    return {
        "tokens": [e["token"] for e in entries],
        "token_logprobs": [e["logprob"] for e in entries],
        "top_logprobs": tops,
        "text_offset": offsets,
    }


class Answer:
    """Builds one request's OpenAI objects (id, timestamps, kind) from engine objects."""

    def __init__(self, request: InferenceRequest, body: Mapping[str, Any]) -> None:
        self.chat = request.endpoint == "chat"
        self.model = request.model
        self.want_logprobs = request.logprobs
        self.include_usage = include_usage(body)
        self.id = ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]
        self.created = int(time.time())
        # text_offset counts from the start of the prompt, as in OpenAI's legacy API and
        # llama-cpp-python's server.
        self.offset = 0 if self.chat else len(request.prompt)

    def _head(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }

    @staticmethod
    def text(obj: Mapping[str, Any]) -> str:
        return str(obj["message"]["content"] if "message" in obj else obj.get("response", ""))

    def _logprobs(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        if not self.want_logprobs or "logprobs" not in obj:
            return None
        if self.chat:
            return chat_logprobs(obj["logprobs"])
        logprobs = completion_logprobs(obj["logprobs"], self.offset)
        return logprobs

    @staticmethod
    def usage(final: Mapping[str, Any]) -> dict[str, int]:
        prompt = int(final.get("prompt_eval_count", 0))
        completion = int(final.get("eval_count", 0))
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }

    def whole(self, objects: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The non-streaming answer: all text, all logprobs, usage."""
        final = objects[-1]
        text = "".join(self.text(o) for o in objects)
        entries = [e for o in objects for e in o.get("logprobs", ())]
        merged = {"logprobs": entries} if any("logprobs" in o for o in objects) else {}
        logprobs = self._logprobs(merged)
        reason = final.get("done_reason", "stop")
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": reason,
            }
            head = self._head("chat.completion")
        else:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": reason}
            head = self._head("text_completion")
        return {**head, "choices": [choice], "usage": self.usage(final)}

    def _chunk(self, choice: dict[str, Any] | None, usage: Any = None) -> dict[str, Any]:
        chunk = self._head("chat.completion.chunk" if self.chat else "text_completion")
        chunk["choices"] = [choice] if choice is not None else []
        if self.include_usage:
            chunk["usage"] = usage
        return chunk

    def opening(self) -> list[dict[str, Any]]:
        """What a chat stream sends before the first token: the assistant role."""
        if not self.chat:
            return []
        delta = {"role": "assistant", "content": "", "refusal": None}
        return [self._chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})]

    def chunks(self, obj: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The SSE chunks for one engine object (the final one closes the stream)."""
        out = []
        text = self.text(obj)
        if not obj.get("done") or text:
            logprobs = self._logprobs(obj)
            if self.chat:
                choice = {
                    "index": 0,
                    "delta": {"content": text},
                    "logprobs": logprobs,
                    "finish_reason": None,
                }
            else:
                choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": None}
            self.offset += len(text)
            out.append(self._chunk(choice))
        if obj.get("done"):
            reason = obj.get("done_reason", "stop")
            if self.chat:
                last = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason}
            else:
                last = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
            out.append(self._chunk(last))
            if self.include_usage:
                out.append(self._chunk(None, self.usage(obj)))
        return out


def models_list(names: Sequence[str], created: int) -> dict[str, Any]:
    """``GET /v1/models``."""
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "created": created, "owned_by": "library"}
            for name in names
        ],
    }


__all__ = [
    "OPENAI_DEFAULT_TEMPERATURE",
    "Answer",
    "OpenAIError",
    "chat_logprobs",
    "completion_logprobs",
    "context_error",
    "error_body",
    "include_usage",
    "model_not_found",
    "models_list",
    "parse_chat",
    "parse_completion",
]

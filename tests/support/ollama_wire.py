"""Ollama's JSON, both ways: request validation and response objects.

The shapes follow docs/ollama-api.md and ollama/ollama
``server/routes.go`` + ``api/types.go``: Go's JSON binding errors, the option
types of ``Options.FromMap`` (nulls and unknown keys accepted), top-level
``logprobs`` entries with ``bytes`` and ``top_logprobs`` left out when empty,
integer-nanosecond metrics left out when zero.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from confidence_router import Message

from .models import rfc3339

TOP_LOGPROBS_ERROR = "top_logprobs must be between 0 and 20"
CONTEXT_ERROR = "the input length exceeds the context length"
OLLAMA_DEFAULT_TEMPERATURE = 0.8

# api.Options fields (and runner options) by JSON name -> the Go kind FromMap checks.
_OPTION_KINDS = {
    **dict.fromkeys(
        (
            "num_keep",
            "seed",
            "num_predict",
            "top_k",
            "repeat_last_n",
            "num_ctx",
            "num_batch",
            "num_gpu",
            "main_gpu",
            "num_thread",
        ),
        "integer",
    ),
    **dict.fromkeys(
        (
            "temperature",
            "top_p",
            "min_p",
            "typical_p",
            "repeat_penalty",
            "presence_penalty",
            "frequency_penalty",
        ),
        "float32",
    ),
    "use_mmap": "boolean",
    "stop": "array",
}
_JSON_TYPE = {
    bool: "bool",
    int: "number",
    float: "number",
    str: "string",
    list: "array",
    dict: "object",
}
_GO_DURATION = re.compile(r"-?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BadRequest(Exception):
    """A request Ollama would refuse: HTTP ``status`` with ``{"error": message}``."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class GenOptions:
    """The options the server honours; the rest are type-checked and ignored."""

    num_predict: int | None = None  # None: until EOS or the context is full
    temperature: float = OLLAMA_DEFAULT_TEMPERATURE
    seed: int | None = None  # None: a fresh random seed, like Ollama's -1
    stop: tuple[str, ...] = ()
    num_ctx: int | None = None  # None: the server's context size


@dataclass(frozen=True)
class InferenceRequest:
    """One /api/chat or /api/generate request after Go-style binding."""

    endpoint: str
    model: str
    stream: bool
    logprobs: bool
    top_logprobs: int
    options: GenOptions
    keep_alive: float | None
    think: bool
    format: Any
    tools: Sequence[Any]
    images: bool
    messages: tuple[Message, ...] = ()
    prompt: str = ""
    system: str = ""
    raw: bool = False
    suffix: str = ""
    template: str = ""
    context: tuple[int, ...] | None = None


def _type_error(struct: str, name: str, value: Any, go_type: str) -> BadRequest:
    json_type = _JSON_TYPE.get(type(value), "value")
    if json_type == "number":
        json_type = f"number {json.dumps(value)}"
    return BadRequest(
        f"json: cannot unmarshal {json_type} into Go struct field {struct}.{name} of type {go_type}"
    )


def _get(body: Mapping[str, Any], struct: str, name: str, kind: type, go_type: str) -> Any:
    """A field, None when absent or null, else checked against its Go type."""
    value = body.get(name)
    if value is None:
        return None
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise _type_error(struct, name, value, go_type)
    return value


def parse_body(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, with Gin's error texts."""
    if not raw.strip():
        raise BadRequest("missing request body")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"invalid character in request body: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest(
            f"json: cannot unmarshal {_JSON_TYPE.get(type(body), 'value')} into Go value"
        )
    return body


def parse_duration(value: Any) -> float:
    """keep_alive: seconds as a number, or a Go duration string such as ``"5m"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadRequest(f"Unsupported type: '{type(value).__name__}'")
    if isinstance(value, (int, float)):
        return math.inf if value < 0 else float(value)
    if value in ("0", "-1"):
        return 0.0 if value == "0" else math.inf
    if not _GO_DURATION.fullmatch(value):
        raise BadRequest(f'time: invalid duration "{value}"')
    sign = -1.0 if value.startswith("-") else 1.0
    total = sum(
        float(num) * _DURATION_UNITS[unit]
        for num, _, unit in re.findall(r"(\d+(\.\d*)?)(ns|us|µs|ms|s|m|h)", value)
    )
    return math.inf if sign < 0 else total


def parse_options(raw: Any, struct: str = "ChatRequest") -> GenOptions:
    """``options`` as Ollama's Options.FromMap reads it: nulls and unknown keys pass."""
    if raw is None:
        return GenOptions()
    if not isinstance(raw, dict):
        raise _type_error(struct, "options", raw, "map[string]interface {}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        kind = _OPTION_KINDS.get(key)
        if kind is None or value is None:
            continue  # Ollama logs "invalid option provided" and goes on
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind == "integer" and number:
            values[key] = int(value)
        elif kind == "float32" and number:
            values[key] = float(value)
        elif kind == "boolean" and isinstance(value, bool):
            values[key] = value
        elif kind == "array" and isinstance(value, list):
            if not all(isinstance(s, str) for s in value):
                raise BadRequest(f'option "{key}" must be of an array of strings')
            values[key] = tuple(value)
        else:
            raise BadRequest(f'option "{key}" must be of type {kind}')
    temperature = values.get("temperature", OLLAMA_DEFAULT_TEMPERATURE)
    if not math.isfinite(temperature):
        raise BadRequest('option "temperature" must be a finite number')
    num_predict = values.get("num_predict")
    seed = values.get("seed")
    num_ctx = values.get("num_ctx")
    return GenOptions(
        num_predict=num_predict if num_predict is not None and num_predict > 0 else None,
        temperature=max(float(temperature), 0.0),
        seed=seed if seed is not None and seed >= 0 else None,
        stop=values.get("stop", ()),
        num_ctx=num_ctx if num_ctx is not None and num_ctx > 0 else None,
    )


def _think(body: Mapping[str, Any]) -> bool:
    value = body.get("think")
    if value is None or value is False:
        return False
    if value is True or value in ("high", "medium", "low"):
        return True
    raise BadRequest(
        f'invalid think value: {json.dumps(value)} (must be "high", "medium", '
        f'"low", true, or false)'
    )


def _common(body: Mapping[str, Any], struct: str) -> dict[str, Any]:
    stream = _get(body, struct, "stream", bool, "bool")
    top = _get(body, struct, "top_logprobs", int, "int")
    logprobs = _get(body, struct, "logprobs", bool, "bool")
    model = _get(body, struct, "model", str, "string") or ""
    tools = _get(body, struct, "tools", list, "[]api.Tool") or []
    keep_alive = body.get("keep_alive")
    top_logprobs = top or 0
    if not 0 <= top_logprobs <= 20:
        raise BadRequest(TOP_LOGPROBS_ERROR)
    common: dict[str, Any] = {
        "model": model,
        "stream": True if stream is None else stream,  # Ollama streams unless told not to
        "logprobs": bool(logprobs),
        "top_logprobs": top_logprobs,
        "options": parse_options(body.get("options"), struct),
        "keep_alive": None if keep_alive is None else parse_duration(keep_alive),
        "think": _think(body),
        "format": body.get("format"),
        "tools": tools,
    }
    return common


def parse_chat(body: Mapping[str, Any]) -> InferenceRequest:
    raw_messages = _get(body, "ChatRequest", "messages", list, "[]api.Message") or []
    common = _common(body, "ChatRequest")
    messages: list[Message] = []
    images = False
    for item in raw_messages:
        if not isinstance(item, dict):
            raise _type_error("ChatRequest", "messages", item, "api.Message")
        role = _get(item, "Message", "role", str, "string") or ""
        content = _get(item, "Message", "content", str, "string") or ""
        images = images or bool(_get(item, "Message", "images", list, "[]api.ImageData"))
        try:
            messages.append(Message(role, content))  # type: ignore[arg-type]
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"invalid message: {exc}") from exc
    return InferenceRequest("chat", images=images, messages=tuple(messages), **common)


def parse_generate(body: Mapping[str, Any]) -> InferenceRequest:
    struct = "GenerateRequest"
    context = _get(body, struct, "context", list, "[]int")
    if context is not None and not all(
        isinstance(t, int) and not isinstance(t, bool) for t in context
    ):
        raise BadRequest("json: cannot unmarshal into Go struct field GenerateRequest.context")
    return InferenceRequest(
        "generate",
        prompt=_get(body, struct, "prompt", str, "string") or "",
        system=_get(body, struct, "system", str, "string") or "",
        raw=bool(_get(body, struct, "raw", bool, "bool")),
        suffix=_get(body, struct, "suffix", str, "string") or "",
        template=_get(body, struct, "template", str, "string") or "",
        context=tuple(context) if context is not None else None,
        images=bool(_get(body, struct, "images", list, "[]api.ImageData")),
        **_common(body, struct),
    )


def created_at() -> str:
    return rfc3339(datetime.now(timezone.utc))


def metrics(
    *,
    total_s: float,
    load_s: float,
    prompt_eval_count: int,
    prompt_eval_s: float,
    eval_count: int,
    eval_s: float,
) -> dict[str, int]:
    """Ollama's Metrics: integers, nanoseconds for durations, zero values left out."""
    values = {
        "total_duration": int(total_s * 1e9),
        "load_duration": int(load_s * 1e9),
        "prompt_eval_count": prompt_eval_count,
        "prompt_eval_duration": int(prompt_eval_s * 1e9),
        "eval_count": eval_count,
        "eval_duration": int(eval_s * 1e9),
    }
    return {k: v for k, v in values.items() if v > 0}


def token_logprob(token: str, logprob: float, token_bytes: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = {"token": token, "logprob": logprob}
    if token_bytes:
        entry["bytes"] = list(token_bytes)
    return entry


def logprob_entry(
    token: str,
    logprob: float,
    token_bytes: bytes,
    top: Sequence[tuple[str, float, bytes]] | None,
) -> dict[str, Any]:
    """One generated token's entry; ``top`` None leaves ``top_logprobs`` out (k = 0)."""
    entry = token_logprob(token, logprob, token_bytes)
    if top is not None:
        entry["top_logprobs"] = [token_logprob(t, lp, b) for t, lp, b in top]
    return entry


def dumps(obj: Any, *, allow_nan: bool = False) -> bytes:
    """Compact JSON as Go writes it (NaN only when a fault asks for it)."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=allow_nan).encode()


__all__ = [
    "CONTEXT_ERROR",
    "OLLAMA_DEFAULT_TEMPERATURE",
    "TOP_LOGPROBS_ERROR",
    "BadRequest",
    "GenOptions",
    "InferenceRequest",
    "created_at",
    "dumps",
    "logprob_entry",
    "metrics",
    "parse_body",
    "parse_chat",
    "parse_duration",
    "parse_generate",
    "parse_options",
]

"""The test server's OpenAI-compatible endpoints: ``/v1/chat/completions``, ``/v1/completions``.

Same models, same engine, same fault switches as the Ollama endpoints (a
``/v1/chat/completions`` request counts as endpoint ``chat`` for the faults,
``/v1/completions`` as ``generate``), so a test flips one switch and both APIs
misbehave alike. Differences of the wire, on purpose faithful to OpenAI:

* a stream is Server-Sent Events (``text/event-stream``), ``data: {...}`` per
  chunk, closed by ``data: [DONE]``; a failure inside it is
  ``data: {"error": {...}}`` with no ``[DONE]`` after it;
* a failed non-streaming request is an HTTP status with an OpenAI error body;
* an unknown model is 404 ``model_not_found``; a prompt longer than the
  context is 400 ``context_length_exceeded`` (vLLM's behaviour; real Ollama's
  ``/v1`` truncates instead).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from confidence_router import ContextWindowExceededError, InvalidInputError

from . import ollama_engine as engine
from .faults import MID_STREAM, Plan
from .ollama_wire import BadRequest, dumps, parse_body
from .openai_wire import (
    Answer,
    OpenAIError,
    context_error,
    error_body,
    model_not_found,
    models_list,
    parse_chat,
    parse_completion,
)

if TYPE_CHECKING:
    from .ollama_server import _Handler

_PROMPT_SIZE = re.compile(r"prompt has (\d+) tokens .* context window of (\d+)")


def error_for_status(status: int, message: str) -> dict[str, Any]:
    """An OpenAI error body for a status the server (or a fault) answers with."""
    if status == 404:
        return error_body(message, "invalid_request_error", code="model_not_found")
    if status < 500:
        return error_body(message, "invalid_request_error")
    return error_body(message, "server_error")


def models(handler: _Handler) -> None:
    """``GET /v1/models``: the served names (``not_found`` faults hide theirs)."""
    from .ollama_server import _Handled

    owner = handler.server.owner
    try:
        handler._gate("models")
    except _Handled:
        return
    names = [m.name for m in owner.models if not owner.faults.hidden("models", m.name)]
    handler._json(200, models_list(names, int(time.time())))


def inference(handler: _Handler, endpoint: str, raw: bytes) -> None:
    """One chat or completion request, answered whole or as an SSE stream."""
    from .ollama_server import _Handled

    owner = handler.server.owner
    started = time.perf_counter()
    try:
        request, body = (parse_chat if endpoint == "chat" else parse_completion)(parse_body(raw))
    except OpenAIError as exc:
        handler._json(exc.status, exc.body())
        return
    except BadRequest as exc:
        handler._json(exc.status, error_body(exc.message, "invalid_request_error"))
        return
    served = owner.lookup(request.model)
    try:
        plan = handler._gate(endpoint, served.name if served else request.model)
    except _Handled:
        return
    if "not_found" in plan:
        plan.fire("not_found")
        served = None
    if served is None:
        handler._json(404, model_not_found(request.model).body())
        return
    owner._touch(served, None)
    job = engine.prepare(served, request, started)
    objects = engine.run(job, plan)
    allow_nan = "bad_logprobs" in plan
    try:
        first = next(objects)
    except ContextWindowExceededError as exc:
        sizes = _PROMPT_SIZE.search(str(exc))
        n_prompt, n_ctx = (int(sizes[1]), int(sizes[2])) if sizes else (None, job.slm.n_ctx)
        handler._json(400, context_error(n_prompt, n_ctx).body())
        return
    except InvalidInputError as exc:
        handler._json(400, error_body(str(exc), "invalid_request_error"))
        return
    except Exception as exc:  # the runner failed before answering
        handler._json(500, error_body(f"{type(exc).__name__}: {exc}", "server_error"))
        return
    answer = Answer(request, body)
    if request.stream:
        _sse(handler, answer, first, objects, plan, allow_nan)
    else:
        handler._whole(first, objects, plan, allow_nan, render=answer.whole)


def _sse(
    handler: _Handler,
    answer: Answer,
    first: dict[str, Any],
    objects: Iterator[dict[str, Any]],
    plan: Plan,
    allow_nan: bool,
) -> None:
    """An SSE stream; a mid-stream fault acts after ``after`` token objects (never after done)."""
    from .ollama_server import _Abort, _chain, _close

    def event(data: bytes) -> None:
        handler._write_chunk(b"data: " + data + b"\n\n")

    mid = next((plan.get(k) for k in MID_STREAM if k in plan), None)
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream; charset=utf-8")
    handler.send_header("Cache-Control", "no-cache")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    sent = 0
    try:
        if mid is not None and mid.kind == "truncate" and mid.after == 0:
            plan.fire("truncate")  # nothing at all, as llama-cpp-python's server does
            _close(objects)
            handler._end_stream()
            return
        for chunk in answer.opening():
            event(dumps(chunk))
        for obj in _chain(first, objects):
            if mid is not None and (sent >= mid.after or obj.get("done")):
                fault = plan.fire(mid.kind)
                if mid.kind == "stall_mid":
                    rest = [obj, *objects]  # generate first: a stall must not hold the model
                    if plan.stall(fault.seconds):
                        raise _Abort
                    for later in rest:
                        for chunk in answer.chunks(later):
                            event(dumps(chunk, allow_nan=allow_nan))
                    break
                _close(objects)
                if mid.kind == "drop_mid":
                    raise _Abort
                if mid.kind == "truncate":  # a clean end: no finish chunk, no [DONE]
                    handler._end_stream()
                    return
                if mid.kind == "error_line":
                    event(dumps(error_body(fault.message, "server_error")))
                else:  # malformed_json
                    event(fault.text.encode())
                handler._end_stream()
                return
            for chunk in answer.chunks(obj):
                event(dumps(chunk, allow_nan=allow_nan))
            sent += 1
    except (BrokenPipeError, ConnectionResetError, _Abort):
        _close(objects)
        raise _Abort from None
    except Exception as exc:  # the runner failed mid-answer: an error event, no [DONE]
        event(dumps(error_body(f"{type(exc).__name__}: {exc}", "server_error")))
        handler._end_stream()
        return
    handler._write_chunk(b"data: [DONE]\n\n")
    handler._end_stream()


__all__ = ["error_for_status", "inference", "models"]

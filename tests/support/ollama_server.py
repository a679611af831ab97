"""An Ollama-compatible HTTP server on 127.0.0.1, backed by real models, with faults.

Test support only (not shipped). It speaks the wire format of
``docs/ollama-api.md`` (Ollama 0.12.11+, the first release with
logprobs) so the official ``ollama`` client, ``OllamaSLM``, LangChain's
``ChatOllama`` and LlamaIndex's ``Ollama`` talk to it unchanged:

* ``POST /api/chat``, ``POST /api/generate``: NDJSON streams by default
  (``stream`` absent means true), chunked, one object per token with that
  token's ``logprobs``; the final object has ``done_reason``, integer
  nanosecond metrics and no logprobs; non-streaming answers concatenate.
* ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps``, ``GET /api/version``.
* Errors as ``{"error": ...}``: 400 bad request, 404 ``model 'NAME' not found``
  (always before any stream line), 500 server failure, or an error line
  inside a 200 stream.
* The OpenAI-compatible ``POST /v1/chat/completions``, ``POST /v1/completions``
  and ``GET /v1/models`` over the same models and faults (``openai_routes``,
  ``openai_wire``), so the official ``openai`` client and ``ChatOpenAI`` work too.

Models: ``smollm2:135m`` (SmolLM2-135M-Instruct, its chat template) and
``gemma3:270m`` (Gemma 3 270M base; no template, so chat messages are joined
as a plain completion), served by the core's ``LlamaCppSLM`` (see
``ollama_engine``). Honoured options: ``num_predict``, ``temperature``
(Ollama's default 0.8 when absent), ``seed``, ``stop``, ``num_ctx`` (capped
at the server's context of 2048 tokens). ``top_k``, ``top_p`` and the
penalties are type-checked and ignored: sampling is plain temperature
sampling over the full vocabulary.

Known differences from Ollama, on purpose: a prompt longer than the context
is refused with 400 ``the input length exceeds the context length`` instead
of being truncated; ``format``, ``suffix``, custom ``template``, ``context``
and images are refused with 400; wrong option types give 400 (Ollama: 500).

Usage::

    with OllamaTestServer() as server:
        client = ollama.Client(host=server.host)
        server.faults.set("stall", seconds=2)
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confidence_router import ContextWindowExceededError, InvalidInputError

from . import ollama_engine as engine
from . import openai_routes
from .faults import MID_STREAM, Faults, Plan
from .models import ServedModel, default_models, rfc3339
from .ollama_wire import (
    CONTEXT_ERROR,
    BadRequest,
    InferenceRequest,
    dumps,
    parse_body,
    parse_chat,
    parse_generate,
)

logger = logging.getLogger("tests.ollama_server")

OLLAMA_VERSION = "0.12.11"
DEFAULT_KEEP_ALIVE_S = 300.0
_RUNNING: weakref.WeakSet[OllamaTestServer] = weakref.WeakSet()


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server received it (for asserting what a client sent)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class _Abort(Exception):
    """Close the connection now, without (the rest of) an answer."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # load tests open hundreds of connections at once
    owner: OllamaTestServer

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name="ollama-test-connection",
            daemon=True,
        )
        self.owner._track(request, thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # a dropped client or a closed server: nothing to report
            logger.debug("connection ended with an error", exc_info=True)
        finally:
            self.shutdown_request(request)
            self.owner._untrack(request, threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("request from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ollama-test-server"
    sys_version = ""
    timeout = 120
    server: _HTTPServer

    # -- plumbing ----------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_response(self, code: int, message: str | None = None) -> None:
        self._responded = True
        super().send_response(code, message)

    def _dispatch(self) -> None:
        self._responded = False
        owner = self.server.owner
        path = self.path.split("?", 1)[0]
        raw = self._read_body()
        owner._record(self.command, path, dict(self.headers.items()), raw)
        routes = {
            "/": {"GET": self._root, "HEAD": self._root},
            "/api/version": {"GET": self._version, "HEAD": self._version},
            "/api/tags": {"GET": self._tags, "HEAD": self._tags},
            "/api/ps": {"GET": self._ps},
            "/api/show": {"POST": lambda: self._show(raw)},
            "/api/chat": {"POST": lambda: self._inference("chat", raw)},
            "/api/generate": {"POST": lambda: self._inference("generate", raw)},
            "/v1/chat/completions": {"POST": lambda: openai_routes.inference(self, "chat", raw)},
            "/v1/completions": {"POST": lambda: openai_routes.inference(self, "generate", raw)},
            "/v1/models": {"GET": lambda: openai_routes.models(self)},
        }
        methods = routes.get(path)
        try:
            if methods is None:
                self._send(404, b"404 page not found", "text/plain")
            elif self.command not in methods:
                self._send(405, b"405 method not allowed", "text/plain")
            else:
                methods[self.command]()
        except _Abort:
            self._abort()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in this server: say so, never pass it off as a fault
            logger.exception("the Ollama test server failed on %s %s", self.command, path)
            if self._responded:
                self._abort()
            else:
                self._error(500, f"ollama test server bug: {type(exc).__name__}: {exc}")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _json(self, status: int, obj: Any, *, allow_nan: bool = False) -> None:
        self._send(status, dumps(obj, allow_nan=allow_nan), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        if self.path.startswith("/v1/"):  # the OpenAI-compatible endpoints
            self._json(status, openai_routes.error_for_status(status, message))
            return
        self._json(status, {"error": message})

    def _abort(self) -> None:
        """Drop the connection: no more bytes, not even the end of a chunked body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- simple endpoints --------------------------------------------------------

    def _root(self) -> None:
        self._send(200, b"Ollama is running", "text/plain; charset=utf-8")

    def _gate(self, endpoint: str, model: str | None = None) -> Plan:
        """Faults that act before any answer: hangup, stall, status."""
        plan = self.server.owner.faults.select(endpoint, model)
        if "hangup" in plan:
            plan.fire("hangup")
            raise _Abort
        if "stall" in plan and plan.stall(plan.fire("stall").seconds):
            raise _Abort
        if "status" in plan:
            fault = plan.fire("status")
            self._error(fault.status, fault.message)
            raise _Handled
        return plan

    def _version(self) -> None:
        with contextlib.suppress(_Handled):
            self._gate("version")
            self._json(200, {"version": OLLAMA_VERSION})

    def _tags(self) -> None:
        owner = self.server.owner
        with contextlib.suppress(_Handled):
            self._gate("tags")
            models = []
            for served in owner.models:
                if owner.faults.hidden("tags", served.name):
                    continue
                facts = served.facts()
                models.append(
                    {
                        "name": served.name,
                        "model": served.name,
                        "modified_at": facts.modified_at,
                        "size": facts.size,
                        "digest": facts.digest,
                        "details": facts.details(),
                    }
                )
            self._json(200, {"models": models})

    def _ps(self) -> None:
        owner = self.server.owner
        with contextlib.suppress(_Handled):
            self._gate("ps")
            models = []
            for served, expires in owner._loaded_models():
                facts = served.facts()
                models.append(
                    {
                        "name": served.name,
                        "model": served.name,
                        "size": facts.size,
                        "digest": facts.digest,
                        "details": facts.details(),
                        "expires_at": expires,
                        "size_vram": 0,
                        "context_length": served.slm().n_ctx,
                    }
                )
            self._json(200, {"models": models})

    def _show(self, raw: bytes) -> None:
        owner = self.server.owner
        try:
            body = parse_body(raw)
            name = body.get("model") or body.get("name")
            if not isinstance(name, str) or not name:
                raise BadRequest("model is required")
        except BadRequest as exc:
            self._error(exc.status, exc.message)
            return
        with contextlib.suppress(_Handled):
            served = owner.lookup(name)
            plan = self._gate("show", served.name if served else name)
            if served is None or "not_found" in plan:
                if "not_found" in plan:
                    plan.fire("not_found")
                self._error(404, f"model '{name}' not found")
                return
            facts = served.facts()
            modelfile = (
                '# Modelfile generated by "ollama show"\n'
                "# To build a new Modelfile based on this, replace FROM with:\n"
                f"# FROM {served.name}\n\n"
                f"FROM {facts.path}\n"
                f'TEMPLATE """{facts.template}"""\n'
            )
            self._json(
                200,
                {
                    "modelfile": modelfile,
                    "parameters": "",
                    "template": facts.template,
                    "details": facts.details(),
                    "model_info": facts.model_info,
                    "capabilities": ["completion"],
                    "modified_at": facts.modified_at,
                },
            )

    # -- chat and generate -------------------------------------------------------

    def _inference(self, endpoint: str, raw: bytes) -> None:
        owner = self.server.owner
        started = time.perf_counter()
        try:
            body = parse_body(raw)
            request = parse_chat(body) if endpoint == "chat" else parse_generate(body)
        except BadRequest as exc:
            self._error(exc.status, exc.message)
            return
        served = owner.lookup(request.model) if request.model else None
        try:
            plan = self._gate(endpoint, served.name if served else request.model)
        except _Handled:
            return
        if "not_found" in plan:
            plan.fire("not_found")
            served = None
        try:
            served = self._check(request, served)
        except BadRequest as exc:
            self._error(exc.status, exc.message)
            return
        if request.keep_alive == 0 and not (request.messages or request.prompt):
            owner._unload(served)
            self._json(200, engine.load_response(request, "unload"))
            return
        owner._touch(served, request.keep_alive)
        if not (request.messages or request.prompt):
            self._json(200, engine.load_response(request, "load"))
            return
        job = engine.prepare(served, request, started)
        objects = engine.run(job, plan)
        allow_nan = "bad_logprobs" in plan
        try:
            first = next(objects)
        except ContextWindowExceededError:
            self._error(400, CONTEXT_ERROR)
            return
        except InvalidInputError as exc:
            self._error(400, str(exc))
            return
        except Exception as exc:  # the runner failed before answering
            logger.debug("generation failed", exc_info=True)
            self._error(500, f"{type(exc).__name__}: {exc}")
            return
        if request.stream:
            self._stream(first, objects, plan, allow_nan)
        else:
            self._whole(first, objects, plan, allow_nan)

    def _check(self, request: InferenceRequest, served: ServedModel | None) -> ServedModel:
        """Ollama's checks between binding and scheduling, in its order."""
        if served is None:
            if request.endpoint == "chat" and not request.model:
                raise BadRequest("model is required")
            raise BadRequest(f"model '{request.model}' not found", status=404)
        if request.think:
            raise BadRequest(f'"{request.model}" does not support thinking')
        if request.tools:
            raise BadRequest(f"registry.ollama.ai/library/{served.name} does not support tools")
        if request.suffix:
            raise BadRequest(f"registry.ollama.ai/library/{served.name} does not support insert")
        if request.raw and (request.system or request.template or request.context):
            raise BadRequest("raw mode does not support template, system, or context")
        unsupported = [
            name
            for name, value in (
                ("format", request.format not in (None, "")),
                ("template", bool(request.template)),
                ("context", request.context is not None),
                ("images", request.images),
            )
            if value
        ]
        if unsupported:
            raise BadRequest(f"the test server does not support {', '.join(unsupported)}")
        return served

    def _whole(
        self,
        first: dict[str, Any],
        objects: Iterator[dict[str, Any]],
        plan: Plan,
        allow_nan: bool,
        render: Callable[[list[dict[str, Any]]], dict[str, Any]] = engine.merge,
    ) -> None:
        """A non-streaming answer, with the mid-stream faults applied to its body."""
        try:
            collected = [first, *objects]
        except Exception as exc:
            self._error(500, f"{type(exc).__name__}: {exc}")
            return
        if "error_line" in plan:  # Ollama answers a failed non-streaming request with a status
            self._error(500, plan.fire("error_line").message)
            return
        if "malformed_json" in plan:
            text = plan.fire("malformed_json").text.encode()
            self._send(200, text, "application/json; charset=utf-8")
            return
        if "truncate" in plan:
            after = plan.fire("truncate").after
            cut = [o for o in collected if not o.get("done")][:after] or [_unfinished(first)]
            self._json(200, _unfinish(render(cut)), allow_nan=allow_nan)
            return
        body = dumps(render(collected), allow_nan=allow_nan)
        mid = plan.get("stall_mid") or plan.get("drop_mid")
        if mid is None:
            self._send(200, body, "application/json; charset=utf-8")
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2])
        self.wfile.flush()
        if plan.fire(mid.kind).kind == "drop_mid" or plan.stall(mid.seconds):
            raise _Abort
        self.wfile.write(body[len(body) // 2 :])
        self.wfile.flush()

    def _stream(
        self,
        first: dict[str, Any],
        objects: Iterator[dict[str, Any]],
        plan: Plan,
        allow_nan: bool,
    ) -> None:
        """An NDJSON stream; a mid-stream fault acts after ``after`` objects (never after done)."""
        mid = next((plan.get(k) for k in MID_STREAM if k in plan), None)
        self._start_stream()
        sent = 0
        pending: Iterator[dict[str, Any]] = _chain(first, objects)
        try:
            for obj in pending:
                if mid is not None and (sent >= mid.after or obj.get("done")):
                    pending = self._mid_stream_fault(mid.kind, plan, obj, objects)
                    mid = None
                    for rest in pending:
                        self._write_chunk(dumps(rest, allow_nan=allow_nan) + b"\n")
                    break
                self._write_chunk(dumps(obj, allow_nan=allow_nan) + b"\n")
                sent += 1
        except (BrokenPipeError, ConnectionResetError, _Abort):
            _close(objects)
            raise _Abort from None
        except Exception as exc:  # the runner failed mid-answer: Ollama sends an error line
            logger.debug("generation failed mid-stream", exc_info=True)
            self._write_chunk(dumps({"error": f"{type(exc).__name__}: {exc}"}) + b"\n")
        self._end_stream()

    def _mid_stream_fault(
        self,
        kind: str,
        plan: Plan,
        current: dict[str, Any],
        objects: Iterator[dict[str, Any]],
    ) -> Iterator[dict[str, Any]]:
        """Apply the fault; return what (if anything) is still to be sent."""
        fault = plan.fire(kind)
        if kind == "stall_mid":
            # Finish generating first, so a stalled answer does not hold the model's lock.
            rest = [current, *objects]
            if plan.stall(fault.seconds):
                raise _Abort
            return iter(rest)
        _close(objects)
        if kind == "drop_mid":
            raise _Abort
        if kind == "truncate":  # a clean end of the body, without the done object
            return iter(())
        if kind == "error_line":
            self._write_chunk(dumps({"error": fault.message}) + b"\n")
        else:  # malformed_json
            self._write_chunk(fault.text.encode() + b"\n")
        return iter(())


class _Handled(Exception):
    """The answer has already been sent (by a fault)."""


def _unfinished(obj: dict[str, Any]) -> dict[str, Any]:
    """An answer object with no text, no logprobs and no end (``truncate`` with ``after=0``)."""
    empty = {k: v for k, v in obj.items() if k in ("model", "created_at")}
    if "message" in obj:
        empty["message"] = {"role": "assistant", "content": ""}
    else:
        empty["response"] = ""
    empty["done"] = False
    return empty


def _unfinish(body: dict[str, Any]) -> dict[str, Any]:
    """A whole answer without its end: Ollama ``done: false``, OpenAI ``finish_reason: null``
    (and no usage: a cut answer has no final counts)."""
    if "choices" in body:
        body = {k: v for k, v in body.items() if k != "usage"}
        body["choices"] = [{**c, "finish_reason": None} for c in body["choices"]]
        return body
    end = ("done_reason", "context", "prompt_eval_count", "eval_count", "total_duration")
    return {**{k: v for k, v in body.items() if k not in end}, "done": False}


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _close(objects: Iterator[Any]) -> None:
    close = getattr(objects, "close", None)
    if close is not None:
        close()


class OllamaTestServer:
    """The server: start/stop, its ``host`` URL, its ``faults``, what it received.

    Args:
        models: the names it serves (default ``smollm2:135m`` and ``gemma3:270m``).
        port: 0 picks a free port; it is kept across ``refuse`` faults.
        keep_requests: how many received requests ``requests`` remembers.
    """

    def __init__(
        self,
        models: Sequence[ServedModel] | None = None,
        *,
        port: int = 0,
        keep_requests: int = 200,
    ) -> None:
        self.models = list(models) if models is not None else default_models()
        self.faults = Faults(on_change=self._faults_changed)
        self.requests: deque[RecordedRequest] = deque(maxlen=keep_requests)
        #: Every request ever received, by path (``requests`` keeps only the last ones).
        self.request_counts: Counter[str] = Counter()
        self._port = port
        self._lock = threading.Lock()  # small shared data (connections, expiry)
        self._listener_lock = threading.RLock()  # never held by the serving thread
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: dict[Any, threading.Thread] = {}
        self._expiry: dict[str, float] = {}
        self._stopping = False

    def __repr__(self) -> str:
        return f"OllamaTestServer(host={self.host!r}, models={[m.name for m in self.models]})"

    # -- lifecycle ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def listening(self) -> bool:
        return self._httpd is not None

    def start(self) -> OllamaTestServer:
        with self._listener_lock:
            self._stopping = False
            self._listen()
        _RUNNING.add(self)
        return self

    def stop(self, timeout: float = 10.0) -> list[threading.Thread]:
        """Stop listening, release stalls, close connections; return threads still alive."""
        with self._listener_lock:
            self._stopping = True
            self.faults.clear()
            self._unlisten()
        _RUNNING.discard(self)
        deadline = time.monotonic() + timeout
        for thread in self.connection_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        return self.connection_threads()

    def __enter__(self) -> OllamaTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connection_threads(self) -> list[threading.Thread]:
        with self._lock:
            return [t for t in self._connections.values() if t.is_alive()]

    def _listen(self) -> None:
        if self._httpd is not None:
            return
        httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        httpd.owner = self
        self._port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"ollama-test-server:{self._port}",
            daemon=True,
        )
        self._thread.start()

    def _unlisten(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _faults_changed(self) -> None:
        with self._listener_lock:
            if self._stopping:
                return
            if self.faults.refusing:
                self._unlisten()
            else:
                self._listen()

    def _track(self, conn: Any, thread: threading.Thread) -> None:
        with self._lock:
            self._connections[conn] = thread

    def _untrack(self, conn: Any, thread: threading.Thread) -> None:
        with self._lock:
            if self._connections.get(conn) is thread:
                del self._connections[conn]

    def _record(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> None:
        try:
            body: Any = parse_body(raw) if raw.strip() else None
        except BadRequest:
            body = raw
        self.requests.append(RecordedRequest(method, path, headers, body))
        self.request_counts[path] += 1

    # -- models ------------------------------------------------------------------

    def lookup(self, name: str) -> ServedModel | None:
        return next((m for m in self.models if m.matches(name)), None)

    def _touch(self, served: ServedModel, keep_alive: float | None) -> None:
        seconds = DEFAULT_KEEP_ALIVE_S if keep_alive is None else keep_alive
        with self._lock:
            self._expiry[served.name] = time.time() + min(seconds, 10 * 365 * 86400)

    def _unload(self, served: ServedModel) -> None:
        with self._lock:
            self._expiry.pop(served.name, None)

    def _loaded_models(self) -> list[tuple[ServedModel, str]]:
        now = time.time()
        with self._lock:
            live = [
                (m, self._expiry[m.name]) for m in self.models if self._expiry.get(m.name, 0) > now
            ]
        live.sort(key=lambda item: -item[1])
        return [
            (m, rfc3339(datetime.fromtimestamp(0, tz=timezone.utc) + timedelta(seconds=t)))
            for m, t in live
        ]


def reset_all_faults() -> None:
    """Clear the faults of every running server (the per-test autouse fixture)."""
    for server in list(_RUNNING):
        server.faults.clear()


__all__ = ["OLLAMA_VERSION", "OllamaTestServer", "RecordedRequest", "reset_all_faults"]

"""The default SLM: a model served by Ollama (>= 0.12.11, which returns logprobs).

Uses the official ``ollama`` client with ``logprobs=True`` and
``top_logprobs=k``. Every failure of the server or the network is turned into
one typed :class:`~confidence_router.errors.SLMError`; the timeout is always
explicit (the client's own default is to wait forever) and bounds the whole
request, not each read: a server that drips a byte just inside a per-read
timeout still times out.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
import ollama
import pydantic

from ..errors import (
    ContextWindowExceededError,
    IncompleteResponseError,
    InvalidInputError,
    ModelNotFoundError,
    SLMError,
    SLMResponseError,
    SLMTimeoutError,
    SLMUnavailableError,
)
from ..routing._accumulate import accumulate
from ..routing._deadline import DeadlineExceeded, aclose_quietly, anext_before, wait_at_most
from ..types import Generation, Message, TokenChunk, Usage
from ._checks import check_served_settings, redact_url
from ._stream import StreamCheck, check_covered
from .llama_cpp import _check_int
from .sampling import check_sampling, gather_all

PromptFormat = Literal["chat", "completion"]
DEFAULT_HOST = "http://127.0.0.1:11434"
T = TypeVar("T")


class _Watchdog:
    """The deadline of one sync request: past it, the connection is cut.

    A blocking read cannot be interrupted from outside, but shutting its
    socket down from a timer thread ends it at once (with a read error that
    :meth:`OllamaSLM._errors` reports as a timeout). The socket is known from
    the moment the response headers arrive; before that, httpx's own timeout
    (the same number of seconds) bounds the wait.
    """

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None
        self._done = False

    def passed(self) -> bool:
        if time.monotonic() >= self.at:
            self.expired = True
        return self.expired

    def watch(self, response: httpx.Response) -> None:
        """Called with the response headers: arm the timer on its socket."""
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            if self._done or self._timer is not None:
                return
            timer = threading.Timer(max(self.at - time.monotonic(), 0.0), self._cut, (sock,))
            timer.daemon = True
            self._timer = timer
            timer.start()

    def _cut(self, sock: socket.socket) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        with self._lock:
            self._done = True
            if self._timer is not None:
                self._timer.cancel()


def _entries_to_chunk(text: str, entries: Sequence[Any] | None, model: str) -> TokenChunk:
    """A TokenChunk from the client's ``Logprob`` objects (validated, vectorised)."""
    entries = list(entries or ())
    if not entries:
        return TokenChunk(text=text)
    lp = np.array([e.logprob for e in entries], dtype=np.float64)
    width = max((len(e.top_logprobs or ()) for e in entries), default=0)
    top = np.full((len(entries), width), -np.inf)
    for i, e in enumerate(entries):
        alts = e.top_logprobs or ()
        if alts:
            top[i, : len(alts)] = [a.logprob for a in alts]
    if not np.all(np.isfinite(lp)) or np.any(np.isnan(top)) or np.any(lp > 1e-6):
        raise SLMResponseError(
            f"{model!r} returned invalid log-probabilities (NaN, -inf or > 0)", model=model
        )
    return TokenChunk(
        text=text,
        token_logprobs=np.minimum(lp, 0.0),
        top_logprobs=np.minimum(top, 0.0),
        tokens=tuple(e.token for e in entries),
        top_tokens=tuple(tuple(a.token for a in (e.top_logprobs or ())) for e in entries),
    )


class OllamaSLM:
    """An SLM served by Ollama, scored from its own token log-probabilities.

    Args:
        model: the Ollama model name, e.g. ``"qwen2.5:1.5b"``.
        host: the server; default ``OLLAMA_HOST``, else ``http://127.0.0.1:11434``.
        prompt_format: ``"chat"`` uses ``/api/chat``; ``"completion"`` sends the
            messages' contents as one raw prompt to ``/api/generate`` (for base models).
        top_logprobs: alternatives per token (0-20).
        timeout: seconds the whole request may take (connecting, waiting, and
            reading the whole answer, streamed or not) before it fails with
            :class:`SLMTimeoutError`. Async requests are cancelled at the
            deadline; sync ones have their connection cut.
        max_tokens, temperature, seed, stop, num_ctx: generation options.

    Example:
        >>> slm = OllamaSLM("qwen2.5:1.5b")
        >>> slm.generate([Message("user", "Capital of France?")]).text
    """

    def __init__(
        self,
        model: str,
        *,
        host: str | None = None,
        prompt_format: PromptFormat = "chat",
        top_logprobs: int = 5,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        timeout: float = 60.0,
        num_ctx: int | None = None,
        keep_alive: str | float | None = None,
    ) -> None:
        check_served_settings(model, prompt_format, timeout, temperature, stop)
        self.model = model
        self.host = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self._shown_host = redact_url(self.host)
        self._where = f"Ollama at {self._shown_host}"  # for error messages
        self.prompt_format: PromptFormat = prompt_format
        self.top_logprobs = _check_int("top_logprobs", top_logprobs, 0, 20)
        self.max_tokens = _check_int("max_tokens", max_tokens, 1)
        self.seed = _check_int("seed", seed, 0)
        self.num_ctx = None if num_ctx is None else _check_int("num_ctx", num_ctx, 16)
        self.temperature = float(temperature)
        self.stop = tuple(stop)
        self.timeout = float(timeout)
        self.keep_alive = keep_alive
        # Which request of this thread is waiting for headers (see _Watchdog).
        self._local = threading.local()
        self._client = ollama.Client(
            host=self.host,
            timeout=self.timeout,
            event_hooks={"response": [self._on_response]},
        )
        # httpx async clients belong to one event loop: keep one per loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ollama.AsyncClient]
        self._aclients = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return f"OllamaSLM(model={self.model!r}, host={self._shown_host!r})"

    def close(self) -> None:
        """Close the sync client's pooled connections (the SLM stays usable)."""
        self._client._client.close()

    async def aclose(self) -> None:
        """Close the async client of the running event loop and its pooled connections."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client._client.aclose()

    def _on_response(self, response: httpx.Response) -> None:
        watchdog: _Watchdog | None = getattr(self._local, "watchdog", None)
        if watchdog is not None:
            watchdog.watch(response)

    @contextmanager
    def _watching(self, watchdog: _Watchdog) -> Iterator[None]:
        """Let responses received by this thread inside the block arm ``watchdog``."""
        previous = getattr(self._local, "watchdog", None)
        self._local.watchdog = watchdog
        try:
            yield
        finally:
            self._local.watchdog = previous

    def _guarded(self, responses: Iterator[T], watchdog: _Watchdog) -> Iterator[T]:
        """A sync stream under a deadline, checked again after every object."""
        iterator = iter(responses)
        try:
            while True:
                with self._watching(watchdog):
                    try:
                        item = next(iterator)
                    except StopIteration:
                        return
                if watchdog.passed():
                    raise self._timeout_error()
                yield item
        finally:
            watchdog.stop()
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def _timeout_error(self) -> SLMTimeoutError:
        return SLMTimeoutError(
            f"no answer from {self._where} for {self.model!r} within {self.timeout:g}s",
            model=self.model,
        )

    def _aclient(self) -> ollama.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = ollama.AsyncClient(host=self.host, timeout=self.timeout)
            self._aclients[loop] = client
        return client

    # -- requests ------------------------------------------------------------------

    def _options(self, stop: Sequence[str] | None, max_tokens: int | None) -> dict[str, Any]:
        options: dict[str, Any] = {
            "temperature": self.temperature,
            "seed": self.seed,
            "num_predict": self.max_tokens
            if max_tokens is None
            else _check_int("max_tokens", max_tokens, 1),
        }
        stops = list(self.stop) + list(stop or ())
        if stops:
            options["stop"] = stops
        if self.num_ctx is not None:
            options["num_ctx"] = self.num_ctx
        return options

    def _request(
        self,
        messages: Sequence[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        sampling: tuple[float, int] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        if not messages:
            raise InvalidInputError("messages is empty: give at least one message")
        options = self._options(stop, max_tokens)
        if sampling is not None:
            options["temperature"], options["seed"] = sampling
        common: dict[str, Any] = {
            "model": self.model,
            "options": options,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }
        if self.keep_alive is not None:
            common["keep_alive"] = self.keep_alive
        if self.prompt_format == "completion":
            prompt = "\n\n".join(m.content for m in messages)
            return "generate", {**common, "prompt": prompt, "raw": True}
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return "chat", {**common, "messages": chat}

    def _to_chunk(self, response: Any) -> TokenChunk:
        text = response.response if hasattr(response, "response") else response.message.content
        chunk = _entries_to_chunk(text or "", getattr(response, "logprobs", None), self.model)
        if not response.done:
            return chunk
        return TokenChunk(
            text=chunk.text,
            token_logprobs=chunk.token_logprobs,
            top_logprobs=chunk.top_logprobs,
            tokens=chunk.tokens,
            top_tokens=chunk.top_tokens,
            finish_reason=response.done_reason or "stop",
            usage=Usage(response.prompt_eval_count or 0, response.eval_count or 0),
        )

    def _finish(self, chunks: list[TokenChunk], started: float) -> Generation:
        """A whole (non-streamed) answer: only a ``done: true`` object is a finished one."""
        gen = accumulate(
            chunks, model=self.model, latency_s=time.perf_counter() - started, has_logprobs=True
        )
        if gen.finish_reason is None:
            raise IncompleteResponseError(
                f"{self._where} answered {self.model!r} with an unfinished response "
                f'(no "done": true) after {len(gen.token_logprobs)} token(s): the answer '
                f"is incomplete",
                model=self.model,
                tokens_received=len(gen.token_logprobs),
            )
        check_covered(gen, self._where, " (logprobs need Ollama >= 0.12.11)")
        return gen

    def _stream_check(self) -> StreamCheck:
        return StreamCheck(
            self.model,
            self._where,
            'no object with "done": true',
            " (logprobs need Ollama >= 0.12.11)",
        )

    @contextmanager
    def _errors(self, watchdog: _Watchdog | None = None) -> Iterator[None]:
        """Translate every client, HTTP and parsing failure into one typed SLMError."""
        try:
            yield
        except SLMError:
            raise
        except ollama.ResponseError as exc:
            raise self._response_error(exc) from exc
        except (httpx.TimeoutException, DeadlineExceeded) as exc:
            raise self._timeout_error() from exc
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            if watchdog is not None and watchdog.expired:  # we cut it at the deadline
                raise self._timeout_error() from exc
            raise SLMUnavailableError(
                f"{self._where} closed the connection before {self.model!r} had "
                f"answered ({type(exc).__name__}: {exc})",
                model=self.model,
            ) from exc
        except (ConnectionError, httpx.TransportError) as exc:
            raise SLMUnavailableError(
                f"cannot reach {self._where} ({type(exc).__name__}: {exc}); "
                f"is `ollama serve` running and OLLAMA_HOST right?",
                model=self.model,
            ) from exc
        except (
            json.JSONDecodeError,
            pydantic.ValidationError,
            KeyError,
            TypeError,
            AttributeError,  # a JSON line that is not an object: the client calls .get on it
        ) as exc:
            raise SLMResponseError(
                f"{self._where} sent a malformed response for {self.model!r}: "
                f"{type(exc).__name__}: {exc}",
                model=self.model,
            ) from exc

    def _response_error(self, exc: ollama.ResponseError) -> SLMError:
        status, message = exc.status_code, exc.error
        if status == 404:
            return ModelNotFoundError(
                f"{self._where} has no model {self.model!r} ({message}); "
                f"run `ollama pull {self.model}`",
                model=self.model,
            )
        if "context" in message.lower() and (
            "length" in message.lower() or "window" in message.lower()
        ):
            return ContextWindowExceededError(
                f"{self.model!r} at {self._shown_host}: {message}", model=self.model
            )
        where = "inside the stream" if status == -1 else f"HTTP {status}"
        return SLMResponseError(
            f"{self._where} failed for {self.model!r} ({where}): {message}",
            model=self.model,
        )

    # -- the four entry points -------------------------------------------------------

    def generate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        return self._call(*self._request(messages, stop, max_tokens))

    def _call(self, endpoint: str, request: dict[str, Any]) -> Generation:
        started = time.perf_counter()
        watchdog = _Watchdog(self.timeout)
        with self._errors(watchdog):
            try:
                with self._watching(watchdog):
                    response = getattr(self._client, endpoint)(**request, stream=False)
            finally:
                watchdog.stop()
            return self._finish([self._to_chunk(response)], started)

    async def agenerate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        return await self._acall(*self._request(messages, stop, max_tokens))

    async def _acall(self, endpoint: str, request: dict[str, Any]) -> Generation:
        started = time.perf_counter()
        with self._errors():
            call = getattr(self._aclient(), endpoint)(**request, stream=False)
            response = await wait_at_most(call, self.timeout)
            return self._finish([self._to_chunk(response)], started)

    def sample(
        self,
        messages: Sequence[Message],
        *,
        k: int,
        temperature: float,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Generation]:
        """``k`` sampled answers, one request each, with ``temperature`` and seed ``seed + i``
        in Ollama's ``options`` (Ollama reuses its cached prompt prefix between them)."""
        k, temperature, seed = check_sampling(k, temperature, seed)
        return [
            self._call(*self._request(messages, stop, max_tokens, (temperature, seed + i)))
            for i in range(k)
        ]

    async def asample(
        self,
        messages: Sequence[Message],
        *,
        k: int,
        temperature: float,
        seed: int = 0,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> list[Generation]:
        """Async :meth:`sample`: the k requests run concurrently (the server may queue them)."""
        k, temperature, seed = check_sampling(k, temperature, seed)
        requests = [
            self._request(messages, stop, max_tokens, (temperature, seed + i)) for i in range(k)
        ]
        return await gather_all([self._acall(*r) for r in requests])

    def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[TokenChunk]:
        endpoint, request = self._request(messages, stop, max_tokens)
        check = self._stream_check()
        watchdog = _Watchdog(self.timeout)
        with self._errors(watchdog):
            responses = getattr(self._client, endpoint)(**request, stream=True)
            guarded = self._guarded(responses, watchdog)
            try:
                for response in guarded:
                    check.received()
                    chunk = self._to_chunk(response)
                    check.see(chunk)
                    yield chunk
                check.end()
            finally:
                # closed by the consumer (an early abort) or failed: the connection goes now,
                # not whenever the garbage collector gets to it
                close = getattr(guarded, "close", None)
                if close is not None:
                    close()

    async def astream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        endpoint, request = self._request(messages, stop, max_tokens)
        check = self._stream_check()
        deadline = asyncio.get_running_loop().time() + self.timeout
        with self._errors():
            responses = await getattr(self._aclient(), endpoint)(**request, stream=True)
            try:
                while True:
                    try:
                        response = await anext_before(responses, deadline)
                    except StopAsyncIteration:
                        break
                    check.received()
                    chunk = self._to_chunk(response)
                    check.see(chunk)
                    yield chunk
                check.end()
            finally:
                await aclose_quietly(responses)

    def list_models(self) -> Mapping[str, Any]:
        """Names of the models the server has (a cheap reachability check)."""
        with self._errors():
            return {str(m.model): m for m in self._client.list().models}


__all__ = ["OllamaSLM"]

"""An SLM behind any OpenAI-compatible server: vLLM, SGLang, llama.cpp's llama-server, Ollama's /v1.

Uses the official ``openai`` client (``pip install "confidence-router[openai]"``)
on ``/v1/chat/completions`` (``logprobs: true``, ``top_logprobs: k``) or
``/v1/completions`` (``logprobs: k``), streamed or not. Every failure becomes
one typed :class:`~confidence_router.errors.SLMError`, as with
:class:`~confidence_router.backends.ollama.OllamaSLM`, and the timeout bounds
the whole request (the client's own default is 600 s per read, with retries).

Where the servers differ (see the README's "OpenAI-compatible servers" table):

* **Logprobs location.** Chat: ``choices[0].logprobs.content[]`` of
  ``{token, logprob, bytes, top_logprobs[]}``; in a stream, each chunk carries
  its own tokens' entries. Completions: ``choices[0].logprobs`` with parallel
  ``tokens`` / ``token_logprobs`` / ``top_logprobs`` (one ``{token: logprob}``
  dict per position, so two alternatives with the same text collapse into one).
* **k = 0.** llama-server sets ``n_probs = top_logprobs`` (default 20), so
  ``top_logprobs: 0`` returns *no* probabilities at all (llama.cpp
  ``tools/server/utils.hpp``, ``oaicompat_chat_params_parse``); on completions
  several servers read ``logprobs: 0`` as "off". We always ask for at least one
  alternative and keep ``top_logprobs`` of them, as Ollama itself does.
* **Limits.** OpenAI caps ``top_logprobs`` at 20; vLLM at ``--max-logprobs``
  (default 20, a 400 beyond it); so do we.
* **Servers that ignore ``logprobs``.** LM Studio's OpenAI endpoint accepted
  ``logprobs: true`` and answered without them (lmstudio-ai/lms#60), as did
  Ollama's ``/v1`` before it mapped the field (ollama/ollama#16117): that is the
  :class:`MissingLogprobsError` row of the failure table, never a silent answer.
* **Context too long.** HTTP 400 everywhere, worded differently: OpenAI
  ``code: "context_length_exceeded"`` ("This model's maximum context length
  is N tokens..."), vLLM the same sentence with ``type: "BadRequestError"``,
  llama-server ``type: "exceed_context_size_error"`` ("request (N tokens)
  exceeds the available context size (M tokens)"), others "... exceeds the
  model's maximum context length" or "The input (N tokens) is longer than the
  model's context length". All become :class:`ContextWindowExceededError`.
* **Unknown model.** 404 (OpenAI ``code: "model_not_found"``, vLLM "The model
  `X` does not exist.", Ollama ``model "X" not found``); llama-server serves
  whatever it loaded under any name.
* **Errors inside a 200 stream** arrive as ``data: {"error": {...}}``, which the
  client raises as ``openai.APIError``: :class:`SLMResponseError`.

The API key comes from ``api_key`` or ``OPENAI_API_KEY`` (local servers need
none: ``"EMPTY"`` is sent, as vLLM's docs do). It never appears in ``repr``,
in errors (a server's 401 text, which may echo part of the key, is dropped)
or in our logs.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal

import httpx
import pydantic

from ..errors import (
    ConfigurationError,
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
from .ollama import _entries_to_chunk, _Watchdog
from .sampling import check_sampling, gather_all

if TYPE_CHECKING:
    import openai

PromptFormat = Literal["chat", "completion"]
DEFAULT_BASE_URL = "https://api.openai.com/v1"
NO_KEY = "EMPTY"  # what local servers (vLLM, llama-server, Ollama) accept when they check none

# How each server words "the prompt does not fit" (see the module docstring).
_CONTEXT_CODES = ("context_length_exceeded", "exceed_context_size_error")
_CONTEXT_WORDS = re.compile(
    r"maximum context length|context length|context size|context window|"
    r"maximum model length|longer than the model",
    re.IGNORECASE,
)


def _http_errors(name: str) -> tuple[type[BaseException], ...]:
    """``httpx.<name>``, and ``httpx2.<name>`` too when installed: openai 3.x defaults to
    httpx2 (we hand it httpx clients, but a stream may still surface either)."""
    found = [getattr(httpx, name)]
    try:
        import httpx2  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        found.append(getattr(httpx2, name))
    return tuple(found)


_TIMEOUTS = _http_errors("TimeoutException")
_DROPPED = _http_errors("RemoteProtocolError") + _http_errors("ReadError")
_TRANSPORT = _http_errors("TransportError")


def _import_openai() -> Any:
    try:
        import openai
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            "openai",
            "the openai package is not installed: pip install 'confidence-router[openai]'",
        ) from exc
    return openai


class _Secret:
    """An API key that cannot leak through ``repr``, ``str`` or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('**********')"

    __str__ = __repr__


def _completion_entries(logprobs: Any, k: int) -> list[Any]:
    """``/v1/completions`` logprobs as chat-style entries (token, logprob, top_logprobs)."""
    tokens = list(getattr(logprobs, "tokens", None) or ())
    values = list(getattr(logprobs, "token_logprobs", None) or ())
    tops = list(getattr(logprobs, "top_logprobs", None) or ())
    entries = []
    for i, token in enumerate(tokens):
        value = values[i] if i < len(values) else None
        if value is None:  # only an echoed prompt token may lack one: reject it as invalid
            value = math.nan
        alternatives = tops[i] if i < len(tops) and tops[i] else {}
        ranked = sorted(alternatives.items(), key=lambda item: -float(item[1]))[:k]
        entries.append(
            SimpleNamespace(
                token=token,
                logprob=float(value),
                top_logprobs=[SimpleNamespace(token=t, logprob=float(lp)) for t, lp in ranked],
            )
        )
    return entries


def _trim(entries: Sequence[Any], k: int) -> list[Any]:
    """Chat entries with at most ``k`` alternatives each (we asked for max(k, 1))."""
    return [
        SimpleNamespace(
            token=e.token, logprob=e.logprob, top_logprobs=list(e.top_logprobs or ())[:k]
        )
        for e in entries
    ]


class OpenAICompatibleSLM:
    """An SLM on an OpenAI-compatible server, scored from its own token log-probabilities.

    Args:
        model: the served model name (vLLM: the ``--served-model-name`` or HF id).
        base_url: the server's API root, usually ending in ``/v1``; default
            ``OPENAI_BASE_URL``, else OpenAI's own API.
        api_key: default ``OPENAI_API_KEY``, else ``"EMPTY"`` (local servers).
        prompt_format: ``"chat"`` uses ``/v1/chat/completions`` (the server's
            chat template); ``"completion"`` sends the messages' contents, joined
            by blank lines, as one raw prompt to ``/v1/completions`` (base models).
        top_logprobs: alternatives per token (0-20).
        timeout: seconds the whole request may take (connecting, waiting, and
            reading the whole answer, streamed or not) before it fails with
            :class:`SLMTimeoutError`. The client never retries: a failed SLM
            call escalates at once instead.
        stream_usage: ask for ``stream_options.include_usage`` so streams end
            with token counts; turn it off for a server that rejects the field.
        extra_body: extra JSON fields for every request (vLLM's ``top_k``, ...).
        max_tokens, temperature, seed, stop: generation options.

    Example:
        >>> slm = OpenAICompatibleSLM("Qwen/Qwen2.5-1.5B-Instruct", base_url="http://gpu:8000/v1")
        >>> slm.generate([Message("user", "Capital of France?")]).text
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        prompt_format: PromptFormat = "chat",
        top_logprobs: int = 5,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = 0,
        stop: Sequence[str] = (),
        timeout: float = 60.0,
        stream_usage: bool = True,
        extra_body: Mapping[str, Any] | None = None,
    ) -> None:
        check_served_settings(model, prompt_format, timeout, temperature, stop)
        url = base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
        if not re.match(r"https?://", url):
            raise ConfigurationError(
                "base_url", f"must be an http(s) URL such as http://host:8000/v1, got {url!r}"
            )
        if api_key is not None and not isinstance(api_key, str):
            raise ConfigurationError("api_key", "must be a string")
        if extra_body is not None and not isinstance(extra_body, Mapping):
            raise ConfigurationError("extra_body", "must be a mapping of JSON fields")
        self._openai = _import_openai()
        self.model = model
        self.base_url = url.rstrip("/")
        self._shown_url = redact_url(self.base_url)
        self.prompt_format: PromptFormat = prompt_format
        self.top_logprobs = _check_int("top_logprobs", top_logprobs, 0, 20)
        self.max_tokens = _check_int("max_tokens", max_tokens, 1)
        self.seed = None if seed is None else _check_int("seed", seed, 0)
        self.temperature = float(temperature)
        self.stop = tuple(stop)
        self.timeout = float(timeout)
        self.stream_usage = bool(stream_usage)
        self.extra_body = dict(extra_body or {})
        self._key = _Secret(api_key or os.environ.get("OPENAI_API_KEY") or NO_KEY)
        self._local = threading.local()  # which request of this thread awaits headers
        self._client = self._openai.OpenAI(
            base_url=self.base_url,
            api_key=self._key.reveal(),
            timeout=self.timeout,
            max_retries=0,
            http_client=httpx.Client(
                timeout=self.timeout, event_hooks={"response": [self._on_response]}
            ),
        )
        # httpx async clients belong to one event loop: keep one per loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]
        self._aclients = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleSLM(model={self.model!r}, base_url={self._shown_url!r}, "
            f"prompt_format={self.prompt_format!r})"
        )

    def close(self) -> None:
        """Close the sync client's pooled connections (the SLM stays usable)."""
        self._client.close()

    async def aclose(self) -> None:
        """Close the async client of the running event loop and its pooled connections."""
        client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _aclient(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._openai.AsyncOpenAI(
                base_url=self.base_url,
                api_key=self._key.reveal(),
                timeout=self.timeout,
                max_retries=0,
                http_client=httpx.AsyncClient(timeout=self.timeout),
            )
            self._aclients[loop] = client
        return client  # type: ignore[no-any-return]

    # -- the sync deadline (same mechanism as OllamaSLM) ------------------------------

    def _on_response(self, response: httpx.Response) -> None:
        watchdog: _Watchdog | None = getattr(self._local, "watchdog", None)
        if watchdog is not None:
            watchdog.watch(response)

    @contextmanager
    def _watching(self, watchdog: _Watchdog) -> Iterator[None]:
        previous = getattr(self._local, "watchdog", None)
        self._local.watchdog = watchdog
        try:
            yield
        finally:
            self._local.watchdog = previous

    def _timeout_error(self) -> SLMTimeoutError:
        return SLMTimeoutError(
            f"no answer from {self._shown_url} for {self.model!r} within {self.timeout:g}s",
            model=self.model,
        )

    # -- requests ------------------------------------------------------------------

    def _request(
        self,
        messages: Sequence[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        stream: bool,
        sampling: tuple[float, int] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        if not messages:
            raise InvalidInputError("messages is empty: give at least one message")
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens
            if max_tokens is None
            else _check_int("max_tokens", max_tokens, 1),
            "temperature": self.temperature,
            "stream": stream,
        }
        if self.seed is not None:
            request["seed"] = self.seed
        if sampling is not None:
            request["temperature"], request["seed"] = sampling
        stops = list(self.stop) + list(stop or ())
        if stops:
            request["stop"] = stops
        if stream and self.stream_usage:
            request["stream_options"] = {"include_usage": True}
        if self.extra_body:
            request["extra_body"] = dict(self.extra_body)
        asked = max(self.top_logprobs, 1)  # k = 0 means "none" to llama-server
        if self.prompt_format == "completion":
            prompt = "\n\n".join(m.content for m in messages)
            return "completions", {**request, "prompt": prompt, "logprobs": asked}
        chat = [{"role": m.role, "content": m.content} for m in messages]
        return "chat", {**request, "messages": chat, "logprobs": True, "top_logprobs": asked}

    def _create(self, client: Any, endpoint: str, request: dict[str, Any]) -> Any:
        api = client.chat.completions if endpoint == "chat" else client.completions
        return api.create(**request)

    def _to_chunk(self, response: Any) -> TokenChunk | None:
        """One TokenChunk from a response or stream chunk; None for a chunk with nothing."""
        usage = getattr(response, "usage", None)
        choices = getattr(response, "choices", None)
        if choices is None:
            raise TypeError(f"no choices in {type(response).__name__}")
        if not choices:  # the usage-only chunk that ends a stream with include_usage
            if usage is None:
                return None
            return TokenChunk(text="", usage=_usage(usage))
        choice = choices[0]
        if self.prompt_format == "completion":
            text = choice.text or ""
            entries = _completion_entries(choice.logprobs, self.top_logprobs)
        else:
            holder = getattr(choice, "delta", None) or getattr(choice, "message", None)
            text = (getattr(holder, "content", None) or "") if holder is not None else ""
            logprobs = getattr(choice, "logprobs", None)
            entries = _trim(getattr(logprobs, "content", None) or (), self.top_logprobs)
        chunk = _entries_to_chunk(text, entries, self.model)
        finish = getattr(choice, "finish_reason", None)
        if finish is None and usage is None:
            return chunk if chunk.text or chunk.tokens else None  # e.g. the role-only opener
        return TokenChunk(
            text=chunk.text,
            token_logprobs=chunk.token_logprobs,
            top_logprobs=chunk.top_logprobs,
            tokens=chunk.tokens,
            top_tokens=chunk.top_tokens,
            finish_reason=finish,
            usage=None if usage is None else _usage(usage),
        )

    _IGNORED = (
        ": the server ignored logprobs=true (LM Studio and older Ollama /v1 do); serve the "
        "SLM with vLLM, SGLang, llama-server or Ollama's native API"
    )

    def _finish(self, chunks: list[TokenChunk], started: float) -> Generation:
        """A whole (non-streamed) answer: only one with a ``finish_reason`` is finished."""
        gen = accumulate(
            chunks, model=self.model, latency_s=time.perf_counter() - started, has_logprobs=True
        )
        if gen.finish_reason is None:
            raise IncompleteResponseError(
                f"{self._shown_url} answered {self.model!r} with an unfinished response "
                f"(no finish_reason) after {len(gen.token_logprobs)} token(s): the answer is "
                f"incomplete",
                model=self.model,
                tokens_received=len(gen.token_logprobs),
            )
        check_covered(gen, self._shown_url, self._IGNORED)
        return gen

    def _tail(self, pending: TokenChunk | None, chunk: TokenChunk) -> TokenChunk:
        """Fold the usage-only chunk into the finish chunk before it, so the last chunk
        has both (as every other backend's last chunk does)."""
        if pending is None:
            return chunk
        return replace(pending, usage=chunk.usage or pending.usage)

    def _stream_check(self) -> StreamCheck:
        return StreamCheck(
            self.model, self._shown_url, "no chunk with finish_reason", self._IGNORED
        )

    # -- errors ----------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = self._key.reveal()
        return text.replace(key, "**********") if key and key != NO_KEY else text

    @contextmanager
    def _errors(self, watchdog: _Watchdog | None = None) -> Iterator[None]:
        """Translate every client, HTTP and parsing failure into one typed SLMError.

        The original exception is chained as ``__cause__``, unless its text holds
        the API key (a server's 401 may quote it): then it is dropped.
        """
        try:
            yield
        except SLMError:
            raise
        except Exception as exc:
            error = self._translate(exc, watchdog)
            if error is None:
                raise
            leaks = self._leaks(exc)
            raise error from (None if leaks or isinstance(exc, DeadlineExceeded) else exc)

    def _leaks(self, exc: BaseException) -> bool:
        if isinstance(exc, self._openai.APIStatusError) and exc.status_code in (401, 403):
            return True  # OpenAI's 401 quotes the key's first and last characters
        key = self._key.reveal()
        if not key or key == NO_KEY:
            return False
        seen = f"{exc!s} {exc!r} {getattr(exc, 'body', '')!r} {exc.__cause__!r}"
        return key in seen

    def _translate(self, exc: Exception, watchdog: _Watchdog | None) -> SLMError | None:
        openai = self._openai
        if isinstance(exc, (openai.APITimeoutError, DeadlineExceeded, *_TIMEOUTS)):
            return self._timeout_error()
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc)
        if isinstance(exc, openai.APIConnectionError):
            return self._connection_error(exc.__cause__ or exc, watchdog)
        if isinstance(exc, _TRANSPORT):
            return self._connection_error(exc, watchdog)
        if isinstance(exc, openai.APIError):  # {"error": ...} inside a 200 stream
            return SLMResponseError(
                f"{self._shown_url} failed for {self.model!r} (inside the stream): "
                f"{self._scrub(_error_text(exc.body, exc.message))}",
                model=self.model,
            )
        if isinstance(
            exc,
            (
                json.JSONDecodeError,
                pydantic.ValidationError,
                KeyError,
                IndexError,
                TypeError,
                AttributeError,
                ValueError,
            ),
        ):
            return SLMResponseError(
                f"{self._shown_url} sent a malformed response for {self.model!r}: "
                f"{type(exc).__name__}: {self._scrub(str(exc))[:200]}",
                model=self.model,
            )
        return None

    def _connection_error(self, cause: BaseException, watchdog: _Watchdog | None) -> SLMError:
        if watchdog is not None and watchdog.expired:  # we cut it at the deadline
            return self._timeout_error()
        if isinstance(cause, (DeadlineExceeded, *_TIMEOUTS)):
            return self._timeout_error()
        if isinstance(cause, _DROPPED):
            return SLMUnavailableError(
                f"{self._shown_url} closed the connection before {self.model!r} had "
                f"answered ({type(cause).__name__}: {cause})",
                model=self.model,
            )
        return SLMUnavailableError(
            f"cannot reach {self._shown_url} ({type(cause).__name__}: {cause}); is the server "
            f"running and base_url (OPENAI_BASE_URL) right?",
            model=self.model,
        )

    def _status_error(self, exc: Any) -> SLMError:
        status = int(exc.status_code)
        if status in (401, 403):  # the server's text may quote part of the key: drop it
            return SLMResponseError(
                f"{self._shown_url} refused the API key for {self.model!r} (HTTP {status}); "
                f"check api_key / OPENAI_API_KEY",
                model=self.model,
            )
        message = self._scrub(_error_text(exc.body, exc.message))
        code = _error_field(exc.body, "code")
        kind = _error_field(exc.body, "type")
        if status == 404 or code == "model_not_found":
            return ModelNotFoundError(
                f"{self._shown_url} has no model {self.model!r} ({message}); check the served "
                f"model name (GET {self._shown_url}/models) and that base_url ends in /v1",
                model=self.model,
            )
        if status in (400, 413, 422) and (
            code in _CONTEXT_CODES or kind in _CONTEXT_CODES or _CONTEXT_WORDS.search(message)
        ):
            return ContextWindowExceededError(
                f"{self.model!r} at {self._shown_url}: {message}", model=self.model
            )
        return SLMResponseError(
            f"{self._shown_url} failed for {self.model!r} (HTTP {status}): {message}",
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
        return self._call(*self._request(messages, stop, max_tokens, stream=False))

    def _call(self, endpoint: str, request: dict[str, Any]) -> Generation:
        started = time.perf_counter()
        watchdog = _Watchdog(self.timeout)
        with self._errors(watchdog):
            try:
                with self._watching(watchdog):
                    response = self._create(self._client, endpoint, request)
            finally:
                watchdog.stop()
            chunk = self._to_chunk(response)
            return self._finish([chunk] if chunk is not None else [], started)

    async def agenerate(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Generation:
        return await self._acall(*self._request(messages, stop, max_tokens, stream=False))

    async def _acall(self, endpoint: str, request: dict[str, Any]) -> Generation:
        started = time.perf_counter()
        with self._errors():
            response = await wait_at_most(
                self._create(self._aclient(), endpoint, request), self.timeout
            )
            chunk = self._to_chunk(response)
            return self._finish([chunk] if chunk is not None else [], started)

    def _sample_requests(
        self,
        messages: Sequence[Message],
        k: int,
        temperature: float,
        seed: int,
        stop: Sequence[str] | None,
        max_tokens: int | None,
    ) -> list[tuple[str, dict[str, Any]]]:
        k, temperature, seed = check_sampling(k, temperature, seed)
        return [
            self._request(
                messages, stop, max_tokens, stream=False, sampling=(temperature, seed + i)
            )
            for i in range(k)
        ]

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
        """``k`` sampled answers, one request each with ``temperature`` and ``seed + i``.

        Not ``n=k`` in one request: llama-server ignores ``n``, and one seed per
        sample keeps each one reproducible where the server honours ``seed``
        (vLLM, llama-server; OpenAI only on a best-effort basis).
        """
        requests = self._sample_requests(messages, k, temperature, seed, stop, max_tokens)
        return [self._call(*r) for r in requests]

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
        """Async :meth:`sample`: the k requests run concurrently."""
        requests = self._sample_requests(messages, k, temperature, seed, stop, max_tokens)
        return await gather_all([self._acall(*r) for r in requests])

    def stream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> Iterator[TokenChunk]:
        endpoint, request = self._request(messages, stop, max_tokens, stream=True)
        check = self._stream_check()
        pending: TokenChunk | None = None
        watchdog = _Watchdog(self.timeout)
        with self._errors(watchdog):
            try:
                with self._watching(watchdog):
                    responses = self._create(self._client, endpoint, request)
                iterator = iter(responses)
                try:
                    while True:
                        with self._watching(watchdog):
                            try:
                                response = next(iterator)
                            except StopIteration:
                                break
                        if watchdog.passed():
                            raise self._timeout_error()
                        check.received()
                        chunk = self._to_chunk(response)
                        if chunk is None:
                            continue
                        check.see(chunk)
                        if chunk.finish_reason is not None or pending is not None:
                            pending = self._tail(pending, chunk)  # wait for the usage chunk
                            continue
                        yield chunk
                    check.end()
                    if pending is not None:
                        yield pending
                finally:
                    responses.close()
            finally:
                watchdog.stop()

    async def astream(
        self,
        messages: Sequence[Message],
        *,
        stop: Sequence[str] | None = None,
        max_tokens: int | None = None,
    ) -> AsyncIterator[TokenChunk]:
        endpoint, request = self._request(messages, stop, max_tokens, stream=True)
        check = self._stream_check()
        pending: TokenChunk | None = None
        deadline = asyncio.get_running_loop().time() + self.timeout
        with self._errors():
            responses = await wait_at_most(
                self._create(self._aclient(), endpoint, request), self.timeout
            )
            iterator = responses.__aiter__()
            try:
                while True:
                    try:
                        response = await anext_before(iterator, deadline)
                    except StopAsyncIteration:
                        break
                    check.received()
                    chunk = self._to_chunk(response)
                    if chunk is None:
                        continue
                    check.see(chunk)
                    if chunk.finish_reason is not None or pending is not None:
                        pending = self._tail(pending, chunk)  # wait for the usage chunk
                        continue
                    yield chunk
                check.end()
                if pending is not None:
                    yield pending
            finally:
                await aclose_quietly(iterator)
                with suppress(Exception):  # closing a broken stream: its error was reported
                    await responses.close()

    def list_models(self) -> list[str]:
        """Names the server serves (``GET /v1/models``, a cheap reachability check)."""
        with self._errors():
            return [str(m.id) for m in self._client.models.list()]


def _usage(usage: Any) -> Usage:
    """A server's usage object; a count it left out (None) is unknown, not 0."""
    return Usage.reported(
        getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    )


def _error_field(body: Any, name: str) -> str | None:
    """``error.<name>`` (OpenAI, vLLM, llama-server) or ``<name>`` (older vLLM) of a body."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        source = inner if isinstance(inner, Mapping) else body
        value = source.get(name)
        return None if value is None else str(value)
    return None


def _error_text(body: Any, fallback: str) -> str:
    """The server's own message: ``error.message``, a plain ``error`` string, or the client's."""
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, str):
            return inner
        if isinstance(inner, Mapping) and isinstance(inner.get("message"), str):
            return str(inner["message"])
        if isinstance(body.get("message"), str):
            return str(body["message"])
    if isinstance(body, str) and body:
        return body
    return fallback


__all__ = ["OpenAICompatibleSLM"]

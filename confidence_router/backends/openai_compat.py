"""An SLM behind any OpenAI-compatible server: vLLM, SGLang, llama.cpp's llama-server, Ollama's /v1.

Uses the official `openai` client (`pip install "confidence-router[openai]"`)
on `/v1/chat/completions` (`logprobs: true`, `top_logprobs: k`) or
`/v1/completions` (`logprobs: k`), streamed or not. Every failure becomes
one typed `SLMError`, as with
`OllamaSLM`, and the timeout bounds
the whole request (the client's own default is 600 s per read, with retries).

Where the servers differ (see the README's "OpenAI-compatible servers" table):

* **Logprobs location.** Chat: `choices[0].logprobs.content[]` of
  `{token, logprob, bytes, top_logprobs[]}`; in a stream, each chunk carries
  its own tokens' entries. Completions: `choices[0].logprobs` with parallel
  `tokens` / `token_logprobs` / `top_logprobs` (one `{token: logprob}`
  dict per position, so two alternatives with the same text collapse into one).
* **k = 0.** llama-server sets `n_probs = top_logprobs` (default 20), so
  `top_logprobs: 0` returns *no* probabilities at all (llama.cpp
  `tools/server/utils.hpp`, `oaicompat_chat_params_parse`); on completions
  several servers read `logprobs: 0` as "off". We always ask for at least one
  alternative and keep `top_logprobs` of them, as Ollama itself does.
* **Limits.** OpenAI caps `top_logprobs` at 20; vLLM at `--max-logprobs`
  (default 20, a 400 beyond it); so do we.
* **Servers that ignore `logprobs`.** LM Studio's OpenAI endpoint accepted
  `logprobs: true` and answered without them (lmstudio-ai/lms#60), as did
  Ollama's `/v1` before it mapped the field (ollama/ollama#16117): that is the
  `MissingLogprobsError` row of the failure table, never a silent answer.
* **Context too long.** HTTP 400 everywhere, worded differently: OpenAI
  `code: "context_length_exceeded"` ("This model's maximum context length
  is N tokens..."), vLLM the same sentence with `type: "BadRequestError"`,
  llama-server `type: "exceed_context_size_error"` ("request (N tokens)
  exceeds the available context size (M tokens)"), others "... exceeds the
  model's maximum context length" or "The input (N tokens) is longer than the
  model's context length". All become `ContextWindowExceededError`.
* **Unknown model.** 404 (OpenAI `code: "model_not_found"`, vLLM "The model
  `X` does not exist.", Ollama `model "X" not found`); llama-server serves
  whatever it loaded under any name.
* **Errors inside a 200 stream** arrive as `data: {"error": {...}}`, which the
  client raises as `openai.APIError`: `SLMResponseError`.

The API key comes from `api_key` or `OPENAI_API_KEY` (local servers need
none: `"EMPTY"` is sent, as vLLM's docs do). It never appears in `repr`,
in errors (a server's 401 text, which may echo part of the key, is dropped)
or in our logs.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import httpx
import pydantic

from .._deadline import DeadlineExceeded
from ..errors import (
    ConfigurationError,
    ContextWindowExceededError,
    ModelNotFoundError,
    SLMError,
    SLMResponseError,
    SLMUnavailableError,
)
from ..types import TokenChunk, Usage
from ._checks import PromptFormat, check_int, check_served_settings, import_extra, redact_url
from ._served import Call, Request, ServedSLM, chat_messages, completion_prompt, entries_to_chunk
from ._watchdog import Watchdog

if TYPE_CHECKING:
    import openai

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
    """`httpx.<name>`, and `httpx2.<name>` too when installed: openai 3.x defaults to
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


class _Secret:
    """An API key that cannot leak through `repr`, `str` or a traceback's locals."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "_Secret('**********')"

    __str__ = __repr__


def _completion_entries(logprobs: Any, k: int) -> list[Any]:
    """`/v1/completions` logprobs as chat-style entries (token, logprob, top_logprobs)."""
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
    """Chat entries with at most `k` alternatives each (we asked for max(k, 1))."""
    return [
        SimpleNamespace(
            token=e.token, logprob=e.logprob, top_logprobs=list(e.top_logprobs or ())[:k]
        )
        for e in entries
    ]


class OpenAICompatibleSLM(ServedSLM):
    """An SLM on an OpenAI-compatible server, scored from its own token log-probabilities.

    Args:
        model: the served model name (vLLM: the `--served-model-name` or HF id).
        base_url: the server's API root, usually ending in `/v1`; default
            `OPENAI_BASE_URL`, else OpenAI's own API.
        api_key: default `OPENAI_API_KEY`, else `"EMPTY"` (local servers).
        prompt_format: `"chat"` uses `/v1/chat/completions` (the server's
            chat template); `"completion"` sends the messages' contents, joined
            by blank lines, as one raw prompt to `/v1/completions` (base models).
        top_logprobs: alternatives per token (0-20).
        timeout: seconds the whole request may take (connecting, waiting, and
            reading the whole answer, streamed or not) before it fails with
            `SLMTimeoutError`. The client never retries: a failed SLM
            call escalates at once instead.
        stream_usage: ask for `stream_options.include_usage` so streams end
            with token counts; turn it off for a server that rejects the field.
        extra_body: extra JSON fields for every request (vLLM's `top_k`, ...).
        max_tokens, temperature, seed, stop: generation options.

    `sample` sends one request per sample with `temperature` and `seed + i`
    (`asample` runs them concurrently). Not `n=k` in one request:
    llama-server ignores `n`, and one seed per sample keeps each one
    reproducible where the server honours `seed` (vLLM, llama-server; OpenAI
    only on a best-effort basis).

    Example:
        >>> slm = OpenAICompatibleSLM("Qwen/Qwen2.5-1.5B-Instruct", base_url="http://gpu:8000/v1")
        >>> slm.generate([Message("user", "Capital of France?")]).text

    Raises:
        ConfigurationError: a setting out of range, at construction (named in the
            message); nothing is sent before the first call.
        SLMError: the same typed subclasses as `OllamaSLM` raises from a call
            (unavailable, timeout, model not found, missing logprobs, an
            unreadable or cut answer), so the router escalates and says why;
            `InvalidInputError` for no messages.
    """

    _UNFINISHED = "(no finish_reason)"
    _MARKER = "no chunk with finish_reason"
    _NO_LOGPROBS = (
        ": the server ignored logprobs=true (LM Studio and older Ollama /v1 do); serve the "
        "SLM with vLLM, SGLang, llama-server or Ollama's native API"
    )
    _HOLD_FINISH = True  # a stream with include_usage sends its usage after the finish chunk

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
        self._openai = import_extra(
            "openai", field="openai", package="the openai package", extra="openai"
        )
        self.base_url = url.rstrip("/")
        self._shown_url = redact_url(self.base_url)
        self._where = self._shown_url  # for error messages
        super().__init__(model, prompt_format, top_logprobs, max_tokens, temperature, stop, timeout)
        self.seed = None if seed is None else check_int("seed", seed, 0)
        self.stream_usage = bool(stream_usage)
        self.extra_body = dict(extra_body or {})
        self._key = _Secret(api_key or os.environ.get("OPENAI_API_KEY") or NO_KEY)
        self._client = self._openai.OpenAI(
            base_url=self.base_url,
            api_key=self._key.reveal(),
            timeout=self.timeout,
            max_retries=0,
            http_client=httpx.Client(
                timeout=self.timeout, event_hooks={"response": [self._watchdogs.on_response]}
            ),
        )

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

    def _new_aclient(self) -> openai.AsyncOpenAI:
        client: openai.AsyncOpenAI = self._openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._key.reveal(),
            timeout=self.timeout,
            max_retries=0,
            http_client=httpx.AsyncClient(timeout=self.timeout),
        )
        return client

    # -- requests ------------------------------------------------------------------

    def _build(self, call: Call) -> Request:
        request: dict[str, Any] = {
            "model": self.model,
            "max_tokens": call.max_tokens,
            "temperature": call.temperature,
            "stream": call.stream,
        }
        if call.seed is not None:
            request["seed"] = call.seed
        if call.stop:
            request["stop"] = call.stop
        if call.stream and self.stream_usage:
            request["stream_options"] = {"include_usage": True}
        if self.extra_body:
            request["extra_body"] = dict(self.extra_body)
        asked = max(self.top_logprobs, 1)  # k = 0 means "none" to llama-server
        if self.prompt_format == "completion":
            prompt = completion_prompt(call.messages)
            return "completions", {**request, "prompt": prompt, "logprobs": asked}
        chat = chat_messages(call.messages)
        return "chat", {**request, "messages": chat, "logprobs": True, "top_logprobs": asked}

    def _send(self, client: Any, endpoint: str, request: dict[str, Any]) -> Any:
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
        chunk = entries_to_chunk(text, entries, self.model)
        finish = getattr(choice, "finish_reason", None)
        if finish is None and usage is None:
            return chunk if chunk.text or chunk.tokens else None  # e.g. the role-only opener
        return replace(chunk, finish_reason=finish, usage=None if usage is None else _usage(usage))

    # -- errors ----------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = self._key.reveal()
        return text.replace(key, "**********") if key and key != NO_KEY else text

    @contextmanager
    def _errors(self, watchdog: Watchdog | None = None) -> Iterator[None]:
        """Translate every client, HTTP and parsing failure into one typed SLMError.

        The original exception is chained as `__cause__`, unless its text holds
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

    def _translate(self, exc: Exception, watchdog: Watchdog | None) -> SLMError | None:
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

    def _connection_error(self, cause: BaseException, watchdog: Watchdog | None) -> SLMError:
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

    def list_models(self) -> list[str]:
        """Names the server serves (`GET /v1/models`, a cheap reachability check)."""
        with self._errors():
            return [str(m.id) for m in self._client.models.list()]


def _usage(usage: Any) -> Usage:
    """A server's usage object; a count it left out (None) is unknown, not 0."""
    return Usage.reported(
        getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)
    )


def _error_field(body: Any, name: str) -> str | None:
    """`error.<name>` (OpenAI, vLLM, llama-server) or `<name>` (older vLLM) of a body."""
    if isinstance(body, Mapping):
        inner = body.get("error")
        source = inner if isinstance(inner, Mapping) else body
        value = source.get(name)
        return None if value is None else str(value)
    return None


def _error_text(body: Any, fallback: str) -> str:
    """The server's own message: `error.message`, a plain `error` string, or the client's."""
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

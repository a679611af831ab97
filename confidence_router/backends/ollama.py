"""The default SLM: a model served by Ollama (>= 0.12.11, which returns logprobs).

Uses the official `ollama` client with `logprobs=True` and
`top_logprobs=k`. Every failure of the server or the network is turned into
one typed `SLMError`; the timeout is always
explicit (the client's own default is to wait forever) and bounds the whole
request, not each read: a server that drips a byte just inside a per-read
timeout still times out.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
import ollama
import pydantic

from .._deadline import DeadlineExceeded
from ..errors import (
    ContextWindowExceededError,
    ModelNotFoundError,
    SLMError,
    SLMResponseError,
    SLMUnavailableError,
)
from ..types import TokenChunk, Usage
from ._checks import PromptFormat, check_int, check_served_settings, redact_url
from ._served import Call, Request, ServedSLM, chat_messages, completion_prompt, entries_to_chunk
from ._watchdog import Watchdog

DEFAULT_HOST = "http://127.0.0.1:11434"


class OllamaSLM(ServedSLM):
    """An SLM served by Ollama, scored from its own token log-probabilities.

    Args:
        model: the Ollama model name, e.g. `"qwen2.5:1.5b"`.
        host: the server; default `OLLAMA_HOST`, else `http://127.0.0.1:11434`.
        prompt_format: `"chat"` uses `/api/chat`; `"completion"` sends the
            messages' contents as one raw prompt to `/api/generate` (for base models).
        top_logprobs: alternatives per token (0-20).
        timeout: seconds the whole request may take (connecting, waiting, and
            reading the whole answer, streamed or not) before it fails with
            `SLMTimeoutError`. Async requests are cancelled at the
            deadline; sync ones have their connection cut.
        max_tokens, temperature, seed, stop, num_ctx: generation options.

    `sample` sends one request per sample, with `temperature` and seed
    `seed + i` in Ollama's `options` (Ollama reuses its cached prompt prefix
    between them); `asample` runs the k requests concurrently (the server may
    queue them).

    Example:
        >>> slm = OllamaSLM("qwen2.5:1.5b")
        >>> slm.generate([Message("user", "Capital of France?")]).text

    Raises:
        ConfigurationError: at construction, a setting out of range (the message
            names it); no request is sent until the first call.
        SLMError: from a call, one typed subclass per failure, so the router can
            escalate and say why: `SLMUnavailableError` (no server),
            `SLMTimeoutError`, `ModelNotFoundError`, `MissingLogprobsError`
            (the server sent no log-probabilities), `SLMResponseError` (an
            answer that cannot be read, `IncompleteResponseError` for a cut
            stream); `InvalidInputError` for no messages.
    """

    _UNFINISHED = '(no "done": true)'
    _MARKER = 'no object with "done": true'
    _NO_LOGPROBS = " (logprobs need Ollama >= 0.12.11)"

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
        self.host = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
        self._shown_host = redact_url(self.host)
        self._where = f"Ollama at {self._shown_host}"  # for error messages
        super().__init__(model, prompt_format, top_logprobs, max_tokens, temperature, stop, timeout)
        self.seed = check_int("seed", seed, 0)
        self.num_ctx = None if num_ctx is None else check_int("num_ctx", num_ctx, 16)
        self.keep_alive = keep_alive
        self._client = ollama.Client(
            host=self.host,
            timeout=self.timeout,
            event_hooks={"response": [self._watchdogs.on_response]},
        )

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

    def _new_aclient(self) -> ollama.AsyncClient:
        return ollama.AsyncClient(host=self.host, timeout=self.timeout)

    # -- requests ------------------------------------------------------------------

    def _build(self, call: Call) -> Request:
        options: dict[str, Any] = {
            "temperature": call.temperature,
            "seed": call.seed,
            "num_predict": call.max_tokens,
        }
        if call.stop:
            options["stop"] = call.stop
        if self.num_ctx is not None:
            options["num_ctx"] = self.num_ctx
        common: dict[str, Any] = {
            "model": self.model,
            "options": options,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
            "stream": call.stream,
        }
        if self.keep_alive is not None:
            common["keep_alive"] = self.keep_alive
        if self.prompt_format == "completion":
            prompt = completion_prompt(call.messages)
            return "generate", {**common, "prompt": prompt, "raw": True}
        return "chat", {**common, "messages": chat_messages(call.messages)}

    def _send(self, client: Any, endpoint: str, request: dict[str, Any]) -> Any:
        return getattr(client, endpoint)(**request)

    def _to_chunk(self, response: Any) -> TokenChunk:
        text = response.response if hasattr(response, "response") else response.message.content
        chunk = entries_to_chunk(text or "", getattr(response, "logprobs", None), self.model)
        if not response.done:
            return chunk
        return replace(
            chunk,
            finish_reason=response.done_reason or "stop",
            usage=Usage(response.prompt_eval_count or 0, response.eval_count or 0),
        )

    @contextmanager
    def _errors(self, watchdog: Watchdog | None = None) -> Iterator[None]:
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

    def list_models(self) -> Mapping[str, Any]:
        """Names of the models the server has (a cheap reachability check)."""
        with self._errors():
            return {str(m.model): m for m in self._client.list().models}


__all__ = ["OllamaSLM"]

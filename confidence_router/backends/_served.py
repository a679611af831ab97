"""What the two HTTP-served backends (Ollama, OpenAI-compatible) share.

Each sends one request per answer through its official client and reads the
objects that come back. They differ in the request they build (`_request`),
how they send it (`_send`), how they read one object (`_to_chunk`) and how
they name a failure (`_errors`). `ServedSLM` holds the rest once: the
settings, the whole-request deadline (a `Watchdog` cuts a sync request,
an async one is cancelled), one async client per event loop, what makes an
answer complete (`_stream`), and sampling by one request per sample.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from abc import abstractmethod
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np

from .._accumulate import accumulate
from .._deadline import aclose_quietly, anext_before, wait_at_most
from ..errors import IncompleteResponseError, InvalidInputError, SLMResponseError, SLMTimeoutError
from ..types import Generation, Message, TokenChunk
from ._checks import PromptFormat, check_int
from ._stream import StreamCheck, check_covered
from ._watchdog import Watchdog, Watchdogs
from .base import BaseSLM
from .sampling import BaseSampler, Draws, gather_all

Request = tuple[str, dict[str, Any]]  # (endpoint, the client call's keyword arguments)


@dataclass(frozen=True)
class Call:
    """One request's settings, resolved and checked: what a backend writes in its API's format."""

    messages: Sequence[Message]
    max_tokens: int
    stop: list[str]  # the defaults and the call's own
    temperature: float
    seed: int | None
    stream: bool


def entries_to_chunk(text: str, entries: Sequence[Any] | None, model: str) -> TokenChunk:
    """A TokenChunk from the client's `Logprob` objects (validated, vectorised)."""
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


def completion_prompt(messages: Sequence[Message]) -> str:
    """The messages' contents as one raw prompt, joined by blank lines (for base models)."""
    return "\n\n".join(m.content for m in messages)


def chat_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    """The messages as the JSON objects of a chat request."""
    return [{"role": m.role, "content": m.content} for m in messages]


class ServedSLM(BaseSLM, BaseSampler):
    """An SLM behind an HTTP server: the settings, deadlines and entry points both served
    backends share; a subclass builds, sends and reads the requests of its API."""

    # How a subclass's errors word what is missing (see its _finish and stream checks):
    _UNFINISHED: ClassVar[str]  # what an unfinished whole answer lacks, e.g. '(no "done": true)'
    _MARKER: ClassVar[str]  # a stream's terminal marker, for IncompleteResponseError
    _NO_LOGPROBS: ClassVar[str]  # the hint added when the server sent no logprobs at all
    _HOLD_FINISH: ClassVar[bool] = False  # keep the finish chunk until the usage chunk after it
    seed: int | None
    _where: str  # the server as error messages name it, credentials masked
    _client: Any  # the sync client

    def __init__(
        self,
        model: str,
        prompt_format: PromptFormat,
        top_logprobs: int,
        max_tokens: int,
        temperature: float,
        stop: Sequence[str],
        timeout: float,
    ) -> None:
        """The subclass has checked its settings with `check_served_settings` first."""
        self.model = model
        self.prompt_format: PromptFormat = prompt_format
        self.top_logprobs = check_int("top_logprobs", top_logprobs, 0, 20)
        self.max_tokens = check_int("max_tokens", max_tokens, 1)
        self.temperature = float(temperature)
        self.stop = tuple(stop)
        self.timeout = float(timeout)
        # Which request of each thread awaits its headers: the sync client's response hook.
        self._watchdogs = Watchdogs()
        # httpx async clients belong to one event loop: keep one per loop.
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]
        self._aclients = weakref.WeakKeyDictionary()

    # -- what a subclass provides ----------------------------------------------------

    @abstractmethod
    def _build(self, call: Call) -> Request:
        """The endpoint and the client call's arguments for `call`, in this API's format."""

    @abstractmethod
    def _send(self, client: Any, endpoint: str, request: dict[str, Any]) -> Any:
        """Call the endpoint on the sync or async client (an awaitable for the async one)."""

    @abstractmethod
    def _to_chunk(self, response: Any) -> TokenChunk | None:
        """One response object as a TokenChunk; None for one that carries nothing."""

    @abstractmethod
    def _errors(self, watchdog: Watchdog | None = None) -> AbstractContextManager[None]:
        """Translate every client, HTTP and parsing failure inside the block into an SLMError."""

    @abstractmethod
    def _new_aclient(self) -> Any:
        """A new async client for the running event loop."""

    # -- shared pieces -----------------------------------------------------------------

    def _aclient(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = self._new_aclient()
            self._aclients[loop] = client
        return client

    def _timeout_error(self) -> SLMTimeoutError:
        return SLMTimeoutError(
            f"no answer from {self._where} for {self.model!r} within {self.timeout:g}s",
            model=self.model,
        )

    def _request(
        self,
        messages: Sequence[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        stream: bool,
        sampling: tuple[float, int] | None = None,
    ) -> Request:
        """The endpoint and request for these messages; `sampling` is (temperature, seed)."""
        if not messages:
            raise InvalidInputError("messages is empty: give at least one message")
        limit = self.max_tokens if max_tokens is None else check_int("max_tokens", max_tokens, 1)
        stops = list(self.stop) + list(stop or ())
        temperature, seed = sampling if sampling is not None else (self.temperature, self.seed)
        return self._build(Call(messages, limit, stops, temperature, seed, stream))

    def _finish(self, chunk: TokenChunk | None, started: float) -> Generation:
        """A whole (non-streamed) answer: only one with its finish marker is finished."""
        gen = accumulate(
            [chunk] if chunk is not None else [],
            model=self.model,
            latency_s=time.perf_counter() - started,
            has_logprobs=True,
        )
        if gen.finish_reason is None:
            raise IncompleteResponseError(
                f"{self._where} answered {self.model!r} with an unfinished response "
                f"{self._UNFINISHED} after {len(gen.token_logprobs)} token(s): the answer "
                f"is incomplete",
                model=self.model,
                tokens_received=len(gen.token_logprobs),
            )
        check_covered(gen, self._where, self._NO_LOGPROBS)
        return gen

    # -- whole answers -------------------------------------------------------------------

    def _generate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        return self._call(*self._request(messages, stop, max_tokens, stream=False))

    async def _agenerate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        return await self._acall(*self._request(messages, stop, max_tokens, stream=False))

    def _call(self, endpoint: str, request: dict[str, Any]) -> Generation:
        started = time.perf_counter()
        watchdog = Watchdog(self.timeout)
        with self._errors(watchdog):
            try:
                with self._watchdogs.watching(watchdog):
                    response = self._send(self._client, endpoint, request)
            finally:
                watchdog.stop()
            return self._finish(self._to_chunk(response), started)

    async def _acall(self, endpoint: str, request: dict[str, Any]) -> Generation:
        started = time.perf_counter()
        with self._errors():
            call = self._send(self._aclient(), endpoint, request)
            response = await wait_at_most(call, self.timeout)
            return self._finish(self._to_chunk(response), started)

    def _sample_requests(self, messages: Sequence[Message], draws: Draws) -> list[Request]:
        return [
            self._request(
                messages,
                draws.stop,
                draws.max_tokens,
                stream=False,
                sampling=(draws.temperature, draws.seed + i),
            )
            for i in range(draws.k)
        ]

    def _sample(self, messages: Sequence[Message], draws: Draws) -> list[Generation]:
        return [self._call(*r) for r in self._sample_requests(messages, draws)]

    async def _asample(self, messages: Sequence[Message], draws: Draws) -> list[Generation]:
        requests = self._sample_requests(messages, draws)
        return await gather_all([self._acall(*r) for r in requests])

    # -- streams ---------------------------------------------------------------------------

    def _stream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Iterator[TokenChunk]:
        endpoint, request = self._request(messages, stop, max_tokens, stream=True)
        reader = _Reader(self)
        watchdog = Watchdog(self.timeout)
        with self._errors(watchdog):
            try:
                with self._watchdogs.watching(watchdog):
                    responses = self._send(self._client, endpoint, request)
                guarded = self._watchdogs.guarded(responses, watchdog, self._timeout_error)
                try:
                    for response in guarded:
                        yield from reader.take(response)
                    yield from reader.end()
                finally:
                    # closed by the consumer (an early abort) or failed: the connection goes
                    # now, not whenever the garbage collector gets to it
                    guarded.close()
            finally:
                watchdog.stop()

    async def _astream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncIterator[TokenChunk]:
        endpoint, request = self._request(messages, stop, max_tokens, stream=True)
        reader = _Reader(self)
        deadline = asyncio.get_running_loop().time() + self.timeout
        with self._errors():
            call = self._send(self._aclient(), endpoint, request)
            responses = await wait_at_most(call, self.timeout)
            iterator = responses.__aiter__()
            try:
                while True:
                    try:
                        response = await anext_before(iterator, deadline)
                    except StopAsyncIteration:
                        break
                    for chunk in reader.take(response):
                        yield chunk
                for chunk in reader.end():
                    yield chunk
            finally:
                await aclose_quietly(iterator)
                close = getattr(responses, "close", None)  # an OpenAI AsyncStream's response
                if close is not None:
                    with suppress(Exception):  # closing a broken stream: its error was reported
                        await close()


class _Reader:
    """One stream's objects as checked chunks: logprob coverage as they come, then the
    terminal marker (`StreamCheck`)."""

    def __init__(self, slm: ServedSLM) -> None:
        self.to_chunk = slm._to_chunk
        self.check = StreamCheck(slm.model, slm._where, slm._MARKER, slm._NO_LOGPROBS)
        self.hold = slm._HOLD_FINISH
        self.held: TokenChunk | None = None

    def take(self, response: Any) -> list[TokenChunk]:
        """The chunks to pass on for one object the server sent."""
        self.check.received()
        chunk = self.to_chunk(response)
        if chunk is None:
            return []
        self.check.see(chunk)
        if self.hold and (chunk.finish_reason is not None or self.held is not None):
            # Fold the usage-only chunk into the finish chunk before it, so the last chunk
            # has both (as every other backend's last chunk does).
            held = self.held
            self.held = chunk if held is None else replace(held, usage=chunk.usage or held.usage)
            return []
        return [chunk]

    def end(self) -> list[TokenChunk]:
        """The stream ended: raise unless it was complete, else pass on what was held."""
        self.check.end()
        return [self.held] if self.held is not None else []


__all__ = ["Call", "Request", "ServedSLM", "chat_messages", "completion_prompt", "entries_to_chunk"]

"""The embedded SLM: a GGUF model run in-process by llama.cpp, no server needed.

Log-probabilities come from the logits of the last position only, after each
token is decoded (`logits_all` stays off: asking llama.cpp for the logits
of every prompt position is several times slower). They are the raw logits'
log-softmax over the full vocabulary, so the temperature does not change them.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .._accumulate import accumulate
from ..errors import ConfigurationError, ContextWindowExceededError, InvalidInputError
from ..types import FloatArray, Generation, Message, TokenChunk, Usage
from ._checks import (
    PromptFormat,
    check_int,
    check_prompt_format,
    check_stop,
    check_temperature,
    import_extra,
)
from ._llama_log import LoadLog, routed_llama_logs
from ._threads import iterate_in_thread
from .base import BaseSLM
from .models import gemma3_path, qwen_coder_05b_path, qwen_coder_15b_path, smollm2_path
from .sampling import BaseSampler, Draws

if TYPE_CHECKING:
    from llama_cpp import Llama


class _StopBuffer:
    """Holds back tokens whose text could still turn into a stop sequence."""

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = [s for s in stop if s]
        self.held: list[TokenChunk] = []

    def push(self, chunk: TokenChunk) -> tuple[list[TokenChunk], bool]:
        """Add a token; return the tokens safe to emit and whether a stop matched."""
        if not self.stop:
            return [chunk], False
        self.held.append(chunk)
        text = "".join(c.text for c in self.held)
        hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
        if hits:
            cut = min(hits)
            ready = self._take_until(cut)
            used = sum(len(c.text) for c in ready)
            if self.held and cut > used:  # the stop starts inside this token: keep its prefix
                ready.append(replace(self.held[0], text=self.held[0].text[: cut - used]))
            self.held = []
            return ready, True
        keep = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:n]):
                    keep = max(keep, n)
                    break
        return self._take_until(len(text) - keep), False

    def flush(self) -> list[TokenChunk]:
        held, self.held = self.held, []
        return held

    def _take_until(self, cut: int) -> list[TokenChunk]:
        out: list[TokenChunk] = []
        used = 0
        while self.held and used + len(self.held[0].text) <= cut:
            used += len(self.held[0].text)
            out.append(self.held.pop(0))
        return out


class LlamaCppSLM(BaseSLM, BaseSampler):
    """An in-process SLM over a local GGUF file, with per-token logprobs.

    Args:
        model_path: the GGUF file; defaults to SmolLM2-135M-Instruct from PyPI.
        model: the name reported in Generations (default: the file's stem).
        prompt_format: `"chat"` renders messages with the model's own chat
            template; `"completion"` joins their contents with blank lines,
            which suits base models such as Gemma 3 270M.
        top_logprobs: alternatives recorded per token (0-20).
        max_tokens, temperature, seed, stop: generation defaults.
        n_ctx: context window in tokens; longer prompts raise
            `ContextWindowExceededError`.

    One model instance generates one answer at a time (a lock serialises
    calls from threads and tasks); async calls run the token loop in a worker
    thread and stop it at the next token when cancelled.

    `sample` evaluates the prompt once for all k samples: each continues from
    the prompt's KV cache. `usage.prompt_tokens` counts the prompt tokens
    actually evaluated: the first sample carries them (1 when the greedy
    answer's prompt was still cached, else the whole prompt and its last token
    once more), the others 0. The same seed gives the same samples either way.
    `latency_s` is the call's time divided by k.

    Example:
        >>> slm = LlamaCppSLM()                      # SmolLM2-135M, no server
        >>> gen = slm.generate([Message("user", "What is the capital of France?")])
        >>> gen.text, gen.token_logprobs[:3]

    Raises:
        ConfigurationError: at construction, no GGUF file at `model_path`, a
            file llama.cpp cannot load (the message quotes its log), a chat
            format for a model without a chat template, or a setting out of range.
        ContextWindowExceededError: from a call, a prompt longer than `n_ctx`.
        InvalidInputError: from a call, no messages.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        model: str | None = None,
        prompt_format: PromptFormat = "chat",
        top_logprobs: int = 5,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int = 0,
        stop: Sequence[str] = (),
        n_ctx: int = 2048,
        n_threads: int | None = None,
    ) -> None:
        path = Path(model_path) if model_path is not None else smollm2_path()
        if not path.is_file():
            raise ConfigurationError("model_path", f"no GGUF file at {str(path)!r}")
        check_prompt_format(prompt_format)
        self.top_logprobs = check_int("top_logprobs", top_logprobs, 0, 20)
        self.max_tokens = check_int("max_tokens", max_tokens, 1)
        self.n_ctx = check_int("n_ctx", n_ctx, 16)
        self.seed = check_int("seed", seed, 0)
        check_temperature(temperature)
        check_stop(stop)
        self.temperature = float(temperature)
        self.stop = tuple(stop)
        self.prompt_format: PromptFormat = prompt_format
        self.model_path = path
        self.model = model or path.stem
        llama_cpp = import_extra(
            "llama_cpp", field="model_path", package="llama-cpp-python", extra="local"
        )
        load_log = LoadLog()
        try:
            with routed_llama_logs() as load_log:
                self._llm: Llama = llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=self.n_ctx,
                    logits_all=False,
                    verbose=False,
                    n_threads=n_threads,
                    seed=self.seed,
                )
        except ValueError as exc:  # llama-cpp-python's "Failed to load model from file"
            why = "; ".join(load_log.errors[-3:]) or str(exc)
            raise ConfigurationError(
                "model_path", f"llama.cpp could not load {str(path)!r}: {why}"
            ) from exc
        self._vocab = self._llm._model.vocab
        self._n_vocab = self._llm.n_vocab()
        self._lock = threading.Lock()
        self._formatter: Any = None
        if prompt_format == "chat":
            template = self._llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ConfigurationError(
                    "prompt_format",
                    f"{path.name} has no chat template; use prompt_format='completion'",
                )
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model_ = self._llm._model
            eos, bos = self._llm.token_eos(), self._llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model_.token_get_text(eos) if eos != -1 else "",
                bos_token=model_.token_get_text(bos) if bos != -1 else "",
            )

    @classmethod
    def smollm2(cls, **kwargs: Any) -> LlamaCppSLM:
        """SmolLM2-135M-Instruct from PyPI (a weak but real chat model)."""
        kwargs.setdefault("model", "smollm2-135m")
        return cls(smollm2_path(), **kwargs)

    @classmethod
    def gemma3(cls, **kwargs: Any) -> LlamaCppSLM:
        """Gemma 3 270M from PyPI: a base model, so completion prompts by default."""
        kwargs.setdefault("model", "gemma3-270m")
        kwargs.setdefault("prompt_format", "completion")
        return cls(gemma3_path(), **kwargs)

    @classmethod
    def qwen_coder_05b(cls, *, cache: str | Path | None = None, **kwargs: Any) -> LlamaCppSLM:
        """Qwen2.5-Coder-0.5B-Instruct from PyPI, in chat format: the main job's SLM.

        `cache` is the folder the model is assembled into once (default: the
        user cache, or `$CONFIDENCE_ROUTER_CACHE`).
        """
        kwargs.setdefault("model", "qwen2.5-coder-0.5b")
        return cls(qwen_coder_05b_path(cache), **kwargs)

    @classmethod
    def qwen_coder_15b(cls, *, cache: str | Path | None = None, **kwargs: Any) -> LlamaCppSLM:
        """Qwen2.5-Coder-1.5B-Instruct from PyPI, in chat format: the main job's fallback."""
        kwargs.setdefault("model", "qwen2.5-coder-1.5b")
        return cls(qwen_coder_15b_path(cache), **kwargs)

    def __repr__(self) -> str:
        return f"LlamaCppSLM(model={self.model!r}, prompt_format={self.prompt_format!r})"

    @property
    def context_window(self) -> int:
        return self.n_ctx

    def format_prompt(self, messages: Sequence[Message]) -> str:
        """The exact text the model sees for these messages."""
        if self._formatter is None:
            return "\n\n".join(m.content for m in messages)
        rendered = self._formatter(
            messages=[{"role": m.role, "content": m.content} for m in messages]
        )
        return str(rendered.prompt)

    def tokenize_prompt(self, messages: Sequence[Message]) -> list[int]:
        prompt = self.format_prompt(messages).encode("utf-8")
        if self._formatter is None:
            return list(self._llm.tokenize(prompt, add_bos=True, special=False))
        # The chat template writes the BOS token itself.
        return list(self._llm.tokenize(prompt, add_bos=False, special=True))

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _piece(self, token: int) -> bytes:
        return bytes(self._llm.detokenize([token], special=False))

    def _log_softmax(self) -> FloatArray:
        import llama_cpp

        pointer = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).astype(np.float64)
        peak = logits.max()
        return np.asarray(logits - (peak + np.log(np.exp(logits - peak).sum())))

    def _prepared(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> tuple[list[int], int]:
        """The prompt's tokens and the token limit that fits the context window."""
        if not messages:
            raise InvalidInputError("messages is empty: give at least one message")
        limit = self.max_tokens if max_tokens is None else check_int("max_tokens", max_tokens, 1)
        prompt = self.tokenize_prompt(messages)
        room = self.n_ctx - len(prompt)
        if room < 1:
            raise ContextWindowExceededError(
                f"the prompt has {len(prompt)} tokens but {self.model!r} has a context window "
                f"of {self.n_ctx}; shorten the input or raise n_ctx",
                model=self.model,
            )
        return prompt, min(limit, room)

    def _decode(
        self,
        first: FloatArray,
        limit: int,
        stop: Sequence[str] | None,
        temperature: float,
        rng: np.random.Generator,
        usage_prompt: int,
        cancel: threading.Event | None,
    ) -> Iterator[TokenChunk]:
        """Decode from the current state, whose next-token log-probabilities are `first`.

        The caller holds the lock and has evaluated the prompt.
        """
        import llama_cpp

        stops = _StopBuffer(list(self.stop) + list(stop or ()))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        k = self.top_logprobs
        generated = 0
        finish = "length"
        matched_stop = False
        logprobs = first
        while generated < limit:
            if cancel is not None and cancel.is_set():
                finish = "cancelled"
                break
            if generated:
                logprobs = self._log_softmax()
            if temperature == 0.0:
                token = int(np.argmax(logprobs))
            else:
                weights = np.exp((logprobs - logprobs.max()) / temperature)
                token = int(rng.choice(self._n_vocab, p=weights / weights.sum()))
            if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                finish = "stop"
                break
            generated += 1
            if k:
                top = np.argpartition(logprobs, -k)[-k:]
                top = top[np.argsort(-logprobs[top])]
            else:
                top = np.zeros(0, dtype=np.int64)
            piece = self._piece(token)
            chunk = TokenChunk(
                text=decoder.decode(piece),
                token_logprobs=np.array([logprobs[token]]),
                top_logprobs=logprobs[top][None, :],
                tokens=(piece.decode("utf-8", errors="replace"),),
                top_tokens=(
                    tuple(self._piece(int(t)).decode("utf-8", errors="replace") for t in top),
                ),
            )
            ready, stopped = stops.push(chunk)
            yield from ready
            if stopped:
                finish, matched_stop = "stop", True
                break
            self._llm.eval([token])
        if not matched_stop:
            yield from stops.flush()
        tail = decoder.decode(b"", final=True)
        yield TokenChunk(
            text=tail,
            finish_reason=finish,
            usage=Usage(prompt_tokens=usage_prompt, completion_tokens=generated),
        )

    def _token_loop(
        self,
        messages: Sequence[Message],
        stop: Sequence[str] | None,
        max_tokens: int | None,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenChunk]:
        """Decode token by token, yielding each token with its logprobs."""
        prompt, limit = self._prepared(messages, stop, max_tokens)
        rng = np.random.default_rng(self.seed)
        with self._lock:
            self._llm.reset()  # type: ignore[no-untyped-call]
            self._llm.eval(prompt)
            yield from self._decode(
                self._log_softmax(), limit, stop, self.temperature, rng, len(prompt), cancel
            )

    def _eval_prompt_cached(self, prompt: list[int]) -> int:
        """Bring the state to the end of `prompt`, reusing the KV cache; tokens evaluated.

        When the cache already starts with the whole prompt (the greedy answer
        to the same messages was the last call), only its last token is
        evaluated again, to get its logits back. Caller holds the lock.
        """
        cached = int(self._llm.n_tokens)
        ids = self._llm.input_ids
        if cached >= len(prompt) and [int(t) for t in ids[: len(prompt)]] == prompt:
            self._llm.n_tokens = len(prompt) - 1  # eval() drops the KV cells after it
            self._llm.eval(prompt[-1:])
            return 1
        # As the greedy answer does, then its last token again on its own, as in the cached
        # case: llama.cpp's logits depend on how tokens were batched, and this way the same
        # seed gives the same samples whether the prompt was cached or not.
        self._llm.reset()  # type: ignore[no-untyped-call]
        self._llm.eval(prompt)
        self._llm.n_tokens = len(prompt) - 1
        self._llm.eval(prompt[-1:])
        return len(prompt) + 1

    def _sample_loop(
        self, messages: Sequence[Message], draws: Draws, cancel: threading.Event | None = None
    ) -> Iterator[tuple[int, TokenChunk]]:
        """`(sample index, chunk)` of k samples decoded from one evaluation of the prompt."""
        prompt, limit = self._prepared(messages, draws.stop, draws.max_tokens)
        with self._lock:
            evaluated = self._eval_prompt_cached(prompt)
            first = self._log_softmax().copy()
            for i in range(draws.k):
                if cancel is not None and cancel.is_set():
                    return
                self._llm.n_tokens = len(prompt)  # back to the end of the prompt
                rng = np.random.default_rng(draws.seed + i)
                usage_prompt = evaluated if i == 0 else 0
                for chunk in self._decode(
                    first, limit, draws.stop, draws.temperature, rng, usage_prompt, cancel
                ):
                    yield i, chunk

    def _collect(
        self, pairs: list[tuple[int, TokenChunk]], k: int, started: float
    ) -> list[Generation]:
        per: list[list[TokenChunk]] = [[] for _ in range(k)]
        for i, chunk in pairs:
            per[i].append(chunk)
        latency = (time.perf_counter() - started) / k
        return [
            accumulate(chunks, model=self.model, latency_s=latency, has_logprobs=True)
            for chunks in per
        ]

    def _sample(self, messages: Sequence[Message], draws: Draws) -> list[Generation]:
        started = time.perf_counter()
        pairs = list(self._sample_loop(messages, draws))
        return self._collect(pairs, draws.k, started)

    async def _asample(self, messages: Sequence[Message], draws: Draws) -> list[Generation]:
        started = time.perf_counter()
        pairs = [
            pair
            async for pair in iterate_in_thread(
                lambda cancel: self._sample_loop(messages, draws, cancel)
            )
        ]
        return self._collect(pairs, draws.k, started)

    def _stream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Iterator[TokenChunk]:
        return self._token_loop(messages, stop, max_tokens)

    def _astream(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> AsyncIterator[TokenChunk]:
        return iterate_in_thread(
            lambda cancel: self._token_loop(messages, stop, max_tokens, cancel)
        )

    def _generate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        started = time.perf_counter()
        return self._whole(list(self._token_loop(messages, stop, max_tokens)), started)

    async def _agenerate(
        self, messages: Sequence[Message], stop: Sequence[str] | None, max_tokens: int | None
    ) -> Generation:
        started = time.perf_counter()
        chunks = [c async for c in self.astream(messages, stop=stop, max_tokens=max_tokens)]
        return self._whole(chunks, started)

    def _whole(self, chunks: list[TokenChunk], started: float) -> Generation:
        return accumulate(
            chunks, model=self.model, latency_s=time.perf_counter() - started, has_logprobs=True
        )


__all__ = ["LlamaCppSLM"]

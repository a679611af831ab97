"""EmbeddedLLM: a core SLM backend (the in-process llama.cpp model) as a LlamaIndex LLM.

It lets the embedded Gemma 3 270M stand in as the *fallback* of a
ConfidenceRouterLLM with no server at all, and gives any backend's answers
to LlamaIndex with their token log-probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    LogProb,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from confidence_router import ConfigurationError, Generation, Message, SLMBackend, TokenChunk

from ._convert import (
    chat_response,
    generation_logprobs,
    logprobs_from_arrays,
    prompt_messages,
    to_completion_response,
    to_core_messages,
    usage_dict,
)
from ._options import call_options, check_positive_int, reject_unknown

_OWN_FIELDS = ("num_output", "context_window")


class EmbeddedLLM(LLM):
    """Any core SLM backend as a LlamaIndex LLM; made for the embedded llama.cpp models.

    Args:
        slm: a core backend, e.g. `LlamaCppSLM.gemma3()` (in process, no server).
        num_output: answer budget in tokens (default: the backend's `max_tokens`).
        context_window: default: the backend's `context_window` (its `n_ctx`).

    Chat messages are rendered by the backend itself (the model's chat template, or
    the contents joined by blank lines for `prompt_format="completion"`). Responses
    carry `logprobs` and `raw["usage"]`.

    Example:
        ```python
        from confidence_router import LlamaCppSLM
        from llamaindex_confidence_router import ConfidenceRouterLLM, EmbeddedLLM

        gemma = EmbeddedLLM(LlamaCppSLM.gemma3(max_tokens=64))
        print(gemma.complete("Question: What is the capital of France?\\nAnswer:").text)

        llm = ConfidenceRouterLLM(LlamaCppSLM.smollm2(), fallback=gemma)
        ```
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    slm: Any = Field(exclude=True, description="The core SLM backend that generates.")
    num_output: int = Field(description="Answer budget in tokens.")
    context_window: int = Field(description="Context window of the backend's model.")

    def __init__(
        self,
        slm: SLMBackend,
        *,
        num_output: int | None = None,
        context_window: int | None = None,
        **kwargs: Any,
    ) -> None:
        reject_unknown(type(self).__name__, kwargs, [*LLM.model_fields, *_OWN_FIELDS])
        if not isinstance(slm, SLMBackend):
            raise ConfigurationError(
                "slm",
                f"must be a core SLM backend (LlamaCppSLM, OllamaSLM), got {type(slm).__name__}",
            )
        if num_output is None:
            num_output = getattr(slm, "max_tokens", 256)
        if context_window is None:
            context_window = getattr(slm, "context_window", None) or getattr(slm, "num_ctx", None)
            if context_window is None:
                raise ConfigurationError(
                    "context_window", f"{type(slm).__name__} does not report one: pass it"
                )
        check_positive_int("num_output", num_output)
        check_positive_int("context_window", context_window)
        super().__init__(  # type: ignore[call-arg]  # pydantic fields, no mypy plugin
            slm=slm, num_output=num_output, context_window=context_window, **kwargs
        )

    @classmethod
    def class_name(cls) -> str:
        return "EmbeddedLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=True,
            model_name=str(self.slm.model),
        )

    def _prompt_messages(self, prompt: str, formatted: bool) -> list[Message]:
        return prompt_messages(prompt, formatted, self.completion_to_prompt)

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        options = call_options(self.num_output, kwargs)
        return _response(self.slm.generate(to_core_messages(messages), **options))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        options = call_options(self.num_output, kwargs)
        gen = self.slm.generate(self._prompt_messages(prompt, formatted), **options)
        return to_completion_response(_response(gen))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        options = call_options(self.num_output, kwargs)
        msgs = to_core_messages(messages)

        def gen() -> ChatResponseGen:
            stream = _TokenStream(str(self.slm.model))
            for chunk in self.slm.stream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield response

        return gen()

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        options = call_options(self.num_output, kwargs)
        msgs = self._prompt_messages(prompt, formatted)

        def gen() -> CompletionResponseGen:
            stream = _TokenStream(str(self.slm.model))
            for chunk in self.slm.stream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield to_completion_response(response)

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        options = call_options(self.num_output, kwargs)
        return _response(await self.slm.agenerate(to_core_messages(messages), **options))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        options = call_options(self.num_output, kwargs)
        gen = await self.slm.agenerate(self._prompt_messages(prompt, formatted), **options)
        return to_completion_response(_response(gen))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        options = call_options(self.num_output, kwargs)
        msgs = to_core_messages(messages)

        async def gen() -> ChatResponseAsyncGen:
            stream = _TokenStream(str(self.slm.model))
            async for chunk in self.slm.astream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield response

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        options = call_options(self.num_output, kwargs)
        msgs = self._prompt_messages(prompt, formatted)

        async def gen() -> CompletionResponseAsyncGen:
            stream = _TokenStream(str(self.slm.model))
            async for chunk in self.slm.astream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield to_completion_response(response)

        return gen()


def _response(gen: Generation) -> ChatResponse:
    return chat_response(
        gen.text,
        raw={
            "model": gen.model,
            "usage": usage_dict(gen.usage),
            "finish_reason": gen.finish_reason,
        },
        logprobs=generation_logprobs(gen),
    )


class _TokenStream:
    """TokenChunks to cumulative ChatResponses; one implementation for sync and async.

    The last response (`delta=""`) carries usage, finish reason and the logprobs of
    the whole answer.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.text = ""
        self.logprobs: list[list[LogProb]] = []

    def step(self, chunk: TokenChunk) -> ChatResponse | None:
        self.logprobs.extend(
            logprobs_from_arrays(
                chunk.tokens, chunk.token_logprobs, chunk.top_tokens, chunk.top_logprobs
            )
        )
        self.text += chunk.text
        if chunk.usage is None and chunk.finish_reason is None:
            return chat_response(self.text, delta=chunk.text) if chunk.text else None
        raw: dict[str, Any] = {"model": self.model, "finish_reason": chunk.finish_reason}
        if chunk.usage is not None:
            raw["usage"] = usage_dict(chunk.usage)
        return chat_response(self.text, delta=chunk.text, raw=raw, logprobs=self.logprobs)


__all__ = ["EmbeddedLLM"]

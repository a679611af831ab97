"""The face failure contract through ConfidenceRouterLLM: what a LlamaIndex user sees.

Every row of ``tests/contracts/face_failures.py`` through ``chat``, ``achat``,
``stream_chat`` and ``astream_chat`` (the completion calls share their code, and run
where noted: a fallback dies mid-``astream_complete``, the logs row uses ``complete``
and ``acomplete``), with a real LlamaIndex ``Ollama`` LLM (Gemma 3 270M) as the
fallback; and LlamaIndex's own rows (``num_output``, a blank completion prompt).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import httpx
import pytest
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.llms import CompletionResponse, CustomLLM, LLMMetadata
from llama_index.core.llms.callbacks import llm_completion_callback

from confidence_router import ConfigurationError, InvalidInputError, LlamaCppSLM, OllamaSLM
from llamaindex_confidence_router import ConfidenceRouterLLM
from tests.contracts.face_failures import TOKENS, FaceFailureContract, Reply
from tests.support.fallbacks import llamaindex_gemma
from tests.support.ollama_server import OllamaTestServer

IMAGE = [
    ChatMessage(
        role="user",
        blocks=[
            TextBlock(text="What is in this picture?"),
            ImageBlock(image=b"\x89PNG\r\n\x1a\n", image_mimetype="image/png"),
        ],
    )
]


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def as_input(call: str, question: Any) -> Any:
    """A text question as the call takes it: a prompt for ``*complete``, else a user message."""
    if call.endswith("complete") or not isinstance(question, str):
        return question
    return user(question)


def text_of(response: Any) -> str:
    if isinstance(response, CompletionResponse):
        return response.text
    return str(response.message.content)


class KeyedLLM(CustomLLM):
    """A LlamaIndex LLM holding its key as a plain str field, as several integrations do
    (llama-index-llms-openai's ``api_key: str``); it sends it to a real address that refuses."""

    api_key: str
    base_url: str

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=2048, num_output=TOKENS, model_name="keyed-model")

    def _post(self) -> CompletionResponse:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        reply = httpx.post(f"{self.base_url}/v1/completions", headers=headers, timeout=5)
        return CompletionResponse(text=reply.text)

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return self._post()

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> Any:
        yield self._post()


class TestLlamaIndexFailures(FaceFailureContract):
    calls = ("chat", "achat", "stream_chat", "astream_chat")
    mid_stream_calls = ("stream_chat", "astream_complete")
    log_calls = ("complete", "achat", "stream_chat", "acomplete")
    image_input: ClassVar[Any] = IMAGE
    image_words = "contains a ImageBlock"
    loggers = ("confidence_router", "llamaindex_confidence_router")

    @classmethod
    def make_fallback(cls, host: str) -> Any:
        return llamaindex_gemma(host, TOKENS)

    @classmethod
    def fallback_answer(cls, fallback: Any, question: str) -> str:
        return str(fallback.chat(user(question)).message.content)

    def make(self, slm: Any, fallback: Any, **settings: Any) -> ConfidenceRouterLLM:
        return ConfidenceRouterLLM(slm, fallback, **{"num_output": TOKENS, **settings})

    def by_name(self, model: str, fallback: Any, *, timeout: float) -> ConfidenceRouterLLM:
        return ConfidenceRouterLLM(model, fallback, request_timeout=timeout, num_output=TOKENS)

    async def ask(self, llm: Any, call: str, question: Any) -> Reply:
        if call in ("chat", "complete"):
            response = getattr(llm, call)(as_input(call, question))
        elif call in ("achat", "acomplete"):
            response = await getattr(llm, call)(as_input(call, question))
        else:
            responses: list[Any] = []
            await self.collect(llm, call, question, responses)
            response = responses[-1]
            assert response.delta == "" and "usage" in response.raw
            assert "models" in response.raw["routing"]
            assert "".join(r.delta or "" for r in responses) == text_of(response)
        return Reply(
            text=text_of(response),
            routing=response.additional_kwargs["routing"],
            model=response.raw.get("model"),
            logprobs=response.logprobs,
            native=response,
        )

    async def collect(self, llm: Any, call: str, question: Any, into: list[Any]) -> None:
        if call.startswith("astream"):
            async for response in await getattr(llm, call)(as_input(call, question)):
                into.append(response)
        else:
            for response in getattr(llm, call)(as_input(call, question)):
                into.append(response)

    async def open_astream(self, llm: Any, question: Any) -> AsyncGenerator[Any, None]:
        stream: AsyncGenerator[Any, None] = await llm.astream_chat(user(question))
        return stream

    def chunk_text(self, chunk: Any) -> str:
        return str(chunk.delta or "")

    def chunk_routing(self, chunk: Any) -> dict[str, Any]:
        routing: dict[str, Any] = chunk.additional_kwargs["routing"]
        return routing

    def closes(self, chunk: Any) -> bool:
        return "usage" in chunk.raw

    def keyed_fallback(self, secret: str, host: str) -> Any:
        keyed = KeyedLLM(api_key=secret, base_url=host)
        assert secret in repr(keyed), "the fallback itself does show it: the test is not vacuous"
        return keyed

    def key_of(self, keyed: Any) -> str:
        return str(keyed.api_key)

    @property
    def refusal(self) -> type[BaseException]:
        return httpx.ConnectError

    def shown(self, llm: Any) -> list[str]:
        return [
            repr(llm),
            str(llm),
            repr(llm.router),
            llm.model_dump_json(),
            str(llm.to_dict()),
            str(llm.metadata),
        ]

    # -- LlamaIndex's own rows --------------------------------------------------------------

    def test_num_output_zero_fails_at_construction_naming_the_field(
        self, smollm2_slm: LlamaCppSLM, fallback: Any
    ) -> None:
        with pytest.raises(ConfigurationError) as info:
            self.make(smollm2_slm, fallback, num_output=0)
        assert info.value.field == "num_output"

    async def test_a_blank_completion_prompt_raises_before_any_model_call(
        self, ollama_server: OllamaTestServer, slm_http: OllamaSLM, fallback: Any
    ) -> None:
        tripwire = ollama_server.faults.set("status", endpoints="*")
        llm = self.make(slm_http, fallback)
        with pytest.raises(InvalidInputError):
            await llm.acomplete("   ")
        with pytest.raises(InvalidInputError):
            llm.complete("")
        assert tripwire.hits == 0
        assert llm.stats.queries == 0

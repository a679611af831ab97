"""The face failure contract through ConfidenceRouterChat: what a LangChain user sees.

Every row of ``tests/contracts/face_failures.py`` through ``invoke``, ``ainvoke``,
``stream`` and ``astream``, with a real ``ChatOllama`` (Gemma 3 270M) as the fallback;
and LangChain's own row: a ``ChatOpenAI`` fallback cut before its ``finish_reason``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, ClassVar

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_ollama import ChatOllama

from langchain_confidence_router import ConfidenceRouterChat
from tests.contracts.face_failures import GEMMA3, TOKENS, FaceFailureContract, Reply
from tests.support.ollama_server import OllamaTestServer

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

IMAGE = HumanMessage(
    content=[
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]
)


class TestLangChainFailures(FaceFailureContract):
    calls = ("invoke", "ainvoke", "stream", "astream")
    mid_stream_calls = ("stream", "astream")
    log_calls = ("invoke", "ainvoke", "stream", "ainvoke")
    image_input: ClassVar[Any] = [IMAGE]
    image_words = "content block 1 has type 'image_url'"
    loggers = ("confidence_router", "langchain_confidence_router")

    @classmethod
    def make_fallback(cls, host: str) -> ChatOllama:
        return ChatOllama(model=GEMMA3, base_url=host, num_predict=TOKENS, temperature=0, seed=0)

    @classmethod
    def fallback_answer(cls, fallback: Any, question: str) -> str:
        return str(fallback.invoke(question).content)

    def make(self, slm: Any, fallback: Any, **settings: Any) -> ConfidenceRouterChat:
        return ConfidenceRouterChat(
            **{"slm": slm, "fallback": fallback, "max_tokens": TOKENS, **settings}
        )

    def by_name(self, model: str, fallback: Any, *, timeout: float) -> ConfidenceRouterChat:
        return ConfidenceRouterChat(slm_model=model, fallback=fallback, timeout=timeout)

    async def ask(self, llm: Any, call: str, question: Any) -> Reply:
        if call == "invoke":
            message = llm.invoke(question)
        elif call == "ainvoke":
            message = await llm.ainvoke(question)
        else:
            chunks: list[AIMessageChunk] = []
            await self.collect(llm, call, question, chunks)
            assert chunks[-1].chunk_position == "last"
            merged = chunks[0]
            for chunk in chunks[1:]:
                merged = merged + chunk
            message = AIMessage(content=merged.content, response_metadata=merged.response_metadata)
        meta = message.response_metadata
        return Reply(
            text=str(message.content),
            routing=meta["routing"],
            model=meta.get("model_name"),
            logprobs=meta.get("logprobs", {}).get("content"),
            native=message,
        )

    async def collect(self, llm: Any, call: str, question: Any, into: list[Any]) -> None:
        if call == "stream":
            for chunk in llm.stream(question):
                into.append(chunk)
        else:
            async for chunk in llm.astream(question):
                into.append(chunk)

    async def open_astream(self, llm: Any, question: Any) -> AsyncGenerator[Any, None]:
        stream: AsyncGenerator[Any, None] = llm.astream(question)
        return stream

    def chunk_text(self, chunk: Any) -> str:
        return str(chunk.content)

    def chunk_routing(self, chunk: Any) -> dict[str, Any]:
        routing: dict[str, Any] = chunk.response_metadata.get("routing", {})
        return routing

    def closes(self, chunk: Any) -> bool:
        return chunk.chunk_position == "last" or bool(chunk.usage_metadata)

    def keyed_fallback(self, secret: str, host: str) -> Any:
        pytest.importorskip("langchain_openai")
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model="gpt-4o-mini",
            api_key=secret,  # type: ignore[arg-type]
            base_url=f"{host}/v1",
            max_retries=0,
            timeout=5,
        )

    def key_of(self, keyed: Any) -> str:
        return str(keyed.openai_api_key.get_secret_value())

    @property
    def refusal(self) -> type[BaseException]:
        import openai

        return openai.APIConnectionError

    def shown(self, llm: Any) -> list[str]:
        return [
            repr(llm),
            str(llm),
            repr(llm.router),
            str(llm._identifying_params),
            llm.model_dump_json(),
            str(llm.router.fallback),
        ]

    # -- LangChain's own rows ---------------------------------------------------------------

    async def test_a_chat_openai_answer_cut_without_its_finish_reason_raises(
        self, call: str, ollama_server: OllamaTestServer, smollm2_slm: Any
    ) -> None:
        from langchain_openai import ChatOpenAI

        chat_openai = ChatOpenAI(
            model=GEMMA3,
            base_url=f"{ollama_server.host}/v1",
            api_key="EMPTY",  # type: ignore[arg-type]
            max_tokens=TOKENS,  # type: ignore[call-arg]
            temperature=0,
            max_retries=0,
        )
        await self.check_a_cut_answer_raises(call, chat_openai, ollama_server, smollm2_slm)

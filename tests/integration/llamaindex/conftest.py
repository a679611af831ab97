"""Fixtures of the LlamaIndex tests: real documents, an offline BM25 retriever, the router
with SmolLM2 (in process) as SLM and a real LlamaIndex ``Ollama`` LLM on the test server
(Gemma 3 270M) as fallback, and an instrumentation handler on the root dispatcher."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import Document
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode
from llama_index.llms.ollama import Ollama
from llama_index.retrievers.bm25 import BM25Retriever

from confidence_router import Bound, LlamaCppSLM, Price, ThresholdPolicy
from llamaindex_confidence_router import ConfidenceRouterLLM, RoutingDecisionEvent
from tests.support.paths import SQUAD_V1_SAMPLE


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Offline by construction: these tests may connect to the loopback test server only."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.allow_hosts(["127.0.0.1"]))


SQUAD = SQUAD_V1_SAMPLE

#: Short answers keep every test fast; the fallback gets the same budget.
MAX_TOKENS = 24

#: Keeps every non-empty SLM answer (length >= 0 always holds).
KEEP = ThresholdPolicy((Bound("length", min=0),))
#: Escalates every answer (no margin reaches this threshold).
ESCALATE = ThresholdPolicy(threshold=1e6)


def squad_documents(titles: int = 4) -> tuple[list[Document], dict[str, str]]:
    """The first context of the first few SQuAD v1.1 articles, and one question for each.

    SQuAD v1.1 dev, CC BY-SA 4.0 (Rajpurkar et al. 2016); text from Wikipedia.
    """
    documents: list[Document] = []
    questions: dict[str, str] = {}
    with SQUAD.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            if row["title"] in questions:
                continue
            questions[row["title"]] = row["question"]
            documents.append(
                Document(
                    text=row["context"],
                    metadata={"title": row["title"], "source": "SQuAD v1.1 dev, CC BY-SA 4.0"},
                )
            )
            if len(documents) == titles:
                break
    return documents, questions


class Recorder(BaseEventHandler):
    """A real instrumentation handler: keeps every event the root dispatcher sees."""

    events: list[Any] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: Any, **kwargs: Any) -> None:
        self.events.append(event)

    def of(self, kind: type | tuple[type, ...]) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind)]

    def routing_decisions(self) -> list[RoutingDecisionEvent]:
        return self.of(RoutingDecisionEvent)

    def routed_ends(self) -> list[Any]:
        """End events of the router's own calls (the fallback's own calls carry no routing)."""
        return [
            e
            for e in self.of((LLMChatEndEvent, LLMCompletionEndEvent))
            if e.response is not None and "routing" in e.response.additional_kwargs
        ]

    def router_starts(self) -> list[Any]:
        """Start events (chat or completion) of the router's own calls, in order."""
        return [
            e
            for e in self.of((LLMChatStartEvent, LLMCompletionStartEvent))
            if e.model_dict.get("class_name") == "ConfidenceRouterLLM"
        ]


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    root = get_dispatcher()
    handler = Recorder()
    root.add_event_handler(handler)
    try:
        yield handler
    finally:
        root.event_handlers.remove(handler)


@pytest.fixture(scope="session")
def squad() -> tuple[list[Document], dict[str, str]]:
    return squad_documents()


@pytest.fixture(scope="session")
def nodes(squad: tuple[list[Document], dict[str, str]]) -> list[BaseNode]:
    splitter = SentenceSplitter(chunk_size=128, chunk_overlap=0)
    return splitter.get_nodes_from_documents(squad[0])


@pytest.fixture(scope="session")
def retriever(nodes: list[BaseNode]) -> BM25Retriever:
    return BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=2)


def _ollama(host: str, model: str = "gemma3:270m", **kwargs: Any) -> Ollama:
    """The real LlamaIndex Ollama LLM on the test server, greedy and short."""
    return Ollama(
        model=model,
        base_url=host,
        request_timeout=120.0,
        temperature=0.0,
        additional_kwargs={"num_predict": MAX_TOKENS, "seed": 0},
        **kwargs,
    )


def _router(slm: Any, fallback: Any, policy: Any = None, **kwargs: Any) -> ConfidenceRouterLLM:
    return ConfidenceRouterLLM(
        slm,
        fallback,
        policy=policy,
        num_output=MAX_TOKENS,
        slm_price=Price(0.0, 0.0),
        fallback_price=Price(1.0, 2.0),
        **kwargs,
    )


@pytest.fixture(scope="session")
def max_tokens() -> int:
    """The answer budget of every model in these tests."""
    return MAX_TOKENS


@pytest.fixture(scope="session")
def keep_policy() -> ThresholdPolicy:
    return KEEP


@pytest.fixture(scope="session")
def escalate_policy() -> ThresholdPolicy:
    return ESCALATE


@pytest.fixture(scope="session")
def make_fallback(ollama_host: str) -> Callable[..., Ollama]:
    """``make_fallback(model="gemma3:270m", **kwargs)``: an Ollama LLM on the test server."""
    return functools.partial(_ollama, ollama_host)


@pytest.fixture(scope="session")
def make_router() -> Callable[..., ConfidenceRouterLLM]:
    """``make_router(slm, fallback, policy=None, **kwargs)`` with the tests' budget and prices."""
    return _router


@pytest.fixture(scope="session")
def fallback(ollama_host: str) -> Ollama:
    return _ollama(ollama_host)


@pytest.fixture(scope="session")
def router_llm(smollm2_slm: LlamaCppSLM, fallback: Ollama) -> ConfidenceRouterLLM:
    """The default policy: SmolLM2 is weak, so most answers escalate (some do not)."""
    return _router(smollm2_slm, fallback)


@pytest.fixture(scope="session")
def keep_llm(smollm2_slm: LlamaCppSLM, fallback: Ollama) -> ConfidenceRouterLLM:
    return _router(smollm2_slm, fallback, KEEP)


@pytest.fixture(scope="session")
def escalate_llm(smollm2_slm: LlamaCppSLM, fallback: Ollama) -> ConfidenceRouterLLM:
    return _router(smollm2_slm, fallback, ESCALATE)

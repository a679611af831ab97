"""Question answering over local documents with LlamaIndex, the router as the generator.

A BM25 retriever (no embedding model, nothing downloaded) finds passages in
examples/docs; the router lets SmolLM2-135M answer first and escalates to Gemma 3
270M when SmolLM2's own token log-probabilities say it is unsure. Both models run
in process through llama.cpp, so this works offline with no server.

    pip install "confidence-router[llamaindex,local]" llama-index-retrievers-bm25
    python examples/llamaindex_query_engine.py            # 5 questions
    python examples/llamaindex_query_engine.py -n 10

With Ollama instead (any models you have pulled):

    from llama_index.llms.ollama import Ollama
    llm = ConfidenceRouterLLM("qwen2.5:1.5b", fallback=Ollama(model="llama3.1:8b"))

The documents are Wikipedia text from SQuAD v1.1 (CC BY-SA 4.0): examples/docs/ATTRIBUTION.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llama_index.core import Settings, SimpleDirectoryReader
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.retrievers.bm25 import BM25Retriever

from confidence_router import LlamaCppSLM, Price
from llamaindex_confidence_router import ConfidenceRouterLLM, EmbeddedLLM, RoutingDecisionEvent

HERE = Path(__file__).parent


class RouteLog(BaseEventHandler):
    """Collects the routing decisions LlamaIndex's instrumentation reports."""

    decisions: list[RoutingDecisionEvent] = []

    @classmethod
    def class_name(cls) -> str:
        return "RouteLog"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, RoutingDecisionEvent):
            self.decisions.append(event)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--questions", type=int, default=5, help="how many to ask")
    parser.add_argument("--mode", default="compact", help="LlamaIndex response mode")
    args = parser.parse_args()

    # 1. The router: SmolLM2 answers first, Gemma 3 (wrapped as a LlamaIndex LLM) if unsure.
    #    Prices are illustrative (per million tokens), to show what the ledger counts.
    llm = ConfidenceRouterLLM(
        LlamaCppSLM.smollm2(),
        fallback=EmbeddedLLM(LlamaCppSLM.gemma3(stop=["\n"])),
        num_output=48,
        slm_price=Price(0.0, 0.0),
        fallback_price=Price(0.15, 0.60),
    )
    Settings.llm = llm  # every engine built below uses the router

    # 2. An index over the local documents: sentence chunks and BM25, all offline.
    documents = SimpleDirectoryReader(HERE / "docs", exclude=["ATTRIBUTION.md"]).load_data()
    nodes = SentenceSplitter(chunk_size=200, chunk_overlap=20).get_nodes_from_documents(documents)
    retriever = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=2)
    engine = RetrieverQueryEngine.from_args(retriever, response_mode=args.mode)

    # 3. Query engines return text only: the route arrives through instrumentation.
    log = RouteLog()
    get_dispatcher().add_event_handler(log)
    lines = (HERE / "questions.txt").read_text(encoding="utf-8").splitlines()
    questions = [q for q in lines if q.strip() and not q.startswith("#")][: args.questions]
    print(f"{len(documents)} documents, {len(nodes)} chunks, model {llm.metadata.model_name}\n")
    for question in questions:
        seen = len(log.decisions)
        answer = str(engine.query(question)).strip().replace("\n", " ")
        routes = ", ".join(
            f"{d.route} (score {d.score:+.2f})" if d.score is not None else d.route
            for d in log.decisions[seen:]
        )
        print(f"Q: {question}\nA: {answer[:160]}\n   route: {routes}")
        print(f"   why: {log.decisions[-1].reason}\n")

    # 4. The savings ledger.
    stats = llm.stats
    print(
        f"{stats.queries} LLM calls: {stats.answered_by_slm} kept by the SLM, "
        f"{stats.escalations} escalated ({stats.escalation_rate:.0%})"
    )
    for model, usage in stats.tokens_by_model.items():
        print(f"  {model}: {usage.prompt_tokens} prompt + {usage.completion_tokens} output tokens")
    print(
        f"cost ${stats.cost:.6f} vs ${stats.baseline_cost:.6f} sending everything to the "
        f"fallback: saved ${stats.saved:.6f}"
    )


if __name__ == "__main__":
    main()

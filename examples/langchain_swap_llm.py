"""Put the router into an existing LangChain RAG chain by changing one line.

The chain below is ordinary LangChain: BM25 retrieval over examples/docs, a
prompt, a chat model, a string parser. First it runs with a plain chat model,
Gemma 3 270M in process through langchain-community's ``ChatLlamaCpp``. Then
the chat model is swapped for ``ConfidenceRouterChat``: SmolLM2-135M answers
first and the same Gemma model is called only when SmolLM2's own token
log-probabilities say it is unsure. Nothing else in the chain changes; a
plain callback handler reports which model answered. Offline, no server.

    pip install "confidence-router[rag]"
    python examples/langchain_swap_llm.py

With Ollama and a hosted model instead, the swap line reads for example
``ConfidenceRouterChat(slm_model="qwen2.5:1.5b", fallback=ChatOpenAI(model="gpt-4o-mini"))``.
The documents are Wikipedia text from SQuAD v1.1 (CC BY-SA 4.0), see examples/docs.
"""

import re
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*langchain-community.*")  # its sunset notice

from langchain_community.chat_models import ChatLlamaCpp  # noqa: E402
from langchain_community.retrievers import BM25Retriever  # noqa: E402
from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.output_parsers import StrOutputParser  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402
from llama_cpp.llama_chat_format import (  # noqa: E402
    ChatFormatterResponse,
    chat_formatter_to_chat_completion_handler,
)

from confidence_router import LlamaCppSLM, Price, gemma3_path  # noqa: E402
from langchain_confidence_router import ConfidenceRouterChat  # noqa: E402

DOCS = Path(__file__).parent / "docs"
QUESTIONS = [
    "In what country is Normandy located?",
    "What is the Rhine called in Dutch?",
    "What language did Tesla study while in school?",
    "What is the Latin name for Black Death?",
]

# -- the existing application -----------------------------------------------------------

# Passages: the paragraphs of each document; BM25 needs no embedding model.
passages = [
    Document(paragraph, metadata={"source": path.name})
    for path in sorted(DOCS.glob("*.*"))
    if not path.name.startswith("ATTRIBUTION")
    for paragraph in path.read_text(encoding="utf-8").split("\n\n")[1:]
]
retriever = BM25Retriever.from_documents(
    passages, k=1, preprocess_func=lambda text: re.findall(r"\w+", text.lower())
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(d.page_content for d in docs)


prompt = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question in a few words, using only the context."),
        ("human", "Context:\n{context}\n\nQuestion: {question}\nAnswer:"),
    ]
)


# Gemma 3 270M is a base model whose GGUF has no chat template: give it the
# messages as one plain completion prompt (llama-cpp-python's chat_handler hook).
def plain_prompt(*, messages, **_):  # type: ignore[no-untyped-def]
    return ChatFormatterResponse(prompt="\n\n".join(m["content"] for m in messages))


chat_model = ChatLlamaCpp(
    model_path=str(gemma3_path()),
    n_ctx=2048,
    n_batch=512,
    temperature=0.0,
    max_tokens=24,
    stop=["\n"],
    streaming=False,  # the non-streamed path reports token usage
    verbose=False,
    model_kwargs={"chat_handler": chat_formatter_to_chat_completion_handler(plain_prompt)},
)


def build_chain(llm):  # type: ignore[no-untyped-def]
    return (
        {"context": retriever | format_docs, "question": RunnablePassthrough()}
        | prompt
        | llm
        | StrOutputParser()
    )


class RouteLog(BaseCallbackHandler):
    """Any callback handler sees the routing record when a model run ends."""

    def __init__(self) -> None:
        self.routes: list[dict] = []

    def on_llm_end(self, response, **kwargs):  # type: ignore[no-untyped-def]
        routing = (response.generations[0][0].generation_info or {}).get("routing")
        if routing:  # only the router's own run has one
            self.routes.append(routing)


def run(chain, title: str, log: RouteLog | None = None) -> None:  # type: ignore[no-untyped-def]
    print(f"== {title}")
    started = time.perf_counter()
    config = {"callbacks": [log]} if log else {}
    for question in QUESTIONS:
        answer = chain.invoke(question, config=config)
        print(f"Q: {question}\nA: {answer.strip()}")
        if log:
            routing = log.routes[-1]
            who = routing["models"]["answered_by"]
            print(f"   route={routing['route']} ({who}); {routing['reason']}")
    print(f"   [{len(QUESTIONS)} questions in {time.perf_counter() - started:.1f} s]\n")


# -- before: the chain with a plain chat model -------------------------------------------
run(build_chain(chat_model), "before: every question goes to Gemma 3 270M")

# -- after: the one-line swap -----------------------------------------------------------
# Prices are illustrative (per million tokens): the local SLM is free and the
# fallback is priced like a small hosted model, so the ledger can count savings.
llm = ConfidenceRouterChat(
    slm=LlamaCppSLM.smollm2(max_tokens=24),
    fallback=chat_model,
    fallback_price=Price(input_per_million=0.15, output_per_million=0.60),
)
run(build_chain(llm), "after: SmolLM2-135M first, Gemma 3 270M only when unsure", RouteLog())

# -- the savings ledger ------------------------------------------------------------------
stats = llm.stats
print("== ledger (llm.stats)")
print(
    f"queries {stats.queries}: {stats.answered_by_slm} answered by the SLM, "
    f"{stats.escalations} escalated (rate {stats.escalation_rate:.0%}), "
    f"{stats.fallback_calls_avoided} fallback calls avoided"
)
for model, usage in stats.tokens_by_model.items():
    print(f"tokens {model}: {usage.prompt_tokens} prompt + {usage.completion_tokens} completion")
print(
    f"cost ${stats.cost:.8f} vs ${stats.baseline_cost:.8f} if every question went to the "
    f"fallback: saved ${stats.saved:.8f}"
)

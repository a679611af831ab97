"""Everything the app takes from `langchain-community`, and nothing else.

`langchain-community` is being sunset upstream (langchain-ai/langchain-community#674),
so its parts sit behind these four functions: replacing it means rewriting this
file only. Each imports its part when called, so importing the app stays cheap and
the package's sunset notice is emitted inside the command (which silences it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.retrievers import BaseRetriever


def load_text(path: Path) -> list[Document]:
    """A Markdown or text file as one Document (`TextLoader`, UTF-8)."""
    from langchain_community.document_loaders import TextLoader

    docs: list[Document] = TextLoader(str(path), encoding="utf-8").load()
    return docs


def load_pdf(path: Path) -> list[Document]:
    """A PDF as one Document per page (`PyPDFLoader`)."""
    from langchain_community.document_loaders import PyPDFLoader

    docs: list[Document] = PyPDFLoader(str(path)).load()
    return docs


def bm25_retriever(
    chunks: Sequence[Document], *, k: int, preprocess_func: Callable[[str], list[str]]
) -> BaseRetriever:
    """An in-memory BM25 index of `chunks` (`BM25Retriever`, needs `rank-bm25`)."""
    from langchain_community.retrievers import BM25Retriever

    return BM25Retriever.from_documents(list(chunks), k=k, preprocess_func=preprocess_func)


def llama_cpp_chat(**options: Any) -> BaseChatModel:
    """A llama.cpp model run in-process as a LangChain chat model (`ChatLlamaCpp`)."""
    from langchain_community.chat_models import ChatLlamaCpp

    return ChatLlamaCpp(**options)


__all__ = ["bm25_retriever", "llama_cpp_chat", "load_pdf", "load_text"]

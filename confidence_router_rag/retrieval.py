"""Retrieval: BM25 over the passages (offline, nothing to download), or Ollama embeddings.

BM25 comes from `._community`; embeddings are `langchain-ollama`'s
`OllamaEmbeddings` in `langchain-core`'s in-memory vector store. An Ollama
that cannot be reached raises `EmbeddingsUnavailableError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from confidence_router.errors import ConfidenceRouterError, ConfigurationError

from . import _community
from ._utils import exception_reason

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

RETRIEVERS = ("bm25", "ollama-embeddings")

_STOPWORD_TEXT = (
    "a an and are as at be by did do does for from had has have how in is it its of on or "
    "that the their this to was were what when where which who whom whose why with"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


class EmbeddingsUnavailableError(ConfidenceRouterError):
    """The embedding model (Ollama) could not be reached while indexing."""


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased word tokens without stop words (BM25's default only splits on spaces,
    so `Normans?` would not match `Normans`)."""
    return [w for w in re.findall(r"\w+", text.lower()) if w not in _STOPWORDS]


def build_retriever(
    chunks: Sequence[Document],
    kind: str = "bm25",
    *,
    k: int = 3,
    embedding_model: str = "nomic-embed-text",
    ollama_host: str | None = None,
) -> BaseRetriever:
    """BM25 (offline, nothing to download) or Ollama embeddings in memory (when asked)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigurationError("k", f"must be an int >= 1, got {k!r}")
    if not chunks:
        raise ConfigurationError("chunks", "nothing to index: the documents have no text")
    if kind == "bm25":
        return _community.bm25_retriever(chunks, k=k, preprocess_func=bm25_tokens)
    if kind == "ollama-embeddings":
        from langchain_core.vectorstores import InMemoryVectorStore
        from langchain_ollama import OllamaEmbeddings

        embeddings = OllamaEmbeddings(model=embedding_model, base_url=ollama_host)
        try:
            store = InMemoryVectorStore.from_documents(list(chunks), embeddings)
        except Exception as exc:  # httpx/ollama connection and response errors
            where = ollama_host or "OLLAMA_HOST"
            raise EmbeddingsUnavailableError(
                f"could not embed the documents with Ollama model {embedding_model!r} at "
                f"{where}: {exception_reason(exc)}. Is `ollama serve` running and the model "
                f"pulled (`ollama pull {embedding_model}`)? Or use --retriever bm25."
            ) from exc
        return store.as_retriever(search_kwargs={"k": k})
    raise ConfigurationError("retriever", f"must be one of {RETRIEVERS}, got {kind!r}")


__all__ = ["RETRIEVERS", "EmbeddingsUnavailableError", "bm25_tokens", "build_retriever"]

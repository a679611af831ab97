"""`confidence-router rag`: questions over a folder of local documents, answered through
the router. Needs the `rag` extra (`pip install 'confidence-router[rag]'`).

A small app built from stock LangChain parts, one module per job:

- `.documents`: find, load and split the documents;
- `.retrieval`: BM25 (offline) or Ollama embeddings;
- `.chain`: the prompt, the context budget and the chain around the router;
- `.models`: the small model, the fallback and the router chat model;
- `.display`: each answer and the summary, on the terminal and as JSON;
- `.cli`: the command's arguments, exit codes and run;
- `._community`: every part taken from `langchain-community` (loaders,
  `BM25Retriever`, `ChatLlamaCpp`), so replacing it is one file.

Importing the package checks that the `rag` extra is installed, so a missing
part is named at once (an `ImportError` naming the module and the extra)
rather than halfway through a run.
"""

from __future__ import annotations

from importlib.util import find_spec

#: The modules the app imports, from the packages of the `rag` extra.
REQUIRED_MODULES = (
    "langchain",
    "langchain_community",
    "langchain_core",
    "langchain_ollama",
    "langchain_text_splitters",
    "llama_cpp",
    "pypdf",
    "rank_bm25",
    "rich",
)


def missing_modules() -> list[str]:
    """The modules of `REQUIRED_MODULES` that cannot be imported here."""
    return [name for name in REQUIRED_MODULES if find_spec(name) is None]


_missing = missing_modules()
if _missing:
    raise ImportError(
        f"confidence-router's RAG app needs the 'rag' extra (missing: {', '.join(_missing)}); "
        "install it with: pip install 'confidence-router[rag]'",
        name=_missing[0],
    )

__all__ = ["REQUIRED_MODULES", "missing_modules"]

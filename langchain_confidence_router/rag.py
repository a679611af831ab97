"""Retrieval-augmented QA over a folder of local documents, answered through the router.

Everything here is built from stock LangChain parts: ``langchain-community``
loaders (``TextLoader`` for Markdown and text, ``PyPDFLoader`` for PDF) and
``BM25Retriever`` (no model download), ``langchain-text-splitters``, and an
LCEL chain ``{docs, question} -> prompt -> ConfidenceRouterChat``. The
embedded default needs no server and no network: Qwen2.5-Coder-0.5B-Instruct
answers first in-process, and Qwen2.5-Coder-1.5B-Instruct (run by
langchain-community's ``ChatLlamaCpp``) is the fallback; ``--tiny`` swaps in
SmolLM2-135M and Gemma 3 270M.

A ladder of small models runs by flag: ``--slm`` repeated, lowest first, each
SLM with the default policy shipped for it, e.g. Gemma 3 270M, then
Qwen2.5-Coder-0.5B, then the 1.5B fallback (the chat model then runs a
:class:`~confidence_router.Cascade`; every answer says which stage gave it)::

    ./scripts/demo --slm embedded:gemma3 --slm embedded
    confidence-router rag examples/docs --questions examples/questions.txt \
        --slm embedded:gemma3 --slm embedded --fallback embedded

Failures a user can cause get typed errors with the offending path or value
(:class:`DocumentsFolderError`, :class:`NoDocumentsError`,
:class:`DocumentLoadError`, :class:`QuestionTooLongError`,
:class:`EmbeddingsUnavailableError`); the CLI maps each to one exit code.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confidence_router.backends.base import SLMBackend
from confidence_router.errors import (
    ConfidenceRouterError,
    ConfigurationError,
    ContextWindowExceededError,
    InvalidInputError,
)
from confidence_router.eval.prompts import ABSTAIN_ANSWER, RAG_SYSTEM_PROMPT, RAG_USER_PROMPT
from confidence_router.types import Message

if TYPE_CHECKING:
    from langchain_core.documents import Document
    from langchain_core.language_models import BaseChatModel
    from langchain_core.retrievers import BaseRetriever
    from langchain_core.runnables import Runnable

#: File types the loader understands, by suffix.
TEXT_SUFFIXES = (".md", ".markdown", ".txt")
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + PDF_SUFFIXES
#: Licence and attribution files are about the documents, not part of them.
DEFAULT_EXCLUDE = ("ATTRIBUTION*", "LICENSE*", "LICENCE*", "NOTICE*")
RETRIEVERS = ("bm25", "ollama-embeddings")

#: The SLM's prompt, shared with the evaluation's ``rag-v2`` prompt so policies
#: can be calibrated on exactly what this command sends. It lets the model say
#: that the documents do not hold the answer (:data:`ABSTAIN_ANSWER`).
SYSTEM_PROMPT = RAG_SYSTEM_PROMPT
USER_PROMPT = RAG_USER_PROMPT
#: One worked example, in the same shape as :data:`USER_PROMPT`, for base models
#: (completion prompts): without it Gemma 3 270M often starts its answer with a
#: newline, an empty answer since generation stops there.
BASE_MODEL_DEMO = (
    "Context: The Eiffel Tower was built by Gustave Eiffel's company and finished in 1889 "
    "for the World's Fair in Paris.\n"
    "Question: When was the Eiffel Tower finished?\n"
    "Answer: 1889"
)


# -- errors ---------------------------------------------------------------------------


class DocumentsFolderError(InvalidInputError):
    """The documents folder does not exist or is not a folder."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        super().__init__(f"documents folder {str(path)!r} {problem}")


class NoDocumentsError(InvalidInputError):
    """The folder holds no file the loaders support, or only empty ones."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(f"no documents to index in {str(path)!r}: {detail}")


class DocumentLoadError(InvalidInputError):
    """One document could not be read (permissions, encoding, a broken PDF)."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read {str(path)!r}: {reason}")


class QuestionTooLongError(ContextWindowExceededError):
    """The question alone does not fit the SLM's context window."""


class EmbeddingsUnavailableError(ConfidenceRouterError):
    """The embedding model (Ollama) could not be reached while indexing."""


# -- loading and splitting ------------------------------------------------------------


def find_documents(folder: str | Path, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> list[Path]:
    """Supported files under ``folder`` (recursively, sorted, hidden ones skipped)."""
    root = Path(folder)
    if not root.exists():
        raise DocumentsFolderError(root, "does not exist")
    if not root.is_dir():
        raise DocumentsFolderError(root, "is not a folder")
    found: list[Path] = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if not path.is_file() or path.suffix.lower() not in SUPPORTED_SUFFIXES:
            continue
        if any(fnmatch.fnmatch(path.name, pattern) for pattern in exclude):
            continue
        found.append(path)
    if not found:
        kinds = ", ".join(SUPPORTED_SUFFIXES)
        raise NoDocumentsError(root, f"it has no {kinds} files")
    return found


def _reason(exc: BaseException) -> str:
    """The most specific message in an exception chain (loaders wrap the real cause)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"{type(exc).__name__}: {exc}"


def load_document(path: Path, root: Path | None = None) -> list[Document]:
    """One file as LangChain Documents (one per PDF page), ``source`` relative to ``root``."""
    from langchain_community.document_loaders import PyPDFLoader, TextLoader

    loader: Any
    if path.suffix.lower() in PDF_SUFFIXES:
        loader = PyPDFLoader(str(path))
    else:
        loader = TextLoader(str(path), encoding="utf-8")
    try:
        docs: list[Document] = loader.load()
    except Exception as exc:  # the loaders raise bare RuntimeError/PdfReadError
        raise DocumentLoadError(path, _reason(exc)) from exc
    source = str(path.relative_to(root)) if root is not None else path.name
    for doc in docs:
        doc.metadata["source"] = source
    return docs


def load_documents(
    paths: Iterable[Path],
    root: Path | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> list[Document]:
    """Load every file; the first unreadable one raises :class:`DocumentLoadError`."""
    docs: list[Document] = []
    for path in paths:
        docs.extend(load_document(path, root))
        if on_file is not None:
            on_file(path)
    return docs


def split_documents(
    docs: Sequence[Document], chunk_size: int = 800, chunk_overlap: int = 80
) -> list[Document]:
    """Passages small enough that a few fit the SLM's context window."""
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 50:
        raise ConfigurationError("chunk_size", f"must be an int >= 50, got {chunk_size!r}")
    if (
        isinstance(chunk_overlap, bool)
        or not isinstance(chunk_overlap, int)
        or not 0 <= chunk_overlap < chunk_size
    ):
        raise ConfigurationError(
            "chunk_overlap", f"must be an int in [0, chunk_size), got {chunk_overlap!r}"
        )
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap, add_start_index=True
    )
    chunks = [c for c in splitter.split_documents(list(docs)) if c.page_content.strip()]
    return chunks


# -- retrieval ------------------------------------------------------------------------

_STOPWORD_TEXT = (
    "a an and are as at be by did do does for from had has have how in is it its of on or "
    "that the their this to was were what when where which who whom whose why with"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased word tokens without stop words (BM25's default only splits on spaces,
    so ``Normans?`` would not match ``Normans``)."""
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
        from langchain_community.retrievers import BM25Retriever

        return BM25Retriever.from_documents(list(chunks), k=k, preprocess_func=bm25_tokens)
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
                f"{where}: {_reason(exc)}. Is `ollama serve` running and the model pulled "
                f"(`ollama pull {embedding_model}`)? Or use --retriever bm25."
            ) from exc
        return store.as_retriever(search_kwargs={"k": k})
    raise ConfigurationError("retriever", f"must be one of {RETRIEVERS}, got {kind!r}")


# -- prompt, context budget and the chain ---------------------------------------------


def user_template(demo: bool = False) -> str:
    """The human message's template, led by :data:`BASE_MODEL_DEMO` for base-model SLMs."""
    return f"{BASE_MODEL_DEMO}\n\n{USER_PROMPT}" if demo else USER_PROMPT


def rag_prompt(demo: bool = False) -> Any:
    """The chat prompt: a short system instruction, then context and question."""
    from langchain_core.prompts import ChatPromptTemplate

    return ChatPromptTemplate.from_messages(
        [("system", SYSTEM_PROMPT), ("human", user_template(demo))]
    )


def format_docs(docs: Sequence[Document]) -> str:
    """Passages separated by blank lines. No source headers: Gemma 3 270M answers
    ``[file.md]`` lines with more of them (sources are reported beside the answer)."""
    return "\n\n".join(d.page_content for d in docs)


@dataclass(frozen=True)
class TokenBudget:
    """How many prompt tokens the SLM can take, and how to count them exactly."""

    count_prompt: Callable[[list[Message]], int]
    limit: int
    model: str = "slm"
    demo: bool = False

    def prompt_tokens(self, question: str, docs: Sequence[Document]) -> int:
        context = format_docs(docs)
        text = user_template(self.demo).format(context=context, question=question)
        messages = [Message("system", SYSTEM_PROMPT), Message("user", text)]
        return self.count_prompt(messages)

    def check_question(self, question: str) -> None:
        """Raise :class:`QuestionTooLongError` if even an empty context would not fit."""
        needed = self.prompt_tokens(question, [])
        if needed > self.limit:
            raise QuestionTooLongError(
                f"the question takes {needed} prompt tokens but {self.model!r} can take "
                f"{self.limit} (its context window minus the answer's max_tokens); "
                f"shorten it: {question[:60]!r}...",
                model=self.model,
            )

    def fit(self, question: str, docs: Sequence[Document]) -> list[Document]:
        """The leading passages that fit; the least relevant are dropped first."""
        self.check_question(question)
        kept = list(docs)
        while kept and self.prompt_tokens(question, kept) > self.limit:
            kept.pop()
        return kept


def needs_demo(slm: SLMBackend) -> bool:
    """Whether the SLM takes completion prompts (a base model) and so wants the demo."""
    return getattr(slm, "prompt_format", "chat") == "completion"


def token_budget(slm: SLMBackend, max_tokens: int) -> TokenBudget | None:
    """An exact budget for backends that tokenize locally (llama.cpp); None otherwise."""
    tokenize = getattr(slm, "tokenize_prompt", None)
    window = getattr(slm, "context_window", None)
    if tokenize is None or not isinstance(window, int):
        return None
    return TokenBudget(
        lambda msgs: len(tokenize(msgs)), window - max_tokens, slm.model, needs_demo(slm)
    )


def build_chain(
    retriever: BaseRetriever | Runnable[str, list[Document]],
    chat: BaseChatModel,
    budget: TokenBudget | Sequence[TokenBudget] | None = None,
    *,
    demo: bool = False,
) -> Runnable[str, dict[str, Any]]:
    """question -> ``{"question", "docs", "answer": AIMessage}``.

    The usual LangChain "RAG with sources" shape: retrieve in parallel with
    passing the question through, then ``.assign`` the answer from
    ``prompt | chat`` so the caller also sees which passages were used.
    ``budget`` drops the least relevant passages that would overflow the SLM's
    context window (a ladder gives one budget per SLM: the passages must fit
    every one); ``demo`` leads the prompt with a worked example (base models).
    """
    from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

    budgets = [] if budget is None else [budget] if isinstance(budget, TokenBudget) else budget

    def fitted(inputs: dict[str, Any]) -> list[Document]:
        docs: list[Document] = inputs["docs"]
        for each in budgets:
            docs = each.fit(inputs["question"], docs)
        return docs

    answer = (
        RunnablePassthrough.assign(context=RunnableLambda(lambda x: format_docs(x["docs"])))
        | rag_prompt(demo)
        | chat
    )
    return (
        RunnableParallel(docs=retriever, question=RunnablePassthrough())
        .assign(docs=RunnableLambda(fitted))
        .assign(answer=answer)
    )


# -- models ---------------------------------------------------------------------------


def _completion_prompt(*, messages: list[dict[str, Any]], **_: Any) -> Any:
    """llama.cpp chat formatter for a base model: the system text, the worked
    example (unless the messages carry it already), then the rest, blank-line separated."""
    from llama_cpp.llama_chat_format import ChatFormatterResponse

    system = [str(m.get("content") or "") for m in messages if m.get("role") == "system"]
    rest = [str(m.get("content") or "") for m in messages if m.get("role") != "system"]
    demo = [] if any(BASE_MODEL_DEMO in text for text in rest) else [BASE_MODEL_DEMO]
    return ChatFormatterResponse(prompt="\n\n".join([*system, *demo, *rest]))


def completion_chat_handler() -> Any:
    """A llama-cpp-python ``chat_handler`` that gives a base model a completion prompt
    (see :func:`embedded_fallback`), for ``ChatLlamaCpp(model_kwargs={"chat_handler": ...})``."""
    from llama_cpp.llama_chat_format import chat_formatter_to_chat_completion_handler

    return chat_formatter_to_chat_completion_handler(_completion_prompt)  # type: ignore[arg-type]


def embedded_fallback(
    name: str = "qwen-1.5b", *, max_tokens: int = 48, n_ctx: int = 4096
) -> BaseChatModel:
    """An embedded fallback run in-process by langchain-community's ``ChatLlamaCpp``.

    ``qwen-1.5b`` (the default) is Qwen2.5-Coder-1.5B-Instruct with its own chat
    template, read from the GGUF. ``gemma3`` is Gemma 3 270M, a base model: its
    GGUF has no chat template, so llama-cpp-python would fall back to Llama-2's
    ``[INST]`` format, which this model only echoes; it gets a plain completion
    prompt instead (system text, one worked example, the question ending in
    ``Answer:``) through llama-cpp-python's own ``chat_handler`` extension point.
    The answer ends at the first newline.
    """
    from langchain_community.chat_models import ChatLlamaCpp

    from confidence_router.backends.models import gemma3_path, qwen_coder_15b_path

    if name not in EMBEDDED_FALLBACKS:
        raise ConfigurationError(
            "fallback", f"unknown embedded model {name!r}; choose one of {EMBEDDED_FALLBACKS}"
        )
    extra: dict[str, Any] = {}
    if name == "gemma3":
        path = gemma3_path()
        extra["model_kwargs"] = {"chat_handler": completion_chat_handler()}
    else:
        path = qwen_coder_15b_path()
    return ChatLlamaCpp(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=512,
        temperature=0.0,
        max_tokens=max_tokens,
        stop=["\n"],
        seed=0,
        verbose=False,
        streaming=False,  # the non-streamed path reports token usage
        **extra,
    )


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--slm``/``--fallback`` value: ``embedded[:name]`` or ``provider:model``."""

    provider: str
    model: str
    raw: str = field(compare=False, default="")

    @classmethod
    def parse(cls, value: str, field_name: str) -> ModelSpec:
        text = value.strip()
        if text in ("embedded", ""):
            return cls("embedded", "", value)
        provider, sep, model = text.partition(":")
        if not sep or not provider or not model:
            raise ConfigurationError(
                field_name,
                f"expected 'embedded' or PROVIDER:MODEL (e.g. ollama:qwen2.5:1.5b), got {value!r}",
            )
        return cls(provider.lower(), model, value)


#: Embedded models by name; the first is the default.
EMBEDDED_SLMS = ("qwen-0.5b", "smollm2", "gemma3")
EMBEDDED_FALLBACKS = ("qwen-1.5b", "gemma3")
#: ``--tiny``: the fast pair for tests and slow machines (weak: see the README).
TINY_PAIR = ("embedded:smollm2", "embedded:gemma3")


def make_slm(
    spec: ModelSpec, *, max_tokens: int, ollama_host: str | None = None, timeout: float = 60.0
) -> SLMBackend:
    """The small model: embedded llama.cpp (default Qwen2.5-Coder-0.5B-Instruct), an Ollama
    model, or a model on an OpenAI-compatible server (``openai:MODEL[@URL]``)."""
    if spec.provider == "embedded":
        from confidence_router.backends.llama_cpp import LlamaCppSLM

        # One answer line: past the first newline small models ramble.
        name = spec.model or EMBEDDED_SLMS[0]
        if name == "qwen-0.5b":
            return LlamaCppSLM.qwen_coder_05b(max_tokens=max_tokens, stop=["\n"], n_ctx=4096)
        if name == "smollm2":
            return LlamaCppSLM.smollm2(max_tokens=max_tokens, stop=["\n"])
        if name == "gemma3":
            return LlamaCppSLM.gemma3(max_tokens=max_tokens, stop=["\n"])
        raise ConfigurationError(
            "slm", f"unknown embedded model {name!r}; choose one of {EMBEDDED_SLMS}"
        )
    if spec.provider in ("ollama", "openai"):
        from confidence_router.backends.spec import slm_from_spec

        return slm_from_spec(
            f"{spec.provider}:{spec.model}",
            field="slm",
            default_url=ollama_host if spec.provider == "ollama" else None,
            max_tokens=max_tokens,
            timeout=timeout,
        )
    raise ConfigurationError(
        "slm",
        f"the SLM must be 'embedded[:qwen-0.5b|smollm2|gemma3]', 'ollama:MODEL[@URL]' or "
        f"'openai:MODEL[@URL]' (it needs token log-probabilities), got {spec.raw!r}",
    )


def make_fallback(
    spec: ModelSpec, *, max_tokens: int, ollama_host: str | None = None
) -> BaseChatModel:
    """The large model: embedded (default Qwen2.5-Coder-1.5B-Instruct), or any provider
    through ``init_chat_model``."""
    if spec.provider == "embedded":
        return embedded_fallback(spec.model or EMBEDDED_FALLBACKS[0], max_tokens=max_tokens)
    from langchain.chat_models import init_chat_model

    kwargs: dict[str, Any] = {"temperature": 0}
    model = spec.model
    if spec.provider == "openai" and "@http" in model:  # openai:MODEL@URL: any compatible server
        from confidence_router.backends.spec import parse_slm_spec

        parsed = parse_slm_spec(f"openai:{model}", "fallback")
        model, kwargs["base_url"] = parsed.model, parsed.url
        if not os.environ.get("OPENAI_API_KEY"):  # local servers check no key
            kwargs["api_key"] = "EMPTY"
    if spec.provider == "ollama":
        kwargs["num_predict"] = max_tokens
        if ollama_host:
            kwargs["base_url"] = ollama_host
    else:
        kwargs["max_tokens"] = max_tokens
    try:
        chat: BaseChatModel = init_chat_model(model, model_provider=spec.provider, **kwargs)
    except ImportError as exc:
        raise ConfigurationError("fallback", f"{spec.raw!r} needs a package: {exc}") from exc
    except Exception as exc:  # unknown provider, missing API key, bad options
        raise ConfigurationError("fallback", f"cannot create {spec.raw!r}: {exc}") from exc
    return chat


__all__ = [
    "ABSTAIN_ANSWER",
    "DEFAULT_EXCLUDE",
    "EMBEDDED_FALLBACKS",
    "EMBEDDED_SLMS",
    "TINY_PAIR",
    "RETRIEVERS",
    "SUPPORTED_SUFFIXES",
    "DocumentLoadError",
    "DocumentsFolderError",
    "EmbeddingsUnavailableError",
    "ModelSpec",
    "NoDocumentsError",
    "QuestionTooLongError",
    "TokenBudget",
    "BASE_MODEL_DEMO",
    "bm25_tokens",
    "build_chain",
    "build_retriever",
    "completion_chat_handler",
    "embedded_fallback",
    "find_documents",
    "format_docs",
    "needs_demo",
    "load_document",
    "load_documents",
    "make_fallback",
    "make_slm",
    "rag_prompt",
    "split_documents",
    "token_budget",
    "user_template",
]

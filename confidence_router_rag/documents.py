"""The documents: find the supported files of a folder, load them, split them into passages.

Loading goes through `._community` (`TextLoader` for Markdown and text,
`PyPDFLoader` for PDF); splitting uses `langchain-text-splitters`. Failures a
user can cause raise typed errors naming the path (`DocumentsFolderError`,
`NoDocumentsError`, `DocumentLoadError`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from confidence_router.errors import ConfigurationError, InvalidInputError

from . import _community
from ._utils import exception_reason

if TYPE_CHECKING:
    from langchain_core.documents import Document

#: File types the loader understands, by suffix.
TEXT_SUFFIXES = (".md", ".markdown", ".txt")
PDF_SUFFIXES = (".pdf",)
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + PDF_SUFFIXES
#: Licence and attribution files are about the documents, not part of them.
DEFAULT_EXCLUDE = ("ATTRIBUTION*", "LICENSE*", "LICENCE*", "NOTICE*")


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


def find_documents(folder: str | Path, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> list[Path]:
    """Supported files under `folder` (recursively, sorted, hidden ones skipped)."""
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


def load_document(path: Path, root: Path | None = None) -> list[Document]:
    """One file as LangChain Documents (one per PDF page), `source` relative to `root`."""
    load = _community.load_pdf if path.suffix.lower() in PDF_SUFFIXES else _community.load_text
    try:
        docs = load(path)
    except Exception as exc:  # the loaders raise bare RuntimeError/PdfReadError
        raise DocumentLoadError(path, exception_reason(exc)) from exc
    source = str(path.relative_to(root)) if root is not None else path.name
    for doc in docs:
        doc.metadata["source"] = source
    return docs


def load_documents(
    paths: Iterable[Path],
    root: Path | None = None,
    on_file: Callable[[Path], None] | None = None,
) -> list[Document]:
    """Load every file; the first unreadable one raises `DocumentLoadError`."""
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


__all__ = [
    "DEFAULT_EXCLUDE",
    "PDF_SUFFIXES",
    "SUPPORTED_SUFFIXES",
    "TEXT_SUFFIXES",
    "DocumentLoadError",
    "DocumentsFolderError",
    "NoDocumentsError",
    "find_documents",
    "load_document",
    "load_documents",
    "split_documents",
]

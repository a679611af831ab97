"""Loading QA data sets: the JSONL samples and the official SQuAD / HotpotQA JSON files.

Every loader reads a path the user gives and returns `QAExample`
objects; nothing is downloaded and no location is hard-coded.

* JSONL (one question per line): `id`, `question`, `context`,
  `answers` (every gold string; `[]` when unanswerable), `answerable`;
  HotpotQA rows add `type`/`level`. This is the format of the samples
  described in the data's `SOURCES.md`.
* Official SQuAD v1.1 / 2.0 (`{"version", "data": [{"title", "paragraphs":
  [{"context", "qas": [...]}]}]}`); 2.0 marks `is_impossible`.
* Official HotpotQA (a list of `{"_id", "question", "answer", "context":
  [[title, [sentences]]], "type", "level"}`); the context becomes
  `"Title: sentences"` paragraphs separated by blank lines, as in the JSONL.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..scoring import DATASET_KINDS, DatasetKind


class DataFormatError(ValueError):
    """A data file is not in a format the loaders know; the message says where."""


@dataclass(frozen=True)
class QAExample:
    """One question with its passage and gold answers."""

    id: str
    kind: DatasetKind
    question: str
    context: str
    answers: tuple[str, ...]
    answerable: bool = True
    title: str = ""
    meta: Mapping[str, str] = field(default_factory=dict)


def _check_kind(kind: str) -> DatasetKind:
    if kind not in DATASET_KINDS:
        raise DataFormatError(f"unknown data set kind {kind!r}; known: {', '.join(DATASET_KINDS)}")
    return kind


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: no such file") from exc
    except json.JSONDecodeError as exc:
        raise DataFormatError(f"{path}: not valid JSON ({exc})") from exc


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file (blank lines skipped).

    Raises:
        DataFormatError: no such file, or a line that is not a JSON object (it names the line).
    """
    path = Path(path)
    rows: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DataFormatError(f"{path}: no such file") from exc
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{number}: not valid JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object per line")
        rows.append(row)
    return rows


def _jsonl_kind(path: Path, rows: Sequence[Mapping[str, Any]]) -> DatasetKind:
    if any("supporting_facts" in r or "level" in r for r in rows[:5]):
        return "hotpotqa"
    if any(r.get("answerable") is False or r.get("answers") == [] for r in rows):
        return "squad_v2"
    return "squad_v2" if "v2" in path.name.lower() else "squad_v1"


def load_jsonl(path: str | Path, kind: str | None = None) -> list[QAExample]:
    """Questions from a JSONL sample; `kind` is inferred when not given.

    Raises:
        DataFormatError: as `read_jsonl`, or a row without a required field.
    """
    path = Path(path)
    rows = read_jsonl(path)
    resolved = _check_kind(kind) if kind is not None else _jsonl_kind(path, rows)
    examples = []
    for number, row in enumerate(rows, 1):
        missing = [k for k in ("id", "question", "context", "answers") if k not in row]
        if missing:
            raise DataFormatError(f"{path}:{number}: missing field(s) {', '.join(missing)}")
        answers = tuple(str(a) for a in row["answers"])
        examples.append(
            QAExample(
                id=str(row["id"]),
                kind=resolved,
                question=str(row["question"]),
                context=str(row["context"]),
                answers=answers,
                answerable=bool(row.get("answerable", bool(answers))),
                title=str(row.get("title", "")),
                meta={k: str(row[k]) for k in ("type", "level") if k in row},
            )
        )
    return examples


def load_squad_official(data: Mapping[str, Any], source: str = "SQuAD file") -> list[QAExample]:
    """Questions from the official SQuAD v1.1 / 2.0 JSON (already parsed).

    Raises:
        DataFormatError: no `data` list of articles.
    """
    version = str(data.get("version", ""))
    articles = data.get("data")
    if not isinstance(articles, list):
        raise DataFormatError(f"{source}: expected a 'data' list of articles")
    v2 = version.startswith("v2") or any(
        "is_impossible" in qa for a in articles for p in a["paragraphs"] for qa in p["qas"]
    )
    kind: DatasetKind = "squad_v2" if v2 else "squad_v1"
    examples = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                impossible = bool(qa.get("is_impossible", False))
                answers = () if impossible else tuple(a["text"] for a in qa["answers"])
                examples.append(
                    QAExample(
                        id=str(qa["id"]),
                        kind=kind,
                        question=qa["question"],
                        context=paragraph["context"],
                        answers=answers,
                        answerable=not impossible,
                        title=str(article.get("title", "")),
                    )
                )
    return examples


def hotpot_context(paragraphs: Iterable[Sequence[Any]]) -> str:
    """`[[title, [sentences]], ...]` as `Title: sentences` blocks (the JSONL layout)."""
    return "\n\n".join(f"{title}: {''.join(sentences)}" for title, sentences in paragraphs)


def load_hotpotqa_official(items: Sequence[Mapping[str, Any]]) -> list[QAExample]:
    """Questions from the official HotpotQA JSON list (already parsed)."""
    return [
        QAExample(
            id=str(item["_id"]),
            kind="hotpotqa",
            question=item["question"],
            context=hotpot_context(item["context"]),
            answers=(str(item["answer"]),),
            answerable=True,
            meta={k: str(item[k]) for k in ("type", "level") if k in item},
        )
        for item in items
    ]


def load_examples(path: str | Path, kind: str | None = None) -> list[QAExample]:
    """Any supported file: JSONL samples or the official SQuAD / HotpotQA JSON.

    The format is recognised from the content; `kind` (`squad_v1`,
    `squad_v2`, `hotpotqa`) overrides the inferred data set for JSONL and
    is checked against the official files.

    Raises:
        DataFormatError: no such file, a format it does not know, or official
            questions of another kind than `kind`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        return load_jsonl(path, kind)
    data = _read_json(path)
    if isinstance(data, dict) and "data" in data:
        examples = load_squad_official(data, str(path))
    elif isinstance(data, list) and data and isinstance(data[0], dict) and "_id" in data[0]:
        examples = load_hotpotqa_official(data)
    else:
        raise DataFormatError(
            f"{path}: neither JSONL nor official SQuAD/HotpotQA JSON "
            "(expected a .jsonl file, {'data': [...]} or a list of items with '_id')"
        )
    if kind is not None and examples and examples[0].kind != _check_kind(kind):
        raise DataFormatError(f"{path}: holds {examples[0].kind} questions, not {kind}")
    return examples


__all__ = [
    "DataFormatError",
    "QAExample",
    "hotpot_context",
    "load_examples",
    "load_hotpotqa_official",
    "load_jsonl",
    "load_squad_official",
    "read_jsonl",
]

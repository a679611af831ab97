"""Official answer scoring of SQuAD v1.1, SQuAD 2.0 and HotpotQA, re-implemented exactly.

The rules (from the official `evaluate-v1.1.py`, `evaluate-v2.0.py` and
`hotpot_evaluate_v1.py`): lower-case, drop punctuation, drop the articles
a/an/the, collapse white space; EM is equality of the normalised strings, F1
the token-overlap F1; the maximum over the gold answers counts.

* SQuAD 2.0: golds that normalise to nothing are dropped; a question with no
  gold left is unanswerable and its only correct prediction is the empty
  string (abstention), which scores 1 for EM and F1.
* HotpotQA: one gold; if either side is `yes`, `no` or `noanswer` and
  the two differ, F1 is 0.

A model abstains in words ("unanswerable", "no answer", ...):
`clean_prediction` maps those phrases to the empty string first.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

DatasetKind = Literal["squad_v1", "squad_v2", "hotpotqa"]
DATASET_KINDS: tuple[DatasetKind, ...] = ("squad_v1", "squad_v2", "hotpotqa")

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)
_HOTPOT_SPECIAL = ("yes", "no", "noanswer")

#: Abstentions written in lower-case letters and spaces without an article: they read the
#: same under this normalisation and under the context signals' word split, so both
#: lists of abstentions (this one and `signals.context`'s) start from them.
PLAIN_NO_ANSWER_PHRASES: tuple[str, ...] = (
    "unanswerable",
    "not answerable",
    "no answer",
    "noanswer",
    "none",
    "unknown",
    "na",  # "N/A"
    "not mentioned",
    "not stated",
    "not given",
    "cannot be answered",
    "can not be answered",
    "cannot answer",
    "i do not know",
    "i dont know",
)

#: Phrases (after normalisation) a model uses to say the passage has no answer.
NO_ANSWER_PHRASES: frozenset[str] = frozenset(
    {
        *PLAIN_NO_ANSWER_PHRASES,
        "not in passage",
        "not in documents",  # the rag prompt's way to abstain
        "not in document",
        "context does not contain answer",
        "documents do not contain answer",
        "not in context",
        "not in text",
        "passage does not say",
        "passage does not mention",
        "passage does not contain answer",
        "text does not say",
        "no answer in passage",
    }
)


def normalize_answer(text: str) -> str:
    """The official SQuAD/HotpotQA normalisation: case, punctuation, articles, spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def clean_prediction(text: str) -> str:
    """The answer a model's raw completion stands for.

    Keeps the first non-empty line, strips it, and maps abstention phrases
    ("unanswerable", "no answer", ...) to the empty string.
    """
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    answer = lines[0] if lines else ""
    return "" if normalize_answer(answer) in NO_ANSWER_PHRASES else answer


def _token_f1(pred_tokens: Sequence[str], gold_tokens: Sequence[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class Score:
    """Exact match and token F1 of one prediction, each in [0, 1]."""

    em: float
    f1: float


def squad_v1_score(prediction: str, golds: Sequence[str]) -> Score:
    """`evaluate-v1.1.py`: max over golds; an empty prediction scores 0."""
    if not golds:
        raise ValueError("SQuAD v1.1 questions always have gold answers; got none")
    pred = normalize_answer(prediction)
    pred_tokens = pred.split()
    em = max(float(pred == normalize_answer(g)) for g in golds)
    f1 = max(_token_f1(pred_tokens, normalize_answer(g).split()) for g in golds)
    return Score(em, f1)


def squad_v2_score(prediction: str, golds: Sequence[str]) -> Score:
    """`evaluate-v2.0.py`: no gold left after normalisation means only '' is right."""
    kept = [g for g in golds if normalize_answer(g)] or [""]
    pred_tokens = normalize_answer(prediction).split()
    em = 0.0
    f1 = 0.0
    for gold in kept:
        gold_tokens = normalize_answer(gold).split()
        em = max(em, float(normalize_answer(gold) == normalize_answer(prediction)))
        if not gold_tokens or not pred_tokens:
            f1 = max(f1, float(gold_tokens == pred_tokens))
        else:
            f1 = max(f1, _token_f1(pred_tokens, gold_tokens))
    return Score(em, f1)


def hotpotqa_score(prediction: str, gold: str) -> Score:
    """`hotpot_evaluate_v1.py` answer metrics, yes/no/noanswer rule included."""
    pred = normalize_answer(prediction)
    ref = normalize_answer(gold)
    em = float(pred == ref)
    if (pred in _HOTPOT_SPECIAL or ref in _HOTPOT_SPECIAL) and pred != ref:
        return Score(em, 0.0)
    return Score(em, _token_f1(pred.split(), ref.split()))


def score_answer(kind: DatasetKind, prediction: str, golds: Sequence[str]) -> Score:
    """Score a cleaned prediction by the official rules of data set `kind`."""
    if kind == "squad_v1":
        return squad_v1_score(prediction, golds)
    if kind == "squad_v2":
        return squad_v2_score(prediction, golds)
    if kind == "hotpotqa":
        if len(golds) != 1:
            raise ValueError(f"HotpotQA questions have one gold answer, got {len(golds)}")
        return hotpotqa_score(prediction, golds[0])
    raise ValueError(f"unknown data set kind {kind!r}; known: {', '.join(DATASET_KINDS)}")


__all__ = [
    "DATASET_KINDS",
    "NO_ANSWER_PHRASES",
    "PLAIN_NO_ANSWER_PHRASES",
    "DatasetKind",
    "Score",
    "clean_prediction",
    "hotpotqa_score",
    "normalize_answer",
    "score_answer",
    "squad_v1_score",
    "squad_v2_score",
]

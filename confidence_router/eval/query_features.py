"""Features of a question and its passage alone, for the pre-generation (query-only) router.

A router such as RouteLLM decides before any model runs, from the query.
These features let the evaluation train such a router on the same traces and
show whether reading the SLM's own answer earns its cost: lengths, the kind
of question, and how much of the question the passage repeats.
"""

from __future__ import annotations

import math
import re

from ..scoring import normalize_answer

_WH_WORDS = ("what", "who", "when", "where", "which", "how", "why")
_YES_NO_STARTS = frozenset(
    "is are was were do does did can could will would has have had should".split()  # noqa: SIM905
)
_STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or is are was were be been do does did what
    who whom whose when where which why how that this these those it its as into than then
    there their they he she his her not no yes""".split()  # noqa: SIM905
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")

QTYPES: tuple[str, ...] = (*_WH_WORDS, "yesno", "other")


def question_type(question: str) -> str:
    """what/who/when/where/which/how/why, yes/no, or other."""
    words = normalize_answer(question).split()
    if words and words[0] in _YES_NO_STARTS:
        return "yesno"
    for word in words:
        if word in _WH_WORDS:
            return word
    return "other"


def _content_words(text: str) -> set[str]:
    return {w for w in normalize_answer(text).split() if w not in _STOPWORDS}


def query_features(question: str, context: str) -> dict[str, float]:
    """Numeric features of the query; every value is a finite float."""
    q_words = normalize_answer(question).split()
    c_words = normalize_answer(context).split()
    q_content = _content_words(question)
    c_content = _content_words(context)
    sentences = [s for s in _SENTENCE_END.split(context) if s.strip()]
    best_sentence = max((len(q_content & _content_words(s)) for s in sentences), default=0)
    denominator = max(len(q_content), 1)
    qtype = question_type(question)
    features = {
        "log_question_words": math.log1p(len(q_words)),
        "log_context_words": math.log1p(len(c_words)),
        "context_paragraphs": float(context.count("\n\n") + 1),
        "question_overlap": len(q_content & c_content) / denominator,
        "best_sentence_overlap": best_sentence / denominator,
        "question_has_digit": float(any(ch.isdigit() for ch in question)),
        "question_capitalised": float(sum(1 for w in question.split()[1:] if w[:1].isupper())),
    }
    features.update({f"qtype_{name}": float(qtype == name) for name in QTYPES})
    return features


__all__ = ["QTYPES", "query_features", "question_type"]

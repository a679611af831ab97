"""Context signals: how well an answer is grounded in the prompt it answers.

The router holds the whole prompt. When the prompt carries material (a
retrieved passage, a document, tool output) the answer of an extractive task
should be found in it, and an answer that only repeats the question or says
"unanswerable" is a different case again. These signals are computed from the
chat messages and the answer text alone: no model call, plain Python. The
prompt's words are indexed once per prompt (a pass linear in its length,
cached for the last 16 prompts, so further answers to the same prompt, such as
streamed prefixes or samples, skip it); the rest is linear in the answer.

**Where the question is.** The *last user message* holds the question. If it
has a label line (`Question:`, `Query:` or `Q:`, case-insensitive, at
the start of a line), the question is the text after the last such label, up
to an `Answer:` line or the end. Otherwise, if some line of the message ends
with `?`, the last such line is the question. Otherwise the whole message is
the question.

**What the material is.** Everything else the caller gave the model: the rest
of the last user message (the passage in a one-message RAG prompt), every
`system` message (the passages in a system + user RAG prompt), every
earlier `user` message and every `tool` message. Earlier `assistant`
turns are left out: they are model output, not evidence.

**Words.** Text is lower-cased and split into `\\w+` runs (Unicode-aware,
so non-Latin scripts work; scripts written without spaces give one "word" per
run). *Content words* are words that are not in a small English stop-word
list; an answer made of stop words only is measured on all its words.

The signals (all finite floats):

`context_coverage`
    Share of the answer's content words that occur anywhere in the material,
    in [0, 1]. 0 for an empty answer or when there is no material.
`context_span`
    Longest run of consecutive answer words that occurs verbatim (as a word
    sequence) in the material, as a share of the answer's words, in [0, 1].
    1 means the whole answer is a span of the material.
`context_novel_coverage`
    Share of the answer's content words found in the material *and not* in
    the question, in [0, 1]: grounded and new.
`answer_in_question`
    Share of the answer's content words that occur in the question, in
    [0, 1]; 1 means the answer only repeats the question.
`support_sentence_overlap`
    Of the material's sentences (split at `.`/`!`/`?` followed by a
    space, and at line breaks) that hold at least half of the answer's
    content words, the largest share of the question's content words found
    in one of them, in [0, 1]: an answer taken from the sentence that talks
    about what the question asks is more often right. 0 when no sentence
    qualifies or the question has no content words.
`abstention`
    1 if the answer is an abstention phrase ("unanswerable", "no answer",
    "I don't know", "not mentioned", ...), else 0.
`answer_type_match`
    1 if the answer has the shape the question word asks for, 0 if not, 0.5
    when the question sets no expectation checked here. Checked: yes/no
    questions want "yes"/"no"; when / what year / what date want a digit,
    month or century; how many / how much / how long / how old / what
    percentage want a number; who / whom / whose / where want a capitalised
    word.
`context_words`
    `log(1 + number of words in the material)`; 0 when the prompt has no
    material (then the grounding signals above are 0 too).
`question_coverage`
    Share of the question's content words that occur anywhere in the
    material, in [0, 1]: a question the material barely mentions is one it
    may not answer. It depends on the prompt only, not on the answer. 0 when
    there is no material or the question has no content words.
`question_sentence_overlap`
    The largest share of the question's content words found in one sentence
    of the material, in [0, 1]: whether some sentence talks about what the
    question asks. Prompt-only, and 0 in the same cases.

Without messages (`compute_signals(generation)`) the grounding signals are
0, `answer_type_match` is 0.5 and only `abstention` is measured.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Sequence

from ..scoring import PLAIN_NO_ANSWER_PHRASES
from ..types import Message

#: Names of the context signals, in the order they are added to `Signals`.
CONTEXT_SIGNAL_NAMES: tuple[str, ...] = (
    "context_coverage",
    "context_span",
    "context_novel_coverage",
    "answer_in_question",
    "support_sentence_overlap",
    "abstention",
    "answer_type_match",
    "context_words",
    "question_coverage",
    "question_sentence_overlap",
)

_WORD = re.compile(r"\w+")
_LABEL = re.compile(r"^[ \t]*(?:question|query|q)[ \t]*:[ \t]*", re.IGNORECASE | re.MULTILINE)
_SENTENCE = re.compile(r"[.!?]\s+|\n+")
_ANSWER_LABEL = re.compile(r"^[ \t]*answer[ \t]*:", re.IGNORECASE | re.MULTILINE)

_STOPWORDS = frozenset(
    """a an the of in on at to for from by with and or is are was were be been being do does did
    what who whom whose when where which why how that this these those it its as into than then
    there their they he she his her him them we you i me my our your not but if so such
    has have had will would can could should may might shall about over under after before
    also just only very""".split()  # noqa: SIM905
)

# The words of an abstention: the plain phrases official scoring counts too, and the
# forms its normalisation would reach only by dropping articles and apostrophes.
_ABSTAIN = (
    *PLAIN_NO_ANSWER_PHRASES,
    "n a",
    "not provided",
    "not specified",
    "not in the passage",
    "not in the text",
    "not in the context",
    "not in the documents",  # what the rag prompt (rag-v2) asks for
    "not in the document",
    "the context does not contain the answer",
    "the documents do not contain the answer",
    "can t be answered",
    "cannot be determined",
    "the passage does not say",
    "the text does not say",
    "the context does not say",
    "i don t know",
    "don t know",
    "no information",
    "insufficient information",
)
_ABSTAIN_SET = frozenset(_ABSTAIN)
_ABSTAIN_PREFIXES = tuple(p + " " for p in _ABSTAIN if " " in p)

_YES_NO_STARTS = frozenset(
    "is are was were do does did can could will would has have had should".split()  # noqa: SIM905
)
_MONTHS = frozenset(
    """january february march april may june july august september october november december
    century centuries decade""".split()  # noqa: SIM905
)
_NUMBER_WORDS = frozenset(
    """zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty
    ninety hundred thousand million billion trillion dozen half several few many
    percent""".split()  # noqa: SIM905
)
_HOW_QUANTITY = frozenset("many much long old far large big tall high often".split())  # noqa: SIM905
_WHEN_NOUNS = frozenset("year date century decade month day time period".split())  # noqa: SIM905


def split_prompt(messages: Sequence[Message]) -> tuple[str, str]:
    """`(question, material)` of chat messages, as described in the module docstring."""
    last = -1
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].role == "user":
            last = i
            break
    if last < 0:
        last = len(messages) - 1
    if last < 0:
        return "", ""
    text = messages[last].content
    question, rest = _split_question(text)
    material = [
        m.content
        for i, m in enumerate(messages)
        if i != last and m.role in ("system", "user", "tool")
    ]
    if rest:
        material.append(rest)
    return question, "\n".join(material)


def _split_question(text: str) -> tuple[str, str]:
    labels = list(_LABEL.finditer(text))
    if labels:
        label = labels[-1]
        tail = text[label.end() :]
        answer = _ANSWER_LABEL.search(tail)
        end = label.end() + (answer.start() if answer else len(tail))
        return text[label.end() : end].strip(), text[: label.start()] + "\n" + text[end:]
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].rstrip().endswith("?"):
            return lines[i].strip(), "\n".join(lines[:i] + lines[i + 1 :])
    return text.strip(), ""


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def is_abstention(answer: str) -> bool:
    """Whether the answer says the prompt holds no answer ("unanswerable", "I don't know"...)."""
    words = _words(answer)
    if not words or len(words) > 12:
        return False
    phrase = " ".join(words)
    if phrase in _ABSTAIN_SET:
        return True
    if phrase.startswith(_ABSTAIN_PREFIXES):
        return True
    for start in ("the answer is ", "answer "):
        if phrase.startswith(start) and phrase[len(start) :] in _ABSTAIN_SET:
            return True
    return False


def _type_match(question: str, answer: str, answer_words: list[str]) -> float:
    q = _words(question)
    if not q or not answer_words:
        return 0.5
    first = q[0]
    if first in _YES_NO_STARTS:
        return 1.0 if answer_words[0] in ("yes", "no") else 0.0
    has_digit = any(ch.isdigit() for ch in answer)
    for i, w in enumerate(q):
        nxt = q[i + 1] if i + 1 < len(q) else ""
        if w == "when" or (w in ("what", "which") and nxt in _WHEN_NOUNS):
            return 1.0 if has_digit or any(a in _MONTHS for a in answer_words) else 0.0
        if (w == "how" and nxt in _HOW_QUANTITY) or (
            w == "what" and nxt in ("percentage", "percent", "number", "amount")
        ):
            return 1.0 if has_digit or any(a in _NUMBER_WORDS for a in answer_words) else 0.0
        if w in ("who", "whom", "whose", "where"):
            return 1.0 if any(t[:1].isupper() for t in answer.split()) else 0.0
    return 0.5


def _content(words: list[str]) -> list[str]:
    content = [w for w in words if w not in _STOPWORDS]
    return content or words


def _longest_span(answer_words: list[str], material: str, material_words: frozenset[str]) -> int:
    """Longest run of answer words found verbatim in the (space-joined, padded) material.

    A word missing from the material ends every run, so only the stretches of
    words the material has are searched, each with two pointers: if
    words[i:j] occurs, so does words[i+1:j], so each end moves forward only.
    """
    best = 0
    stretch: list[str] = []
    for word in [*answer_words, ""]:  # "" is never a material word: it ends the last stretch
        if word in material_words:
            stretch.append(word)
            continue
        n = len(stretch)
        j = 0
        for i in range(n - best):
            j = max(j, i)
            while j < n and (" " + " ".join(stretch[i : j + 1]) + " ") in material:
                j += 1
            best = max(best, j - i)
        stretch = []
    return best


class _PromptIndex:
    """What the context signals need from one prompt, computed once per prompt.

    The work is linear in the prompt's length (one pass that splits the
    material into sentences and words), while the answer-dependent rest is
    linear in the answer's. Decisions on the same prompt (streamed prefixes
    for early exit, sampled answers, a retried call) reuse it through the
    index cache.
    """

    __slots__ = (
        "question",
        "question_set",
        "question_content",
        "words",
        "joined",
        "context_words",
        "sentences",
        "question_coverage",
        "question_sentence_overlap",
    )

    def __init__(self, question: str, material_text: str) -> None:
        self.question = question
        question_words = _words(question)
        self.question_set = frozenset(question_words)
        self.question_content = frozenset(w for w in question_words if w not in _STOPWORDS)
        # Sentence breaks are non-word characters, so the sentences' words, in
        # order, are exactly the material's words.
        sentences = [_WORD.findall(text) for text in _SENTENCE.split(material_text.lower())]
        material_words = list(itertools.chain.from_iterable(sentences))
        self.words = frozenset(material_words)
        self.joined = " " + " ".join(material_words) + " "
        self.context_words = math.log1p(len(material_words))
        self.sentences = [frozenset(words) for words in sentences if words]
        asked = self.question_content
        if asked and self.words:
            self.question_coverage = len(asked & self.words) / len(asked)
            self.question_sentence_overlap = max(
                len(asked & sentence) / len(asked) for sentence in self.sentences
            )
        else:
            self.question_coverage = self.question_sentence_overlap = 0.0


@functools.lru_cache(maxsize=16)
def _index(messages: tuple[Message, ...]) -> _PromptIndex:
    return _PromptIndex(*split_prompt(messages))


def forget_prompts() -> None:
    """Drop the cached prompt indexes (for timing the first decision on a prompt)."""
    _index.cache_clear()


def context_signal_values(messages: Sequence[Message] | None, answer: str) -> tuple[float, ...]:
    """The context signals in the order of `CONTEXT_SIGNAL_NAMES`."""
    answer_words = _words(answer)
    abstain = 1.0 if is_abstention(answer) else 0.0
    if not messages:
        return (0.0, 0.0, 0.0, 0.0, 0.0, abstain, 0.5, 0.0, 0.0, 0.0)
    prompt = _index(tuple(messages))
    type_match = _type_match(prompt.question, answer, answer_words)
    context_words = prompt.context_words
    asked = (prompt.question_coverage, prompt.question_sentence_overlap)
    if not answer_words:
        return (0.0, 0.0, 0.0, 0.0, 0.0, abstain, type_match, context_words, *asked)
    content = _content(answer_words)
    question_set = prompt.question_set
    in_question = sum(1 for w in content if w in question_set) / len(content)
    if not prompt.words:
        return (0.0, 0.0, 0.0, in_question, 0.0, abstain, type_match, 0.0, *asked)
    found = [w in prompt.words for w in content]
    coverage = sum(found) / len(content)
    novel = sum(1 for w, f in zip(content, found) if f and w not in question_set) / len(content)
    span = _longest_span(answer_words, prompt.joined, prompt.words) / len(answer_words)
    support = 0.0
    question_content = prompt.question_content
    if question_content and coverage >= 0.5:
        content_set = frozenset(content)
        need = 0.5 * len(content_set)
        for sentence in prompt.sentences:
            if len(content_set & sentence) >= need:
                support = max(support, len(question_content & sentence) / len(question_content))
    return (coverage, span, novel, in_question, support, abstain, type_match, context_words, *asked)


def context_signals(messages: Sequence[Message] | None, answer: str) -> dict[str, float]:
    """The context signals of an answer, by name (the module docstring says what each means).

    Args:
        messages: the chat the answer replies to; None gives the no-context values.
        answer: the answer's text.

    Returns:
        Each name of `CONTEXT_SIGNAL_NAMES` with its value.
    """
    return dict(zip(CONTEXT_SIGNAL_NAMES, context_signal_values(messages, answer)))


__all__ = [
    "CONTEXT_SIGNAL_NAMES",
    "context_signal_values",
    "context_signals",
    "forget_prompts",
    "is_abstention",
    "split_prompt",
]

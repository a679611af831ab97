"""Prompts per data set: a short instruction, a tiny made-up demonstration, then the question.

The prompts suit base models (Gemma 3 270M answers a plain completion
prompt ending in `Answer:`) and chat models alike (the same text is one
user message). Generation stops at the first newline, so the answer is one
short line. The demonstrations are invented, not taken from any dev set.
SQuAD 2.0 prompts also show how to say that the passage has no answer.
"""

from __future__ import annotations

from ..scoring import DatasetKind
from ..types import Message
from .data import QAExample

#: Bumped whenever a prompt changes; traces record it so caches never mix prompts.
PROMPT_VERSION = "qa-v1"

#: The prompt `confidence-router rag` sends a chat SLM (system instruction, then
#: the passage as context and the question), for calibrating a policy on the
#: prompt that is deployed. `rag-v2` lets the model say that the documents do
#: not hold the answer (a RAG app must); `rag-v1` (no such way out) stays for
#: the traces recorded with it.
RAG_PROMPT_VERSION = "rag-v2"
#: What a model answers, by the instruction, when the context lacks the answer.
ABSTAIN_ANSWER = "not in the documents"
RAG_SYSTEM_PROMPT = (
    "Answer the question in a few words, using only the context. If the context does not "
    f"contain the answer, reply: {ABSTAIN_ANSWER}"
)
RAG_USER_PROMPT = "Context: {context}\nQuestion: {question}\nAnswer:"
#: Measured on 20 SQuAD v1.1 questions with their gold paragraph, SmolLM2-135M
#: scores mean F1 0.25 with this instruction and 0.17 with a longer one.
RAG_V1_SYSTEM_PROMPT = "Answer the question in a few words, using only the context."
PROMPT_VERSIONS: tuple[str, ...] = (PROMPT_VERSION, "rag-v1", RAG_PROMPT_VERSION)

#: Generation stops here: one answer line.
STOP: tuple[str, ...] = ("\n",)

_SPAN = "Answer the question with a short phrase copied from the passage."
_ABSTAIN = " If the passage does not contain the answer, answer unanswerable."
_HOTPOT = (
    "Answer the question with a short phrase from the passages, or yes or no for a yes/no question."
)

_DEMO_SPAN = (
    "Passage: The Eiffel Tower was built by Gustave Eiffel's company and finished in 1889 "
    "for the World's Fair in Paris.\n"
    "Question: When was the Eiffel Tower finished?\n"
    "Answer: 1889\n\n"
)
_DEMO_ABSTAIN = (
    "Passage: The Amazon River flows through Brazil, Peru and Colombia before it reaches the "
    "Atlantic Ocean.\n"
    "Question: How long is the Amazon River?\n"
    "Answer: unanswerable\n\n"
)
_DEMO_HOTPOT = (
    "Passage: Lake Baikal: Lake Baikal is a rift lake in Siberia, the deepest lake in the "
    "world.\n\n"
    "Lake Tanganyika: Lake Tanganyika is an African Great Lake, the second deepest in the world.\n"
    "Question: Are Lake Baikal and Lake Tanganyika on the same continent?\n"
    "Answer: no\n\n"
)

_HEADERS: dict[DatasetKind, str] = {
    "squad_v1": f"{_SPAN}\n\n{_DEMO_SPAN}",
    "squad_v2": f"{_SPAN}{_ABSTAIN}\n\n{_DEMO_SPAN}{_DEMO_ABSTAIN}",
    "hotpotqa": f"{_HOTPOT}\n\n{_DEMO_HOTPOT}",
}


def build_prompt(example: QAExample) -> str:
    """The full prompt text for one question (ends with `Answer:`)."""
    return (
        f"{_HEADERS[example.kind]}Passage: {example.context}\n"
        f"Question: {example.question.strip()}\nAnswer:"
    )


def build_messages(example: QAExample, version: str = PROMPT_VERSION) -> list[Message]:
    """The chat messages of one question under a prompt version (see `PROMPT_VERSIONS`).

    `qa-v1` is `build_prompt` as one user message; `rag-v2` is what
    `confidence-router rag` sends a chat SLM (`rag-v1`: the same without
    the way to abstain).

    Raises:
        ValueError: an unknown prompt version.
    """
    if version == PROMPT_VERSION:
        return [Message("user", build_prompt(example))]
    if version in ("rag-v1", RAG_PROMPT_VERSION):
        system = RAG_SYSTEM_PROMPT if version == RAG_PROMPT_VERSION else RAG_V1_SYSTEM_PROMPT
        user = RAG_USER_PROMPT.format(context=example.context, question=example.question.strip())
        return [Message("system", system), Message("user", user)]
    raise ValueError(f"unknown prompt version {version!r}; known: {', '.join(PROMPT_VERSIONS)}")


__all__ = [
    "ABSTAIN_ANSWER",
    "PROMPT_VERSION",
    "PROMPT_VERSIONS",
    "RAG_PROMPT_VERSION",
    "RAG_SYSTEM_PROMPT",
    "RAG_USER_PROMPT",
    "STOP",
    "build_messages",
    "build_prompt",
]

"""Context signals on hand-made prompts with known values, and their bounds on any text."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confidence_router import Generation, Message, compute_signals
from confidence_router.signals import SIGNAL_NAMES, Signals
from confidence_router.signals.context import (
    CONTEXT_SIGNAL_NAMES,
    context_signals,
    is_abstention,
    split_prompt,
)

PASSAGE = (
    "Rollo signed the treaty of Saint-Clair-sur-Epte with King Charles III of West Francia "
    "in 911. The Normans later conquered England."
)
QUESTION = "Who did Rollo sign the treaty of Saint-Clair-sur-Epte with?"

# The three shapes a RAG prompt takes.
SYSTEM_AND_USER = [
    Message("system", f"Answer using only this context.\n\n{PASSAGE}"),
    Message("user", QUESTION),
]
ONE_USER_MESSAGE = [
    Message("system", "Answer the question in a few words, using only the context."),
    Message("user", f"Context: {PASSAGE}\nQuestion: {QUESTION}\nAnswer:"),
]
MULTI_TURN = [
    Message("system", "You answer questions about documents."),
    Message("user", f"Here is a document:\n{PASSAGE}"),
    Message("assistant", "Thanks, I have read it. Ask me anything, e.g. about Normandy."),
    Message("user", QUESTION),
]


@pytest.mark.parametrize("messages", [SYSTEM_AND_USER, ONE_USER_MESSAGE, MULTI_TURN])
def test_the_question_and_the_material_are_found_in_every_prompt_shape(
    messages: list[Message],
) -> None:
    question, material = split_prompt(messages)
    assert question == QUESTION
    assert PASSAGE in material
    assert QUESTION not in material


@pytest.mark.parametrize("messages", [SYSTEM_AND_USER, ONE_USER_MESSAGE, MULTI_TURN])
def test_a_verbatim_answer_from_the_passage(messages: list[Message]) -> None:
    s = context_signals(messages, "King Charles III")
    assert s["context_coverage"] == 1.0
    assert s["context_span"] == 1.0
    assert s["context_novel_coverage"] == 1.0
    assert s["answer_in_question"] == 0.0
    assert s["abstention"] == 0.0
    assert s["answer_type_match"] == 1.0  # "who" wants a capitalised name
    # the sentence holding the answer holds rollo, signed?, treaty, saint, clair, sur, epte:
    # of the question's content words (did, rollo, sign, treaty, saint, clair, sur, epte)
    # all but "did" (a stop word) and "sign" ("signed" differs) -> 6 of 7
    assert s["support_sentence_overlap"] == pytest.approx(6 / 7)
    assert s["context_words"] > 0


def test_an_answer_that_repeats_the_question() -> None:
    s = context_signals(ONE_USER_MESSAGE, "the treaty of Saint-Clair-sur-Epte")
    # content words: treaty, saint, clair, sur, epte: all in the question and the passage
    assert s["answer_in_question"] == 1.0
    assert s["context_coverage"] == 1.0
    assert s["context_novel_coverage"] == 0.0
    assert s["context_span"] == 1.0


def test_an_answer_not_in_the_passage() -> None:
    s = context_signals(ONE_USER_MESSAGE, "Louis the Pious")
    # content words: louis, pious (none in the material); "the" is in it: span 1 of 3 words
    assert s["context_coverage"] == 0.0
    assert s["context_span"] == pytest.approx(1 / 3)
    assert s["support_sentence_overlap"] == 0.0


def test_a_partly_grounded_answer() -> None:
    s = context_signals(ONE_USER_MESSAGE, "King Louis of West Francia")
    # content words king, louis, west, francia: 3 of 4 found; longest run "of west francia"
    assert s["context_coverage"] == pytest.approx(3 / 4)
    assert s["context_span"] == pytest.approx(3 / 5)


def test_earlier_assistant_turns_are_not_evidence() -> None:
    s = context_signals(MULTI_TURN, "Normandy")
    assert s["context_coverage"] == 0.0  # only the assistant's turn mentions Normandy


def test_abstention_phrases() -> None:
    for text in ("unanswerable", "Unanswerable.", "I don't know", "No answer", "not mentioned"):
        assert is_abstention(text), text
        assert context_signals(ONE_USER_MESSAGE, text)["abstention"] == 1.0
    for text in ("no", "King Charles III", "", "The answer is 911"):
        assert not is_abstention(text), text


@pytest.mark.parametrize(
    ("question", "answer", "expected"),
    [
        ("When did Rollo sign the treaty?", "in 911", 1.0),
        ("When did Rollo sign the treaty?", "King Charles III", 0.0),
        ("In what year did Rollo sign the treaty?", "911", 1.0),
        ("How many treaties did Rollo sign?", "two", 1.0),
        ("How many treaties did Rollo sign?", "Charles", 0.0),
        ("Did Rollo sign a treaty?", "yes", 1.0),
        ("Did Rollo sign a treaty?", "Charles", 0.0),
        ("Where was the treaty signed?", "saint-clair", 0.0),
        ("What did Rollo sign?", "a treaty", 0.5),
    ],
)
def test_answer_type_against_the_question_word(question: str, answer: str, expected: float) -> None:
    messages = [Message("user", f"Context: {PASSAGE}\nQuestion: {question}\nAnswer:")]
    assert context_signals(messages, answer)["answer_type_match"] == expected


def test_no_material_no_grounding() -> None:
    s = context_signals([Message("user", "Who wrote Hamlet?")], "William Shakespeare")
    assert s["context_words"] == 0.0
    assert s["context_coverage"] == s["context_span"] == s["support_sentence_overlap"] == 0.0
    assert s["answer_type_match"] == 1.0


def test_compute_signals_with_and_without_messages() -> None:
    gen = Generation(
        text=" King Charles III",
        model="m",
        token_logprobs=np.array([-0.2, -0.1, -0.05]),
        top_logprobs=np.array([[-0.2, -2.0], [-0.1, -3.0], [-0.05, -4.0]]),
        has_logprobs=True,
    )
    with_context = compute_signals(gen, ONE_USER_MESSAGE)
    without = compute_signals(gen)
    assert with_context.context_span == 1.0
    assert without.context_span == 0.0 and without.answer_type_match == 0.5
    # the log-probability signals do not depend on the messages
    assert with_context.sum_logprob == without.sum_logprob == pytest.approx(-0.35)
    assert set(CONTEXT_SIGNAL_NAMES) <= set(SIGNAL_NAMES)
    assert with_context.as_dict()["context_coverage"] == 1.0


def test_signals_built_the_old_way_still_work() -> None:
    old_names = SIGNAL_NAMES[:11]
    s = Signals(**{name: 1.0 for name in old_names})
    assert s["context_coverage"] == 0.0 and s["answer_type_match"] == 0.5


_text = st.text(
    alphabet=st.sampled_from(list("ab cé漢字Ωй?\n.:!QuestionAnswer1")), min_size=0, max_size=80
)
_roles = st.sampled_from(["system", "user", "assistant", "tool"])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_roles, _text), min_size=0, max_size=4), _text)
def test_bounds_on_any_text(turns: list[tuple[str, str]], answer: str) -> None:
    messages = [Message(role, content) for role, content in turns]  # type: ignore[arg-type]
    s = context_signals(messages, answer)
    for name in CONTEXT_SIGNAL_NAMES:
        assert math.isfinite(s[name]), name
        if name != "context_words":
            assert 0.0 <= s[name] <= 1.0, (name, s[name])
        else:
            assert s[name] >= 0.0
    assert s["context_novel_coverage"] <= s["context_coverage"]


def test_non_latin_text() -> None:
    messages = [
        Message("user", "Контекст: Москва — столица России.\nВопрос: Какая столица России?")
    ]
    s = context_signals(messages, "Москва")
    assert s["context_coverage"] == 1.0 and s["context_span"] == 1.0
    assert context_signals([Message("user", "")], "")["context_coverage"] == 0.0


def test_a_prompt_is_indexed_once_and_its_cache_never_mixes_prompts() -> None:
    """Answers to the same prompt reuse its word index; another prompt gets its own."""
    from confidence_router.signals.context import _index, forget_prompts

    forget_prompts()
    first = context_signals(ONE_USER_MESSAGE, "King Charles III")
    again = context_signals(list(ONE_USER_MESSAGE), "King Charles III")
    info = _index.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    assert again == first
    other = [
        ONE_USER_MESSAGE[0],
        Message("user", f"Context: The sky is blue.\nQuestion: {QUESTION}"),
    ]
    assert context_signals(other, "King Charles III")["context_coverage"] == 0.0
    assert _index.cache_info().misses == 2
    forget_prompts()
    assert context_signals(ONE_USER_MESSAGE, "King Charles III") == first


def test_question_grounding_measures_the_prompt_not_the_answer() -> None:
    def asked(question: str, answer: str = "911") -> tuple[float, float]:
        messages = [Message("user", f"Context: {PASSAGE}\nQuestion: {question}\nAnswer:")]
        s = context_signals(messages, answer)
        return s["question_coverage"], s["question_sentence_overlap"]

    assert asked("Who conquered England in 911?") == asked("Who conquered England in 911?", "x")
    # every content word is in the passage, two of three in its second sentence
    assert asked("Who conquered England in 911?") == (1.0, pytest.approx(2 / 3))
    # a question about what the passage never mentions
    assert asked("What colour was the emperor's horse?") == (0.0, 0.0)
    # a third of its content words are in the passage
    assert asked("Which treaty did Napoleon sign?")[0] == pytest.approx(1 / 3)
    no_material = context_signals([Message("user", "When did Rollo sign the treaty?")], "911")
    assert no_material["question_coverage"] == no_material["question_sentence_overlap"] == 0.0

"""Scoring follows the official SQuAD v1.1 / 2.0 and HotpotQA scripts case by case."""

from __future__ import annotations

import pytest

from confidence_router.scoring import (
    clean_prediction,
    hotpotqa_score,
    normalize_answer,
    score_answer,
    squad_v1_score,
    squad_v2_score,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),
        ("  a  cat, an   apple and THE end. ", "cat apple and end"),
        ("Saint-Clair-sur-Epte", "saintclairsurepte"),  # punctuation removed, not split
        ("theory", "theory"),  # articles only as whole words
        ("Anne's", "annes"),
        ("", ""),
    ],
)
def test_normalisation_matches_the_official_rules(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_f1_is_token_overlap_against_the_best_gold() -> None:
    score = squad_v1_score("the Carolina Panthers team", ["Panthers", "Carolina Panthers"])
    # vs "carolina panthers": precision 2/3, recall 1 -> F1 0.8
    assert score.f1 == pytest.approx(0.8)
    assert score.em == 0.0
    assert squad_v1_score("carolina panthers.", ["Panthers", "Carolina Panthers"]).em == 1.0


def test_repeated_tokens_count_once_per_occurrence() -> None:
    # Counter intersection: "new new york" vs "new york" -> 2 common of 3 predicted
    assert squad_v1_score("new new york", ["New York"]).f1 == pytest.approx(0.8)


def test_empty_prediction_scores_zero_on_answerable_questions() -> None:
    assert squad_v1_score("", ["France"]) == squad_v2_score("", ["France"])
    assert squad_v2_score("", ["France"]).f1 == 0.0


def test_squad_v2_unanswerable_only_abstention_is_right() -> None:
    assert squad_v2_score("", []).em == 1.0
    assert squad_v2_score("", []).f1 == 1.0
    assert squad_v2_score("Normans", []).f1 == 0.0
    # golds that normalise to nothing are dropped, leaving the question unanswerable
    assert squad_v2_score("", ["the", "."]).f1 == 1.0


def test_abstention_phrases_become_the_empty_answer() -> None:
    for text in (" unanswerable", "No answer.", "N/A", "Unanswerable\nQuestion: next"):
        assert clean_prediction(text) == ""
    assert clean_prediction(" The Normans.\nQuestion: x") == "The Normans."
    assert score_answer("squad_v2", clean_prediction(" unanswerable"), []).f1 == 1.0


def test_hotpotqa_yes_no_mismatch_scores_zero_f1() -> None:
    assert hotpotqa_score("yes", "yes").f1 == 1.0
    assert hotpotqa_score("No.", "no").em == 1.0
    assert hotpotqa_score("no", "yes").f1 == 0.0
    # a yes/no gold and a longer prediction that contains it: official F1 is 0
    assert hotpotqa_score("yes they are", "yes").f1 == 0.0
    assert hotpotqa_score("noanswer", "Greenwich Village").f1 == 0.0
    assert hotpotqa_score("Greenwich Village, New York", "Greenwich Village, New York City").f1 == (
        pytest.approx(2 * 1.0 * 0.8 / 1.8)
    )


def test_hotpotqa_needs_exactly_one_gold() -> None:
    with pytest.raises(ValueError, match="one gold"):
        score_answer("hotpotqa", "x", ["a", "b"])


def test_unknown_kind_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown data set kind"):
        score_answer("triviaqa", "x", ["x"])  # type: ignore[arg-type]

"""Expected answers of the demo questions, and how the demo judges an answer right."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from confidence_router_rag.cli import (
    CommandError,
    _expected_answers,
    build_parser,
    is_right,
)

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ROOT / "examples" / "questions.txt"


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["examples/docs", *argv])


def test_every_demo_question_has_expected_answers_found_in_the_documents() -> None:
    expected = _expected_answers(_args("--questions", str(QUESTIONS)))
    questions = [
        q.strip()
        for q in QUESTIONS.read_text(encoding="utf-8").splitlines()
        if q.strip() and not q.startswith("#")
    ]
    assert set(expected) == set(questions)
    docs = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "examples" / "docs").glob("*.*"))
    unanswerable = [q for q in questions if expected[q] == []]
    assert len(unanswerable) >= 2  # the demo shows what happens when the documents lack it
    for question in (q for q in questions if expected[q]):
        # at least one expected answer is literally in the documents (or is their answer)
        assert any(is_right(docs, [a]) or a in docs for a in expected[question]), question


@pytest.mark.parametrize(
    ("answer", "expected", "right"),
    [
        ("King Charles III", ["King Charles III"], True),
        (
            "Rollo signed the treaty with King Charles III of West Francia.",
            ["King Charles III"],
            True,
        ),
        (
            "Rollo signed the treaty of Saint-Clair-sur-Epte with the Normans.",
            ["King Charles III"],
            False,
        ),
        ("the Rijn", ["Rijn"], True),
        ("Rhein", ["Rijn"], False),
        ("Steam turbines.", ["steam turbine", "steam turbines"], True),
        ("90.20 K (−182.95 °C)", ["90.20 K"], True),
        (
            "to build a more powerful wireless transmitter",
            ["to build a more powerful transmitter"],
            True,
        ),
        ("", ["France"], False),
        ("France", [], False),
        # no expected answer: the documents lack it, so only saying so is right
        ("not in the documents", [], True),
        ("Not in the documents.", [], True),
        ("", [], False),
        ("not in the documents", ["France"], False),
    ],
)
def test_is_right(answer: str, expected: list[str], right: bool) -> None:
    assert is_right(answer, expected) is right


def test_no_expected_answers_without_a_file(tmp_path: Path) -> None:
    questions = tmp_path / "qs.txt"
    questions.write_text("Who?\n")
    assert _expected_answers(_args("--questions", str(questions))) == {}
    (tmp_path / "qs.expected.json").write_text(json.dumps({"Who?": "Rollo", "_about": "x"}))
    assert _expected_answers(_args("--questions", str(questions))) == {"Who?": ["Rollo"]}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"Who?": [1, 2]}))
    with pytest.raises(CommandError, match="list of strings"):
        _expected_answers(_args("-q", "Who?", "--expected", str(bad)))

"""Loaders read the JSONL samples and the official SQuAD / HotpotQA JSON formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from confidence_router.eval.data import DataFormatError, load_examples, load_jsonl
from confidence_router.eval.prompts import build_prompt
from tests.support.paths import DATA_DIR as DATA
from tests.support.paths import HOTPOT_SAMPLE, SQUAD_V2_SAMPLE


def _rows_of(sample: Path, ids: set[str], tmp_path: Path) -> Path:
    """The JSONL rows of ``sample`` with these ids, as a file of their own."""
    lines = [
        line for line in sample.read_text("utf-8").splitlines() if json.loads(line)["id"] in ids
    ]
    path = tmp_path / sample.name
    path.write_text("\n".join(lines) + "\n")
    return path


def test_squad_v1_official_file() -> None:
    examples = load_examples(DATA / "squad_v1_dev_normans.official.json")
    assert len(examples) == 112
    first = examples[0]
    assert first.kind == "squad_v1"
    assert first.question == "In what country is Normandy located?"
    assert first.answers == ("France",) * 4  # duplicates kept, as in the official data
    assert first.title == "Normans" and "Normandy" in first.context
    assert all(e.answerable for e in examples)


def test_squad_v2_official_file_marks_unanswerable_questions() -> None:
    examples = load_examples(DATA / "squad_v2_dev_normans.official.json")
    assert len(examples) == 208
    assert {e.kind for e in examples} == {"squad_v2"}
    impossible = [e for e in examples if not e.answerable]
    assert len(impossible) == 112
    # plausible_answers are not gold answers
    assert all(e.answers == () for e in impossible)


def test_official_squad_v2_and_jsonl_rows_agree(tmp_path: Path) -> None:
    official = {e.id: e for e in load_examples(DATA / "squad_v2_dev_normans.official.json")}
    rows = load_examples(_rows_of(SQUAD_V2_SAMPLE, set(official), tmp_path), "squad_v2")
    assert len(rows) == 8
    for row in rows:
        twin = official[row.id]
        assert (row.question, row.context, row.answerable) == (
            twin.question,
            twin.context,
            twin.answerable,
        )
        assert set(row.answers) == set(twin.answers)


def test_hotpotqa_official_context_matches_the_jsonl_layout(tmp_path: Path) -> None:
    official = load_examples(DATA / "hotpotqa_dev_distractor_10.official.json")
    sample = _rows_of(HOTPOT_SAMPLE, {e.id for e in official}, tmp_path)
    rows = {e.id: e for e in load_examples(sample)}
    assert len(official) == 10
    for example in official:
        assert example.kind == "hotpotqa"
        assert example.context == rows[example.id].context
        assert example.answers == rows[example.id].answers
        assert example.meta["type"] in ("bridge", "comparison")
    assert any(e.answers[0] in ("yes", "no") for e in official)


def test_jsonl_kind_is_inferred_and_can_be_forced(tmp_path: Path) -> None:
    rows = load_jsonl(HOTPOT_SAMPLE)
    assert len(rows) == 300 and rows[0].kind == "hotpotqa"
    assert load_jsonl(SQUAD_V2_SAMPLE)[0].kind == "squad_v2"
    squad = tmp_path / "any.jsonl"
    squad.write_text(
        json.dumps({"id": "1", "question": "q", "context": "c", "answers": ["a"]}) + "\n"
    )
    assert load_examples(squad)[0].kind == "squad_v1"
    assert load_examples(squad, "squad_v2")[0].kind == "squad_v2"


def test_bad_files_fail_with_the_path_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "question": "q", "context": "c", "answers": []}\n{oops\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl:2"):
        load_examples(bad)
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"id": "1", "question": "q"}\n')
    with pytest.raises(DataFormatError, match="missing field"):
        load_examples(missing)
    other = tmp_path / "other.json"
    other.write_text('{"rows": []}')
    with pytest.raises(DataFormatError, match="neither JSONL nor official"):
        load_examples(other)
    with pytest.raises(DataFormatError, match="not squad_v1"):
        load_examples(DATA / "squad_v2_dev_normans.official.json", "squad_v1")


def test_prompts_end_with_the_answer_cue_and_ask_for_abstention_on_squad_v2() -> None:
    v1 = load_examples(DATA / "squad_v1_dev_normans.official.json")[0]
    v2 = load_examples(DATA / "squad_v2_dev_normans.official.json")[0]
    for example in (v1, v2):
        prompt = build_prompt(example)
        assert prompt.endswith(f"Question: {example.question}\nAnswer:")
        assert example.context in prompt
    assert "unanswerable" in build_prompt(v2)
    assert "unanswerable" not in build_prompt(v1)

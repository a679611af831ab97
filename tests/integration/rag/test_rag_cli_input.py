"""``confidence-router rag`` on bad arguments and bad input: one clear message, one exit code.

Every case here fails before any model answers (some load SmolLM2 to count tokens).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from confidence_router_rag.cli import Exit, build_parser, read_questions

RunRag = Callable[..., Any]  # the run_rag fixture: (*argv, stdin="") -> Run(code, out, err)

pytestmark = pytest.mark.filterwarnings("ignore:.*langchain-community.*:DeprecationWarning")

Q = "What is the Latin name for Black Death?"


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one message on stderr, got: {err!r}"
    assert lines[0].startswith("confidence-router rag: ")
    return lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["DOCS", "--no-such-option"],
        ["DOCS", "-q", Q, "--top-k", "0"],
        ["DOCS", "-q", Q, "--max-tokens", "many"],
        ["DOCS", "-q", Q, "--fallback-price", "cheap"],
        ["DOCS", "-q", Q, "--slm-price", "-1"],
        ["DOCS", "-q", Q, "--retriever", "faiss"],
    ],
    ids=["no-folder", "unknown-option", "top-k-0", "max-tokens", "price-word", "price-neg", "retr"],
)
def test_bad_arguments_exit_2_with_usage(
    run_rag: RunRag, example_docs: Path, argv: list[str]
) -> None:
    result = run_rag(*[str(example_docs) if a == "DOCS" else a for a in argv])
    assert result.code == Exit.USAGE == 2
    assert "usage: confidence-router rag" in result.err
    assert result.out == ""


def test_help_exits_0_and_documents_the_exit_codes(run_rag: RunRag) -> None:
    result = run_rag("--help")
    assert result.code == 0
    assert "exit codes" in result.out
    assert "--fallback" in result.out and "--json" in result.out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--slm", "gpt-4o-mini"], ["--slm", "PROVIDER:MODEL"]),
        (["--slm", "anthropic:claude-haiku"], ["log-probabilities"]),
        (["--slm", "embedded:phi3"], ["unknown embedded model", "phi3"]),
        (["--fallback", "nosuchprovider:model"], ["nosuchprovider:model"]),
        (["--threshold", "nan"], ["--threshold"]),
    ],
    ids=["slm-no-provider", "slm-not-scorable", "slm-unknown-embedded", "fallback-provider", "nan"],
)
def test_bad_configuration_exits_2_naming_the_option(
    run_rag: RunRag, example_docs: Path, argv: list[str], words: list[str]
) -> None:
    result = run_rag(example_docs, "-q", Q, *argv)
    assert result.code == Exit.USAGE
    line = _one_error_line(result.err)
    for word in words:
        assert word in line
    assert result.out == ""


def test_bad_policy_file_exits_2(run_rag: RunRag, example_docs: Path, tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text('{"type": "crystal-ball"}')
    result = run_rag(example_docs, "-q", Q, "--policy", policy)
    assert result.code == Exit.USAGE
    assert "crystal-ball" in _one_error_line(result.err)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-q", "A?", "-q", " B? "], ["A?", "B?"]),
        (["--questions", "-"], ["From stdin?", "Second?"]),
        (["-q", "A?", "--questions", "-"], ["A?", "From stdin?", "Second?"]),
        ([], ["From stdin?", "Second?"]),
    ],
    ids=["repeated-q", "file-dash", "q-and-dash", "piped"],
)
def test_questions_come_from_flags_or_stdin(argv: list[str], expected: list[str]) -> None:
    args = build_parser().parse_args(["docs", *argv])
    stdin = io.StringIO("# comment\nFrom stdin?\n\n  Second?  \n")
    assert read_questions(args, stdin) == expected


def test_no_questions_exits_2(run_rag: RunRag, example_docs: Path, tmp_path: Path) -> None:
    assert run_rag(example_docs, stdin="").code == Exit.USAGE
    comments = tmp_path / "q.txt"
    comments.write_text("# only a comment\n\n   \n")
    result = run_rag(example_docs, "--questions", comments)
    assert result.code == Exit.USAGE
    assert "no questions" in _one_error_line(result.err)
    result = run_rag(example_docs, "--questions", tmp_path / "missing.txt")
    assert result.code == Exit.USAGE
    assert "missing.txt" in _one_error_line(result.err)


def test_missing_folder_exits_3(run_rag: RunRag, tmp_path: Path) -> None:
    result = run_rag(tmp_path / "no-such-folder", "-q", Q)
    assert result.code == Exit.FOLDER == 3
    assert "no-such-folder" in _one_error_line(result.err)
    assert "does not exist" in result.err
    assert result.out == ""


def test_a_file_instead_of_a_folder_exits_3(run_rag: RunRag, example_docs: Path) -> None:
    result = run_rag(example_docs / "normans.md", "-q", Q)
    assert result.code == Exit.FOLDER
    assert "is not a folder" in _one_error_line(result.err)


@pytest.mark.parametrize(
    "files",
    [
        {},
        {"data.csv": "a,b"},
        {"ATTRIBUTION.md": "CC BY-SA"},
        {"empty.md": "", "blank.txt": "\n \n"},
    ],
    ids=["empty", "unsupported-only", "attribution-only", "no-text"],
)
def test_folder_without_documents_exits_4(
    run_rag: RunRag, tmp_path: Path, files: dict[str, str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    result = run_rag(tmp_path, "-q", Q)
    assert result.code == Exit.NO_DOCUMENTS == 4
    assert "no documents to index" in _one_error_line(result.err)
    assert str(tmp_path) in result.err


def test_undecodable_file_exits_5_naming_it(run_rag: RunRag, tmp_path: Path) -> None:
    (tmp_path / "good.md").write_text("The vault code is 4721.")
    (tmp_path / "bad.txt").write_bytes("caf\xe9".encode("latin-1"))
    result = run_rag(tmp_path, "-q", Q)
    assert result.code == Exit.UNREADABLE == 5
    line = _one_error_line(result.err)
    assert "bad.txt" in line and "not UTF-8" in line


def test_question_longer_than_the_context_window_exits_6(
    run_rag: RunRag, example_docs: Path
) -> None:
    result = run_rag(example_docs, "-q", Q, "-q", "why " * 3000)
    assert result.code == Exit.TOO_LONG == 6
    line = _one_error_line(result.err)
    assert "question 2" in line and "context window" in line and "smollm2" in line
    assert result.out == ""


def test_unreachable_ollama_slm_exits_7(
    run_rag: RunRag, example_docs: Path, dead_host: str
) -> None:
    result = run_rag(example_docs, "-q", Q, "--slm", "ollama:x", "--ollama-host", dead_host)
    assert result.code == Exit.OLLAMA == 7
    line = _one_error_line(result.err)
    assert dead_host in line and "ollama serve" in line
    assert result.out == ""


def test_unreachable_ollama_slm_with_a_url_hints_the_model_and_the_host_apart(
    run_rag: RunRag, example_docs: Path, dead_host: str
) -> None:
    result = run_rag(example_docs, "-q", Q, "--slm", f"ollama:nomodel@{dead_host}")
    assert result.code == Exit.OLLAMA
    line = _one_error_line(result.err)
    assert "`ollama pull nomodel`" in line  # the model alone: `ollama pull` takes no URL
    assert f"Start Ollama at {dead_host}" in line
    assert "nomodel@" not in line


def test_unreachable_ollama_embeddings_exit_7(
    run_rag: RunRag, example_docs: Path, dead_host: str
) -> None:
    result = run_rag(
        example_docs, "-q", Q, "--retriever", "ollama-embeddings", "--ollama-host", dead_host
    )
    assert result.code == Exit.OLLAMA
    assert "--retriever bm25" in _one_error_line(result.err)


@pytest.mark.parametrize("where", ["missing-folder", "is-a-folder"])
def test_unwritable_output_exits_9_before_any_work(
    run_rag: RunRag, example_docs: Path, tmp_path: Path, where: str
) -> None:
    target = tmp_path / "nope" / "out.json" if where == "missing-folder" else tmp_path
    result = run_rag(example_docs, "-q", Q, "--output", target)
    assert result.code == Exit.OUTPUT == 9
    assert "--output" in _one_error_line(result.err)

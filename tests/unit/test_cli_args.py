"""The argument types every subcommand shares (``confidence_router.cli._args``), and one
flag meaning one thing: the same type wherever it appears."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from confidence_router import Price
from confidence_router.cli import ask, calibrate, eval
from confidence_router.cli._args import (
    fraction,
    fraction_inclusive,
    fraction_or_zero,
    positive_int,
    price,
    show_price,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.15/0.60", Price(0.15, 0.60)),
        ("0.5", Price(0.5, 0.5)),  # one number for both
        ("0", Price(0.0, 0.0)),
        ("1,2", Price(1.0, 2.0)),  # rag's former IN,OUT is still accepted
        (" 2 / 3 ", Price(2.0, 3.0)),
    ],
)
def test_price_reads_in_slash_out_or_one_number(text: str, expected: Price) -> None:
    assert price(text) == expected


@pytest.mark.parametrize(
    "text", ["cheap", "", "-1", "1/-2", "1/2/3", "1,2,3", "1/2,3", "nan", "inf"]
)
def test_a_bad_price_says_the_syntax(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"IN/OUT .*got") as info:
        price(text)
    assert repr(text) in str(info.value)


def test_a_price_is_shown_as_it_is_written() -> None:
    assert show_price(Price(0.15, 0.6)) == "0.15/0.6"
    assert price(show_price(Price(0.15, 0.6))) == Price(0.15, 0.6)


@pytest.mark.parametrize(("text", "expected"), [("1", 1), ("12", 12), (" 3 ", 3)])
def test_positive_int(text: str, expected: int) -> None:
    assert positive_int(text) == expected


@pytest.mark.parametrize("text", ["0", "-3", "x", "1.5", ""])
def test_positive_int_refuses_anything_below_one(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=r"whole number >= 1"):
        positive_int(text)


# (type, its interval as the message writes it, accepted, refused)
FRACTIONS: list[tuple[Callable[[str], float], str, list[str], list[str]]] = [
    (fraction, "(0, 1)", ["0.5", "0.001", "0.999"], ["0", "1", "-0.1", "1.5"]),
    (fraction_or_zero, "[0, 1)", ["0", "0.5"], ["1", "-0.1"]),
    (fraction_inclusive, "[0, 1]", ["0", "0.5", "1"], ["1.01", "-0.1"]),
]


@pytest.mark.parametrize(("kind", "interval", "good", "bad"), FRACTIONS)
def test_fractions_take_their_interval_and_name_it(
    kind: Callable[[str], float], interval: str, good: list[str], bad: list[str]
) -> None:
    for text in good:
        assert kind(text) == float(text)
    for text in [*bad, "nan", "inf", "half"]:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            kind(text)
        assert str(info.value) == f"expected a number in {interval}, got {text!r}"


def _parsers() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Every subcommand's parser (eval's subcommands one by one)."""
    from confidence_router_rag.cli import build_parser as rag_parser

    yield "ask", ask.build_parser()
    yield "rag", rag_parser()
    yield "calibrate", calibrate._parser()
    top = eval._parser()
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"eval {name}", sub


#: Flags that take different forms on purpose: rag's --policy also takes a built-in
#: name, eval's a data-set prefix (KIND=FILE), calibrate's a file only.
SAME_NAME_ON_PURPOSE = {"--policy"}


def test_a_flag_has_one_type_in_every_subcommand() -> None:
    types: dict[str, dict[Any, list[str]]] = {}
    for command, parser in _parsers():
        for action in parser._actions:
            if action.help == argparse.SUPPRESS:
                continue  # a former name, kept working
            for flag in action.option_strings:
                types.setdefault(flag, {}).setdefault(action.type, []).append(command)
    differing = {
        flag: {getattr(t, "__name__", t): commands for t, commands in by_type.items()}
        for flag, by_type in types.items()
        if len(by_type) > 1 and flag not in SAME_NAME_ON_PURPOSE
    }
    assert not differing, f"one flag, several types: {differing}"
    assert set(types["--slm-price"]) == {price}
    assert set(types["--max-tokens"]) == {positive_int}
    assert set(types["--confidence"]) == {fraction}
    assert set(types["--correct-f1"]) == {fraction_or_zero}


def test_top_k_means_passages_and_top_logprobs_log_probabilities() -> None:
    rag = dict(_parsers())["rag"]
    run = dict(_parsers())["eval run"]
    assert "--top-k" in rag.format_help() and "passages" in rag.format_help()
    assert "--top-k" not in run.format_help().replace("its former name --top-k", "")
    assert run.parse_args(["--data", "x", "--top-k", "7"]).top_k == 7  # the former name
    assert run.parse_args(["--data", "x", "--top-logprobs", "7"]).top_k == 7


def test_rag_reads_both_price_forms_and_refuses_a_bad_share(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from confidence_router_rag.cli import Exit, build_parser, main

    parse = build_parser().parse_args
    assert parse(["docs", "--fallback-price", "0.15/0.60"]).fallback_price == Price(0.15, 0.6)
    assert parse(["docs", "--fallback-price", "0.15,0.60"]).fallback_price == Price(0.15, 0.6)
    assert main(["docs", "-q", "Q?", "--shadow-rate", "1.5"]) == Exit.USAGE
    assert (
        "argument --shadow-rate: expected a number in [0, 1], got '1.5'" in capsys.readouterr().err
    )


def test_ask_refuses_a_zero_answer_length(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        ask.main(["--max-tokens", "0"])
    assert info.value.code == 2
    assert "argument --max-tokens: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_eval_analyze_writes_its_json_with_output_and_still_takes_json() -> None:
    analyze = dict(_parsers())["eval analyze"]
    assert analyze.parse_args(["t", "--output", "a.json"]).output == Path("a.json")
    assert analyze.parse_args(["t", "--json", "a.json"]).output == Path("a.json")
    assert analyze.parse_args(["t"]).output is None

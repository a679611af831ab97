"""Argument types and options the subcommands share, so one flag means one thing everywhere.

Each type is a pure function from the command-line text to a value. It raises
`argparse.ArgumentTypeError`, which argparse reports naming the flag
(`argument --confidence: expected a number in (0, 1), got '1'`) before any work
starts, with exit code 2. The `add_*` helpers define the flags several
subcommands take (prices, the Ollama server, the answer length) once, with one
help text.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigurationError
from ..observe.ledger import Price

#: How every price flag is written: input/output per million tokens, or one number for both.
PRICE_METAVAR = "IN[/OUT]"
_PRICE_SYNTAX = (
    "per million input/output tokens, IN/OUT (e.g. 0.15/0.60) or one number for both; "
    "IN,OUT is accepted too"
)


def price(text: str) -> Price:
    """A price per million tokens: `IN/OUT` or one number for input and output alike.

    `IN,OUT` (`confidence-router rag`'s syntax before the subcommands shared
    their types) is still accepted. Each number must be finite and >= 0.
    """
    parts = text.split("/") if "/" in text else text.split(",")
    try:
        numbers = [float(part) for part in parts]
        if len(numbers) in (1, 2):
            return Price(numbers[0], numbers[-1])
    except (ValueError, ConfigurationError):  # not a number; negative or not finite
        pass
    raise argparse.ArgumentTypeError(
        f"expected a price per million tokens, IN/OUT (e.g. 0.15/0.60) or one number, "
        f"each >= 0, got {text!r}"
    )


def show_price(value: Price) -> str:
    """A price as the price flags write it (`0.15/0.6`)."""
    return f"{value.input_per_million:g}/{value.output_per_million:g}"


def positive_int(text: str) -> int:
    """A whole number >= 1: a count (questions, passages, folds, splits) or a size in tokens."""
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return number


def _unit_interval(text: str, *, zero: bool, one: bool) -> float:
    """`text` as a number between 0 and 1, each end allowed only when asked."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # refused below, with the same message
    above = value >= 0.0 if zero else value > 0.0
    below = value <= 1.0 if one else value < 1.0
    if not (above and below):
        interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
        raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1: the rule for a budget, a confidence or a share.

    The ends are refused because on these flags they are degenerate, not extreme
    settings: a quality-loss budget of 0 or a confidence of 1 can never be
    certified from finitely many traces, a budget of 1 or a confidence of 0
    certifies nothing, a held-out share of 0 verifies nothing, and a fit share of 0
    fits nothing (of 1 leaves nothing to calibrate on). A flag where an end is a
    real setting takes `fraction_or_zero` or `fraction_inclusive`.
    """
    return _unit_interval(text, zero=False, one=False)


def fraction_or_zero(text: str) -> float:
    """A number in [0, 1): a `fraction` where 0 is a real setting but 1 is not.

    For an F1 threshold (0: any overlap with the gold answer is right; 1: no answer
    could be) and an escalation target (0: keep every answer; 1: a router that
    never keeps one).
    """
    return _unit_interval(text, zero=True, one=False)


def fraction_inclusive(text: str) -> float:
    """A number in [0, 1]: a `fraction` where both ends are real settings.

    For a rate (shadow checks: 0 never, the default, and 1 every kept answer) and
    a share of a model's quality to keep (1: as good as the top model).
    """
    return _unit_interval(text, zero=True, one=True)


def add_price_options(parser: Any, *, slm: Price, fallback: Price) -> None:
    """`--slm-price` and `--fallback-price` (`parser` may be an argument group)."""
    for flag, role, default in (
        ("--slm-price", "SLM", slm),
        ("--fallback-price", "fallback", fallback),
    ):
        parser.add_argument(
            flag,
            type=price,
            default=default,
            metavar=PRICE_METAVAR,
            help=f"the {role}'s price {_PRICE_SYNTAX} (default: {show_price(default)})",
        )


def add_server_options(parser: Any, *, timeout: float) -> None:
    """`--ollama-host` and `--timeout`, for models on a server."""
    parser.add_argument(
        "--ollama-host",
        default=None,
        metavar="URL",
        help="the Ollama server, wherever no @URL names one (default: $OLLAMA_HOST)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=timeout,
        metavar="SECONDS",
        help=f"seconds per request to a served model (default: {timeout:g})",
    )


def add_max_tokens(parser: Any, *, default: int) -> None:
    """`--max-tokens`: the longest answer, in tokens."""
    parser.add_argument(
        "--max-tokens",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"the longest answer, in tokens (default: {default})",
    )


__all__ = [
    "PRICE_METAVAR",
    "add_max_tokens",
    "add_price_options",
    "add_server_options",
    "fraction",
    "fraction_inclusive",
    "fraction_or_zero",
    "positive_int",
    "price",
    "show_price",
]

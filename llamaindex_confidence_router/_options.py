"""Constructor and per-call option checks shared by the LlamaIndex LLMs of this package."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from confidence_router import ConfigurationError, InvalidInputError


def reject_unknown(cls_name: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Fail on the first unknown keyword, naming it (pydantic would ignore a typo)."""
    known_list = sorted(set(known))
    for name in given:
        if name not in known_list:
            close = difflib.get_close_matches(name, known_list, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                name, f"{cls_name} has no such field{hint} Known fields: {', '.join(known_list)}"
            )


def check_positive_int(field: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(field, f"must be an int >= 1, got {value!r}")
    return value


def call_options(default_max_tokens: int, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """`max_tokens`/`stop` from a call's kwargs; other kwargs are ignored, as
    LlamaIndex integrations do (engines pass provider-specific extras)."""
    max_tokens = kwargs.get("max_tokens")
    if max_tokens is None:
        max_tokens = default_max_tokens
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidInputError(f"max_tokens must be an int >= 1, got {max_tokens!r}")
    stop = kwargs.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, Sequence) or not all(isinstance(s, str) for s in stop):
            raise InvalidInputError(f"stop must be a list of strings, got {stop!r}")
        stop = list(stop)
    return {"max_tokens": max_tokens, "stop": stop}


__all__ = ["call_options", "check_positive_int", "reject_unknown"]

"""Token counts of trace records: a count the server did not report is unknown, never 0.

Trace writers put `null` where a count was not reported (the call failed,
or its server left the count out). Every reader that turns counts into a
figure reads them through here: an unknown count is NaN, a figure is a mean
over the questions whose counts are known, and the report says how many it
left out (`unreported_note`) instead of counting the unknown ones as 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def token_count(part: Mapping[str, Any] | None, key: str) -> float:
    """`part[key]` (`"prompt_tokens"` or `"completion_tokens"`) as a float; NaN when the
    count is `null`, missing, or there is no part."""
    value = None if part is None else part.get(key)
    return float("nan") if value is None else float(value)


def token_counts(part: Mapping[str, Any] | None) -> tuple[float, float]:
    """`(prompt, completion)` tokens of a record part (`slm`, a fallback, a sample); NaN
    for a count that was not reported."""
    return token_count(part, "prompt_tokens"), token_count(part, "completion_tokens")


def known_mean(values: np.ndarray) -> float:
    """Mean of the known (finite) values; NaN when none is known."""
    values = np.asarray(values, dtype=float)
    known = values[np.isfinite(values)]
    return float(known.mean()) if len(known) else float("nan")


def unreported_note(left_out: int, n: int, what: str = "Cost and token figures") -> str:
    """`"Cost and token figures are over 480 of 500 questions; 20 lack a reported token
    count."`, or `""` when none was left out."""
    if not left_out:
        return ""
    lack = "lacks" if left_out == 1 else "lack"
    return (
        f"{what} are over {n - left_out} of {n} questions; {left_out} {lack} a reported "
        "token count."
    )


__all__ = ["known_mean", "token_count", "token_counts", "unreported_note"]

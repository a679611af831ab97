"""Field checks every policy kind shares, so a bad value fails at construction
with the field's name, the same way in every kind."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigurationError
from ..signals.token import SIGNAL_NAMES


def check_finite(field_name: str, value: float) -> float:
    """Returns `value` as a float; raises `ConfigurationError` unless it is a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(field_name, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigurationError(field_name, f"must be a finite number, got {value!r}")
    return float(value)


def check_signal(field_name: str, name: str) -> str:
    """Returns `name`; raises `ConfigurationError` unless it is a known signal."""
    if name not in SIGNAL_NAMES:
        raise ConfigurationError(
            field_name, f"unknown signal {name!r}; known signals: {', '.join(SIGNAL_NAMES)}"
        )
    return name


def check_linear_fields(policy: Any) -> None:
    """Validate (and freeze as tuples) the fields every linear policy shares: known
    `features`, one finite `weights`, `mean` and positive `std` value per feature.

    Raises:
        ConfigurationError: the first field that breaks a rule, named.
    """
    for name in ("features", "weights", "mean", "std"):
        object.__setattr__(policy, name, tuple(getattr(policy, name)))
    if not policy.features:
        raise ConfigurationError("features", "at least one feature is required")
    for i, name in enumerate(policy.features):
        check_signal(f"features[{i}]", name)
    n = len(policy.features)
    for name in ("weights", "mean", "std"):
        values = getattr(policy, name)
        if len(values) != n:
            raise ConfigurationError(
                name, f"has {len(values)} values for {n} features {policy.features}"
            )
        for i, value in enumerate(values):
            check_finite(f"{name}[{i}]", value)
    for i, value in enumerate(policy.std):
        if value <= 0:
            raise ConfigurationError(f"std[{i}]", f"must be positive, got {value!r}")

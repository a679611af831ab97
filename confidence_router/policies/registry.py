"""Every policy kind by its saved `type`: save, load and rebuild policies.

The one place that knows all kinds, so the kinds never import each other to load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .base import LogisticPolicy, Policy, ThresholdPolicy
from .ensemble import AveragePolicy
from .transfer import TransferPolicy
from .trees import TreeEnsemblePolicy

_POLICY_TYPES: dict[str, Any] = {
    "threshold": ThresholdPolicy,
    "logistic": LogisticPolicy,
    "trees": TreeEnsemblePolicy,
    "average": AveragePolicy,
    "transfer": TransferPolicy,
}


def policy_from_dict(data: Mapping[str, Any]) -> Policy:
    """Rebuild a policy from its `to_dict` data, or from a shipped-policy document.

    A `"calibration"` record (written by `confidence-router calibrate`) is ignored.

    Returns:
        The policy of the kind its `"type"` names.

    Raises:
        TypeError: `data` is not a mapping (a JSON list, say).
        ConfigurationError: an unknown type, or a field the kind rejects.
    """
    if not isinstance(data, Mapping):  # e.g. a JSON list: say so, not AttributeError
        raise TypeError(f"a policy is a JSON object, got {type(data).__name__}")
    if "type" not in data and isinstance(data.get("policy"), Mapping):
        data = data["policy"]
    data = {k: v for k, v in data.items() if k != "calibration"}
    kind = data.get("type")
    if kind not in _POLICY_TYPES:
        raise ConfigurationError(
            "type", f"unknown policy type {kind!r}; known: {sorted(_POLICY_TYPES)}"
        )
    if kind == "average":
        return AveragePolicy.from_dict(data, member_from_dict=policy_from_dict)
    policy: Policy = _POLICY_TYPES[kind].from_dict(data)
    return policy


def save_policy(policy: Policy, path: str | Path) -> None:
    """Write the policy as JSON (its `to_dict`), which `load_policy` reads back."""
    Path(path).write_text(json.dumps(policy.to_dict(), indent=2) + "\n")


def load_policy(path: str | Path) -> Policy:
    """Read a policy file written by `save_policy` or `confidence-router calibrate`.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON.
        TypeError, ConfigurationError: as `policy_from_dict`.
    """
    return policy_from_dict(json.loads(Path(path).read_text()))


def as_policy(policy: Policy | str | Path | None) -> Policy | None:
    """A policy object as it is; a `str` or path is a policy file to load (`None` stays).

    Raises:
        ConfigurationError: the file cannot be read or holds no valid policy (it names the file).
    """
    if isinstance(policy, (str, Path)):
        try:
            return load_policy(policy)
        except (OSError, ValueError, TypeError) as exc:
            if isinstance(exc, ConfigurationError):
                raise ConfigurationError("policy", f"{str(policy)!r}: {exc}") from exc
            raise ConfigurationError(
                "policy", f"cannot load the policy file {str(policy)!r}: {exc}"
            ) from exc
    return policy


__all__ = ["as_policy", "load_policy", "policy_from_dict", "save_policy"]

"""Policies shipped inside the package, loadable by name, and rules every policy obeys.

Shipped policies live in ``confidence_router/policies_data/*.json`` (package
data, read with :mod:`importlib.resources`, so they load from an installed
wheel). Each file is ``{"name", "slm", "profile", "description", "fitted_on",
"policy"}`` where ``policy`` is what :func:`~confidence_router.policies.policy_from_dict`
reads. Names are ``SLM/PROFILE``, for example ``gemma3-270m/extractive-qa``.

``seed-thresholds`` is the seed design's hand-set bounds (length <= 64, mean
entropy <= 1, min logprob >= -3), which is also ``ThresholdPolicy()``: not
calibrated for any model, it is what :func:`default_policy_for` returns for a
model without a shipped policy.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from .errors import ConfigurationError
from .policies import Policy, ThresholdPolicy, policy_from_dict
from .types import Decision, Generation

SEED_POLICY_NAME = "seed-thresholds"
PROFILES = ("extractive-qa", "multi-hop")
_DATA_PACKAGE = "confidence_router.policies_data"

#: Model names as backends report them -> the name shipped policies use.
_MODEL_ALIASES = {
    "gemma3-270m": "gemma3-270m",
    "gemma-3-270m": "gemma3-270m",
    "gemma-3-270m-q4_k_m": "gemma3-270m",
    "gemma3:270m": "gemma3-270m",
    "smollm2-135m": "smollm2-135m",
    "smollm2:135m": "smollm2-135m",
    "smollm2-135m-instruct": "smollm2-135m",
    "qwen2.5-coder-0.5b": "qwen2.5-coder-0.5b",
    "qwen2.5-coder:0.5b": "qwen2.5-coder-0.5b",
    "qwen2.5-coder-0.5b-instruct": "qwen2.5-coder-0.5b",
}


def cut_off_escalates(decision: Decision, slm: Generation) -> Decision:
    """An answer cut off by the token limit (finish_reason "length") always escalates.

    If the policy escalated it anyway, its reason is kept and the cut-off is
    added; if the policy would have kept it, the reason starts with the cut-off.
    """
    if slm.finish_reason != "length":
        return decision
    cut = "the SLM's answer was cut off by its token limit (finish_reason 'length')"
    if decision.route == "llm":
        reason = f"{decision.reason}; also, {cut}"
    else:
        reason = f"escalated: {cut}; the policy said {decision.reason}"
    return Decision(
        "llm", decision.score, decision.threshold, decision.signals, reason, decision.policy
    )


@cache
def _shipped() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    folder = resources.files(_DATA_PACKAGE)
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            data = json.loads(entry.read_text(encoding="utf-8"))
            found[str(data["name"])] = data
    return found


def builtin_policy_names() -> list[str]:
    """Names :func:`load_builtin_policy` accepts: the shipped policies and ``seed-thresholds``."""
    return [SEED_POLICY_NAME, *sorted(_shipped())]


def builtin_policy_info(name: str) -> dict[str, Any]:
    """The description and provenance of a shipped policy (without the policy itself)."""
    if name == SEED_POLICY_NAME:
        return {
            "name": name,
            "slm": None,
            "profile": None,
            "description": "the seed design's hand-set bounds: length <= 64 tokens, mean "
            "entropy <= 1 nat, min logprob >= -3; not calibrated for any model",
        }
    data = _shipped().get(name)
    if data is None:
        raise ConfigurationError(
            "policy", f"no built-in policy {name!r}; known: {', '.join(builtin_policy_names())}"
        )
    return {k: v for k, v in data.items() if k != "policy"}


def load_builtin_policy(name: str) -> Policy:
    """A shipped policy by name (see :func:`builtin_policy_names`)."""
    if name == SEED_POLICY_NAME:
        return ThresholdPolicy()
    builtin_policy_info(name)  # raises for unknown names
    return policy_from_dict(_shipped()[name]["policy"])


def canonical_model_name(model: str) -> str | None:
    """The shipped policies' name for an SLM model name, or None if none is shipped for it."""
    key = model.strip().lower()
    if key in _MODEL_ALIASES:
        return _MODEL_ALIASES[key]
    for alias, name in _MODEL_ALIASES.items():
        if key.startswith(alias):
            return name
    return None


def default_policy_name(model: str, profile: str = "extractive-qa") -> str:
    """The name of the default policy for an SLM and task profile.

    A calibrated policy when one is shipped for this model and profile;
    otherwise ``seed-thresholds`` (uncalibrated: fit your own, see the README).
    """
    if profile not in PROFILES:
        raise ConfigurationError("profile", f"must be one of {PROFILES}, got {profile!r}")
    canonical = canonical_model_name(model)
    if canonical is not None:
        name = f"{canonical}/{profile}"
        if name in _shipped():
            return name
    return SEED_POLICY_NAME


def default_policy_for(model: str, profile: str = "extractive-qa") -> Policy:
    """The default policy for an SLM and task profile (see :func:`default_policy_name`)."""
    return load_builtin_policy(default_policy_name(model, profile))


__all__ = [
    "PROFILES",
    "SEED_POLICY_NAME",
    "builtin_policy_info",
    "builtin_policy_names",
    "canonical_model_name",
    "cut_off_escalates",
    "default_policy_for",
    "default_policy_name",
    "load_builtin_policy",
]

"""Policies shipped inside the package, loadable by name, and rules every policy obeys.

Shipped policies live in `confidence_router/policies/data/*.json` (package
data, read with `importlib.resources`, so they load from an installed
wheel). Each file is `{"name", "slm", "profile", "description", "fitted_on",
"policy"}` where `policy` is what `policy_from_dict`
reads. Names are `SLM/PROFILE`, for example `gemma3-270m/extractive-qa`.

`seed-thresholds` is the seed design's hand-set bounds (length <= 64, mean
entropy <= 1, min logprob >= -3), which is also `ThresholdPolicy()`: not
calibrated for any model.

`choose_policy` picks the default for an SLM and says where it comes from:

* **fitted**: a policy shipped for this very SLM (fitted on its own answers);
* **transferred**: `any-slm/PROFILE`, fitted on the answers of several other
  SLMs on a per-model scale, for a model without its own policy, used only
  when its leave-one-model-out evaluation (recorded in the shipped file)
  beat the seed thresholds on every held-out model and data set;
* **uncalibrated**: `seed-thresholds` otherwise.

A transferred or uncalibrated default is announced once per model through
`logging` (logger `confidence_router`), pointing to the calibrate workflow.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

from ..errors import ConfigurationError
from ..types import Decision, Generation
from .base import Policy, ThresholdPolicy
from .registry import policy_from_dict

logger = logging.getLogger("confidence_router")

SEED_POLICY_NAME = "seed-thresholds"
#: Name prefix of the model-agnostic policies (`any-slm/extractive-qa`).
TRANSFER_SLM = "any-slm"
Provenance = Literal["fitted", "transferred", "uncalibrated", "given"]
PROVENANCE_TEXT: dict[str, str] = {
    "fitted": "fitted on this SLM",
    "transferred": "transferred: fitted on other SLMs",
    "uncalibrated": "uncalibrated",
    "given": "given by the caller",
}
PROFILES = ("extractive-qa", "multi-hop")
_DATA_PACKAGE = "confidence_router.policies.data"

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
    """Returns the names `load_builtin_policy` accepts: `seed-thresholds` and the shipped ones."""
    return [SEED_POLICY_NAME, *sorted(_shipped())]


def builtin_policy_info(name: str) -> dict[str, Any]:
    """The description and provenance of a shipped policy (without the policy itself).

    Raises:
        ConfigurationError: no policy of that name is shipped.
    """
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
    """A shipped policy by name (see `builtin_policy_names`).

    Raises:
        ConfigurationError: no policy of that name is shipped.
    """
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

    A calibrated policy when one is shipped for this model and profile; else
    `any-slm/PROFILE` where it beat the seed thresholds on models it never saw
    (`transfer_wins`); otherwise `seed-thresholds` (uncalibrated).

    Raises:
        ConfigurationError: an unknown profile (see `PROFILES`).
    """
    if profile not in PROFILES:
        raise ConfigurationError("profile", f"must be one of {PROFILES}, got {profile!r}")
    canonical = canonical_model_name(model)
    if canonical is not None:
        name = f"{canonical}/{profile}"
        if name in _shipped():
            return name
    if transfer_wins(profile):
        return f"{TRANSFER_SLM}/{profile}"
    return SEED_POLICY_NAME


@dataclass(frozen=True)
class PolicyChoice:
    """A policy with its name, its provenance (`fitted`, `transferred`,
    `uncalibrated`) and a description of what it was fitted on."""

    name: str
    policy: Policy
    provenance: Provenance
    about: str

    @property
    def label(self) -> str:
        """`"NAME (PROVENANCE)"`, as the faces' repr, the routing record and rag show it."""
        return f"{self.name} ({PROVENANCE_TEXT[self.provenance]})"


def transfer_wins(profile: str = "extractive-qa") -> bool:
    """Whether `any-slm/PROFILE` is shipped and its leave-one-model-out verdicts beat the
    seed thresholds on every held-out model and data set (AUROC, and fallback calls avoided
    not below the seed's)."""
    data = _shipped().get(f"{TRANSFER_SLM}/{profile}")
    if data is None:
        return False
    verdicts = data.get("fitted_on", {}).get("verdicts") or []
    return bool(verdicts) and all(
        v.get("beats_seed_auroc") and v.get("not_below_seed_calls_avoided") for v in verdicts
    )


_announced: set[tuple[str, str]] = set()
_announced_lock = threading.Lock()


def choose_policy(model: str, profile: str = "extractive-qa") -> PolicyChoice:
    """The default policy for an SLM and task profile, named, with its provenance.

    Fitted on this SLM when one is shipped; else the transferred `any-slm`
    policy where it beat the seed thresholds; else the seed thresholds. A
    transferred or uncalibrated choice is logged once per model and profile.

    Args:
        model: the SLM's model name (aliases such as `gemma3:270m` are recognised).
        profile: the task, one of `PROFILES`.

    Returns:
        A `PolicyChoice`: the policy, its name and provenance.

    Raises:
        ConfigurationError: an unknown profile.
    """
    name = default_policy_name(model, profile)
    provenance: Provenance = "fitted"
    if name == SEED_POLICY_NAME:
        provenance = "uncalibrated"
    elif name.startswith(f"{TRANSFER_SLM}/"):
        provenance = "transferred"
    about = str(builtin_policy_info(name)["description"])
    choice = PolicyChoice(name, load_builtin_policy(name), provenance, about)
    if provenance != "fitted":
        with _announced_lock:
            first = (model, profile) not in _announced
            _announced.add((model, profile))
        if first:
            logger.warning(
                "no routing policy is calibrated for the SLM %r; using %s. Calibrate one on "
                "your own traffic: record traces with shadow checks, then run "
                "`confidence-router calibrate` (docs: guides/policies)",
                model,
                choice.label,
            )
    return choice


def policy_label(router: Any) -> str:
    """How a router's policy is named to a person: its label when chosen by name
    (`"gemma3-270m/extractive-qa (fitted on this SLM)"`), else its type, given."""
    label = getattr(router, "policy_label", None)
    if label:
        return str(label)
    return f"{type(router.policy).__name__} ({PROVENANCE_TEXT['given']})"


def default_policy_for(model: str, profile: str = "extractive-qa") -> Policy:
    """The default policy for an SLM and task profile: `choose_policy(...).policy`.

    Raises:
        ConfigurationError: an unknown profile.
    """
    return choose_policy(model, profile).policy


__all__ = [
    "PROFILES",
    "PROVENANCE_TEXT",
    "SEED_POLICY_NAME",
    "TRANSFER_SLM",
    "PolicyChoice",
    "choose_policy",
    "policy_label",
    "transfer_wins",
    "builtin_policy_info",
    "builtin_policy_names",
    "canonical_model_name",
    "cut_off_escalates",
    "default_policy_for",
    "default_policy_name",
    "load_builtin_policy",
]

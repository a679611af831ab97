"""The names each package exports are a promise: moving code must not break an import.

Pinned from the packages as they were before the core was regrouped by concern
(issue 23). Adding a name is fine (add it here too); removing or renaming one is a
breaking change and needs a deprecation first.
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC_NAMES: dict[str, set[str]] = {
    "confidence_router": {
        "AveragePolicy",
        "Bound",
        "CONTEXT_SIGNAL_NAMES",
        "CallableEscalator",
        "Cascade",
        "CascadeResult",
        "CascadeStats",
        "ConfidenceRouterError",
        "ConfigurationError",
        "ConsistencyCheck",
        "ContextWindowExceededError",
        "Decision",
        "EarlyExitRule",
        "Escalator",
        "FallbackError",
        "FallbackTimeoutError",
        "Generation",
        "Hedge",
        "IncompleteResponseError",
        "IncrementalSignals",
        "InvalidInputError",
        "Ledger",
        "LedgerSnapshot",
        "LlamaCppSLM",
        "LogisticPolicy",
        "Message",
        "MissingLogprobsError",
        "ModelNotFoundError",
        "MonotoneBounds",
        "OllamaSLM",
        "OpenAICompatibleSLM",
        "Policy",
        "PolicyChoice",
        "Price",
        "RouteChunk",
        "RoutedResult",
        "Router",
        "SIGNAL_NAMES",
        "SLMBackend",
        "SLMError",
        "SLMResponseError",
        "SLMTimeoutError",
        "SLMUnavailableError",
        "SelfConsistency",
        "Signals",
        "Stage",
        "StageRecord",
        "StageStats",
        "ThresholdPolicy",
        "TokenChunk",
        "TraceRecorder",
        "TreeEnsemblePolicy",
        "Usage",
        "as_escalator",
        "builtin_policy_names",
        "calibrate_to_escalation_rate",
        "choose_policy",
        "compute_signals",
        "context_signals",
        "default_policy_for",
        "default_policy_name",
        "fit_policy",
        "gemma3_path",
        "load_builtin_policy",
        "load_early_exit",
        "load_policy",
        "policy_from_dict",
        "qwen_coder_05b_path",
        "qwen_coder_15b_path",
        "save_early_exit",
        "save_policy",
        "signals_from_arrays",
        "slm_from_spec",
        "smollm2_path",
    },
    "confidence_router.backends": {
        "LlamaCppSLM",
        "OllamaSLM",
        "OpenAICompatibleSLM",
        "SLMBackend",
        "SLMSpec",
        "Sampler",
        "gemma3_path",
        "parse_slm_spec",
        "qwen_coder_05b_path",
        "qwen_coder_15b_path",
        "slm_from_spec",
        "smollm2_path",
    },
    "confidence_router.eval": {
        "DataFormatError",
        "PERFECT",
        "QAExample",
        "Score",
        "TraceConfigError",
        "clean_prediction",
        "load_examples",
        "load_traces",
        "normalize_answer",
        "run_traces",
        "score_answer",
    },
    "langchain_confidence_router": {
        "ConfidenceRouterChat",
    },
    "llamaindex_confidence_router": {
        "ConfidenceRouterLLM",
        "EmbeddedLLM",
        "RoutingDecisionEvent",
    },
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_NAMES))
def test_every_pinned_name_is_still_exported(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    missing = PUBLIC_NAMES[module_name] - exported
    assert not missing, f"{module_name} no longer exports {sorted(missing)}"
    unresolved = [name for name in exported if not hasattr(module, name)]
    assert not unresolved, f"{module_name}.__all__ names what it lacks: {unresolved}"


@pytest.mark.parametrize("module_name", sorted(PUBLIC_NAMES))
def test_no_unpinned_export(module_name: str) -> None:
    """A new public name is a decision: pin it here so removing it later is noticed."""
    module = importlib.import_module(module_name)
    extra = set(module.__all__) - PUBLIC_NAMES[module_name]
    assert not extra, f"pin the new names of {module_name} in this test: {sorted(extra)}"

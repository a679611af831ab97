"""confidence-router: a small model answers first; a large one only when the small one is unsure.

The core is framework-free (numpy and the ``ollama`` client; the ``openai``
client is an optional extra for OpenAI-compatible SLM servers). The LangChain and
LlamaIndex faces live in ``langchain_confidence_router`` and
``llamaindex_confidence_router``.
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _distribution_version

from .backends import (
    LlamaCppSLM,
    OllamaSLM,
    OpenAICompatibleSLM,
    SLMBackend,
    gemma3_path,
    qwen_coder_05b_path,
    qwen_coder_15b_path,
    slm_from_spec,
    smollm2_path,
)
from .backends.escalation import CallableEscalator, Escalator, as_escalator
from .errors import (
    ConfidenceRouterError,
    ConfigurationError,
    ContextWindowExceededError,
    FallbackError,
    FallbackTimeoutError,
    IncompleteResponseError,
    InvalidInputError,
    MissingLogprobsError,
    ModelNotFoundError,
    SLMError,
    SLMResponseError,
    SLMTimeoutError,
    SLMUnavailableError,
)
from .observe.cascade_ledger import CascadeStats, StageStats
from .observe.ledger import Ledger, LedgerSnapshot, Price
from .observe.recorder import TraceRecorder
from .policies.base import (
    Bound,
    LogisticPolicy,
    Policy,
    ThresholdPolicy,
    calibrate_to_escalation_rate,
)
from .policies.defaults import (
    PolicyChoice,
    builtin_policy_names,
    choose_policy,
    default_policy_for,
    default_policy_name,
    load_builtin_policy,
)
from .policies.ensemble import AveragePolicy
from .policies.fitting import fit_policy
from .policies.registry import load_policy, policy_from_dict, save_policy
from .policies.trees import TreeEnsemblePolicy
from .routing.cascade import Cascade, Stage
from .routing.early_exit import EarlyExitRule, MonotoneBounds, load_early_exit, save_early_exit
from .routing.hedging import Hedge
from .routing.router import Router
from .routing.self_consistency import SelfConsistency
from .signals.context import CONTEXT_SIGNAL_NAMES, context_signals
from .signals.incremental import IncrementalSignals
from .signals.token import SIGNAL_NAMES, Signals, compute_signals, signals_from_arrays
from .types import (
    CascadeResult,
    ConsistencyCheck,
    Decision,
    Generation,
    Message,
    RouteChunk,
    RoutedResult,
    StageRecord,
    TokenChunk,
    Usage,
)

try:  # the installed distribution's version, so it can never disagree with pyproject.toml
    __version__ = _distribution_version("confidence-router")
except _PackageNotFoundError:  # pragma: no cover - running from a source tree not installed
    __version__ = "0+unknown"

__all__ = [
    "CONTEXT_SIGNAL_NAMES",
    "SIGNAL_NAMES",
    "AveragePolicy",
    "TreeEnsemblePolicy",
    "PolicyChoice",
    "builtin_policy_names",
    "choose_policy",
    "context_signals",
    "default_policy_for",
    "default_policy_name",
    "fit_policy",
    "load_builtin_policy",
    "Bound",
    "CallableEscalator",
    "Cascade",
    "CascadeResult",
    "CascadeStats",
    "ConfidenceRouterError",
    "ConfigurationError",
    "ContextWindowExceededError",
    "ConsistencyCheck",
    "Decision",
    "EarlyExitRule",
    "Escalator",
    "FallbackError",
    "FallbackTimeoutError",
    "IncompleteResponseError",
    "Generation",
    "Hedge",
    "SelfConsistency",
    "IncrementalSignals",
    "InvalidInputError",
    "Ledger",
    "LedgerSnapshot",
    "LlamaCppSLM",
    "LogisticPolicy",
    "Message",
    "MonotoneBounds",
    "MissingLogprobsError",
    "ModelNotFoundError",
    "OllamaSLM",
    "OpenAICompatibleSLM",
    "Policy",
    "Price",
    "RouteChunk",
    "RoutedResult",
    "Router",
    "SLMBackend",
    "SLMError",
    "SLMResponseError",
    "SLMTimeoutError",
    "Stage",
    "StageRecord",
    "StageStats",
    "SLMUnavailableError",
    "Signals",
    "ThresholdPolicy",
    "TokenChunk",
    "TraceRecorder",
    "Usage",
    "as_escalator",
    "calibrate_to_escalation_rate",
    "compute_signals",
    "gemma3_path",
    "load_early_exit",
    "load_policy",
    "policy_from_dict",
    "save_early_exit",
    "save_policy",
    "signals_from_arrays",
    "slm_from_spec",
    "qwen_coder_05b_path",
    "qwen_coder_15b_path",
    "smollm2_path",
]

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
from .cascade import Cascade, Stage
from .cascade_ledger import CascadeStats, StageStats
from .cascade_types import CascadeResult, StageRecord
from .consistency import SelfConsistency
from .context_signals import CONTEXT_SIGNAL_NAMES, context_signals
from .defaults import (
    PolicyChoice,
    builtin_policy_names,
    choose_policy,
    default_policy_for,
    default_policy_name,
    load_builtin_policy,
)
from .early_exit import EarlyExitRule, MonotoneBounds, load_early_exit, save_early_exit
from .ensemble import AveragePolicy
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
from .escalation import CallableEscalator, Escalator, as_escalator
from .hedging import Hedge
from .incremental import IncrementalSignals
from .learn import fit_policy
from .ledger import Ledger, LedgerSnapshot, Price
from .policies import (
    Bound,
    LogisticPolicy,
    Policy,
    ThresholdPolicy,
    calibrate_to_escalation_rate,
    load_policy,
    policy_from_dict,
    save_policy,
)
from .recorder import TraceRecorder
from .router import Router
from .signals import SIGNAL_NAMES, Signals, compute_signals, signals_from_arrays
from .trees import TreeEnsemblePolicy
from .types import (
    ConsistencyCheck,
    Decision,
    Generation,
    Message,
    RouteChunk,
    RoutedResult,
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

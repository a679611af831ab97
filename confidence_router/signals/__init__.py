"""Confidence signals of one answer: token log-probability statistics (`token`),
grounding in the context (`context`) and the same signals as tokens arrive
(`incremental`)."""

from __future__ import annotations

from .context import (
    context_signal_values,
    context_signals,
    forget_prompts,
    is_abstention,
    split_prompt,
)
from .incremental import QUANTILES, IncrementalSignals, P2Quantile
from .token import (
    CONTEXT_SIGNAL_NAMES,
    LOGPROB_SIGNAL_NAMES,
    SIGNAL_NAMES,
    Signals,
    compute_signals,
    signals_from_arrays,
    token_entropies,
    token_margins,
)

__all__ = [
    "CONTEXT_SIGNAL_NAMES",
    "IncrementalSignals",
    "LOGPROB_SIGNAL_NAMES",
    "P2Quantile",
    "QUANTILES",
    "SIGNAL_NAMES",
    "Signals",
    "compute_signals",
    "context_signal_values",
    "context_signals",
    "forget_prompts",
    "is_abstention",
    "signals_from_arrays",
    "split_prompt",
    "token_entropies",
    "token_margins",
]

"""Confidence signals: numbers computed from a generation's token log-probabilities.

All computations are vectorised over token positions. Conventions:

* Log-probabilities are natural logs, as llama.cpp and Ollama report them.
* **Entropy and the mass outside the top k.** A backend reports only the k
  most likely tokens per position. The probability mass they leave,
  `rest = 1 - sum(top-k probabilities)`, is treated as *one extra outcome*.
  The per-position entropy `-sum(p log p) - rest log(rest)` is then a lower
  bound on the full-vocabulary entropy (merging outcomes never adds entropy),
  exact when the top k hold all the mass, and lies in `[0, log(k + 1)]`.
  With k = 0 (only the chosen token reported) it is the binary entropy of
  "the chosen token or anything else".
* **Margin** at a position is the log-probability of the most likely token
  minus that of the runner-up; with fewer than two alternatives reported the
  runner-up is bounded by the leftover mass, `log(1 - p_top)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from ..types import FloatArray, Generation, Message
from ._stats import per_position, position_values, quantile
from .context import CONTEXT_SIGNAL_NAMES, context_signal_values


@dataclass(frozen=True)
class Signals:
    """Named floats describing how sure the model was of its answer.

    Higher log-probabilities and margins and lower entropies mean more
    confident. For an empty answer every statistic is 0 and `length` is 0;
    the router treats empty answers separately. The last ten fields are the
    context signals of `confidence_router.signals.context`, measured
    against the prompt when the messages are given.
    """

    length: float
    mean_logprob: float
    min_logprob: float
    sum_logprob: float
    q10_logprob: float
    q25_logprob: float
    median_logprob: float
    mean_entropy: float
    max_entropy: float
    first_margin: float
    mean_margin: float
    # Context signals (see confidence_router.signals.context): how the answer sits in the
    # prompt. Defaults are their values when no messages are given, so Signals built
    # from the eleven log-probability statistics alone (older code, older traces) still work.
    context_coverage: float = 0.0
    context_span: float = 0.0
    context_novel_coverage: float = 0.0
    answer_in_question: float = 0.0
    support_sentence_overlap: float = 0.0
    abstention: float = 0.0
    answer_type_match: float = 0.5
    context_words: float = 0.0
    question_coverage: float = 0.0
    question_sentence_overlap: float = 0.0

    NAMES: ClassVar[tuple[str, ...]]

    def as_dict(self) -> dict[str, float]:
        """Returns every signal by name, in the order of `SIGNAL_NAMES`."""
        return {name: getattr(self, name) for name in self.NAMES}

    def __getitem__(self, name: str) -> float:
        """Returns the signal `name`; raises `KeyError` naming the known ones."""
        if name not in self.NAMES:
            raise KeyError(f"unknown signal {name!r}; known signals: {', '.join(self.NAMES)}")
        return float(getattr(self, name))


Signals.NAMES = tuple(f.name for f in fields(Signals))
SIGNAL_NAMES: tuple[str, ...] = Signals.NAMES
#: The signals computed from token log-probabilities alone.
LOGPROB_SIGNAL_NAMES: tuple[str, ...] = tuple(
    n for n in SIGNAL_NAMES if n not in CONTEXT_SIGNAL_NAMES
)
_NO_CONTEXT: tuple[float, ...] = tuple(float(getattr(Signals, n)) for n in CONTEXT_SIGNAL_NAMES)


def token_entropies(token_logprobs: FloatArray, top_logprobs: FloatArray) -> FloatArray:
    """Per-position entropy of the top-k distribution plus one bucket for the rest."""
    lp = np.asarray(token_logprobs, dtype=np.float64)
    return per_position(lp, top_logprobs)[0]


def token_margins(token_logprobs: FloatArray, top_logprobs: FloatArray) -> FloatArray:
    """Per-position log-probability gap between the best and the runner-up token."""
    lp = np.asarray(token_logprobs, dtype=np.float64)
    return per_position(lp, top_logprobs)[1]


def compute_signals(generation: Generation, messages: Sequence[Message] | None = None) -> Signals:
    """The signals of one generation, from its token log-probabilities.

    Args:
        generation: the SLM's answer with its log-probabilities.
        messages: the chat it answered; the context signals are measured against
            it. Without it they keep their no-context values.

    Returns:
        The `Signals`; every statistic is 0 for an empty answer.

    Raises:
        ValueError: a log-probability is NaN or -inf.
    """
    context = context_signal_values(messages, generation.text)
    return signals_from_arrays(generation.token_logprobs, generation.top_logprobs, context)


def signals_from_arrays(
    token_logprobs: FloatArray,
    top_logprobs: FloatArray,
    context: Sequence[float] | None = None,
) -> Signals:
    """The signals from the log-probability arrays themselves, without a `Generation`.

    Runs once per answer on the router's hot path: the per-position work is
    vectorised, and the dozen scalar statistics of a short answer are
    cheaper in plain Python than as separate numpy reductions.

    Args:
        token_logprobs: the chosen tokens' log-probabilities, shape (n,).
        top_logprobs: the top-k alternatives at each position, shape (n, k).
        context: the context signal values in the order of `CONTEXT_SIGNAL_NAMES`
            (from `context_signal_values`); None keeps their no-context defaults.

    Returns:
        The `Signals`; every log-probability statistic is 0 when n is 0.

    Raises:
        ValueError: a log-probability is NaN or -inf.
    """
    values, entropies, margins = position_values(token_logprobs, top_logprobs)
    n = len(values)
    extra = tuple(context) if context is not None else _NO_CONTEXT
    if n == 0:
        return Signals(*(0.0 for _ in LOGPROB_SIGNAL_NAMES), *extra)
    ordered = sorted(values)
    total = math.fsum(values)
    return Signals(
        length=float(n),
        mean_logprob=total / n,
        min_logprob=ordered[0],
        sum_logprob=total,
        q10_logprob=quantile(ordered, 0.10),
        q25_logprob=quantile(ordered, 0.25),
        median_logprob=quantile(ordered, 0.50),
        mean_entropy=math.fsum(entropies) / n,
        max_entropy=max(entropies),
        first_margin=margins[0],
        mean_margin=math.fsum(margins) / n,
        context_coverage=extra[0],
        context_span=extra[1],
        context_novel_coverage=extra[2],
        answer_in_question=extra[3],
        support_sentence_overlap=extra[4],
        abstention=extra[5],
        answer_type_match=extra[6],
        context_words=extra[7],
        question_coverage=extra[8],
        question_sentence_overlap=extra[9],
    )


__all__ = [
    "CONTEXT_SIGNAL_NAMES",
    "LOGPROB_SIGNAL_NAMES",
    "SIGNAL_NAMES",
    "Signals",
    "compute_signals",
    "signals_from_arrays",
    "token_entropies",
    "token_margins",
]

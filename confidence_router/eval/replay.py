"""Replaying committed SLM answers token by token: what early abort would have done.

Every trace record holds the SLM's tokens with their log-probabilities and
top-k alternatives, so the router's early-abort checks can be run on each
answer as if it were streaming, without a model: after which token the SLM
would have been stopped, whether the final decision changed, how many
tokens and how much time that saves. `bench/early_escalation.py` reports it.

A prompt count the server did not report (`null`) stays None here, never 0;
the latency fit leaves such answers out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..policies.base import Policy
from ..routing.early_exit import Checks
from ..signals.incremental import IncrementalSignals
from ..signals.token import Signals, signals_from_arrays
from .counts import token_counts
from .traces import load_traces


@dataclass(frozen=True, eq=False)
class TraceAnswer:
    """One recorded SLM answer, as arrays."""

    id: str
    dataset: str
    logprobs: np.ndarray
    top_logprobs: np.ndarray
    prompt_tokens: int | None  # None: not reported
    completion_tokens: int  # reported, else the logprob entries (one per generated token)
    correct: bool  # the SLM's answer is right (F1 > 0.5), as in the evaluation report

    @property
    def signals(self) -> Signals:
        """The log-probability signals of the whole answer."""
        return signals_from_arrays(self.logprobs, self.top_logprobs)

    def prefixes(self) -> list[Signals]:
        """Signals after 1, 2, ..., n tokens (the router's running view)."""
        acc = IncrementalSignals()
        out = []
        for i in range(len(self.logprobs)):
            acc.push(self.logprobs[i : i + 1], self.top_logprobs[i : i + 1])
            out.append(acc.snapshot())
        return out


def _row(values: Sequence[float | None]) -> list[float]:
    return [-math.inf if v is None else float(v) for v in values]


def load_answers(paths: Iterable[str | Path]) -> list[TraceAnswer]:
    """Every scorable SLM answer (with tokens and logprobs) of these trace files."""
    answers = []
    for path in paths:
        for record in load_traces(path):
            slm = record.get("slm") or {}
            if not slm.get("logprobs"):
                continue
            lp = np.asarray(slm["logprobs"], dtype=np.float64)
            top = np.asarray([_row(r) for r in slm["top_logprobs"]], dtype=np.float64)
            prompt, completion = token_counts(slm)
            answers.append(
                TraceAnswer(
                    id=str(record["id"]),
                    dataset=str(record["dataset"]),
                    logprobs=lp,
                    top_logprobs=top.reshape(len(lp), -1),
                    prompt_tokens=int(prompt) if math.isfinite(prompt) else None,
                    # unreported: counted from the logprob entries, as the backends do
                    completion_tokens=int(completion or len(lp))
                    if math.isfinite(completion)
                    else len(lp),
                    correct=float(slm.get("f1") or 0.0) > 0.5,
                )
            )
    return answers


@dataclass(frozen=True)
class Replayed:
    """What the router does with one answer, decided on the whole answer and while streaming."""

    answer: TraceAnswer
    full_route: str
    aborted_after: int | None  # tokens received when the checks stopped the SLM
    early_route: str

    @property
    def changed(self) -> bool:
        """Whether early escalation changed the route."""
        return self.full_route != self.early_route

    @property
    def tokens_full(self) -> int:
        """Tokens the SLM decodes without early abort (the end-of-answer token included)."""
        return max(self.answer.completion_tokens, len(self.answer.logprobs))

    @property
    def tokens_early(self) -> int:
        """SLM tokens generated with early escalation (all of them when it never cut)."""
        return self.tokens_full if self.aborted_after is None else self.aborted_after


def replay(answers: Sequence[TraceAnswer], policy: Policy, checks: Checks | None) -> list[Replayed]:
    """Run `checks` after every token of every answer, as the Router does."""
    out = []
    for answer in answers:
        full = policy.decide(answer.signals).route
        aborted = None
        if checks is not None:
            acc = IncrementalSignals()
            for i in range(len(answer.logprobs)):
                acc.push(answer.logprobs[i : i + 1], answer.top_logprobs[i : i + 1])
                if checks.check(acc) is not None:
                    aborted = i + 1
                    break
        out.append(Replayed(answer, full, aborted, "llm" if aborted is not None else full))
    return out


@dataclass(frozen=True)
class DecodeSpeed:
    """A backend's measured speed: prompt evaluation and decoding, seconds per token."""

    prompt_s_per_token: float
    decode_s_per_token: float
    overhead_s: float = 0.0

    def until_fallback(self, prompt_tokens: int | None, decoded: int) -> float:
        """Seconds from the request until the SLM has decoded `decoded` tokens (NaN when
        the prompt's count is unknown: its evaluation time is too)."""
        if prompt_tokens is None:
            return float("nan")
        return (
            self.overhead_s
            + prompt_tokens * self.prompt_s_per_token
            + decoded * self.decode_s_per_token
        )


def speed_from_traces(paths: Iterable[str | Path]) -> tuple[DecodeSpeed, dict[str, float]]:
    """The SLM's speed as the traces recorded it: least squares of each answer's latency on
    its prompt and completion token counts (`latency = overhead + a * prompt + b * tokens`).
    Answers with a count the server did not report are left out (`unreported`).

    Returns the speed and the fit's quality (answers, median latency, median absolute
    residual, and, when some were left out, `unreported`).
    """
    rows, latencies = [], []
    unreported = 0
    for path in paths:
        for record in load_traces(path):
            slm = record.get("slm") or {}
            if slm.get("latency_s"):
                prompt, completion = token_counts(slm)
                if not (math.isfinite(prompt) and math.isfinite(completion)):
                    unreported += 1
                    continue
                rows.append([prompt, completion, 1.0])
                latencies.append(float(slm["latency_s"]))
    x, y = np.asarray(rows), np.asarray(latencies)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    residual = np.abs(y - x @ coef)
    quality = {
        "answers": float(len(y)),
        "median_latency_s": float(np.median(y)),
        "median_abs_residual_s": float(np.median(residual)),
    }
    if unreported:
        quality["unreported"] = float(unreported)
    return DecodeSpeed(float(coef[0]), float(coef[1]), float(coef[2])), quality


__all__ = ["DecodeSpeed", "Replayed", "TraceAnswer", "load_answers", "replay", "speed_from_traces"]

"""Early abort: escalate while the SLM is still talking.

Today's cascade waits for the SLM's whole answer before it decides, so an
escalated query pays the full SLM generation before the fallback starts.
Here the router watches the answer as it streams (an
`IncrementalSignals` over the tokens)
and stops the SLM as soon as the answer cannot pass any more:

* `MonotoneBounds` (exact). Some `ThresholdPolicy` bounds can only get
  worse as tokens arrive: `length` over its `max`, `min_logprob` under its
  `min`, `max_entropy` over its `max`, and `sum_logprob` under its
  `min` (log-probabilities are <= 0). Once one of them is violated
  (`combine="all"`; for `"any"` once every bound is violated for good) the
  full answer would escalate too, so escalating at the first violating token
  gives exactly the decision of the full answer. The router uses it by default.
* `EarlyExitRule` (learned, for any policy). Scores the policy on the
  answer's prefix after every token and aborts when that score falls below a
  `bound` fitted on traces (`EarlyExitRule.fit`) so that at most
  `max_changed` (default 1%) of the calibration answers' final decisions
  change; measure it on held-out answers (`bench/early_escalation.py` does).

On abort the SLM's stream is closed (the HTTP connection to Ollama closes;
llama.cpp's token loop stops at once), the Decision's reason says after how
many tokens and why, and the partial answer's tokens are what the ledger counts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .._accumulate import accumulate
from .._deadline import aclose_quietly
from ..backends.base import SLMBackend
from ..errors import ConfigurationError, IncompleteResponseError, MissingLogprobsError
from ..policies.base import Bound, Policy, ThresholdPolicy
from ..policies.registry import policy_from_dict
from ..signals.incremental import IncrementalSignals
from ..signals.token import Signals, compute_signals
from ..types import Decision, Generation, Message, TokenChunk, Usage

#: `Generation.finish_reason` of an SLM answer the router stopped early.
ABORTED = "early_abort"

#: (signal, side) pairs whose margin can only shrink as tokens arrive.
WORSENING_SIDES: frozenset[tuple[str, str]] = frozenset(
    {("length", "max"), ("min_logprob", "min"), ("max_entropy", "max"), ("sum_logprob", "min")}
)


@runtime_checkable
class AbortCheck(Protocol):
    """Asked after every SLM chunk: a reason to stop now, or None to go on."""

    def check(self, acc: IncrementalSignals) -> str | None: ...

    def decision(self, partial: Generation) -> Decision: ...


def _running(acc: IncrementalSignals, signal: str) -> float:
    if signal == "length":
        return float(acc.count)
    value: float = getattr(acc, signal)
    return value


@dataclass(frozen=True)
class MonotoneBounds:
    """Exact early abort for the bounds of a ThresholdPolicy that can only get worse."""

    policy: ThresholdPolicy
    sides: tuple[tuple[int, str], ...] = field(init=False)

    def __post_init__(self) -> None:
        sides = []
        for i, bound in enumerate(self.policy.bounds):
            for side in ("min", "max"):
                if getattr(bound, side) is not None and (bound.signal, side) in WORSENING_SIDES:
                    sides.append((i, side))
        object.__setattr__(self, "sides", tuple(sides))

    @classmethod
    def of(cls, policy: Policy) -> MonotoneBounds | None:
        """The check for `policy`, or None when it has no bound that only gets worse."""
        if not isinstance(policy, ThresholdPolicy):
            return None
        check = cls(policy)
        if not check.sides:
            return None
        if policy.combine == "any" and len({i for i, _ in check.sides}) < len(policy.bounds):
            return None  # a bound that can recover keeps "any" open to the end
        return check

    @staticmethod
    def _side_margin(bound: Bound, side: str, value: float) -> float:
        limit: float = getattr(bound, side)
        return ((value - limit) if side == "min" else (limit - value)) / bound.unit

    def _violated(self, value_of: Mapping[str, float]) -> list[tuple[Bound, str, float]]:
        """The (bound, side, value) violated for good, if they settle the decision; else []."""
        threshold = self.policy.threshold
        hits: list[tuple[Bound, str, float]] = []
        hit_bounds: set[int] = set()
        for i, side in self.sides:
            bound = self.policy.bounds[i]
            value = value_of[bound.signal]
            if self._side_margin(bound, side, value) < threshold:
                hits.append((bound, side, value))
                hit_bounds.add(i)
        if self.policy.combine == "any" and len(hit_bounds) < len(self.policy.bounds):
            return []
        return hits

    def check(self, acc: IncrementalSignals) -> str | None:
        if acc.count == 0:
            return None
        values = {signal: _running(acc, signal) for signal, _ in WORSENING_SIDES}
        hits = self._violated(values)
        if not hits:
            return None
        return self._reason(hits, acc.count, self.policy.score(acc.snapshot()))

    def _reason(self, hits: list[tuple[Bound, str, float]], tokens: int, score: float) -> str:
        what = "; ".join(_describe_side(b, side, v) for b, side, v in hits)
        return (
            f"unsure: {what} (score {score:.3g} vs threshold {self.policy.threshold:g}); "
            f"early abort after {tokens} SLM tokens: "
            f"{'this bound' if len(hits) == 1 else 'these bounds'} can only get worse as the "
            f"answer grows, so the full answer would escalate too"
        )

    def decision(self, partial: Generation) -> Decision:
        return _stopped(self.policy, partial, "threshold", self._final_reason)

    def _final_reason(self, values: Mapping[str, float], score: float, tokens: int) -> str:
        hits = self._violated(values)
        if not hits:  # pragma: no cover - the running values and the full recomputation agree
            return f"unsure: early abort after {tokens} SLM tokens (score {score:.3g})"
        return self._reason(hits, tokens, score)


def _stopped(
    policy: Policy,
    partial: Generation,
    name: str,
    reason: Callable[[Mapping[str, float], float, int], str],
) -> Decision:
    """Escalate an answer stopped early, scored on what it had said so far;
    `reason(signals, score, tokens)` says why it was stopped."""
    signals = compute_signals(partial)
    score = policy.score(signals)
    values = signals.as_dict()
    tokens = len(partial.token_logprobs)
    return Decision("llm", score, policy.threshold, values, reason(values, score, tokens), name)


def _describe_side(bound: Bound, side: str, value: float) -> str:
    op = "<" if side == "min" else ">"
    return f"{bound.signal} {value:.3g} {op} {getattr(bound, side):g}"


def _policy_name(policy: Policy) -> str:
    kind = policy.to_dict().get("type")
    return str(kind) if kind else type(policy).__name__


@dataclass(frozen=True)
class EarlyExitRule:
    """Abort when the policy's score on the answer so far drops below `bound`.

    Checked once at least `min_tokens` tokens have arrived. Fit it with
    `fit` on answer prefixes of a calibration split; `max_changed` is
    the share of final decisions it was allowed to change there, and
    `calibration` what it did (share changed, tokens saved) on that split.
    Round-trips through JSON (`to_dict`, `save_early_exit`).
    """

    policy: Policy
    bound: float
    min_tokens: int = 1
    max_changed: float = 0.01
    calibration: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.policy, Policy):
            raise ConfigurationError("policy", f"must be a Policy, got {self.policy!r}")
        if (
            isinstance(self.bound, bool)
            or not isinstance(self.bound, (int, float))
            or math.isnan(self.bound)
        ):
            raise ConfigurationError("bound", f"must be a number, got {self.bound!r}")
        if isinstance(self.min_tokens, bool) or not isinstance(self.min_tokens, int):
            raise ConfigurationError("min_tokens", f"must be an int, got {self.min_tokens!r}")
        if self.min_tokens < 1:
            raise ConfigurationError("min_tokens", f"must be >= 1, got {self.min_tokens}")
        if not 0.0 <= self.max_changed <= 1.0:
            raise ConfigurationError(
                "max_changed", f"must be between 0 and 1, got {self.max_changed!r}"
            )
        object.__setattr__(self, "calibration", dict(self.calibration))

    def prefix_aborts(self, prefix_scores: Sequence[float]) -> int | None:
        """Tokens after which this rule stops an answer whose prefix scores (after 1, 2, ...
        tokens) are given, or None if it lets the answer finish."""
        for k in range(self.min_tokens, len(prefix_scores) + 1):
            if prefix_scores[k - 1] < self.bound:
                return k
        return None

    def check(self, acc: IncrementalSignals) -> str | None:
        if acc.count < self.min_tokens:
            return None
        score = self.policy.score(acc.snapshot())
        if score >= self.bound:
            return None
        return self._reason(acc.count, score)

    def _reason(self, tokens: int, score: float) -> str:
        return (
            f"unsure: score {score:.3g} on the first {tokens} tokens is below the early-exit "
            f"bound {self.bound:.3g} (threshold {self.policy.threshold:g}); early abort after "
            f"{tokens} SLM tokens (learned rule, fitted to change at most "
            f"{self.max_changed:.1%} of decisions)"
        )

    def decision(self, partial: Generation) -> Decision:
        return _stopped(
            self.policy,
            partial,
            _policy_name(self.policy),
            lambda _signals, score, tokens: self._reason(tokens, score),
        )

    # -- fitting --------------------------------------------------------------------------

    @classmethod
    def fit(
        cls,
        policy: Policy,
        prefixes: Sequence[Sequence[Signals]],
        *,
        max_changed: float = 0.01,
        safety: float = 0.5,
        min_tokens: Sequence[int] = (1, 2, 3, 4, 6, 8),
    ) -> EarlyExitRule:
        """Choose `bound` and `min_tokens` on calibration answers.

        `prefixes[i]` holds the Signals of answer i after 1, 2, ..., n tokens
        (the last one is the whole answer). A final decision changes when the
        rule stops an answer the policy would keep; `bound` is the largest
        value that changes at most `safety * max_changed` of the calibration
        answers' decisions, and `min_tokens` (from the candidates) the one
        that then saves the most SLM tokens on the escalated answers.

        `safety` (default 0.5) leaves room for sampling noise: on the
        committed traces a bound fitted to change 1% of 640 calibration
        answers changed 0.5-1.9% of the held-out ones, and one fitted to
        0.5% changed 0.3-0.9% (three random splits; `bench/early_escalation.py`).
        """
        if not prefixes:
            raise ConfigurationError("prefixes", "fitting needs at least one answer")
        if not 0.0 <= max_changed <= 1.0:
            raise ConfigurationError("max_changed", f"must be between 0 and 1, got {max_changed}")
        if not 0.0 < safety <= 1.0:
            raise ConfigurationError("safety", f"must be in (0, 1], got {safety}")
        scored = [[policy.score(s) for s in answer] for answer in prefixes if answer]
        kept = [policy.decide(answer[-1]).route == "slm" for answer in prefixes if answer]
        allowed = int(math.floor(safety * max_changed * len(scored) + 1e-9))
        best: EarlyExitRule | None = None
        best_saved = -1.0
        for m in min_tokens:
            lows = sorted(
                min(scores[m - 1 :])
                for scores, keep in zip(scored, kept)
                if keep and len(scores) >= m
            )
            bound = lows[allowed] if allowed < len(lows) else policy.threshold
            rule = cls(policy, float(bound), m, max_changed)
            stats = rule._measure(scored, kept)
            if stats["tokens_saved"] > best_saved:
                best, best_saved = replace(rule, calibration=stats), stats["tokens_saved"]
        assert best is not None
        return best

    def _measure(self, scored: Sequence[Sequence[float]], kept: Sequence[bool]) -> dict[str, float]:
        changed = saved = total = escalated = aborted = 0
        for scores, keep in zip(scored, kept):
            at = self.prefix_aborts(scores)
            if keep:
                changed += at is not None
                continue
            escalated += 1
            total += len(scores)
            if at is not None:
                aborted += 1
                saved += len(scores) - at
        n = len(scored)
        return {
            "answers": float(n),
            "escalated": float(escalated),
            "changed_share": changed / n if n else 0.0,
            "aborted_share_of_escalated": aborted / escalated if escalated else 0.0,
            "tokens_saved": float(saved),
            "tokens_saved_share_of_escalated": saved / total if total else 0.0,
        }

    def evaluate(self, prefixes: Sequence[Sequence[Signals]]) -> dict[str, float]:
        """What the rule does on other (held-out) answers: the statistics of `calibration`."""
        scored = [[self.policy.score(s) for s in answer] for answer in prefixes if answer]
        kept = [self.policy.decide(answer[-1]).route == "slm" for answer in prefixes if answer]
        return self._measure(scored, kept)

    # -- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": "early_exit",
            "policy": self.policy.to_dict(),
            "bound": self.bound,
            "min_tokens": self.min_tokens,
            "max_changed": self.max_changed,
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EarlyExitRule:
        if data.get("type") != "early_exit":
            raise ConfigurationError("type", f"not an early-exit rule: {data.get('type')!r}")
        return cls(
            policy_from_dict(data["policy"]),
            float(data["bound"]),
            int(data.get("min_tokens", 1)),
            float(data.get("max_changed", 0.01)),
            dict(data.get("calibration", {})),
        )


def save_early_exit(rule: EarlyExitRule, path: str | Path) -> None:
    Path(path).write_text(json.dumps(rule.to_dict(), indent=2) + "\n")


def load_early_exit(path: str | Path) -> EarlyExitRule:
    return EarlyExitRule.from_dict(json.loads(Path(path).read_text()))


def prefix_signals(
    token_logprobs: Sequence[float], top_logprobs: Sequence[Sequence[float]]
) -> list[Signals]:
    """The Signals of an answer after 1, 2, ..., n tokens (for fitting and replay)."""
    import numpy as np

    acc = IncrementalSignals()
    out = []
    for i, lp in enumerate(token_logprobs):
        row = np.asarray([top_logprobs[i]] if i < len(top_logprobs) else [[lp]], dtype=float)
        acc.push(np.asarray([lp], dtype=float), row)
        out.append(acc.snapshot())
    return out


# -- the checks the Router runs ----------------------------------------------------------------


@dataclass(frozen=True)
class Checks:
    """Every abort check the router runs, in order (the exact one first)."""

    checks: tuple[AbortCheck, ...]

    def check(self, acc: IncrementalSignals) -> tuple[int, str] | None:
        for i, one in enumerate(self.checks):
            reason = one.check(acc)
            if reason is not None:
                return i, reason
        return None


def checks_for(policy: Policy, early_abort: bool | EarlyExitRule) -> Checks | None:
    """The Router's checks for `Router(early_abort=...)`; None when there is nothing to check."""
    if early_abort is False:
        return None
    found: list[AbortCheck] = []
    exact = MonotoneBounds.of(policy)
    if exact is not None:
        found.append(exact)
    if isinstance(early_abort, EarlyExitRule):
        if early_abort.policy.to_dict() != policy.to_dict():
            raise ConfigurationError(
                "early_abort",
                "the early-exit rule was fitted for another policy than the router's "
                f"({early_abort.policy.to_dict().get('type')} with threshold "
                f"{early_abort.policy.threshold:g}); fit it for this policy",
            )
        found.append(early_abort)
    elif early_abort is not True:
        raise ConfigurationError(
            "early_abort", f"must be True, False or an EarlyExitRule, got {early_abort!r}"
        )
    return Checks(tuple(found)) if found else None


@dataclass
class _Watch:
    """One SLM stream under watch: its chunks, running signals and whether it was stopped."""

    checks: Checks
    on_tokens: Callable[[IncrementalSignals], None] | None = None
    acc: IncrementalSignals = field(default_factory=IncrementalSignals)
    chunks: list[TokenChunk] = field(default_factory=list)
    stopped_by: int | None = None
    broken: bool = False  # unusable logprobs: leave the verdict to the full answer

    def feed(self, chunk: TokenChunk) -> bool:
        """Add a chunk; True when the answer must be stopped now."""
        self.chunks.append(chunk)
        if self.broken or not len(chunk.token_logprobs):
            return False
        try:
            self.acc.push_chunk(chunk)
        except ValueError:
            self.broken = True
            return False
        if self.on_tokens is not None:
            self.on_tokens(self.acc)
        found = self.checks.check(self.acc)
        if found is None:
            return False
        self.stopped_by = found[0]
        return True

    def generation(
        self, slm: SLMBackend, messages: Sequence[Message], started: float
    ) -> Generation:
        gen = accumulate(
            self.chunks, model=slm.model, latency_s=time.perf_counter() - started, has_logprobs=True
        )
        if self.stopped_by is None and gen.finish_reason is None:
            # Served backends raise this themselves; this guards any other SLM backend.
            raise IncompleteResponseError(
                f"model {slm.model!r} ended its stream after {len(gen.token_logprobs)} "
                f"token(s) without a finish reason: the answer is incomplete",
                model=slm.model,
                tokens_received=len(gen.token_logprobs),
            )
        if gen.text and len(gen.token_logprobs) == 0:
            raise MissingLogprobsError(
                f"model {slm.model!r} streamed its answer without log-probabilities",
                model=slm.model,
            )
        if self.stopped_by is None:
            return gen
        # A stream stopped early never sends its closing usage: count the tokens received,
        # and the prompt's tokens where the backend can count them (llama.cpp); elsewhere
        # (Ollama, OpenAI-compatible servers) the prompt's count is unknown, not 0.
        usage = Usage.reported(None, len(gen.token_logprobs))
        if gen.usage.prompt_unknown_calls == 0:
            usage = Usage(gen.usage.prompt_tokens, len(gen.token_logprobs))
        tokenize = getattr(slm, "tokenize_prompt", None)
        if usage.prompt_unknown_calls and callable(tokenize):
            usage = Usage(len(tokenize(messages)), len(gen.token_logprobs))
        return replace(gen, finish_reason=ABORTED, usage=usage)


def generate_watched(
    slm: SLMBackend,
    messages: Sequence[Message],
    checks: Checks,
    *,
    stop: Sequence[str] | None,
    max_tokens: int | None,
) -> Generation:
    """The SLM's answer from its stream, stopped (and the stream closed) at the first abort."""
    started = time.perf_counter()
    watch = _Watch(checks)
    stream: Iterator[TokenChunk] = slm.stream(messages, stop=stop, max_tokens=max_tokens)
    try:
        for chunk in stream:
            if watch.feed(chunk):
                break
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return watch.generation(slm, messages, started)


async def agenerate_watched(
    slm: SLMBackend,
    messages: Sequence[Message],
    checks: Checks,
    *,
    stop: Sequence[str] | None,
    max_tokens: int | None,
    on_tokens: Callable[[IncrementalSignals], None] | None = None,
) -> Generation:
    """Async `generate_watched`: closing the stream cancels the request in flight.

    `on_tokens` sees the running signals after every chunk with tokens (hedging uses it).
    """
    started = time.perf_counter()
    watch = _Watch(checks, on_tokens)
    stream: AsyncIterator[TokenChunk] = slm.astream(messages, stop=stop, max_tokens=max_tokens)
    try:
        async for chunk in stream:
            if watch.feed(chunk):
                break
    finally:
        await aclose_quietly(stream)
    return watch.generation(slm, messages, started)


def abort_decision(checks: Checks, partial: Generation) -> Decision:
    """The Decision of an answer stopped early (from the partial answer, recomputed)."""
    for one in checks.checks:
        if isinstance(one, MonotoneBounds) and one._violated(compute_signals(partial).as_dict()):
            return one.decision(partial)
    return checks.checks[-1].decision(partial)


__all__ = [
    "ABORTED",
    "Checks",
    "WORSENING_SIDES",
    "AbortCheck",
    "EarlyExitRule",
    "MonotoneBounds",
    "abort_decision",
    "checks_for",
    "load_early_exit",
    "prefix_signals",
    "save_early_exit",
]

"""Plain data passed between the router's parts: no framework types, no behaviour."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from confidence_router.errors import InvalidInputError

Role = Literal["system", "user", "assistant", "tool"]
Route = Literal["slm", "llm"]
FloatArray = npt.NDArray[np.float64]

_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    """One chat turn. `role` is one of system, user, assistant, tool."""

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise InvalidInputError(f"Message.role must be one of {_ROLES}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise InvalidInputError(
                f"Message.content must be a str, got {type(self.content).__name__}"
            )


@dataclass(frozen=True)
class Usage:
    """Tokens a model call (or a sum of calls) consumed.

    Unknown is not zero: a server may not report a count (llama-cpp-python's
    server sends no usage in streams; an Ollama stream stopped early never
    reports its prompt). Such a call adds nothing to `prompt_tokens` (or
    `completion_tokens`) and 1 to `prompt_unknown_calls` (or
    `completion_unknown_calls`), so a sum says how many calls it leaves out:
    with any unknown call, the counts (and every cost made from them) are a
    lower bound. `exact` says whether there is none.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_unknown_calls: int = 0
    completion_unknown_calls: int = 0

    @classmethod
    def reported(cls, prompt_tokens: int | None, completion_tokens: int | None) -> Usage:
        """One call's usage from what a server reported; None marks a count it left out."""
        return cls(
            prompt_tokens or 0,
            completion_tokens or 0,
            int(prompt_tokens is None),
            int(completion_tokens is None),
        )

    @property
    def exact(self) -> bool:
        """Every call's counts are known (none left out)."""
        return not (self.prompt_unknown_calls or self.completion_unknown_calls)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.prompt_unknown_calls + other.prompt_unknown_calls,
            self.completion_unknown_calls + other.completion_unknown_calls,
        )

    def counts(self) -> dict[str, int | None]:
        """`prompt_tokens` and `completion_tokens` as records write them: unknown is `None`.

        A count some call left out is `None`, never 0 (a partial sum would
        pass for the whole); trace records and `to_dict` share this.
        """
        return {
            "prompt_tokens": None if self.prompt_unknown_calls else self.prompt_tokens,
            "completion_tokens": None if self.completion_unknown_calls else self.completion_tokens,
        }

    def to_dict(self) -> dict[str, int | None]:
        """Plain JSON: a count some call left out is `None`, never 0.

        With unknown calls, `*_known` holds the sum of the counts that were
        reported and `*_unknown_calls` how many calls it leaves out.
        """
        data = self.counts()
        if self.prompt_unknown_calls:
            data["prompt_tokens_known"] = self.prompt_tokens
            data["prompt_unknown_calls"] = self.prompt_unknown_calls
        if self.completion_unknown_calls:
            data["completion_tokens_known"] = self.completion_tokens
            data["completion_unknown_calls"] = self.completion_unknown_calls
        return data

    def describe(self) -> str:
        """`"31 prompt + 3 completion tokens"`; unknown counts say so."""
        parts = []
        for name, known, unknown in (
            ("prompt", self.prompt_tokens, self.prompt_unknown_calls),
            ("completion", self.completion_tokens, self.completion_unknown_calls),
        ):
            if not unknown:
                parts.append(f"{known} {name}")
            elif known:
                parts.append(f">= {known} {name} ({unknown} call(s) unreported)")
            else:
                parts.append(f"unknown {name}")
        return " + ".join(parts) + " tokens"


def _empty_logprobs() -> FloatArray:
    return np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, eq=False)
class Generation:
    """What a model produced, with the per-token evidence the router scores.

    `token_logprobs[i]` is the natural-log probability of the i-th generated
    token; `top_logprobs[i, j]` that of its j-th most likely alternative
    (rows padded with `-inf` when fewer than k alternatives were reported).
    `has_logprobs` is False for models that report none (most fallbacks).
    """

    text: str
    model: str
    token_logprobs: FloatArray = field(default_factory=_empty_logprobs)
    top_logprobs: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float64))
    tokens: tuple[str, ...] = ()
    top_tokens: tuple[tuple[str, ...], ...] = ()
    usage: Usage = Usage()
    latency_s: float = 0.0
    finish_reason: str | None = None
    has_logprobs: bool = False

    @classmethod
    def without_logprobs(
        cls,
        text: str,
        model: str,
        *,
        usage: Usage = Usage(),
        latency_s: float = 0.0,
        finish_reason: str | None = "stop",
    ) -> Generation:
        """A generation from a model that exposes no log-probabilities."""
        return cls(
            text=text,
            model=model,
            usage=usage,
            latency_s=latency_s,
            finish_reason=finish_reason,
            has_logprobs=False,
        )

    def __repr__(self) -> str:
        return (
            f"Generation(model={self.model!r}, tokens={len(self.token_logprobs)}, "
            f"finish_reason={self.finish_reason!r}, has_logprobs={self.has_logprobs})"
        )


@dataclass(frozen=True, eq=False)
class TokenChunk:
    """A piece of a streamed generation with the logprobs of its own tokens."""

    text: str
    token_logprobs: FloatArray = field(default_factory=_empty_logprobs)
    top_logprobs: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float64))
    tokens: tuple[str, ...] = ()
    top_tokens: tuple[tuple[str, ...], ...] = ()
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass(frozen=True, eq=False)
class ConsistencyCheck:
    """The samples drawn for self-consistency and how far they agreed with the answer.

    `agreement`: share of samples whose SQuAD-normalised text equals the
    answer's; `mean_f1`: their mean token F1 with it; `usage`: the
    samples' tokens, all extra SLM work.
    """

    samples: tuple[Generation, ...]
    agreeing: int
    agreement: float
    mean_f1: float
    keep: bool
    usage: Usage = Usage()
    policy_route: Route | None = None  # what the policy alone decided

    @property
    def changed(self) -> bool:
        """The samples overturned the policy's decision."""
        return self.policy_route is not None and self.policy_route != (
            "slm" if self.keep else "llm"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "k": len(self.samples),
            "agreeing": self.agreeing,
            "agreement": self.agreement,
            "mean_f1": self.mean_f1,
            "keep": self.keep,
            "policy_route": self.policy_route,
            **self.usage.counts(),  # a sample's unreported count: None, never 0
            "samples": [s.text for s in self.samples],
        }


@dataclass(frozen=True)
class Decision:
    """Which model answers and why, in one line a person can read."""

    route: Route
    score: float | None  # None when no score could be computed (the SLM failed)
    threshold: float
    signals: Mapping[str, float]
    reason: str
    policy: str = ""
    # Set when self-consistency samples were drawn (`Router(consistency=...)`).
    consistency: ConsistencyCheck | None = None

    @property
    def escalated(self) -> bool:
        return self.route == "llm"

    def to_dict(self) -> dict[str, object]:
        return {
            "route": self.route,
            "score": self.score,
            "threshold": self.threshold,
            "signals": dict(self.signals),
            "reason": self.reason,
            "policy": self.policy,
            **({"consistency": self.consistency.to_dict()} if self.consistency else {}),
        }


@dataclass(frozen=True, eq=False)
class RoutedResult:
    """The final answer of one routed query and everything that led to it."""

    text: str
    decision: Decision
    slm: Generation | None
    fallback: Generation | None
    latency_s: float
    usage_by_model: Mapping[str, Usage]
    cost: float
    slm_error: str | None = None
    # Set when the fallback failed and the SLM's answer was returned instead
    # (`Router(on_fallback_error="return_slm")`): what the fallback raised.
    fallback_error: str | None = None

    @property
    def route(self) -> Route:
        return self.decision.route

    @property
    def answered_by(self) -> Generation:
        """The generation whose text is the answer."""
        chosen = self.fallback if self.decision.route == "llm" else self.slm
        assert chosen is not None
        return chosen

    @property
    def usage(self) -> Usage:
        total = Usage()
        for usage in self.usage_by_model.values():
            total = total + usage
        return total

    @property
    def finish_reason(self) -> str | None:
        return self.answered_by.finish_reason

    @property
    def models(self) -> dict[str, str | None]:
        """Which models ran and which one answered."""
        return {
            "slm": self.slm.model if self.slm is not None else None,
            "llm": self.fallback.model if self.fallback is not None else None,
            "answered_by": self.answered_by.model,
        }

    def to_dict(self) -> dict[str, object]:
        """Routing metadata in plain JSON types, as the faces expose it."""
        data = self.decision.to_dict()
        data["models"] = self.models
        data["latency_s"] = self.latency_s
        data["cost"] = self.cost
        data["usage"] = {m: u.to_dict() for m, u in self.usage_by_model.items()}
        if not self.usage.exact:  # unknown is not zero: the cost leaves those tokens out
            data["cost_exact"] = False
        if self.slm_error is not None:
            data["slm_error"] = self.slm_error
        if self.fallback_error is not None:
            data["fallback_error"] = self.fallback_error
        return data


@dataclass(frozen=True, eq=False)
class RouteChunk:
    """One piece of a routed stream.

    The first chunk carries the `decision` and `models` (which models ran
    and which one answers, as in `RoutedResult.models`: both are known
    before any text is sent); the last carries `result` (the same
    RoutedResult `invoke` would return) and `done=True`.
    """

    text: str
    route: Route
    decision: Decision | None = None
    result: RoutedResult | None = None
    models: Mapping[str, str | None] | None = None
    token_logprobs: FloatArray = field(default_factory=_empty_logprobs)
    tokens: tuple[str, ...] = ()
    done: bool = False


MessagesLike = str | Sequence[Message]


def as_messages(messages: MessagesLike) -> list[Message]:
    """Accept a plain prompt string or a sequence of Messages."""
    if isinstance(messages, str):
        return [Message("user", messages)]
    result = list(messages)
    for item in result:
        if not isinstance(item, Message):
            raise InvalidInputError(
                f"messages must be a str or a sequence of Message, got an item of type "
                f"{type(item).__name__}"
            )
    return result


# A cascade of N stages: what each stage did, and the whole query's record.
Outcome = Literal["kept", "escalated", "answered"]


@dataclass(frozen=True, eq=False)
class StageGeneration(Generation):
    """The answer of the rest of a cascade, as the stage below sees its fallback's answer.

    `routed` is the inner stage's own `RoutedResult` (which may hold
    another StageGeneration as its fallback), so the provenance of every stage
    above survives inside the two-model router's result.
    """

    routed: RoutedResult | None = None


@dataclass(frozen=True, eq=False)
class StageRecord:
    """One stage a query reached: which model, what its policy said, what it cost.

    `outcome`: `"kept"` (a small model's answer was kept), `"escalated"`
    (passed up, with the reason), `"answered"` (the last stage, the
    fallback, answered). `score`/`threshold` are None for the fallback
    stage (it is not scored) and `score` is None when the stage's model
    failed. `latency_s` is the time spent at this stage, excluding the
    stages above it (the stages' latencies sum to the query's).
    """

    stage: int  # 1-based position in the ladder
    model: str
    outcome: Outcome
    score: float | None
    threshold: float | None
    reason: str
    usage: Usage
    latency_s: float
    cost: float
    decision: Decision | None = None  # None for the fallback stage
    generation: Generation | None = None  # None when the stage's model failed
    error: str | None = None  # the stage's model failure, if any

    @property
    def route(self) -> Literal["slm", "llm"]:
        """`"slm"`: this stage's answer is the answer; `"llm"`: it went up."""
        return "llm" if self.outcome == "escalated" else "slm"

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "stage": self.stage,
            "model": self.model,
            "outcome": self.outcome,
            "score": self.score,
            "threshold": self.threshold,
            "reason": self.reason,
            "usage": self.usage.counts(),  # unreported: None (and usage_exact False)
            "latency_s": self.latency_s,
            "cost": self.cost,
        }
        if not self.usage.exact:
            data["usage_exact"] = False
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True, eq=False)
class CascadeResult(RoutedResult):
    """A `RoutedResult` of a cascade, with every stage the query climbed.

    As a RoutedResult it reads like the two-model router's: `route` is
    `"slm"` when any small model's answer was kept, `"llm"` when the
    last stage (the fallback) answered; `decision` is the deciding stage's
    own Decision (the stage that kept its answer, or the last small model,
    which escalated to the fallback); `slm` is that stage's Generation;
    `usage_by_model` and `cost` cover every stage. `stages` lists each
    stage tried, in order.
    """

    stages: tuple[StageRecord, ...] = ()

    @property
    def answered_stage(self) -> int:
        """1-based position of the stage whose answer this is."""
        return self.stages[-1].stage if self.stages else 1

    @property
    def answered_model(self) -> str:
        return self.stages[-1].model if self.stages else self.answered_by.model

    def to_dict(self) -> dict[str, object]:
        data = super().to_dict()
        data["answered_stage"] = self.answered_stage
        data["stages"] = [s.to_dict() for s in self.stages]
        return data

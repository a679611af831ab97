"""ConfidenceRouterChat: the router as a LangChain chat model."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import (
    AsyncCallbackManagerForLLMRun,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.language_models.base import LangSmithParams
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, ValidationError

from confidence_router import (
    Cascade,
    CascadeStats,
    ConfigurationError,
    InvalidInputError,
    LedgerSnapshot,
    OllamaSLM,
    Price,
    Router,
    Stage,
)
from confidence_router.backends.spec import is_served_spec, parse_slm_spec, slm_from_spec
from confidence_router.policies.defaults import choose_policy, policy_label
from confidence_router.routing.cascade import as_stage, with_default_policy

from ._escalator import ChatModelEscalator, fallback_config
from ._messages import to_core
from ._results import chat_result, stream_chunk
from ._tracing import achild_manager, atrace_decision, child_manager, trace_decision

# Per-call keyword arguments the router understands (`stop` has its own slot).
_CALL_KWARGS = frozenset({"max_tokens"})
# Settings that only shape an SLM the face builds itself from `slm_model`.
_BUILD_ONLY = ("base_url", "api_key", "prompt_format", "top_logprobs", "timeout")


def _configuration_error(exc: ValidationError, known: Sequence[str]) -> ConfigurationError:
    """One typed error naming the offending field(s), with a suggestion for typos."""
    problems = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"]) or "arguments"
        if error["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((name, f"unknown argument{hint}"))
        elif error["type"] == "missing":
            problems.append((name, "is required"))
        else:
            problems.append((name, f"{error['msg']} (got {error.get('input')!r})"))
    first = problems[0][0]
    message = "; ".join(f"{name}: {text}" if name != first else text for name, text in problems)
    return ConfigurationError(first, message)


class ConfidenceRouterChat(BaseChatModel):
    r"""A chat model that answers with a small model and escalates only when unsure.

    The small model (SLM) answers first; its own token log-probabilities give
    a confidence score; when the policy finds it unsure, the question goes to
    `fallback`, which can be any LangChain chat model (ChatOpenAI,
    ChatAnthropic, ChatOllama, ...). The decision is made before any token
    reaches the caller, so a stream is never switched half-way. All routing
    logic lives in `Router`; this class converts
    messages and results.

    ???+ note "Setup"

        ```bash
        pip install "confidence-router[langchain]" langchain-ollama
        ollama pull smollm2:135m   # the SLM: needs Ollama >= 0.12.11 for logprobs
        ```

        Or, with no server at all, the embedded llama.cpp SLM:
        `pip install "confidence-router[langchain,local]"` and
        `slm=LlamaCppSLM.smollm2()`.

    Key init args — routing:
        slm: SLMBackend | None
            Any core SLM backend (`OllamaSLM`, `LlamaCppSLM`). Give this or `slm_model`.
        slm_model: str | None
            An Ollama model name; the face builds an `OllamaSLM` for it. Or a
            spec: `"openai:MODEL@http://host:8000/v1"` builds an
            `OpenAICompatibleSLM` (vLLM, SGLang, llama-server, Ollama's /v1).
        base_url: str | None
            Ollama server of `slm_model` (default: `OLLAMA_HOST`, else
            `http://127.0.0.1:11434`). Also `prompt_format`, `top_logprobs`,
            `timeout` shape that built SLM only.
        fallback: BaseChatModel
            The large model that answers escalated questions.
        policy: Policy | str | None
            A core policy (`ThresholdPolicy`, `LogisticPolicy`), or the path of
            a policy file (`confidence-router calibrate --out policy.json`);
            default `ThresholdPolicy()`.
        trace: str | TraceRecorder | None
            Record one JSON trace line per answered query (signals and ids
            only unless `TraceRecorder(store_text=True)`).
        shadow_rate: float
            Share of queries audited: a kept SLM answer is also sent to the
            fallback in the background and the agreement counted in
            `stats.kept_precision` (default 0). `llm.router.close()` cancels
            the checks still running.
        shadow_judge: callable | None
            `judge(messages, slm_answer, fallback_answer) -> bool` instead of token F1.
        strict: bool
            When the SLM fails (unreachable, timeout, no logprobs): `False`
            escalates and says why in the routing record, `True` raises.
        slm_price, fallback_price: Price | None
            Per-million-token prices, for the cost figures in `stats`.
        stages: list | None
            A ladder: more small models between `slm` and `fallback`, lowest
            first, each an SLM backend (the default policy for its model, as
            for `slm`), an `(slm, policy)` pair or a `confidence_router.Stage`
            (its own policy, price, strict...).
            The face then runs a `confidence_router.Cascade`: a query climbs
            until a stage keeps its answer. `slm` and its options (`policy`,
            `slm_price`, `strict`, `early_abort`, `hedge`, `consistency`) are
            the first stage; `trace` and `shadow_rate` apply to a pair only.

    Key init args — completion params:
        temperature: float | None
            Sampling temperature of the built SLM (default 0, greedy).
        max_tokens: int | None
            Answer length limit of the SLM (the fallback keeps its own limit).
        stop: list[str] | None
            Default stop sequences, passed to both models.
        max_retries: int
            Extra attempts of a failed (non-streamed) fallback call.
        fallback_timeout: float | None
            Seconds the whole fallback call may take before `FallbackTimeoutError`
            (default: rely on the fallback's own client timeout).
        on_fallback_error: "raise" | "return_slm"
            `"return_slm"` answers with the SLM's own (unsure) answer when the
            fallback fails, flagged in `routing["fallback_error"]` and the reason.

    Unknown arguments are rejected: a typo fails at construction with a
    `ConfigurationError` naming the field.

    Raises:
        ConfigurationError: at construction, an unknown argument or a setting out
            of range (the message names it), both or neither of `slm` and
            `slm_model`, or an option that does not apply (`base_url` with `slm=`,
            `trace` with `stages`, ...).
        InvalidInputError: from a call, nothing to answer (no message, or only
            empty ones), content the SLM cannot read (an image block, a message
            type it cannot route) or a per-call argument other than `stop` and
            `max_tokens`.
        SLMError: from a call with `strict=True`, the typed failure of the SLM
            (otherwise the query escalates and the routing reason says why).
        FallbackError: from a call, the fallback failed (`FallbackTimeoutError`
            past `fallback_timeout`), unless `on_fallback_error="return_slm"`
            could answer with the SLM's own answer.

    Instantiate:
        ```python
        from langchain_ollama import ChatOllama

        from confidence_router import Price
        from langchain_confidence_router import ConfidenceRouterChat

        llm = ConfidenceRouterChat(
            slm_model="smollm2:135m",  # answers first, scored by its logprobs
            fallback=ChatOllama(model="gemma3:270m", num_predict=32),  # any chat model
            max_tokens=32,
            fallback_price=Price(input_per_million=0.15, output_per_million=0.60),
        )
        ```

    Invoke:
        ```python
        messages = [
            ("system", "Answer in one short sentence."),
            ("human", "What is the capital of France?"),
        ]
        msg = llm.invoke(messages)
        print(msg.text)
        print(msg.response_metadata["routing"]["route"])  # "slm" or "llm"
        print(msg.response_metadata["routing"]["reason"])
        ```

        ```text
        The capital of France is Paris.
        slm
        confident: length 7 <= 64; mean_entropy 0.434 <= 1; min_logprob -0.88 >= -3 (score 0.566 ...
        ```

    Stream:
        ```python
        for chunk in llm.stream(messages):
            routing = chunk.response_metadata.get("routing", {})
            if "route" in routing:  # the first chunk: the decision, before any text
                print(f"[{routing['route']}]", end=" ")
            print(chunk.text, end="")
        ```

        ```text
        [slm] The capital of France is Paris.
        ```

    Async:
        ```python
        msg = await llm.ainvoke(messages)
        async for chunk in llm.astream(messages):
            print(chunk.text, end="")
        print()
        answers = await llm.abatch([messages, "Invent a long, strange word."])
        print([a.response_metadata["routing"]["route"] for a in answers])
        ```

    Routing record (`response_metadata["routing"]`):
        `route` ("slm" | "llm"), `score`, `threshold`, `signals`, `reason`,
        `policy`, `models` (`slm`, `llm`, `answered_by`), `latency_s`, `cost`,
        and `slm_error` when the SLM failed. `response_metadata["model_name"]`
        is the model that answered. In a stream the decision (route, score,
        threshold, signals, reason, policy) is on the first chunk and the rest
        on the last, so the merged message equals `invoke`'s.

    Ladders (`stages=`):
        The routing record also lists every stage the query reached,
        `routing["stages"]` (`stage`, `model`, `outcome` "kept" | "escalated" |
        "answered", `score`, `threshold`, `reason`, `usage`, `latency_s`,
        `cost`), and `routing["answered_stage"]` (1-based); `route` is "slm"
        when any small model's answer was kept, and the decision is the
        deciding stage's. `stats` is the ladder's `CascadeStats`
        (`answered_by_stage`, `top_calls_avoided`, ...) and `model_name`
        names the ladder, e.g. `"smollm2-135m -> gemma3-270m ->
        qwen2.5-coder-1.5b"`. In a stream the stages are on the last chunk.

    Token usage:
        `usage_metadata` sums the tokens actually spent: the SLM's, plus the
        fallback's when it was called (with `stages`, every model that ran,
        each once). Running totals and savings:

        ```python
        print(llm.stats.queries, llm.stats.escalation_rate, llm.stats.saved)
        ```

    Logprobs:
        When the SLM answered, `response_metadata["logprobs"]` holds its tokens
        in OpenAI's shape: `{"content": [{"token", "logprob", "bytes",
        "top_logprobs": [...]}]}`.

    Tracing:
        The decision is in `response_metadata["routing"]` and
        `ChatGeneration.generation_info["routing"]` (what `on_llm_end` and
        `astream_events`' `on_chat_model_end` see). On non-streamed calls the
        decision is also a child run named `routing_decision`, tagged
        `route:slm` or `route:llm`, and an escalated fallback call runs as a
        child run tagged `route:llm`. (A run's own tags are fixed when it
        starts, before the route is known; LangChain gives `_stream` no run
        manager, so streams carry the decision on their first chunk instead,
        and a streamed fallback call is kept out of the chain's callbacks so
        its tokens do not appear twice in `astream_events`.) LangChain
        counts usage per run, so `get_usage_metadata_callback()` sees an
        escalated call's fallback tokens twice (the fallback's own run and
        the router's sum); `stats.tokens_by_model` is exact.

    Tool calling and structured output:
        The SLM's log-probabilities cannot score a tool call, so `bind_tools`
        and `with_structured_output` return the *fallback's* own runnable:
        those calls always go to the fallback and bypass the router and its
        `stats`.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    slm: Any = Field(default=None, exclude=True)
    """Any core SLM backend (OllamaSLM, LlamaCppSLM). Give this or `slm_model`."""
    slm_model: str | None = None
    """An Ollama model name, or a spec `ollama:MODEL[@URL]` / `openai:MODEL[@URL]`
    (an OpenAI-compatible server: vLLM, SGLang, llama-server...); the face builds the SLM."""
    base_url: str | None = None
    """Server of `slm_model` when the spec has no `@URL` (Ollama: default OLLAMA_HOST;
    `openai:`: default OPENAI_BASE_URL)."""
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)
    """API key of an `openai:` SLM built from `slm_model` (default OPENAI_API_KEY)."""
    prompt_format: Literal["chat", "completion"] = "chat"
    """How the built SLM is prompted: chat endpoint, or raw completion (base models)."""
    top_logprobs: int = Field(default=5, ge=0, le=20)
    """Alternatives per token the built SLM reports (for entropy and margins)."""
    fallback: BaseChatModel = Field(exclude=True, repr=False)  # its repr may show a key
    """The large model: any LangChain chat model."""
    policy: Any = Field(default=None, exclude=True)
    """A core policy or the path of a policy file; default `ThresholdPolicy()`."""
    trace: Any = Field(default=None, exclude=True)
    """A path or `TraceRecorder`: one JSON trace line per answered query."""
    shadow_rate: float = Field(default=0.0, ge=0, le=1)
    """Share of queries audited by a background fallback call (kept-answer precision)."""
    shadow_judge: Any = Field(default=None, exclude=True)
    """`judge(messages, slm_answer, fallback_answer) -> bool` for shadow checks."""
    strict: bool = Field(default=False, strict=True)
    """Raise when the SLM fails instead of escalating."""
    slm_price: Price | None = None
    fallback_price: Price | None = None
    stages: list[Any] | None = Field(default=None, exclude=True)
    """A ladder: more small models between `slm` and `fallback`, lowest first (SLM
    backends, `(slm, policy)` pairs or `confidence_router.Stage`); runs a `Cascade`."""
    temperature: float | None = Field(default=None, ge=0)
    """Sampling temperature of the built SLM (default 0, greedy)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Answer length limit of the SLM."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds the built SLM may take before it counts as failed (default 60)."""
    stop: list[str] | None = None
    """Default stop sequences for both models (a per-call `stop` replaces them)."""
    max_retries: int = Field(default=0, ge=0)
    """Extra attempts of a failed non-streamed fallback call."""
    fallback_timeout: float | None = Field(default=None, gt=0)
    """Seconds the whole fallback call may take (default: the fallback's own timeout)."""
    on_fallback_error: Literal["raise", "return_slm"] = "raise"
    """A failed fallback raises, or (`"return_slm"`) gives the SLM's answer, flagged."""
    early_abort: Any = Field(default=None, exclude=True)
    """Stop the SLM mid-answer once it cannot pass any more, and escalate at once: the
    core Router's `early_abort` (None = on unless `return_slm`; True, False, or an
    `EarlyExitRule`). The routing reason says after how many tokens."""
    hedge: Any = Field(default=None, exclude=True)
    """Opt-in, async calls only: a core `Hedge` starts the fallback in parallel when the
    SLM's prefix score sits in a grey zone (the core Router's `hedge`)."""
    consistency: Any = Field(default=None, exclude=True)
    """Opt-in: a core `SelfConsistency` draws SLM samples when the score lies in its band
    and lets their agreement decide (the core Router's `consistency`; its extra tokens
    are in the usage, cost and ledger)."""
    streaming: bool = False
    """Make `invoke` use the streaming path (LangChain's standard flag)."""

    _router: Router = PrivateAttr()  # with stages: the first stage's settings
    _cascade: Cascade | None = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        try:
            super().__init__(**kwargs)
        except ValidationError as exc:
            raise _configuration_error(exc, list(type(self).model_fields)) from exc
        if self.stages is not None:
            self._check_ladder()
        self._router = self._build_router()
        if self.stages is not None:
            self._cascade = self._build_cascade(self._router)

    def _check_ladder(self) -> None:
        for name in ("trace", "shadow_judge"):
            if getattr(self, name) is not None:
                raise ConfigurationError(
                    name, "applies to a two-model router only; leave it out with stages="
                )
        if self.shadow_rate:
            raise ConfigurationError(
                "shadow_rate", "applies to a two-model router only; leave it out with stages="
            )
        if not self.stages:
            raise ConfigurationError(
                "stages", "give at least one more small model, or leave stages out"
            )

    def _build_cascade(self, first: Router) -> Cascade:
        """The ladder: the first SLM as configured, then `stages`, then the fallback;
        a stage without a policy gets the default for its model, as `slm` does."""
        rest = [
            with_default_policy(as_stage(item, f"stages[{i}]"))
            for i, item in enumerate(self.stages or ())
        ]
        head = Stage(
            first.slm,
            choose_policy(first.slm.model) if self.policy is None else self.policy,
            price=self.slm_price,
            strict=self.strict,
            early_abort=self.early_abort,
            hedge=self.hedge,
            consistency=self.consistency,
        )
        return Cascade(
            [head, *rest],
            first.fallback,
            fallback_price=self.fallback_price,
            fallback_timeout=self.fallback_timeout,
            on_fallback_error=self.on_fallback_error,
        )

    def _build_router(self) -> Router:
        if self.slm is not None and self.slm_model is not None:
            raise ConfigurationError(
                "slm", "give either slm= (an SLM backend) or slm_model= (an Ollama model name)"
            )
        if self.slm is None and self.slm_model is None:
            raise ConfigurationError(
                "slm",
                "an SLM is required: slm_model='smollm2:135m' (served by Ollama) or "
                "slm=LlamaCppSLM.smollm2() (embedded)",
            )
        if self.slm_model is not None:
            options: dict[str, Any] = {
                "prompt_format": self.prompt_format,
                "top_logprobs": self.top_logprobs,
                "temperature": 0.0 if self.temperature is None else self.temperature,
                "timeout": 60.0 if self.timeout is None else self.timeout,
            }
            slm: Any
            spec = None
            if is_served_spec(self.slm_model):  # ollama:MODEL[@URL] or openai:MODEL[@URL]
                spec = parse_slm_spec(self.slm_model, "slm_model")
            if self.api_key is not None:
                if spec is None or spec.provider != "openai":
                    raise ConfigurationError(
                        "api_key", "only applies to an openai:MODEL[@URL] slm_model"
                    )
                options["api_key"] = self.api_key.get_secret_value()
            if spec is not None:
                slm = slm_from_spec(spec, default_url=self.base_url, **options)
            else:
                slm = OllamaSLM(self.slm_model, host=self.base_url, **options)
            self.base_url = getattr(slm, "host", None) or getattr(slm, "base_url", None)
        else:
            slm = self.slm
            for name in _BUILD_ONLY:
                if name in self.model_fields_set:
                    raise ConfigurationError(
                        name,
                        "only applies to an SLM built from slm_model; set it on the SLM "
                        "backend you passed instead",
                    )
            own = getattr(slm, "temperature", None)
            if self.temperature is not None and own != self.temperature:
                raise ConfigurationError(
                    "temperature",
                    f"the SLM you passed samples at temperature {own!r}, not "
                    f"{self.temperature!r}; set it on the backend instead",
                )
        return Router(
            slm,
            ChatModelEscalator(self.fallback, max_retries=self.max_retries),
            # no policy given: the one shipped for this SLM, else the transferred or seed one
            choose_policy(slm.model) if self.policy is None else self.policy,
            strict=self.strict,
            slm_price=self.slm_price,
            fallback_price=self.fallback_price,
            fallback_timeout=self.fallback_timeout,
            on_fallback_error=self.on_fallback_error,
            trace=self.trace,
            shadow_rate=self.shadow_rate,
            shadow_judge=self.shadow_judge,
            early_abort=self.early_abort,
            hedge=self.hedge,
            consistency=self.consistency,
        )

    def __repr_args__(self) -> Any:
        """The policy shows as its name and provenance, not as its weights."""
        for name, value in super().__repr_args__():
            if name != "policy":
                yield name, value
        yield "policy", policy_label(self._router)

    # -- what LangChain asks of a chat model -------------------------------------------

    @property
    def router(self) -> Router | Cascade:
        """The core object doing the work: the Router, or the Cascade with `stages`."""
        return self._cascade if self._cascade is not None else self._router

    @property
    def stats(self) -> LedgerSnapshot | CascadeStats:
        """Queries, escalations, tokens per model, cost and savings so far (with `stages`:
        queries answered and calls avoided per stage, savings against the top model)."""
        return self.router.stats

    @property
    def model_name(self) -> str:
        """`"<slm> -> <fallback>"`: the models behind this router, lowest first."""
        if self._cascade is not None:
            return " -> ".join(self._cascade.models)
        return f"{self._router.slm.model} -> {self._router.fallback_model}"

    @property
    def _llm_type(self) -> str:
        return "confidence-router-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "slm_model": self._router.slm.model,
            "fallback_model": self._router.fallback_model,
            "policy": self._router.policy.to_dict(),
            "strict": self.strict,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
        }
        if self._cascade is not None:
            params["stages"] = [
                {"model": r.slm.model, "policy": r.policy.to_dict()}
                for r in self._cascade.routers[1:]
            ]
        return params

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        model = kwargs.get("model")
        params = LangSmithParams(
            ls_provider="confidence_router",
            ls_model_name=model if isinstance(model, str) else self.model_name,
            ls_model_type="chat",
        )
        temperature = kwargs.get("temperature", self.temperature)
        if isinstance(temperature, (int, float)):
            params["ls_temperature"] = temperature
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        if isinstance(max_tokens, int):
            params["ls_max_tokens"] = max_tokens
        if ls_stop := stop or self.stop:
            params["ls_stop"] = ls_stop
        return params

    def _call_options(
        self, stop: list[str] | None, kwargs: dict[str, Any]
    ) -> tuple[list[str] | None, int | None]:
        """Stop sequences and token limit of one call; anything else is an error."""
        unknown = sorted(set(kwargs) - _CALL_KWARGS)
        if unknown:
            raise InvalidInputError(
                f"unsupported per-call argument(s) {unknown}: ConfidenceRouterChat takes "
                f"stop and max_tokens per call; configure anything else (model, "
                f"temperature, ...) on the SLM or the fallback"
            )
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        return (stop if stop is not None else self.stop), max_tokens

    @staticmethod
    def _fallback_config(
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> RunnableConfig | None:
        """Nest an escalated fallback call under this run, tagged `route:llm`."""
        if isinstance(run_manager, CallbackManagerForLLMRun):
            return {"callbacks": child_manager(run_manager, "route:llm")}
        if isinstance(run_manager, AsyncCallbackManagerForLLMRun):
            return {"callbacks": achild_manager(run_manager, "route:llm")}
        return None

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stop, max_tokens = self._call_options(stop, kwargs)
        with fallback_config(self._fallback_config(run_manager)):
            result = self.router.invoke(to_core(messages), stop=stop, max_tokens=max_tokens)
        trace_decision(run_manager, result.to_dict())
        return chat_result(result)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        stop, max_tokens = self._call_options(stop, kwargs)
        with fallback_config(self._fallback_config(run_manager)):
            result = await self.router.ainvoke(to_core(messages), stop=stop, max_tokens=max_tokens)
        await atrace_decision(run_manager, result.to_dict())
        return chat_result(result)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        stop, max_tokens = self._call_options(stop, kwargs)
        for piece in self.router.stream(to_core(messages), stop=stop, max_tokens=max_tokens):
            chunk = stream_chunk(piece)
            if chunk is None:
                continue
            if piece.decision is not None:
                trace_decision(run_manager, piece.decision.to_dict())
            if run_manager:
                run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        stop, max_tokens = self._call_options(stop, kwargs)
        pieces = self.router.astream(to_core(messages), stop=stop, max_tokens=max_tokens)
        async for piece in pieces:
            chunk = stream_chunk(piece)
            if chunk is None:
                continue
            if piece.decision is not None:
                await atrace_decision(run_manager, piece.decision.to_dict())
            if run_manager:
                await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
            yield chunk

    # -- tools and structured output go to the fallback ----------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools to the **fallback** model and return its runnable.

        The SLM's log-probabilities cannot tell whether a tool call is right,
        so tool calling is not routed: every call of the returned runnable
        goes to the fallback and is not counted in `stats`. Raises
        whatever the fallback raises if it cannot call tools.
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return self.fallback.bind_tools(tools, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Structured output from the **fallback** model (not routed).

        As with `bind_tools`, a schema-shaped answer cannot be scored by
        the SLM, so the fallback's own `with_structured_output` runnable is
        returned, with the same arguments.
        """
        return self.fallback.with_structured_output(schema, include_raw=include_raw, **kwargs)


__all__ = ["ConfidenceRouterChat"]

"""ConfidenceRouterLLM: the router as a LlamaIndex LLM, for query engines and chat engines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from llama_index.core.base.llms.base import BaseLLM
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback

from confidence_router import (
    Cascade,
    CascadeStats,
    ConfigurationError,
    LedgerSnapshot,
    Message,
    OllamaSLM,
    Price,
    RouteChunk,
    RoutedResult,
    Router,
    SLMBackend,
    Stage,
)
from confidence_router.backends.spec import is_served_spec, parse_slm_spec, slm_from_spec
from confidence_router.policies.defaults import choose_policy, policy_label
from confidence_router.routing.cascade import as_stage, with_default_policy

from ._convert import (
    chat_response,
    generation_logprobs,
    prompt_messages,
    to_completion_response,
    to_core_messages,
    usage_dict,
)
from ._escalator import LlamaIndexEscalator, fallback_model_name
from ._options import call_options, check_positive_int, reject_unknown
from .events import RoutingDecisionEvent

dispatcher = get_dispatcher(__name__)

_OWN_FIELDS = (
    "policy",
    "strict",
    "num_output",
    "slm_context_window",
    "base_url",
    "request_timeout",
    "slm_price",
    "fallback_price",
    "fallback_timeout",
    "on_fallback_error",
    "trace",
    "shadow_rate",
    "shadow_judge",
    "early_abort",
    "hedge",
    "consistency",
    "stages",
)


class ConfidenceRouterLLM(LLM):
    """A LlamaIndex LLM that lets a small model answer first and escalates when it is unsure.

    The small model (SLM) answers every query; its own token log-probabilities give
    a confidence score; below the policy's threshold the query goes to the fallback,
    which is any LlamaIndex LLM. The routing itself is the core
    `Router`; this class only converts messages and responses.

    ???+ note "Setup"

        ```bash
        pip install "confidence-router[llamaindex]" llama-index-llms-ollama
        ```

    Key constructor arguments:
        slm: a core SLM backend (`OllamaSLM`, `OpenAICompatibleSLM`, `LlamaCppSLM`),
            an Ollama model name such as `"qwen2.5:1.5b"`, or a spec
            `"openai:MODEL@http://host:8000/v1"` / `"ollama:MODEL[@URL]"` (then
            `base_url` (when the spec has no URL) and `request_timeout` configure the
            SLM built from it; an `openai:` SLM's key is `api_key`, default
            `OPENAI_API_KEY`; it is handed to the SLM, never kept on this LLM).
        fallback: any LlamaIndex LLM (`Ollama`, `OpenAI`, ...).
        policy: a core policy (default `ThresholdPolicy()`), or the path of a policy
            file written by `confidence-router calibrate`.
        trace: a path or `TraceRecorder`: one JSON trace line per answered query
            (signals and ids only unless `TraceRecorder(store_text=True)`).
        shadow_rate: share of queries audited: a kept SLM answer is also sent to the
            fallback in the background; `stats.kept_precision` reports agreement.
            `llm.router.close()` cancels the checks still running.
        shadow_judge: `judge(messages, slm_answer, fallback_answer) -> bool` instead
            of token F1 for shadow checks.
        strict: `False` (default) escalates when the SLM fails (unreachable, timeout,
            no logprobs) and says why; `True` raises the typed `SLMError`.
        num_output: the SLM's answer budget in tokens (default: the fallback's
            `num_output`). The fallback generates with its own settings.
        slm_context_window: the SLM's context window when its backend does not say
            (`LlamaCppSLM` and `OllamaSLM(num_ctx=...)` do).
        slm_price, fallback_price: `Price` per million tokens, for the savings ledger.
        fallback_timeout: seconds the whole fallback call may take before
            `FallbackTimeoutError` (default: the fallback's own timeout).
        on_fallback_error: `"raise"` (default), or `"return_slm"` to answer with the
            SLM's own (unsure) answer when the fallback fails, flagged in
            `routing["fallback_error"]` and the reason.
        early_abort: stop the SLM mid-answer once it cannot pass any more and escalate
            at once (the core `Router`'s `early_abort`: `None`/`True`/`False`
            or an `EarlyExitRule`); the reason says after how many tokens.
        hedge: opt-in, async calls only: a core `Hedge` starts the fallback in
            parallel when the SLM's prefix score sits in a grey zone.
        consistency: opt-in: a core `SelfConsistency` draws SLM samples when the
            score lies in its band and lets their agreement decide (extra tokens are in
            the usage, cost and ledger).
        stages: a ladder: more small models between `slm` and `fallback`, lowest
            first, each a core SLM backend (the default policy for its model, as for
            `slm`), an `(slm, policy)` pair or a
            `confidence_router.Stage` (its own policy, price, strict...). The LLM then
            runs a core `Cascade`: a query climbs until a stage keeps its answer.
            `slm` and its options (`policy`, `slm_price`, `strict`,
            `early_abort`, `hedge`, `consistency`) are the first stage; `trace`
            and `shadow_rate` apply to a pair only. The context window is the
            smallest of every model's.

    Unknown keyword arguments raise `ConfigurationError` naming the field.
    `metadata` is computed without I/O: the fallback's metadata is read once, here.

    Raises:
        ConfigurationError: at construction, an unknown keyword or a setting out of
            range (the message names it), a bad `slm` spec, a `fallback` that is not
            a LlamaIndex LLM or whose metadata cannot be read, a `num_output` that
            leaves no room in the context window, or an option that does not apply
            (`api_key` without an `openai:` spec, `trace` with `stages`, ...).
        InvalidInputError: from a call, nothing to answer (no message, or only
            empty ones), content the SLM cannot read (an image, a tool call, a
            message that is not a `ChatMessage`), or a bad `max_tokens` or `stop`.
        SLMError: from a call with `strict=True`, the typed failure of the SLM
            (otherwise the query escalates and the routing reason says why).
        FallbackError: from a call, the fallback failed (`FallbackTimeoutError`
            past `fallback_timeout`), unless `on_fallback_error="return_slm"`
            could answer with the SLM's own answer.

    What a response carries:
        `additional_kwargs["routing"]` and `raw["routing"]`: route (`"slm"` or
        `"llm"`), score, threshold, signals, reason, models, latency, cost.
        `raw["usage"]`: prompt/completion/total tokens of every model called
        (`raw["usage_by_model"]` splits them). `logprobs`: one candidate list per
        generated token, chosen token first, when the SLM's answer was kept.
        Streams: `message.content` is cumulative and `delta` the new piece; every
        piece carries the decision under `additional_kwargs["routing"]`, and a last
        response (`delta=""`) carries the full routing, usage and logprobs.
        A `RoutingDecisionEvent` reaches instrumentation handlers per call.
        With `stages`, the routing also lists every stage the query reached
        (`routing["stages"]`: stage, model, outcome `"kept"`/`"escalated"`/
        `"answered"`, score, threshold, reason, usage, latency_s, cost) and
        `routing["answered_stage"]` (1-based); `raw["usage"]` counts every model
        that ran once; `stats` is the ladder's `CascadeStats`.

    Example:
        ```python
        from llama_index.core import Settings
        from llama_index.llms.ollama import Ollama
        from llamaindex_confidence_router import ConfidenceRouterLLM

        llm = ConfidenceRouterLLM(
            "qwen2.5:1.5b",
            fallback=Ollama(model="llama3.1:8b", request_timeout=120.0),
        )
        response = llm.complete("What is the capital of France?")
        print(response.text, response.additional_kwargs["routing"]["route"])

        for piece in llm.stream_complete("Name three rivers of France."):
            print(piece.delta, end="")

        Settings.llm = llm  # query and chat engines now route every call
        print(llm.stats.escalation_rate, llm.stats.saved)
        ```

        Async: `await llm.achat(messages)`, `await llm.acomplete(prompt)`,
        `async for r in await llm.astream_chat(messages): ...`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    slm: Any = Field(exclude=True, description="The small model: a core SLM backend.")
    # repr=False: a fallback may hold its API key as a plain str (e.g. OpenAI's api_key).
    fallback: Any = Field(exclude=True, repr=False, description="The LlamaIndex LLM escalated to.")
    policy: Any = Field(default=None, exclude=True, description="The core routing policy.")
    strict: bool = Field(default=False, description="Raise instead of escalating on SLM errors.")
    num_output: int = Field(description="The SLM's answer budget in tokens.")
    slm_context_window: int | None = Field(default=None, description="The SLM's context.")
    base_url: str | None = Field(default=None, description="Ollama server of a named SLM.")
    request_timeout: float = Field(default=60.0, description="Timeout of a named SLM, seconds.")
    slm_price: Any = Field(default=None, exclude=True, description="SLM Price per 1M tokens.")
    fallback_price: Any = Field(default=None, exclude=True, description="Fallback Price.")
    fallback_timeout: float | None = Field(
        default=None, description="Seconds the whole fallback call may take."
    )
    on_fallback_error: str = Field(
        default="raise", description="'raise', or 'return_slm': the SLM's answer, flagged."
    )
    trace: Any = Field(default=None, exclude=True, description="Trace file or recorder.")
    shadow_rate: float = Field(default=0.0, description="Share of queries shadow-checked.")
    shadow_judge: Any = Field(default=None, exclude=True, description="Agreement judge.")
    early_abort: Any = Field(
        default=None, exclude=True, description="Stop the SLM early (Router's early_abort)."
    )
    hedge: Any = Field(default=None, exclude=True, description="Hedged fallback (Router's).")
    consistency: Any = Field(
        default=None, exclude=True, description="Sampled self-consistency (Router's)."
    )
    stages: Any = Field(
        default=None, exclude=True, description="More small models before the fallback."
    )

    _router: Router = PrivateAttr()  # with stages: the first stage's settings
    _cascade: Cascade | None = PrivateAttr(default=None)
    _context_window: int = PrivateAttr()
    _is_chat_model: bool = PrivateAttr()
    _model_name: str = PrivateAttr()

    def __init__(
        self,
        slm: SLMBackend | str,
        fallback: BaseLLM,
        *,
        policy: Any = None,
        strict: bool = False,
        num_output: int | None = None,
        slm_context_window: int | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        request_timeout: float = 60.0,
        slm_price: Price | None = None,
        fallback_price: Price | None = None,
        fallback_timeout: float | None = None,
        on_fallback_error: Literal["raise", "return_slm"] = "raise",
        trace: Any = None,
        shadow_rate: float = 0.0,
        shadow_judge: Any = None,
        early_abort: Any = None,
        hedge: Any = None,
        consistency: Any = None,
        stages: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> None:
        reject_unknown(type(self).__name__, kwargs, [*LLM.model_fields, *_OWN_FIELDS])
        backend = _slm_backend(slm, base_url, request_timeout, api_key)
        ladder = _ladder_stages(stages, trace, shadow_rate, shadow_judge)
        if not isinstance(fallback, BaseLLM):
            raise ConfigurationError(
                "fallback",
                f"must be a LlamaIndex LLM (Ollama, OpenAI, ...), got {type(fallback).__name__}; "
                "wrap a core backend with llamaindex_confidence_router.EmbeddedLLM",
            )
        fb_meta = _read_metadata(fallback)
        fb_name = fallback_model_name(fallback, fb_meta)
        router = Router(
            backend,
            LlamaIndexEscalator(fallback, fb_name),
            # no policy given: the one shipped for this SLM, else the transferred or seed one
            choose_policy(backend.model) if policy is None else policy,
            strict=strict,
            slm_price=slm_price,
            fallback_price=fallback_price,
            fallback_timeout=fallback_timeout,
            on_fallback_error=on_fallback_error,
            trace=trace,
            shadow_rate=shadow_rate,
            shadow_judge=shadow_judge,
            early_abort=early_abort,
            hedge=hedge,
            consistency=consistency,
        )
        cascade = None
        if ladder is not None:
            head = Stage(
                router.slm,
                choose_policy(backend.model) if policy is None else policy,
                price=slm_price,
                strict=strict,
                early_abort=early_abort,
                hedge=hedge,
                consistency=consistency,
            )
            cascade = Cascade(
                [head, *ladder],
                router.fallback,
                fallback_price=fallback_price,
                fallback_timeout=fallback_timeout,
                on_fallback_error=on_fallback_error,
            )
        if slm_context_window is not None:
            check_positive_int("slm_context_window", slm_context_window)
        candidates = [_slm_context_window(backend, slm_context_window), fb_meta.context_window]
        candidates += [_slm_context_window(stage.slm, None) for stage in ladder or ()]
        windows = [w for w in candidates if isinstance(w, int) and w > 0]
        if not windows:  # pragma: no cover - LlamaIndex always reports a positive default
            raise ConfigurationError("slm_context_window", "no model reports a context window")
        context_window = min(windows)
        if num_output is None:
            num_output = int(fb_meta.num_output)
        check_positive_int("num_output", num_output)
        if num_output >= context_window:
            raise ConfigurationError(
                "num_output",
                f"{num_output} leaves no room for the prompt in a context window of "
                f"{context_window} tokens",
            )
        super().__init__(  # type: ignore[call-arg]  # pydantic fields, no mypy plugin
            slm=backend,
            fallback=fallback,
            policy=router.policy,
            strict=strict,
            num_output=num_output,
            slm_context_window=slm_context_window,
            base_url=base_url,
            request_timeout=request_timeout,
            slm_price=slm_price,
            fallback_price=fallback_price,
            fallback_timeout=fallback_timeout,
            on_fallback_error=on_fallback_error,
            trace=router.monitor.recorder if router.monitor is not None else None,
            shadow_rate=shadow_rate,
            shadow_judge=shadow_judge,
            early_abort=early_abort,
            hedge=hedge,
            consistency=consistency,
            stages=stages,
            **kwargs,
        )
        self._router = router
        self._cascade = cascade
        self._context_window = context_window
        self._is_chat_model = bool(getattr(fb_meta, "is_chat_model", True))
        models = cascade.models if cascade is not None else (backend.model, fb_name)
        self._model_name = f"confidence-router:{'->'.join(models)}"

    @classmethod
    def class_name(cls) -> str:
        return "ConfidenceRouterLLM"

    def __repr_args__(self) -> Any:
        """The policy shows as its name and provenance, not as its weights."""
        for name, value in super().__repr_args__():
            if name != "policy":
                yield name, value
        yield "policy", policy_label(self._router)

    @property
    def metadata(self) -> LLMMetadata:
        """Smallest context window of the models involved; no I/O, no secrets."""
        return LLMMetadata(
            context_window=self._context_window,
            num_output=self.num_output,
            is_chat_model=self._is_chat_model,
            is_function_calling_model=False,
            model_name=self._model_name,
        )

    @property
    def router(self) -> Router | Cascade:
        """The core object doing the work: the Router, or the Cascade with `stages`."""
        return self._cascade if self._cascade is not None else self._router

    @property
    def stats(self) -> LedgerSnapshot | CascadeStats:
        """Queries, escalations, tokens per model, cost and savings so far (with `stages`:
        queries answered and calls avoided per stage, savings against the top model)."""
        return self.router.stats

    # -- shared, I/O-free steps ----------------------------------------------------------

    def _prompt_messages(self, prompt: str, formatted: bool) -> list[Message]:
        return prompt_messages(prompt, formatted, self.completion_to_prompt)

    def _answer(self, result: RoutedResult) -> ChatResponse:
        routing = result.to_dict()
        self._emit(result, routing)
        return chat_response(
            result.text,
            raw=_raw(result, routing),
            additional_kwargs={"routing": routing},
            logprobs=generation_logprobs(result.slm) if result.route == "slm" else None,
        )

    def _emit(self, result: RoutedResult, routing: dict[str, Any]) -> None:
        dispatcher.event(
            RoutingDecisionEvent(
                route=result.route,
                score=result.decision.score,
                reason=result.decision.reason,
                answered_by=result.answered_by.model,
                routing=routing,
            )
        )

    # -- sync ----------------------------------------------------------------------------

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        options = call_options(self.num_output, kwargs)
        return self._answer(self.router.invoke(to_core_messages(messages), **options))

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        options = call_options(self.num_output, kwargs)
        result = self.router.invoke(self._prompt_messages(prompt, formatted), **options)
        return to_completion_response(self._answer(result))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        options = call_options(self.num_output, kwargs)
        msgs = to_core_messages(messages)

        def gen() -> ChatResponseGen:
            stream = _RoutedStream(self)
            for chunk in self.router.stream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield response

        return gen()

    @llm_completion_callback()
    def stream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseGen:
        options = call_options(self.num_output, kwargs)
        msgs = self._prompt_messages(prompt, formatted)

        def gen() -> CompletionResponseGen:
            stream = _RoutedStream(self)
            for chunk in self.router.stream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield to_completion_response(response)

        return gen()

    # -- async ---------------------------------------------------------------------------

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        options = call_options(self.num_output, kwargs)
        return self._answer(await self.router.ainvoke(to_core_messages(messages), **options))

    @llm_completion_callback()
    async def acomplete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponse:
        options = call_options(self.num_output, kwargs)
        result = await self.router.ainvoke(self._prompt_messages(prompt, formatted), **options)
        return to_completion_response(self._answer(result))

    @llm_chat_callback()
    async def astream_chat(
        self, messages: Sequence[ChatMessage], **kwargs: Any
    ) -> ChatResponseAsyncGen:
        options = call_options(self.num_output, kwargs)
        msgs = to_core_messages(messages)

        async def gen() -> ChatResponseAsyncGen:
            stream = _RoutedStream(self)
            async for chunk in self.router.astream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield response

        return gen()

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        options = call_options(self.num_output, kwargs)
        msgs = self._prompt_messages(prompt, formatted)

        async def gen() -> CompletionResponseAsyncGen:
            stream = _RoutedStream(self)
            async for chunk in self.router.astream(msgs, **options):
                response = stream.step(chunk)
                if response is not None:
                    yield to_completion_response(response)

        return gen()


class _RoutedStream:
    """RouteChunks to cumulative ChatResponses; one implementation for sync and async."""

    def __init__(self, llm: ConfidenceRouterLLM) -> None:
        self.llm = llm
        self.text = ""
        self.decision: dict[str, Any] = {}

    def step(self, chunk: RouteChunk) -> ChatResponse | None:
        if chunk.decision is not None:
            self.decision = chunk.decision.to_dict()
            if chunk.models is not None:
                self.decision["models"] = dict(chunk.models)
        if chunk.done and chunk.result is not None:
            final = self.llm._answer(chunk.result)
            # The deltas already spell the answer; the last response adds only metadata.
            final.message.content = self.text
            final.delta = ""
            return final
        if not chunk.text:
            return None
        self.text += chunk.text
        routing = dict(self.decision)
        return chat_response(
            self.text,
            delta=chunk.text,
            raw={"routing": routing},
            additional_kwargs={"routing": routing},
        )


def _raw(result: RoutedResult, routing: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": result.answered_by.model,
        "usage": usage_dict(result.usage),
        "usage_by_model": {m: usage_dict(u) for m, u in result.usage_by_model.items()},
        "finish_reason": result.finish_reason,
        "routing": routing,
    }


def _ladder_stages(
    stages: Any, trace: Any, shadow_rate: float, shadow_judge: Any
) -> list[Stage] | None:
    """The checked `stages` (None without a ladder); what a ladder cannot do fails here."""
    if stages is None:
        return None
    if isinstance(stages, (str, bytes, tuple)) or not isinstance(stages, Sequence):
        raise ConfigurationError(
            "stages",
            f"must be a list of stages (SLM backends, (slm, policy) pairs or Stages), "
            f"got {stages!r}",
        )
    if not stages:
        raise ConfigurationError("stages", "give at least one more small model, or leave it out")
    for name, value in (
        ("trace", trace),
        ("shadow_rate", shadow_rate),
        ("shadow_judge", shadow_judge),
    ):
        if value:
            raise ConfigurationError(
                name, "applies to a two-model router only; leave it out with stages="
            )
    return [with_default_policy(as_stage(item, f"stages[{i}]")) for i, item in enumerate(stages)]


def _slm_backend(
    slm: Any, base_url: str | None, request_timeout: float, api_key: str | None
) -> SLMBackend:
    """The SLM as a core backend: given as one, or built from an Ollama model name or a spec.

    The API key is passed through, never stored on the LLM (its fields are serialised).
    """
    spec = parse_slm_spec(slm, "slm") if isinstance(slm, str) and is_served_spec(slm) else None
    if api_key is not None and (spec is None or spec.provider != "openai"):
        raise ConfigurationError("api_key", "only applies to an openai:MODEL[@URL] slm spec")
    if spec is not None:  # ollama:MODEL[@URL] or openai:MODEL[@URL]
        keyed = {} if api_key is None else {"api_key": api_key}
        return slm_from_spec(spec, default_url=base_url, timeout=request_timeout, **keyed)
    if isinstance(slm, str):
        return OllamaSLM(slm, host=base_url, timeout=request_timeout)
    if base_url is not None:
        raise ConfigurationError(
            "base_url", "is only used when slm is an Ollama model name; set the backend's host"
        )
    if not isinstance(slm, SLMBackend):
        raise ConfigurationError(
            "slm",
            f"must be a core SLM backend (OllamaSLM, LlamaCppSLM) or an Ollama model name, "
            f"got {type(slm).__name__}",
        )
    return slm


def _slm_context_window(slm: Any, explicit: int | None) -> int | None:
    if explicit is not None:
        return explicit
    for attr in ("context_window", "num_ctx", "n_ctx"):
        value = getattr(slm, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _read_metadata(fallback: BaseLLM) -> LLMMetadata:
    """The fallback's metadata, read once (some integrations ask their server for it)."""
    try:
        meta = fallback.metadata
    except Exception as exc:
        raise ConfigurationError(
            "fallback",
            f"reading {type(fallback).__name__}.metadata failed ({type(exc).__name__}: {exc}); "
            "give the fallback its context window explicitly (e.g. Ollama(..., "
            "context_window=8192)) so that nothing has to be asked of its server",
        ) from exc
    if not isinstance(meta, LLMMetadata):
        raise ConfigurationError(
            "fallback", f"metadata must be an LLMMetadata, got {type(meta).__name__}"
        )
    return meta


__all__ = ["ConfidenceRouterLLM"]

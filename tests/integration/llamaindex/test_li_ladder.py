"""ConfidenceRouterLLM with a ladder (``stages=``), on real models.

Three stages: SmolLM2-135M in process (the LLM's ``slm``, stage 1), SmolLM2 through
the Ollama-compatible test server with our ``OllamaSLM`` (``stages=[...]``, stage 2),
and a real LlamaIndex ``Ollama`` LLM serving Gemma 3 270M (the fallback, stage 3).
Extreme thresholds force the route, so each test knows which stage must answer, in
all eight methods.
"""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole
from llama_index.llms.ollama import Ollama

from confidence_router import (
    Bound,
    Cascade,
    CascadeStats,
    ConfigurationError,
    LlamaCppSLM,
    OllamaSLM,
    Price,
    Stage,
    ThresholdPolicy,
    choose_policy,
)
from llamaindex_confidence_router import ConfidenceRouterLLM

SERVED = "smollm2:135m"
GEMMA3 = "gemma3:270m"
TOKENS = 48  # room for every short answer: a cut-off answer escalates whatever the policy
CHAT = [
    ChatMessage(role=MessageRole.SYSTEM, content="Answer the question in a few words."),
    ChatMessage(role=MessageRole.USER, content="Question: What is the capital of France?"),
]
PROMPT = "What is the capital of France? Answer in one word."
KEEP = ThresholdPolicy((Bound("length", max=100),))
ESCALATE = ThresholdPolicy((Bound("length", max=100),), threshold=1e6)
MODELS = ["smollm2-135m", SERVED, GEMMA3]
METHODS = [
    "chat",
    "complete",
    "stream_chat",
    "stream_complete",
    "achat",
    "acomplete",
    "astream_chat",
    "astream_complete",
]


def _ladder(
    slm: LlamaCppSLM, host: str, fallback: Ollama, answered: int, **kw: Any
) -> ConfidenceRouterLLM:
    """The three-stage ladder with policies that make stage ``answered`` answer.

    The middle stage decides on whole answers: an Ollama stream stopped early
    reports no prompt count (unknown, not 0), and these tests compare exact counts.
    """
    middle = OllamaSLM(SERVED, host=host, max_tokens=TOKENS, timeout=60)
    return ConfidenceRouterLLM(
        slm,
        fallback,
        policy=KEEP if answered == 1 else ESCALATE,
        stages=[Stage(middle, KEEP if answered == 2 else ESCALATE, early_abort=False)],
        num_output=TOKENS,
        slm_price=Price(0.1, 0.2),
        fallback_price=Price(2.0, 4.0),
        **kw,
    )


async def _call(llm: ConfidenceRouterLLM, method: str) -> list[Any]:
    """Every response one call of ``method`` gives (one, or every streamed piece)."""
    args: Any = CHAT if "chat" in method else PROMPT
    if method in ("chat", "complete"):
        return [getattr(llm, method)(args)]
    if method in ("stream_chat", "stream_complete"):
        return list(getattr(llm, method)(args))
    if method in ("achat", "acomplete"):
        return [await getattr(llm, method)(args)]
    return [r async for r in await getattr(llm, method)(args)]


@pytest.fixture(scope="module")
def ladder_fallback(ollama_host: str) -> Ollama:
    return Ollama(
        model=GEMMA3,
        base_url=ollama_host,
        request_timeout=120.0,
        temperature=0.0,
        additional_kwargs={"num_predict": TOKENS, "seed": 0},
    )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("answered", [1, 2, 3])
async def test_every_method_says_which_stage_answered(
    smollm2_slm: LlamaCppSLM, ollama_host: str, ladder_fallback: Ollama, answered: int, method: str
) -> None:
    llm = _ladder(smollm2_slm, ollama_host, ladder_fallback, answered)
    responses = await _call(llm, method)
    final = responses[-1]
    routing = final.additional_kwargs["routing"]

    assert routing["answered_stage"] == answered
    assert [s["model"] for s in routing["stages"]] == MODELS[:answered]
    outcomes = ["escalated"] * (answered - 1) + ["answered" if answered == 3 else "kept"]
    assert [s["outcome"] for s in routing["stages"]] == outcomes
    assert routing["route"] == ("llm" if answered == 3 else "slm")
    assert final.raw["model"] == MODELS[answered - 1] and final.raw["routing"] == routing
    for record in routing["stages"][: min(answered, 2)]:  # the scored small models
        assert record["score"] is not None and record["threshold"] in (0.0, 1e6)
        assert record["reason"] and record["usage"]["completion_tokens"] > 0
    # usage: every model that ran, each once
    prompt = sum(s["usage"]["prompt_tokens"] for s in routing["stages"])
    completion = sum(s["usage"]["completion_tokens"] for s in routing["stages"])
    usage = final.raw["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, completion)
    assert usage["total_tokens"] == prompt + completion
    if answered < 3:  # a kept small model's answer carries its logprobs
        assert final.logprobs is not None
        assert len(final.logprobs) == routing["stages"][-1]["usage"]["completion_tokens"]
    else:
        assert final.logprobs is None
    if len(responses) > 1:  # a stream: the decision on every piece, the stages on the last
        assert "".join(r.delta for r in responses) == (
            final.message.content if "chat" in method else final.text
        )
        assert all(r.additional_kwargs["routing"]["route"] == routing["route"] for r in responses)
        assert [("stages" in r.additional_kwargs["routing"]) for r in responses] == [False] * (
            len(responses) - 1
        ) + [True]
    stats = llm.stats
    assert isinstance(stats, CascadeStats)
    assert stats.answered_by_stage == tuple(int(i + 1 == answered) for i in range(3))


def test_the_ladder_is_named_and_sized(
    smollm2_slm: LlamaCppSLM, ollama_host: str, ladder_fallback: Ollama
) -> None:
    middle = OllamaSLM(SERVED, host=ollama_host, num_ctx=512)
    llm = ConfidenceRouterLLM(
        smollm2_slm, ladder_fallback, policy=ESCALATE, stages=[(middle, KEEP)], num_output=TOKENS
    )
    assert llm.metadata.model_name == f"confidence-router:smollm2-135m->{SERVED}->{GEMMA3}"
    assert llm.metadata.context_window == 512  # the smallest window of the ladder
    assert isinstance(llm.router, Cascade) and llm.router.models == tuple(MODELS)
    assert [r.policy for r in llm.router.routers] == [ESCALATE, KEEP]
    assert SERVED in repr(llm)
    # a bare backend gets the default of its model, as the first SLM does
    bare = ConfidenceRouterLLM(smollm2_slm, ladder_fallback, stages=[middle], num_output=TOKENS)
    assert bare.router.routers[1].policy_label == choose_policy(SERVED).label


def test_without_stages_nothing_changes(smollm2_slm: LlamaCppSLM, ladder_fallback: Ollama) -> None:
    llm = ConfidenceRouterLLM(smollm2_slm, ladder_fallback, policy=KEEP, num_output=TOKENS)
    routing = llm.chat(CHAT).additional_kwargs["routing"]
    assert "stages" not in routing and "answered_stage" not in routing
    assert llm.metadata.model_name == f"confidence-router:smollm2-135m->{GEMMA3}"
    assert not isinstance(llm.router, Cascade)


@pytest.mark.parametrize(
    ("stages", "extra", "field"),
    [
        ([], {}, "stages"),
        ("MIDDLE", {}, "stages"),
        ((("MIDDLE", KEEP),), {}, "stages"),
        (["smollm2:135m"], {}, "stages[0]"),
        ([("MIDDLE",)], {}, "stages[0]"),
        ([("not a backend", KEEP)], {}, "stages[0].slm"),
        (["MIDDLE", ("MIDDLE", "/no/such/policy.json")], {}, "stages[1].policy"),
        ([Stage("MIDDLE", KEEP, strict="yes")], {}, "stages[0].strict"),  # type: ignore[arg-type]
        (["MIDDLE"], {"trace": "TRACE"}, "trace"),
        (["MIDDLE"], {"shadow_rate": 0.5}, "shadow_rate"),
    ],
)
def test_a_bad_ladder_fails_at_construction_naming_the_field(
    stages: Any, extra: dict[str, Any], field: str, tmp_path: Any
) -> None:
    dead = "http://127.0.0.1:9"
    middle = OllamaSLM(SERVED, host=dead)

    def real(item: Any) -> Any:
        if item == "MIDDLE":
            return middle
        if isinstance(item, (tuple, list)):
            return type(item)(real(x) for x in item)
        if isinstance(item, Stage):
            return Stage(real(item.slm), item.policy, strict=item.strict)
        return item

    stages = real(stages)
    trace = tmp_path / "trace.jsonl"
    if "trace" in extra:
        extra = {"trace": str(trace)}
    with pytest.raises(ConfigurationError) as caught:
        ConfidenceRouterLLM(
            OllamaSLM(SERVED, host=dead),
            Ollama(model=GEMMA3, base_url=dead, context_window=2048),
            stages=stages,
            **extra,
        )
    assert caught.value.field == field
    assert not trace.exists()

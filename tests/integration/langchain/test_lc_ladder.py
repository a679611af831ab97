"""ConfidenceRouterChat with a ladder (``stages=``), on real models over HTTP and in process.

Three stages: SmolLM2-135M in process (the face's ``slm``, stage 1), SmolLM2 through
the Ollama-compatible test server with our ``OllamaSLM`` (``stages=[...]``, stage 2),
and a real ``ChatOllama`` serving Gemma 3 270M (the fallback, stage 3). Extreme
thresholds force the route, so each test knows which stage must answer, in every
call mode.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_ollama import ChatOllama

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
from langchain_confidence_router import ConfidenceRouterChat

SERVED = "smollm2:135m"
GEMMA3 = "gemma3:270m"
TOKENS = 24
MESSAGES = [
    ("system", "Answer the question in a few words."),
    ("human", "Question: What is the capital of France?\nAnswer:"),
]
KEEP = ThresholdPolicy((Bound("length", max=100),))
ESCALATE = ThresholdPolicy((Bound("length", max=100),), threshold=1e6)
MODELS = ["smollm2-135m", SERVED, GEMMA3]
MODES = ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"]


@pytest.fixture(scope="module")
def fallback(ollama_host: str) -> ChatOllama:
    return ChatOllama(model=GEMMA3, base_url=ollama_host, num_predict=TOKENS, temperature=0, seed=0)


def _ladder(
    slm: LlamaCppSLM, host: str, fallback: ChatOllama, answered: int, **kw: Any
) -> ConfidenceRouterChat:
    """The three-stage ladder with policies that make stage ``answered`` answer.

    The middle stage decides on whole answers: an Ollama stream stopped early
    reports no prompt count (unknown, not 0), and these tests compare exact counts.
    """
    middle = OllamaSLM(SERVED, host=host, max_tokens=TOKENS, timeout=60)
    return ConfidenceRouterChat(
        slm=slm,
        policy=KEEP if answered == 1 else ESCALATE,
        stages=[Stage(middle, KEEP if answered == 2 else ESCALATE, early_abort=False)],
        fallback=fallback,
        max_tokens=TOKENS,
        slm_price=Price(0.1, 0.2),
        fallback_price=Price(2.0, 4.0),
        **kw,
    )


def _merge(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged = merged + chunk
    return merged


async def _ask(llm: ConfidenceRouterChat, mode: str) -> tuple[AIMessage, list[AIMessageChunk]]:
    """One question in ``mode``: the final message (merged for streams) and the chunks."""
    if mode == "invoke":
        return await asyncio.to_thread(llm.invoke, MESSAGES), []
    if mode == "ainvoke":
        return await llm.ainvoke(MESSAGES), []
    if mode == "batch":
        (message,) = await asyncio.to_thread(llm.batch, [MESSAGES])
        return message, []
    if mode == "abatch":
        (message,) = await llm.abatch([MESSAGES])
        return message, []
    if mode == "stream":
        chunks = await asyncio.to_thread(lambda: list(llm.stream(MESSAGES)))
    else:
        chunks = [c async for c in llm.astream(MESSAGES)]
    return _merge(chunks), chunks  # type: ignore[return-value]  # a merged chunk is a message


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("answered", [1, 2, 3])
async def test_each_call_mode_says_which_stage_answered(
    smollm2_slm: LlamaCppSLM, ollama_host: str, fallback: ChatOllama, answered: int, mode: str
) -> None:
    llm = _ladder(smollm2_slm, ollama_host, fallback, answered)
    message, chunks = await _ask(llm, mode)
    routing = message.response_metadata["routing"]

    assert routing["answered_stage"] == answered
    assert [s["model"] for s in routing["stages"]] == MODELS[:answered]
    outcomes = ["escalated"] * (answered - 1) + ["answered" if answered == 3 else "kept"]
    assert [s["outcome"] for s in routing["stages"]] == outcomes
    assert routing["route"] == ("llm" if answered == 3 else "slm")
    assert message.response_metadata["model_name"] == MODELS[answered - 1]
    assert str(message.content).strip()
    for record in routing["stages"]:
        assert set(record) >= {"model", "outcome", "score", "threshold", "reason", "usage"}
        assert record["latency_s"] >= 0 and record["reason"]
    for record in routing["stages"][: min(answered, 2)]:  # the scored small models
        assert record["score"] is not None and record["threshold"] in (0.0, 1e6)
        assert record["usage"]["completion_tokens"] > 0
    # usage: every model that ran, each once (SmolLM2 twice under one name when stage 2 ran)
    prompt = sum(s["usage"]["prompt_tokens"] for s in routing["stages"])
    completion = sum(s["usage"]["completion_tokens"] for s in routing["stages"])
    assert message.usage_metadata is not None
    assert message.usage_metadata["input_tokens"] == prompt
    assert message.usage_metadata["output_tokens"] == completion
    by_model = routing["usage"]
    assert sum(u["prompt_tokens"] for u in by_model.values()) == prompt
    stats = llm.stats
    assert isinstance(stats, CascadeStats)
    assert stats.answered_by_stage == tuple(int(i + 1 == answered) for i in range(3))
    assert stats.top_calls_avoided == int(answered < 3)
    if chunks:  # the decision on exactly one chunk, before any text; the stages on one
        decided = [c for c in chunks if "route" in c.response_metadata.get("routing", {})]
        assert len(decided) == 1 and chunks.index(decided[0]) == 0
        assert decided[0].response_metadata["routing"]["route"] == routing["route"]
        with_stages = [c for c in chunks if "stages" in c.response_metadata.get("routing", {})]
        assert len(with_stages) == 1 and with_stages[0].chunk_position == "last"
        assert sum(1 for c in chunks if c.usage_metadata) == 1


def test_the_ladder_is_named_and_exposed(
    smollm2_slm: LlamaCppSLM, ollama_host: str, fallback: ChatOllama
) -> None:
    middle = OllamaSLM(SERVED, host=ollama_host, max_tokens=TOKENS)
    llm = ConfidenceRouterChat(
        slm=smollm2_slm, policy=ESCALATE, stages=[(middle, KEEP)], fallback=fallback
    )
    assert llm.model_name == f"smollm2-135m -> {SERVED} -> {GEMMA3}"
    assert isinstance(llm.router, Cascade) and llm.router.models == tuple(MODELS)
    assert [r.policy for r in llm.router.routers] == [ESCALATE, KEEP]
    assert SERVED in repr(llm)
    # a bare backend gets the default of its model, as the first SLM does
    bare = ConfidenceRouterChat(slm=smollm2_slm, stages=[middle], fallback=fallback)
    assert bare.router.routers[1].policy_label == choose_policy(SERVED).label
    params = llm._identifying_params
    assert params["slm_model"] == "smollm2-135m" and params["fallback_model"] == GEMMA3
    assert params["stages"] == [{"model": SERVED, "policy": KEEP.to_dict()}]


def test_stage_objects_keep_their_own_settings(
    smollm2_slm: LlamaCppSLM, ollama_host: str, fallback: ChatOllama
) -> None:
    middle = OllamaSLM(SERVED, host=ollama_host, max_tokens=TOKENS, timeout=60)
    llm = ConfidenceRouterChat(
        slm=smollm2_slm,
        policy=ESCALATE,
        stages=[Stage(middle, KEEP, price=Price(1.0, 1.0))],
        fallback=fallback,
        max_tokens=TOKENS,
    )
    message = llm.invoke(MESSAGES)
    kept = message.response_metadata["routing"]["stages"][1]
    assert kept["outcome"] == "kept"
    tokens = kept["usage"]["prompt_tokens"] + kept["usage"]["completion_tokens"]
    assert kept["cost"] == pytest.approx(tokens / 1e6)
    assert message.response_metadata["routing"]["stages"][0]["cost"] == 0.0


def test_without_stages_the_router_is_the_pair(
    smollm2_slm: LlamaCppSLM, fallback: ChatOllama
) -> None:
    llm = ConfidenceRouterChat(slm=smollm2_slm, fallback=fallback, policy=KEEP, max_tokens=TOKENS)
    routing = llm.invoke(MESSAGES).response_metadata["routing"]
    assert "stages" not in routing and "answered_stage" not in routing
    assert llm.model_name == f"smollm2-135m -> {GEMMA3}"
    assert not isinstance(llm.router, Cascade)


@pytest.mark.parametrize(
    ("stages", "extra", "field"),
    [
        ([], {}, "stages"),
        ("smollm2:135m", {}, "stages"),
        (["smollm2:135m"], {}, "stages[0]"),
        ([("slm",)], {}, "stages[0]"),
        ([("not a backend", KEEP)], {}, "stages[0].slm"),
        (["MIDDLE", ("MIDDLE", "/no/such/policy.json")], {}, "stages[1].policy"),
        ([("MIDDLE", 3)], {}, "stages[0].policy"),
        ([Stage("MIDDLE", KEEP, price=1.0)], {}, "stages[0].price"),  # type: ignore[arg-type]
        (["MIDDLE"], {"trace": "trace.jsonl"}, "trace"),
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
        if isinstance(item, tuple):
            return tuple(real(x) for x in item)
        if isinstance(item, Stage):
            return Stage(real(item.slm), item.policy, price=item.price)
        return item

    if isinstance(stages, list):
        stages = [real(s) for s in stages]
    if "trace" in extra:
        extra = {"trace": str(tmp_path / "trace.jsonl")}
    with pytest.raises(ConfigurationError) as caught:
        ConfidenceRouterChat(
            slm=OllamaSLM(SERVED, host=dead),
            fallback=ChatOllama(model=GEMMA3, base_url=dead),
            stages=stages,
            **extra,
        )
    assert caught.value.field == field
    assert not (tmp_path / "trace.jsonl").exists()

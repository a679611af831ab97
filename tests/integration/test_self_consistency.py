"""Sampled self-consistency on real models: samples from llama.cpp, Ollama and /v1, and the Router.

The in-process tests read llama.cpp's own performance counters (tokens
decoded) to check that k samples evaluate the prompt once, not k times.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from confidence_router import (
    Bound,
    ConfigurationError,
    Hedge,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    OpenAICompatibleSLM,
    Price,
    RoutedResult,
    Router,
    SelfConsistency,
    ThresholdPolicy,
    TraceRecorder,
)
from confidence_router.eval.data import load_examples
from confidence_router.eval.prompts import STOP
from confidence_router.eval.traces import prompt_messages
from confidence_router.types import RouteChunk
from tests.support.ollama_server import OllamaTestServer
from tests.support.paths import SQUAD_V1_SAMPLE

# A SQuAD passage prompt: a few hundred tokens, so re-evaluating it per sample would show.
PASSAGE = prompt_messages(load_examples(SQUAD_V1_SAMPLE)[0])
CONFIDENT_Q = [
    Message("system", "Answer the question in a few words."),
    Message("user", "Question: What is the capital of France?\nAnswer:"),
]
OPEN_Q = [Message("user", "Invent a long, strange word and explain its meaning.")]
KEEP = ThresholdPolicy((Bound("length", max=100),))  # score = (100 - length) / 16 > 0: kept
NOTHING = ThresholdPolicy((Bound("length", max=0),))  # score = -length / 16 < 0: escalated
EVERYWHERE = (-math.inf, math.inf)


def decoded(slm: LlamaCppSLM) -> int:
    """Tokens llama.cpp has decoded in this context so far (prompt batches + single tokens)."""
    import llama_cpp

    data = llama_cpp.llama_perf_context(slm._llm._ctx.ctx)
    return int(data.n_p_eval + data.n_eval)


# -- llama.cpp ---------------------------------------------------------------------------


def test_llama_cpp_samples_evaluate_the_prompt_once(gemma3_slm: LlamaCppSLM) -> None:
    prompt = len(gemma3_slm.tokenize_prompt(PASSAGE))
    assert prompt > 150
    greedy = gemma3_slm.generate(PASSAGE, stop=list(STOP), max_tokens=16)
    before = decoded(gemma3_slm)
    samples = gemma3_slm.sample(PASSAGE, k=4, temperature=0.7, stop=list(STOP), max_tokens=16)
    spent = decoded(gemma3_slm) - before
    generated = sum(s.usage.completion_tokens for s in samples)
    assert len(samples) == 4 and all(s.has_logprobs and s.model == "gemma3-270m" for s in samples)
    # the greedy answer's prompt was still cached: only its last token is evaluated again
    assert [s.usage.prompt_tokens for s in samples] == [1, 0, 0, 0]
    assert spent <= 1 + generated
    assert greedy.usage.prompt_tokens == prompt
    # after another prompt the cache is gone: the prompt is evaluated once for all four
    gemma3_slm.generate([Message("user", "Hello")], max_tokens=2)
    before = decoded(gemma3_slm)
    again = gemma3_slm.sample(PASSAGE, k=4, temperature=0.7, stop=list(STOP), max_tokens=16)
    spent = decoded(gemma3_slm) - before
    assert [s.usage.prompt_tokens for s in again] == [prompt + 1, 0, 0, 0]
    assert spent <= prompt + 1 + sum(s.usage.completion_tokens for s in again)
    assert spent < 2 * prompt  # four evaluations would be >= 4 * prompt
    # and both paths give the same samples for the same seed
    assert [s.text for s in again] == [s.text for s in samples]


def test_llama_cpp_same_seed_same_samples_other_seed_others(smollm2_slm: LlamaCppSLM) -> None:
    first = smollm2_slm.sample(OPEN_Q, k=3, temperature=1.0, seed=7, max_tokens=12)
    second = smollm2_slm.sample(OPEN_Q, k=3, temperature=1.0, seed=7, max_tokens=12)
    other = smollm2_slm.sample(OPEN_Q, k=3, temperature=1.0, seed=1000, max_tokens=12)
    assert [s.tokens for s in first] == [s.tokens for s in second]
    assert [list(s.token_logprobs) for s in first] == [list(s.token_logprobs) for s in second]
    assert len({s.tokens for s in first}) > 1  # seed + i: the k samples differ
    assert [s.tokens for s in other] != [s.tokens for s in first]
    assert all(s.usage.completion_tokens == len(s.tokens) for s in first)


async def test_llama_cpp_asample_equals_sample(smollm2_slm: LlamaCppSLM) -> None:
    sync = smollm2_slm.sample(OPEN_Q, k=2, temperature=1.0, seed=3, max_tokens=8)
    got = await smollm2_slm.asample(OPEN_Q, k=2, temperature=1.0, seed=3, max_tokens=8)
    assert [s.tokens for s in got] == [s.tokens for s in sync]


def test_sample_arguments_are_checked(smollm2_slm: LlamaCppSLM) -> None:
    for kwargs, field in (
        ({"k": 0, "temperature": 0.7}, "k"),
        ({"k": 2, "temperature": 0.0}, "temperature"),
        ({"k": 2, "temperature": 0.7, "seed": -1}, "seed"),
    ):
        with pytest.raises(ConfigurationError) as info:
            smollm2_slm.sample(OPEN_Q, **kwargs)  # type: ignore[arg-type]
        assert info.value.field == field


# -- Ollama and OpenAI-compatible servers -------------------------------------------------


@pytest.fixture
def smol_ollama(ollama_host: str) -> Iterator[OllamaSLM]:
    slm = OllamaSLM("smollm2:135m", host=ollama_host, max_tokens=10, timeout=120)
    yield slm
    slm.close()


def test_ollama_samples_send_temperature_and_seed_per_request(
    smol_ollama: OllamaSLM, ollama_server: OllamaTestServer
) -> None:
    samples = smol_ollama.sample(OPEN_Q, k=3, temperature=0.9, seed=5)
    sent = [r.body for r in list(ollama_server.requests)[-3:]]
    assert [b["options"]["temperature"] for b in sent] == [0.9, 0.9, 0.9]
    assert [b["options"]["seed"] for b in sent] == [5, 6, 7]
    assert all(b["options"]["num_predict"] == 10 for b in sent)
    assert len(samples) == 3 and all(s.has_logprobs for s in samples)
    assert all(s.usage.completion_tokens == len(s.token_logprobs) for s in samples)
    # the server honours them: the same seeds give the same samples, others differ
    again = smol_ollama.sample(OPEN_Q, k=3, temperature=0.9, seed=5)
    assert [s.text for s in again] == [s.text for s in samples]
    other = smol_ollama.sample(OPEN_Q, k=3, temperature=0.9, seed=500)
    assert [s.text for s in other] != [s.text for s in samples]
    # the greedy answer is unchanged by sampling (the SLM's own options)
    smol_ollama.generate(OPEN_Q)
    assert ollama_server.requests[-1].body["options"]["temperature"] == 0.0


async def test_ollama_asample_runs_the_same_requests(
    ollama_host: str, ollama_server: OllamaTestServer
) -> None:
    slm = OllamaSLM("smollm2:135m", host=ollama_host, max_tokens=10, timeout=120)
    try:
        sync = slm.sample(OPEN_Q, k=3, temperature=0.9, seed=5)
        got = await slm.asample(OPEN_Q, k=3, temperature=0.9, seed=5)
        seeds = sorted(r.body["options"]["seed"] for r in list(ollama_server.requests)[-3:])
        assert seeds == [5, 6, 7]
        assert [s.text for s in got] == [s.text for s in sync]
    finally:
        slm.close()
        await slm.aclose()


def test_openai_compatible_samples_send_temperature_and_seed(
    ollama_server: OllamaTestServer,
) -> None:
    slm = OpenAICompatibleSLM(
        "smollm2:135m", base_url=f"{ollama_server.host}/v1", max_tokens=10, timeout=120
    )
    samples = slm.sample(OPEN_Q, k=2, temperature=0.9, seed=11)
    sent = [r.body for r in list(ollama_server.requests)[-2:]]
    assert [(b["temperature"], b["seed"]) for b in sent] == [(0.9, 11), (0.9, 12)]
    again = slm.sample(OPEN_Q, k=2, temperature=0.9, seed=11)
    assert [s.text for s in again] == [s.text for s in samples]
    assert all(s.has_logprobs and s.usage.completion_tokens > 0 for s in samples)


# -- the Router ---------------------------------------------------------------------------

SLM_PRICE, FB_PRICE = Price(1.0, 2.0), Price(10.0, 20.0)


def _router(
    slm: LlamaCppSLM, fallback: LlamaCppSLM, policy: ThresholdPolicy, **sc: object
) -> Router:
    options: dict[str, object] = {"band": EVERYWHERE, "k": 3, "temperature": 0.7, **sc}
    return Router(
        slm,
        fallback,
        policy,
        slm_price=SLM_PRICE,
        fallback_price=FB_PRICE,
        consistency=SelfConsistency(**options),  # type: ignore[arg-type]
    )


async def _run(
    router: Router, mode: str, query: list[Message]
) -> tuple[RoutedResult, list[RouteChunk]]:
    chunks: list[RouteChunk] = []
    if mode == "invoke":
        return router.invoke(query, max_tokens=24), chunks
    if mode == "ainvoke":
        return await router.ainvoke(query, max_tokens=24), chunks
    if mode == "batch":
        return router.batch([query], max_tokens=24)[0], chunks
    if mode == "abatch":
        return (await router.abatch([query], max_tokens=24))[0], chunks
    if mode == "stream":
        chunks = list(router.stream(query, max_tokens=24))
    else:
        chunks = [c async for c in router.astream(query, max_tokens=24)]
    assert chunks[-1].done and chunks[-1].result is not None
    return chunks[-1].result, chunks


MODES = ["invoke", "ainvoke", "batch", "abatch", "stream", "astream"]


@pytest.mark.parametrize("mode", MODES)
async def test_in_band_answers_draw_k_samples_and_the_ledger_counts_them(
    mode: str, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    router = _router(smollm2_slm, gemma3_slm, KEEP, min_agreement=0.5)
    result, chunks = await _run(router, mode, CONFIDENT_Q)
    check = result.decision.consistency
    assert check is not None and len(check.samples) == 3
    assert all(s.model == "smollm2-135m" for s in check.samples)
    # the route follows the agreement, and the reason says so
    assert result.route == ("slm" if check.agreement >= 0.5 else "llm")
    word = "kept" if check.keep else "escalated"
    assert result.decision.reason.startswith(f"{word}: {check.agreeing} of 3 samples agree")
    assert "the policy said confident" in result.decision.reason
    # the samples are SLM tokens: in the usage, the cost and the ledger
    extra = check.usage
    assert extra.completion_tokens == sum(s.usage.completion_tokens for s in check.samples) > 0
    assert result.slm is not None
    assert result.usage_by_model["smollm2-135m"] == result.slm.usage + extra
    fb_cost = FB_PRICE.cost(result.fallback.usage) if result.fallback is not None else 0.0
    assert result.cost == pytest.approx(SLM_PRICE.cost(result.slm.usage + extra) + fb_cost)
    stats = router.stats
    assert stats.consistency_checks == 1
    assert stats.consistency_completion_tokens == extra.completion_tokens
    assert stats.consistency_prompt_tokens == extra.prompt_tokens
    assert stats.consistency_tokens == extra.total_tokens
    assert stats.consistency_cost == pytest.approx(SLM_PRICE.cost(extra))
    assert stats.tokens_by_model["smollm2-135m"] == result.slm.usage + extra
    assert stats.to_dict()["consistency"]["checks"] == 1  # type: ignore[index]
    meta = result.to_dict()["consistency"]
    assert meta["k"] == 3 and meta["agreeing"] == check.agreeing  # type: ignore[index]
    if chunks:  # the decision, samples and all, comes before any text
        assert chunks[0].decision is result.decision and chunks[0].text != ""
        assert all(c.decision is None for c in chunks[1:])


@pytest.mark.parametrize("mode", MODES)
async def test_samples_that_disagree_escalate_in_every_mode(
    mode: str, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    # one-token samples cannot equal a longer greedy answer: the kept answer escalates
    router = _router(smollm2_slm, gemma3_slm, KEEP, min_agreement=0.5, max_tokens=1)
    result, chunks = await _run(router, mode, CONFIDENT_Q)
    check = result.decision.consistency
    assert check is not None and check.agreeing == 0 and check.changed
    assert result.route == "llm" and result.fallback is not None
    assert result.text == result.fallback.text
    assert result.decision.reason.startswith("escalated: 0 of 3 samples agree")
    assert result.slm is not None
    assert result.usage_by_model["smollm2-135m"] == result.slm.usage + check.usage
    assert router.stats.consistency_changed == 1 and router.stats.escalations == 1
    if chunks:
        assert chunks[0].decision is not None and chunks[0].decision.consistency is check
        assert "".join(c.text for c in chunks) == result.text


@pytest.mark.parametrize("mode", MODES)
async def test_out_of_band_answers_draw_no_samples(
    mode: str, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    # KEEP scores this answer at (100 - length) / 16 > 5: far above the band
    router = _router(smollm2_slm, gemma3_slm, KEEP, band=(-1.0, 1.0))
    result, _ = await _run(router, mode, CONFIDENT_Q)
    assert result.decision.consistency is None
    assert result.route == "slm" and result.decision.reason.startswith("confident")
    assert result.slm is not None and result.usage_by_model["smollm2-135m"] == result.slm.usage
    assert router.stats.consistency_checks == 0 and router.stats.consistency_tokens == 0
    assert "consistency" not in result.to_dict()


async def test_samples_can_overturn_the_policy_both_ways(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    # min_agreement 0: any samples keep the answer the policy escalated (early abort is
    # off by default with consistency, so the whole answer is scored and sampled)
    rescue = _router(smollm2_slm, gemma3_slm, NOTHING, min_agreement=0.0)
    assert rescue.early_abort is False
    result = await rescue.ainvoke(CONFIDENT_Q, max_tokens=24)
    assert result.route == "slm" and result.fallback is None
    assert result.decision.reason.startswith("kept: ")
    assert "the policy said unsure" in result.decision.reason
    assert rescue.stats.consistency_changed == 1 and rescue.stats.fallback_calls_avoided == 1
    # samples of one token cannot equal the greedy answer of several: none agrees, and
    # the answer the policy kept is escalated
    doubt = _router(smollm2_slm, gemma3_slm, KEEP, min_agreement=0.5, max_tokens=1)
    result = doubt.invoke(CONFIDENT_Q, max_tokens=24)
    check = result.decision.consistency
    assert check is not None and result.slm is not None and len(result.slm.tokens) > 1
    assert all(s.usage.completion_tokens == 1 for s in check.samples)
    assert check.agreeing == 0 and result.route == "llm" and result.fallback is not None
    assert result.decision.reason.startswith("escalated: 0 of 3 samples agree")
    assert "the policy said confident" in result.decision.reason
    assert doubt.stats.consistency_changed == 1 and doubt.stats.escalations == 1
    # the F1 measure: partial overlap counts, and the reason names it
    f1 = _router(smollm2_slm, gemma3_slm, KEEP, min_agreement=0.1, measure="f1", max_tokens=1)
    result = f1.invoke(CONFIDENT_Q, max_tokens=24)
    check = result.decision.consistency
    assert check is not None
    assert result.route == ("slm" if check.mean_f1 >= 0.1 else "llm")
    assert "samples' mean token F1" in result.decision.reason


def test_cut_off_answers_are_never_sampled(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    router = _router(smollm2_slm, gemma3_slm, KEEP)
    result = router.invoke(OPEN_Q, max_tokens=4)  # cut off by the token limit
    assert result.route == "llm" and result.decision.consistency is None
    assert "cut off" in result.decision.reason
    assert router.stats.consistency_checks == 0


def test_the_trace_records_the_samples(
    tmp_path: Path, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    path = tmp_path / "traces.jsonl"
    recorder = TraceRecorder(path, store_text=True)
    router = Router(
        smollm2_slm,
        gemma3_slm,
        KEEP,
        trace=recorder,
        consistency=SelfConsistency(band=EVERYWHERE, k=2),
    )
    result = router.invoke(CONFIDENT_Q, max_tokens=24)
    router.close()
    record = json.loads(path.read_text("utf-8").splitlines()[-1])
    check = result.decision.consistency
    assert check is not None
    samples = record["slm"]["samples"]
    assert [s["raw"] for s in samples] == [s.text for s in check.samples]
    assert [s["completion_tokens"] for s in samples] == [
        s.usage.completion_tokens for s in check.samples
    ]
    assert record["routing"]["consistency"]["agreeing"] == check.agreeing
    assert record["routing"]["consistency"]["k"] == 2


def test_configuration_errors_name_the_field(
    smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    cases: list[tuple[dict[str, object], str]] = [
        ({"band": (1.0, 0.0)}, "consistency.band"),
        ({"band": (0.0,)}, "consistency.band"),
        ({"band": (float("nan"), 1.0)}, "consistency.band.low"),
        ({"band": EVERYWHERE, "k": 0}, "consistency.k"),
        ({"band": EVERYWHERE, "k": True}, "consistency.k"),
        ({"band": EVERYWHERE, "temperature": 0}, "consistency.temperature"),
        ({"band": EVERYWHERE, "min_agreement": 1.5}, "consistency.min_agreement"),
        ({"band": EVERYWHERE, "measure": "bleu"}, "consistency.measure"),
        ({"band": EVERYWHERE, "seed": -1}, "consistency.seed"),
        ({"band": EVERYWHERE, "max_tokens": 0}, "consistency.max_tokens"),
    ]
    for kwargs, field in cases:
        with pytest.raises(ConfigurationError) as info:
            SelfConsistency(**kwargs)  # type: ignore[arg-type]
        assert info.value.field == field, kwargs
        assert str(info.value).startswith(f"{field}: ")
    with pytest.raises(ConfigurationError) as info:
        Router(smollm2_slm, gemma3_slm, consistency=(0.0, 1.0))  # type: ignore[arg-type]
    assert info.value.field == "consistency"
    with pytest.raises(ConfigurationError) as info:
        Router(
            smollm2_slm,
            gemma3_slm,
            hedge=Hedge(),
            consistency=SelfConsistency(band=EVERYWHERE),
        )
    assert info.value.field == "consistency" and "hedge" in str(info.value)
    # off by default
    assert Router(smollm2_slm, gemma3_slm).consistency is None


def test_eval_run_records_samples_and_completes_old_records(
    tmp_path: Path, gemma3_slm: LlamaCppSLM
) -> None:
    from confidence_router.eval.traces import load_traces, run_traces

    examples = load_examples(SQUAD_V1_SAMPLE)[:2]
    path = tmp_path / "squad_v1.jsonl"
    run_traces(examples[:1], gemma3_slm, path, max_tokens=16, progress=False)
    assert "samples" not in load_traces(path)[0]["slm"]  # off by default
    summary = run_traces(
        examples, gemma3_slm, path, max_tokens=16, progress=False, samples=3, temperature=0.7
    )
    assert summary.slm_calls == 1  # the first question's greedy answer is kept
    records = load_traces(path)
    assert [r["id"] for r in records] == [ex.id for ex in examples]
    for record in records:
        slm = record["slm"]
        assert slm["sampling"] == {"k": 3, "temperature": 0.7, "seed": 0}
        assert len(slm["samples"]) == 3
        for s in slm["samples"]:
            assert s["completion_tokens"] >= 1 and isinstance(s["answer"], str)
            assert {"em", "f1", "raw", "finish_reason", "prompt_tokens"} <= set(s)
    # the second question's samples followed its greedy answer: its prompt was cached
    assert [s["prompt_tokens"] for s in records[1]["slm"]["samples"]] == [1, 0, 0]
    assert (
        run_traces(examples, gemma3_slm, path, progress=False, max_tokens=16, samples=3).skipped
        == 2
    )

"""README promises that had no test that fails when they break (issue 21, point 5).

Each test provokes the situation with real models (in process, over the test
server's Ollama and OpenAI APIs) and checks the exact outcome the README's
"When things go wrong" table promises, the ledger included
(q, slm, esc, err, fail).
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from confidence_router import (
    Bound,
    LlamaCppSLM,
    Message,
    OllamaSLM,
    OpenAICompatibleSLM,
    RoutedResult,
    Router,
    SLMError,
    SLMResponseError,
    ThresholdPolicy,
)
from confidence_router.observe.shadow import agreement
from confidence_router.types import Generation, TokenChunk
from tests.support.ollama_server import OllamaTestServer

SMOLLM2, GEMMA3 = "smollm2:135m", "gemma3:270m"
QUESTION = [Message("user", "What is the capital of France? Answer in a few words.")]
TOKENS = 16  # room for a whole answer: a cut-off answer escalates whatever the policy
KEEP = ThresholdPolicy((Bound("length", max=1000),))  # the policy keeps every whole answer
MODES = ["invoke", "ainvoke", "stream", "astream"]


async def route(router: Router, mode: str, messages: Any = QUESTION, **kw: Any) -> RoutedResult:
    """One query in one of the four modes; a stream must end with its result, once."""
    if mode == "invoke":
        return router.invoke(messages, **kw)
    if mode == "ainvoke":
        return await router.ainvoke(messages, **kw)
    if mode == "stream":
        chunks = list(router.stream(messages, **kw))
    else:
        chunks = [c async for c in router.astream(messages, **kw)]
    assert [c.done for c in chunks].count(True) == 1 and chunks[-1].done
    result = chunks[-1].result
    assert result is not None and "".join(c.text for c in chunks) == result.text
    return result


def counts(router: Router) -> tuple[int, int, int, int, int]:
    s = router.stats
    return (s.queries, s.answered_by_slm, s.escalations, s.errors, s.slm_failures)


# -- an empty SLM answer escalates ------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_an_empty_slm_answer_escalates(
    mode: str, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    # SmolLM2's answer starts with "The": stopping there leaves a finished, empty answer,
    # which KEEP (and the default policy: no token, no doubt) would otherwise keep.
    assert smollm2_slm.generate(QUESTION, max_tokens=2).tokens[0] == "The"
    router = Router(smollm2_slm, gemma3_slm, KEEP)
    result = await route(router, mode, stop=["The"], max_tokens=TOKENS)
    assert result.route == "llm"
    assert result.decision.reason == "escalated: the SLM gave an empty answer"
    assert result.slm is not None and result.slm.text == "" and result.slm_error is None
    assert result.fallback is not None and result.fallback.model == "gemma3-270m"
    assert counts(router) == (1, 0, 1, 0, 0)


# -- the router's own NaN check ---------------------------------------------------------------


class NaNAfterFirstToken:
    """A user's own SLM backend (the protocol, no validation of its own) over a real model,
    whose second token's logprob comes out NaN: only the router's own check stands."""

    def __init__(self, slm: LlamaCppSLM) -> None:
        self.slm = slm
        self.model = slm.model

    @staticmethod
    def _spoil(chunks: Iterator[TokenChunk]) -> Iterator[TokenChunk]:
        seen = 0
        for chunk in chunks:
            if chunk.tokens and seen <= 1 < seen + len(chunk.tokens):
                lp = chunk.token_logprobs.copy()
                lp[1 - seen] = math.nan
                chunk = replace(chunk, token_logprobs=lp)
            seen += len(chunk.tokens)
            yield chunk

    def generate(self, messages: Sequence[Message], **kw: Any) -> Generation:
        gen = self.slm.generate(messages, **kw)
        lp = gen.token_logprobs.copy()
        lp[1] = math.nan
        return replace(gen, token_logprobs=lp)

    async def agenerate(self, messages: Sequence[Message], **kw: Any) -> Generation:
        return self.generate(messages, **kw)

    def stream(self, messages: Sequence[Message], **kw: Any) -> Iterator[TokenChunk]:
        return self._spoil(self.slm.stream(messages, **kw))

    async def astream(self, messages: Sequence[Message], **kw: Any) -> AsyncIterator[TokenChunk]:
        for chunk in self.stream(messages, **kw):
            yield chunk


@pytest.mark.parametrize("early_abort", [True, False], ids=["watched", "whole"])
@pytest.mark.parametrize("mode", MODES)
async def test_nan_logprobs_escalate_as_an_slm_failure(
    mode: str, early_abort: bool, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM
) -> None:
    slm = NaNAfterFirstToken(smollm2_slm)
    router = Router(slm, gemma3_slm, early_abort=early_abort)
    result = await route(router, mode, max_tokens=TOKENS)
    assert result.route == "llm" and result.decision.score is None
    assert result.slm_error is not None
    assert result.slm_error.startswith("slm_response_error:") and "nan" in result.slm_error.lower()
    assert "slm_response_error" in result.decision.reason
    assert counts(router) == (1, 0, 1, 0, 1)  # the README's row: q+1 esc+1 fail+1
    strict = Router(slm, gemma3_slm, strict=True, early_abort=early_abort)
    with pytest.raises(SLMResponseError, match="NaN"):
        await route(strict, mode, max_tokens=TOKENS)
    assert counts(strict) == (1, 0, 0, 1, 1)


# -- OllamaSLM: positive logprobs, 401 and 403 ------------------------------------------------

OLLAMA_CASES = {
    "positive_logprob": (("bad_logprobs", {"value": 0.5, "index": 1}), "invalid log-probabilities"),
    "status_401": (("status", {"status": 401, "message": "unauthorized"}), "HTTP 401"),
    "status_403": (("status", {"status": 403, "message": "forbidden"}), "HTTP 403"),
}


@pytest.fixture
def smollm2_http(ollama_host: str) -> Iterator[OllamaSLM]:
    slm = OllamaSLM(SMOLLM2, host=ollama_host, max_tokens=TOKENS, timeout=60)
    yield slm
    slm.close()


@pytest.mark.parametrize("case", list(OLLAMA_CASES))
async def test_ollama_slm_positive_logprobs_and_refusals_are_response_errors(
    case: str, ollama_server: OllamaTestServer, smollm2_http: OllamaSLM, gemma3_slm: LlamaCppSLM
) -> None:
    (kind, params), words = OLLAMA_CASES[case]
    fault = ollama_server.faults.set(kind, model=SMOLLM2, **params)
    calls = [
        lambda: smollm2_http.generate(QUESTION),
        lambda: list(smollm2_http.stream(QUESTION)),
    ]
    for call in calls:
        with pytest.raises(SLMResponseError, match=words):
            call()
    with pytest.raises(SLMResponseError, match=words):
        await smollm2_http.agenerate(QUESTION)
    with pytest.raises(SLMResponseError, match=words):
        _ = [c async for c in smollm2_http.astream(QUESTION)]
    assert fault.hits == 4
    router = Router(smollm2_http, gemma3_slm)
    for mode in MODES:
        result = await route(router, mode, max_tokens=3)
        assert result.route == "llm" and result.slm is None
        assert result.slm_error is not None and result.slm_error.startswith("slm_response_error")
        assert words in result.slm_error
    assert counts(router) == (4, 0, 4, 0, 4)
    strict = Router(smollm2_http, gemma3_slm, strict=True)
    with pytest.raises(SLMResponseError, match=words):
        await strict.ainvoke(QUESTION, max_tokens=3)
    assert counts(strict) == (1, 0, 0, 1, 1)


# -- NaN among the top-k alternatives ---------------------------------------------------------
#
# The fault switches corrupt the chosen token's logprob only; ``malformed_json`` sends any
# text, so it sends a well-formed answer whose second alternative is NaN.

_ALTS = '[{"token":" Paris","logprob":-0.1},{"token":" Lyon","logprob":NaN}]'
_OLLAMA_LINE = (
    '{"model":"smollm2:135m","created_at":"2025-01-01T00:00:00Z",'
    '"message":{"role":"assistant","content":" Paris"},"done":false,'
    f'"logprobs":[{{"token":" Paris","logprob":-0.1,"top_logprobs":{_ALTS}}}]}}'
)
_OLLAMA_WHOLE = (
    '{"model":"smollm2:135m","created_at":"2025-01-01T00:00:00Z",'
    '"message":{"role":"assistant","content":" Paris"},"done":true,"done_reason":"stop",'
    '"prompt_eval_count":5,"eval_count":1,'
    f'"logprobs":[{{"token":" Paris","logprob":-0.1,"top_logprobs":{_ALTS}}}]}}'
)
_OPENAI_ALTS = (
    '[{"token":" Paris","logprob":-0.1,"bytes":null},{"token":" Lyon","logprob":NaN,"bytes":null}]'
)
_OPENAI_ENTRY = f'{{"token":" Paris","logprob":-0.1,"bytes":null,"top_logprobs":{_OPENAI_ALTS}}}'
_OPENAI_CHUNK = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"smollm2:135m",'
    '"choices":[{"index":0,"delta":{"content":" Paris"},'
    f'"logprobs":{{"content":[{_OPENAI_ENTRY}]}},"finish_reason":null}}]}}'
)
_OPENAI_WHOLE = (
    '{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"smollm2:135m",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":" Paris"},'
    f'"logprobs":{{"content":[{_OPENAI_ENTRY}]}},"finish_reason":"stop"}}],'
    '"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
)


@pytest.mark.parametrize("api", ["ollama", "openai"])
async def test_nan_among_the_alternatives_is_a_response_error(
    api: str, ollama_server: OllamaTestServer, gemma3_slm: LlamaCppSLM
) -> None:
    slm: OllamaSLM | OpenAICompatibleSLM
    if api == "ollama":
        slm = OllamaSLM(SMOLLM2, host=ollama_server.host, max_tokens=3, timeout=60)
        line, whole = _OLLAMA_LINE, _OLLAMA_WHOLE
    else:
        v1 = f"{ollama_server.host}/v1"
        slm = OpenAICompatibleSLM(SMOLLM2, base_url=v1, max_tokens=3, timeout=60)
        line, whole = _OPENAI_CHUNK, _OPENAI_WHOLE
    words = "invalid log-probabilities"
    with ollama_server.faults.inject("malformed_json", text=whole) as fault:
        with pytest.raises(SLMResponseError, match=words):
            slm.generate(QUESTION)
        with pytest.raises(SLMResponseError, match=words):
            await slm.agenerate(QUESTION)
    assert fault.hits == 2
    with ollama_server.faults.inject("malformed_json", text=line, after=0) as fault:
        with pytest.raises(SLMResponseError, match=words):
            list(slm.stream(QUESTION))
        with pytest.raises(SLMResponseError, match=words):
            _ = [c async for c in slm.astream(QUESTION)]
        router = Router(slm, gemma3_slm)
        result = await route(router, "ainvoke", max_tokens=3)  # the default: a watched stream
    assert fault.hits == 3
    assert result.route == "llm" and result.slm_error is not None
    assert result.slm_error.startswith("slm_response_error") and words in result.slm_error
    assert counts(router) == (1, 0, 1, 0, 1)


# -- the OpenAI client never retries ----------------------------------------------------------


def _chat_requests(server: OllamaTestServer) -> int:
    # the total, not the recent requests: the server remembers only its last 200
    return server.request_counts["/v1/chat/completions"]


@pytest.mark.parametrize(
    ("kind", "params"),
    [
        ("status", {"status": 503, "message": "overloaded"}),
        ("status", {"status": 429, "message": "rate limited"}),
        ("status", {"status": 500}),
        ("hangup", {}),
    ],
    ids=["503", "429", "500", "hangup"],
)
async def test_the_openai_client_never_retries(
    kind: str, params: dict[str, Any], ollama_server: OllamaTestServer, gemma3_slm: LlamaCppSLM
) -> None:
    """A fault rationed to one hit: a retry would succeed, and the test would see it."""
    slm = OpenAICompatibleSLM(
        SMOLLM2, base_url=f"{ollama_server.host}/v1", max_tokens=3, timeout=60
    )

    def agen() -> Any:
        return slm.agenerate(QUESTION)

    async def astream() -> None:
        _ = [c async for c in slm.astream(QUESTION)]

    calls: list[Any] = [
        lambda: slm.generate(QUESTION),
        lambda: list(slm.stream(QUESTION)),
        agen,
        astream,
    ]
    for call in calls:
        fault = ollama_server.faults.set(kind, model=SMOLLM2, times=1, **params)
        before = _chat_requests(ollama_server)
        with pytest.raises(SLMError):
            outcome = call()
            if hasattr(outcome, "__await__"):
                await outcome
        assert fault.hits == 1
        assert _chat_requests(ollama_server) == before + 1, "the client sent the request again"
        assert not ollama_server.faults.active, "the rationed fault is used up"
    router = Router(slm, gemma3_slm)
    ollama_server.faults.set(kind, model=SMOLLM2, times=1, **params)
    before = _chat_requests(ollama_server)
    result = await router.ainvoke(QUESTION, max_tokens=3)
    assert result.route == "llm" and result.slm_error is not None
    assert _chat_requests(ollama_server) == before + 1
    assert counts(router) == (1, 0, 1, 0, 1)


# -- shadow checks: exact labels, and shadow_min_f1 -------------------------------------------

PARIS = [Message("user", "What is the capital of France? Answer in a few words.")]
ROMEO = [Message("user", "Who wrote Romeo and Juliet? Answer in a few words.")]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def shadow_f1(smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM) -> list[float]:
    """The token F1 of SmolLM2's and Gemma's answers to each question, computed here."""
    scores = []
    for messages in (PARIS, ROMEO):
        slm_text = smollm2_slm.generate(messages, max_tokens=TOKENS).text
        fallback_text = gemma3_slm.generate(messages, max_tokens=TOKENS).text
        scores.append(agreement(slm_text, fallback_text)[1])
    # one answer pair overlaps in part, the other not at all: min_f1 can split them
    assert 0.5 < scores[0] < 0.9 and scores[1] == 0.0, scores
    return scores


@pytest.mark.parametrize("above", [False, True], ids=["min_f1_at_the_f1", "min_f1_above_it"])
def test_shadow_labels_and_min_f1_are_exact(
    above: bool,
    tmp_path: Path,
    smollm2_slm: LlamaCppSLM,
    gemma3_slm: LlamaCppSLM,
    shadow_f1: list[float],
) -> None:
    min_f1 = shadow_f1[0] + (1e-3 if above else 0.0)
    trace = tmp_path / "traces.jsonl"
    router = Router(
        smollm2_slm, gemma3_slm, KEEP, trace=trace, shadow_rate=1.0, shadow_min_f1=min_f1
    )
    for messages in (PARIS, ROMEO):
        assert router.invoke(messages, max_tokens=TOKENS).route == "slm"
    assert router.monitor is not None and router.monitor.wait(300)
    router.close()
    stats = router.stats
    assert stats.shadow_checks == 2
    agree = [not above, False]
    assert stats.kept_precision == sum(agree) / 2
    # records are written as the checks finish; PARIS's has the higher F1
    labels = sorted((r["label"] for r in _records(trace)), key=lambda lab: -lab["f1"])
    for label, f1, agreed in zip(labels, shadow_f1, agree):
        assert (label["source"], label["shadow"]) == ("shadow", "done")
        assert label["f1"] == round(f1, 5) and label["em"] == 0.0
        assert label["agree"] is agreed


def test_escalated_answers_are_labelled_by_agreement_with_min_f1(
    tmp_path: Path, smollm2_slm: LlamaCppSLM, gemma3_slm: LlamaCppSLM, shadow_f1: list[float]
) -> None:
    """An escalated query has both answers: its label needs no extra call."""
    always = ThresholdPolicy((Bound("mean_logprob", min=0.0),))  # no real answer is this sure
    for min_f1, agreed in ((shadow_f1[0], True), (shadow_f1[0] + 1e-3, False)):
        trace = tmp_path / f"escalated-{min_f1}.jsonl"
        router = Router(
            smollm2_slm,
            gemma3_slm,
            always,
            trace=trace,
            shadow_rate=1.0,
            shadow_min_f1=min_f1,
            early_abort=False,  # the whole SLM answer, as in the F1 computed above
        )
        result = router.invoke(PARIS, max_tokens=TOKENS)
        assert result.route == "llm"
        router.close()
        (record,) = _records(trace)
        label = record["label"]
        assert label["source"] == "escalation" and label["f1"] == round(shadow_f1[0], 5)
        assert label["agree"] is agreed
        assert router.stats.shadow_checks == 0  # no fallback call was added


def test_nan_row_promise_is_checked_on_real_arrays() -> None:
    """Guard for the NaN backend above: the spoiled logprob really is NaN at token 2."""
    chunks = [
        TokenChunk("a", np.array([-0.1]), tokens=("a",)),
        TokenChunk("bc", np.array([-0.2, -0.3]), tokens=("b", "c")),
    ]
    spoiled = list(NaNAfterFirstToken._spoil(iter(chunks)))
    assert spoiled[0].token_logprobs.tolist() == [-0.1]
    assert math.isnan(spoiled[1].token_logprobs[0]) and spoiled[1].token_logprobs[1] == -0.3

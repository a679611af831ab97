"""ConfidenceRouterChat inside a real retrieval chain, against real models over HTTP.

The chain is the everyday RAG shape::

    {"context": retriever | join, "question": RunnablePassthrough()}
        | ChatPromptTemplate | ConfidenceRouterChat | StrOutputParser()

over a BM25 retriever on eight SQuAD v1.1 dev passages (Wikipedia, CC BY-SA
4.0; see data/README.md). The SLM is SmolLM2-135M through
``OllamaSLM``, the fallback a real ``ChatOllama`` serving Gemma 3 270M, both
on the Ollama-compatible test server. Greedy decoding makes every answer,
score and route reproducible.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest
from langchain_community.retrievers import BM25Retriever
from langchain_core.callbacks import BaseCallbackHandler, get_usage_metadata_callback
from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnablePassthrough
from langchain_ollama import ChatOllama

from confidence_router import (
    Bound,
    FallbackError,
    OllamaSLM,
    SLMResponseError,
    SLMUnavailableError,
    ThresholdPolicy,
    compute_signals,
)
from langchain_confidence_router import ConfidenceRouterChat
from langchain_confidence_router._messages import to_core
from tests.support.paths import SQUAD_V1_SAMPLE

DATA = SQUAD_V1_SAMPLE
CLOSED = "http://127.0.0.1:9"
# Room for SmolLM2's whole answer: an answer cut off by the token limit always escalates.
MAX_TOKENS = 48

# Greedy SmolLM2-135M copies a fluent answer out of the Warsaw passage and is
# less sure on the complexity-theory one (or runs past the token limit, which
# escalates too). Where the seed bounds' scores land depends on the llama.cpp
# build, their order does not, so the routing policy's threshold is set between
# the two (``split_policy``).
CONFIDENT_Q = "What is a popular strolling destination for the Varsovians?"
UNSURE_Q = "How many outputs are expected for each input in a function problem?"

# Bounds every answer meets / no answer can meet: the route is then certain.
ALWAYS_SLM = ThresholdPolicy((Bound("length", min=0),))
ALWAYS_LLM = ThresholdPolicy((Bound("length", max=0),))

PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "Answer the question with a short phrase from the context."),
        ("human", "Context: {context}\n\nQuestion: {question}"),
    ]
)


def _join(docs: list[Document]) -> str:
    return "\n\n".join(d.page_content for d in docs)


@pytest.fixture(scope="module")
def retriever() -> BM25Retriever:
    """BM25 over the first passage of the first eight articles in the sample."""
    docs: list[Document] = []
    seen: set[str] = set()
    for line in DATA.read_text().splitlines():
        row = json.loads(line)
        if row["title"] not in seen:
            seen.add(row["title"])
            docs.append(Document(row["context"], metadata={"title": row["title"]}))
        if len(docs) == 8:
            break
    return BM25Retriever.from_documents(docs, k=1)


@pytest.fixture(scope="module")
def fallback(ollama_host: str) -> ChatOllama:
    return ChatOllama(
        model="gemma3:270m", base_url=ollama_host, num_predict=MAX_TOKENS, temperature=0
    )


@pytest.fixture(scope="module")
def split_policy(
    ollama_host: str, prompt_messages: Callable[[str], list[BaseMessage]]
) -> ThresholdPolicy:
    """The seed bounds with a threshold that keeps the Warsaw answer and not the other.

    Halfway between the two answers' scores; when the unsure answer runs past the
    token limit it escalates whatever the threshold, so just under the sure score.
    """
    slm = OllamaSLM("smollm2:135m", host=ollama_host, timeout=120)
    seed = ThresholdPolicy()
    sure, unsure = (
        slm.generate(to_core(prompt_messages(q)), max_tokens=MAX_TOKENS)
        for q in (CONFIDENT_Q, UNSURE_Q)
    )
    assert sure.finish_reason == "stop", "the Warsaw answer must fit in MAX_TOKENS"
    high, low = (seed.score(compute_signals(g)) for g in (sure, unsure))
    if unsure.finish_reason == "length":
        return seed.with_threshold(high - 0.05)
    assert high - low > 0.02, f"the Warsaw answer should be the surer one: {high} vs {low}"
    return seed.with_threshold((high + low) / 2)


@pytest.fixture(scope="module")
def make_router(
    ollama_host: str, fallback: ChatOllama, split_policy: ThresholdPolicy
) -> Callable[..., ConfidenceRouterChat]:
    def make(**overrides: Any) -> ConfidenceRouterChat:
        params: dict[str, Any] = {
            "slm": OllamaSLM("smollm2:135m", host=ollama_host, timeout=120),
            "fallback": fallback,
            "max_tokens": MAX_TOKENS,
            "policy": split_policy,
        }
        params.update(overrides)
        return ConfidenceRouterChat(**params)

    return make


@pytest.fixture(scope="module")
def make_chain(retriever: BM25Retriever) -> Callable[[Runnable[Any, Any]], Runnable[str, str]]:
    def make(llm: Runnable[Any, Any]) -> Runnable[str, str]:
        return (
            {"context": retriever | _join, "question": RunnablePassthrough()}
            | PROMPT
            | llm
            | StrOutputParser()
        )

    return make


@pytest.fixture(scope="module")
def prompt_messages(retriever: BM25Retriever) -> Callable[[str], list[BaseMessage]]:
    """The exact messages the chain sends to the model for a question."""

    def messages(question: str) -> list[BaseMessage]:
        context = _join(retriever.invoke(question))
        return PROMPT.invoke({"context": context, "question": question}).to_messages()

    return messages


class Recorder(BaseCallbackHandler):
    """A plain callback handler that keeps what it is told."""

    def __init__(self) -> None:
        self.model_starts: list[dict[str, Any]] = []
        self.chain_starts: list[dict[str, Any]] = []
        self.llm_ends: list[tuple[LLMResult, dict[str, Any]]] = []
        self.token_chunks: list[Any] = []

    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.model_starts.append({"run_id": run_id, **kwargs})

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kwargs: Any) -> None:
        self.chain_starts.append({"run_id": run_id, "inputs": inputs, **kwargs})

    def on_llm_new_token(self, token: str, *, chunk: Any = None, **kwargs: Any) -> None:
        self.token_chunks.append(chunk)

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        self.llm_ends.append((response, {"run_id": run_id, **kwargs}))

    def router_start(self) -> dict[str, Any]:
        (start,) = [s for s in self.model_starts if "seq:step:3" in (s.get("tags") or [])]
        return start


@pytest.fixture(scope="module")
def reference(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    prompt_messages: Callable[[str], list[BaseMessage]],
) -> dict[str, tuple[str, dict[str, Any]]]:
    """Answer and routing record of each question, from one plain ``invoke``."""
    llm = make_router()
    answers = {}
    for question in (CONFIDENT_Q, UNSURE_Q):
        message = llm.invoke(prompt_messages(question))
        answers[question] = (message.text, message.response_metadata["routing"])
    return answers


# -- the two routes, realistic policy --------------------------------------------------


def test_confident_answer_stays_on_the_slm(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    reference: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    llm = make_router()
    recorder = Recorder()
    answer = make_chain(llm).invoke(CONFIDENT_Q, config={"callbacks": [recorder]})
    assert "Krasiński" in answer  # from the retrieved Warsaw passage
    assert answer == reference[CONFIDENT_Q][0]
    response = recorder.llm_ends[-1][0]
    message = response.generations[0][0].message
    routing = message.response_metadata["routing"]
    assert routing["route"] == "slm"
    assert routing["reason"].startswith("confident")
    assert routing["models"] == {"slm": "smollm2:135m", "llm": None, "answered_by": "smollm2:135m"}
    assert message.response_metadata["model_name"] == "smollm2:135m"
    logprobs = message.response_metadata["logprobs"]["content"]
    assert len(logprobs) == routing["signals"]["length"]
    assert "".join(e["token"] for e in logprobs) == answer
    stats = llm.stats
    assert (stats.queries, stats.answered_by_slm, stats.escalations) == (1, 1, 0)
    usage = stats.tokens_by_model["smollm2:135m"]
    assert message.usage_metadata["total_tokens"] == usage.total_tokens


def test_uncertain_answer_escalates_to_the_fallback(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    fallback: ChatOllama,
    reference: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    llm = make_router()
    recorder = Recorder()
    answer = make_chain(llm).invoke(UNSURE_Q, config={"callbacks": [recorder]})
    assert answer == make_chain(fallback).invoke(UNSURE_Q)  # the fallback's own answer
    message = recorder.llm_ends[-1][0].generations[0][0].message
    routing = message.response_metadata["routing"]
    assert routing["route"] == "llm"
    # SmolLM2 rambles on this one: unsure, or cut off by the token limit (which escalates too)
    assert routing["reason"].startswith(("unsure", "escalated: the SLM's answer was cut off"))
    assert routing["models"]["answered_by"] == "gemma3:270m"
    assert message.response_metadata["model_name"] == "gemma3:270m"
    assert "logprobs" not in message.response_metadata
    stats = llm.stats
    assert (stats.queries, stats.escalations) == (1, 1)
    spent = sum(u.total_tokens for u in stats.tokens_by_model.values())
    assert set(stats.tokens_by_model) == {"smollm2:135m", "gemma3:270m"}
    assert message.usage_metadata["total_tokens"] == spent


@pytest.mark.parametrize(("policy", "route"), [(ALWAYS_SLM, "slm"), (ALWAYS_LLM, "llm")])
def test_policy_bounds_decide_the_route(
    make_router: Callable[..., ConfidenceRouterChat],
    prompt_messages: Callable[[str], list[BaseMessage]],
    fallback: ChatOllama,
    ollama_host: str,
    policy: ThresholdPolicy,
    route: str,
) -> None:
    # UNSURE_Q escalates under `split_policy`, so ALWAYS_SLM really overrides it.
    messages = prompt_messages(UNSURE_Q)
    # An answer cut off by the token limit escalates whatever the policy: the kept
    # answer ends at its first sentence instead.
    stop = ["\n", "."] if route == "slm" else None
    message = make_router(policy=policy, stop=stop).invoke(messages)
    assert message.response_metadata["routing"]["route"] == route
    if route == "slm":
        slm = OllamaSLM("smollm2:135m", host=ollama_host)
        kept = slm.generate(to_core(messages), max_tokens=MAX_TOKENS, stop=stop)
        assert kept.finish_reason == "stop"
        assert message.text == kept.text
    else:
        assert message.text == fallback.invoke(messages).text


# -- the Runnable protocol -------------------------------------------------------------


def test_batch_gives_the_same_answers_as_invoke(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    reference: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    llm = make_router()
    answers = make_chain(llm).batch([CONFIDENT_Q, UNSURE_Q], config={"max_concurrency": 2})
    assert answers == [reference[CONFIDENT_Q][0], reference[UNSURE_Q][0]]
    assert (llm.stats.answered_by_slm, llm.stats.escalations) == (1, 1)


async def test_abatch_gives_the_same_answers_as_invoke(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    reference: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    llm = make_router()
    answers = await make_chain(llm).abatch([CONFIDENT_Q, UNSURE_Q])
    assert answers == [reference[CONFIDENT_Q][0], reference[UNSURE_Q][0]]
    assert (llm.stats.answered_by_slm, llm.stats.escalations) == (1, 1)


@pytest.mark.parametrize("question", [CONFIDENT_Q, UNSURE_Q])
def test_stream_yields_the_invoked_answer_piece_by_piece(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    reference: dict[str, tuple[str, dict[str, Any]]],
    question: str,
) -> None:
    recorder = Recorder()
    chain = make_chain(make_router()).with_config(callbacks=[recorder])
    pieces = list(chain.stream(question))
    assert "".join(pieces) == reference[question][0]
    assert len([p for p in pieces if p]) > 1
    # the first token event already says which model answers
    chunks = [c for c in recorder.token_chunks if c is not None]
    assert (
        chunks[0].message.response_metadata["routing"]["route"] == reference[question][1]["route"]
    )
    final = recorder.llm_ends[-1][0].generations[0][0].message
    assert final.response_metadata["routing"] == {
        **reference[question][1],
        "latency_s": final.response_metadata["routing"]["latency_s"],
    }


@pytest.mark.parametrize("question", [CONFIDENT_Q, UNSURE_Q])
async def test_astream_yields_the_invoked_answer_piece_by_piece(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    reference: dict[str, tuple[str, dict[str, Any]]],
    question: str,
) -> None:
    pieces = [piece async for piece in make_chain(make_router()).astream(question)]
    assert "".join(pieces) == reference[question][0]
    assert len([p for p in pieces if p]) > 1


@pytest.mark.parametrize("question", [CONFIDENT_Q, UNSURE_Q])
async def test_astream_events_carry_the_decision_once_and_no_duplicate_tokens(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    reference: dict[str, tuple[str, dict[str, Any]]],
    question: str,
) -> None:
    text, routing = reference[question]
    events = [e async for e in make_chain(make_router()).astream_events(question, version="v2")]
    model_events = [e for e in events if e["event"].startswith("on_chat_model")]
    # only the router's own run: the fallback's tokens are not reported twice
    assert {e["name"] for e in model_events} == {"ConfidenceRouterChat"}
    streamed = [e["data"]["chunk"] for e in model_events if e["event"] == "on_chat_model_stream"]
    decisions = [
        c.response_metadata["routing"]
        for c in streamed
        if "route" in c.response_metadata.get("routing", {})
    ]
    assert len(decisions) == 1
    assert streamed[0].response_metadata["routing"]["route"] == routing["route"]
    assert streamed[0].response_metadata["routing"]["models"] == routing["models"]
    assert "".join(c.text for c in streamed) == text
    (end,) = [e for e in model_events if e["event"] == "on_chat_model_end"]
    output = end["data"]["output"]
    assert output.response_metadata["routing"]["models"] == routing["models"]
    assert output.response_metadata["routing"]["reason"] == routing["reason"]
    assert output.usage_metadata["total_tokens"] > 0


def test_with_config_tags_metadata_and_callbacks_reach_the_run_and_the_decision(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
) -> None:
    recorder = Recorder()
    chain = make_chain(make_router()).with_config(
        tags=["rag"], metadata={"user": "u1"}, callbacks=[recorder]
    )
    chain.invoke(UNSURE_Q)
    start = recorder.router_start()
    assert "rag" in start["tags"]
    assert start["metadata"]["user"] == "u1"
    assert start["metadata"]["ls_provider"] == "confidence_router"
    # the decision, as a child run tagged with the route
    (decision,) = [s for s in recorder.chain_starts if s.get("name") == "routing_decision"]
    assert decision["parent_run_id"] == start["run_id"]
    assert {"route:llm", "rag"} <= set(decision["tags"])
    assert decision["metadata"]["route"] == "llm"
    assert decision["metadata"]["answered_by"] == "gemma3:270m"
    assert decision["metadata"]["user"] == "u1"
    # the escalated fallback call runs nested under the router's run
    (nested,) = [s for s in recorder.model_starts if s.get("parent_run_id") == start["run_id"]]
    assert "route:llm" in nested["tags"]
    # on_llm_end of the router's run carries the decision in every documented place
    (response, info) = [r for r in recorder.llm_ends if r[1]["run_id"] == start["run_id"]][0]
    generation = response.generations[0][0]
    assert generation.generation_info["routing"]["route"] == "llm"
    assert generation.message.response_metadata["routing"]["route"] == "llm"
    assert response.llm_output["routing"]["route"] == "llm"


def test_with_retry_recovers_from_a_failed_slm_call(
    make_router: Callable[..., ConfidenceRouterChat],
    prompt_messages: Callable[[str], list[BaseMessage]],
    ollama_server: Any,
    reference: dict[str, tuple[str, dict[str, Any]]],
) -> None:
    llm = make_router(strict=True)
    messages = prompt_messages(CONFIDENT_Q)
    one_500 = {"status": 500, "model": "smollm2:135m", "times": 1}
    with ollama_server.faults.inject("status", **one_500), pytest.raises(SLMResponseError):
        llm.invoke(messages)
    with ollama_server.faults.inject("status", **one_500) as f:
        message = llm.with_retry(stop_after_attempt=2, wait_exponential_jitter=False).invoke(
            messages
        )
    assert f.hits == 1
    assert message.text == reference[CONFIDENT_Q][0]


def test_a_failed_slm_call_escalates_with_its_reason_when_not_strict(
    make_router: Callable[..., ConfidenceRouterChat],
    prompt_messages: Callable[[str], list[BaseMessage]],
    ollama_server: Any,
) -> None:
    llm = make_router()
    with ollama_server.faults.inject("status", status=500, model="smollm2:135m", times=1):
        message = llm.invoke(prompt_messages(CONFIDENT_Q))
    routing = message.response_metadata["routing"]
    assert routing["route"] == "llm"
    assert routing["score"] is None
    assert "slm_response_error" in routing["reason"]
    assert routing["slm_error"].startswith("slm_response_error")
    assert message.response_metadata["model_name"] == "gemma3:270m"
    assert llm.stats.slm_failures == 1


def test_an_unreachable_slm_is_a_typed_error_when_strict(
    make_router: Callable[..., ConfidenceRouterChat],
) -> None:
    llm = make_router(slm=OllamaSLM("smollm2:135m", host=CLOSED), strict=True)
    with pytest.raises(SLMUnavailableError, match="cannot reach Ollama"):
        llm.invoke("Hello")


def test_with_fallbacks_answers_when_the_routers_own_fallback_fails(
    make_router: Callable[..., ConfidenceRouterChat],
    make_chain: Callable[[Runnable[Any, Any]], Runnable[str, str]],
    fallback: ChatOllama,
) -> None:
    broken = make_router(
        fallback=ChatOllama(model="gemma3:270m", base_url=CLOSED), policy=ALWAYS_LLM
    )
    with pytest.raises(FallbackError, match="gemma3:270m"):
        broken.invoke("Hello")
    answer = make_chain(broken.with_fallbacks([fallback])).invoke(UNSURE_Q)
    assert answer == make_chain(fallback).invoke(UNSURE_Q)
    assert broken.stats.errors == 2


@pytest.mark.parametrize("policy", [ALWAYS_SLM, ALWAYS_LLM], ids=["slm", "llm"])
def test_bound_stop_sequences_cut_the_answer_of_either_model(
    make_router: Callable[..., ConfidenceRouterChat],
    prompt_messages: Callable[[str], list[BaseMessage]],
    policy: ThresholdPolicy,
) -> None:
    llm = make_router(policy=policy)
    messages = prompt_messages(CONFIDENT_Q)
    full = llm.invoke(messages).text
    # A whole word with its leading space starts on a token boundary, so the
    # cut does not depend on how a backend trims a token straddling the stop
    # (words after a newline have none, so they are not candidates).
    spaced = [" " + word for word in full.split()[1:] if " " + word in full]
    assert len(spaced) >= 2, full
    stop = spaced[len(spaced) // 2]
    cut = llm.bind(stop=[stop]).invoke(messages).text
    assert cut == full[: full.index(stop)]
    streamed = "".join(c.text for c in llm.bind(stop=[stop]).stream(messages))
    assert streamed == cut


@pytest.mark.parametrize(("max_retries", "recovers"), [(0, False), (1, True)])
def test_max_retries_retries_a_failed_fallback_call(
    make_router: Callable[..., ConfidenceRouterChat],
    prompt_messages: Callable[[str], list[BaseMessage]],
    ollama_server: Any,
    reference: dict[str, tuple[str, dict[str, Any]]],
    max_retries: int,
    recovers: bool,
) -> None:
    llm = make_router(max_retries=max_retries)
    messages = prompt_messages(UNSURE_Q)
    with ollama_server.faults.inject("status", status=503, model="gemma3:270m", times=1) as f:
        if recovers:
            assert llm.invoke(messages).text == reference[UNSURE_Q][0]
        else:
            with pytest.raises(FallbackError, match="503"):
                llm.invoke(messages)
    assert f.hits == 1


@pytest.mark.parametrize("policy", [ALWAYS_SLM, ALWAYS_LLM], ids=["slm", "llm"])
def test_langchain_usage_callback_sees_the_documented_totals(
    make_router: Callable[..., ConfidenceRouterChat],
    prompt_messages: Callable[[str], list[BaseMessage]],
    policy: ThresholdPolicy,
) -> None:
    llm = make_router(policy=policy)
    with get_usage_metadata_callback() as usage:
        message = llm.invoke(prompt_messages(CONFIDENT_Q))
    answered_by = message.response_metadata["model_name"]
    counted = usage.usage_metadata[answered_by]["total_tokens"]
    tokens = llm.stats.tokens_by_model
    assert message.usage_metadata["total_tokens"] == sum(u.total_tokens for u in tokens.values())
    if answered_by == "smollm2:135m":
        assert counted == message.usage_metadata["total_tokens"]
    else:  # the fallback's own run reports its tokens too (see the class docstring)
        assert counted == message.usage_metadata["total_tokens"] + tokens[answered_by].total_tokens

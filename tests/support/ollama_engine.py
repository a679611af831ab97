"""Runs one Ollama request on a real model and yields Ollama's response objects.

The token loop is the core's own (``LlamaCppSLM.stream``): each request gets a
shallow copy of the shared instance with the request's options (temperature,
seed, top_logprobs, num_ctx). The copy shares the llama.cpp context and its
lock, so requests are served one at a time, like a single Ollama runner.
Logprobs are therefore the raw logits' log-softmax, as the core computes them,
and the same prompt gives bit-identical numbers over HTTP and in process.
"""

from __future__ import annotations

import copy
import random
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confidence_router import LlamaCppSLM, Message

from .faults import Plan
from .models import PromptFormat, ServedModel
from .ollama_wire import InferenceRequest, created_at, logprob_entry, metrics


@dataclass
class Job:
    """A request bound to its model copy, ready to run."""

    model: ServedModel
    request: InferenceRequest
    slm: LlamaCppSLM
    prompt_format: PromptFormat
    messages: list[Message]
    pieces: deque[bytes]
    max_tokens: int
    started: float
    load_s: float


def _variant(
    base: LlamaCppSLM, *, top_logprobs: int, temperature: float, seed: int, n_ctx: int
) -> tuple[LlamaCppSLM, deque[bytes]]:
    """A per-request copy of ``base`` that records each token's raw bytes.

    ``_piece`` is called for the chosen token and then for each alternative,
    in that order, so the recorded bytes line up with the TokenChunks.
    """
    variant = copy.copy(base)
    variant.top_logprobs = top_logprobs
    variant.temperature = temperature
    variant.seed = seed
    variant.n_ctx = n_ctx
    pieces: deque[bytes] = deque()
    original = base._piece

    def piece(token: int) -> bytes:
        data = original(token)
        pieces.append(data)
        return data

    variant._piece = piece  # type: ignore[method-assign]
    return variant, pieces


def prepare(model: ServedModel, request: InferenceRequest, started: float) -> Job:
    """Pick the prompt format and messages Ollama would build, and the model copy."""
    if request.endpoint == "chat":
        fmt, messages = model.chat_format, list(request.messages)
    elif request.raw:
        fmt, messages = "completion", [Message("user", request.prompt)]
    else:
        fmt = model.chat_format
        messages = [Message("system", request.system)] if request.system else []
        messages.append(Message("user", request.prompt))
    loading = time.perf_counter()
    base = model.slm(fmt)
    load_s = time.perf_counter() - loading
    options = request.options
    n_ctx = min(options.num_ctx or base.n_ctx, base.n_ctx)
    seed = options.seed if options.seed is not None else random.randrange(2**31)
    variant, pieces = _variant(
        base,
        top_logprobs=request.top_logprobs if request.logprobs else 0,
        temperature=options.temperature,
        seed=seed,
        n_ctx=n_ctx,
    )
    return Job(
        model=model,
        request=request,
        slm=variant,
        prompt_format=fmt,
        messages=messages,
        pieces=pieces,
        max_tokens=options.num_predict or n_ctx,
        started=started,
        load_s=load_s,
    )


def _head(job: Job) -> dict[str, Any]:
    return {"model": job.request.model, "created_at": created_at()}


def _content(job: Job, obj: dict[str, Any], text: str) -> dict[str, Any]:
    if job.request.endpoint == "chat":
        obj["message"] = {"role": "assistant", "content": text}
    else:
        obj["response"] = text
    return obj


def context_tokens(job: Job, generated: str) -> list[int]:
    """/api/generate's ``context``: the rendered prompt plus the answer, re-tokenized."""
    llm: Any = job.slm._llm
    text = (job.slm.format_prompt(job.messages) + generated).encode("utf-8")
    if job.prompt_format == "chat":
        return list(llm.tokenize(text, add_bos=False, special=True))
    return list(llm.tokenize(text, add_bos=True, special=False))


def run(job: Job, plan: Plan) -> Iterator[dict[str, Any]]:
    """Ollama's response objects for ``job``: one per token chunk, then the final one.

    Errors of the model (context overflow, ...) are raised by the first
    ``next()``, before anything was sent, so the caller can still answer
    with an HTTP status.
    """
    request = job.request
    want_logprobs = request.logprobs and "no_logprobs" not in plan
    if request.logprobs and "no_logprobs" in plan:
        plan.fire("no_logprobs")
    bad = plan.get("bad_logprobs")
    partial = plan.get("partial_logprobs")
    logprobs_sent = False
    generation_started = time.perf_counter()
    first_at: float | None = None
    produced: list[str] = []
    n_token = 0
    stop = list(request.options.stop) or None
    for chunk in job.slm.stream(job.messages, stop=stop, max_tokens=job.max_tokens):
        now = time.perf_counter()
        first_at = first_at if first_at is not None else now
        entries = []
        for i, token in enumerate(chunk.tokens):
            chosen = job.pieces.popleft()
            alternatives = [job.pieces.popleft() for _ in chunk.top_tokens[i]]
            logprob = float(chunk.token_logprobs[i])
            if bad is not None and n_token == bad.index and request.logprobs:
                logprob = plan.fire("bad_logprobs").value
            n_token += 1
            top = None
            if request.top_logprobs > 0:
                row = chunk.top_logprobs[i]
                top = [
                    (alt, float(row[j]), alternatives[j])
                    for j, alt in enumerate(chunk.top_tokens[i])
                    if row[j] > float("-inf")
                ]
            entries.append(logprob_entry(token, logprob, chosen, top))
        if chunk.finish_reason is None or chunk.text:
            produced.append(chunk.text)
            obj = _content(job, _head(job), chunk.text)
            obj["done"] = False
            if want_logprobs and entries:
                if partial is not None and logprobs_sent and chunk.text:
                    plan.fire("partial_logprobs")  # text without its logprobs
                else:
                    obj["logprobs"] = entries
                    logprobs_sent = True
            yield obj
        if chunk.finish_reason is not None:
            end = time.perf_counter()
            usage = chunk.usage
            final = _content(job, _head(job), "")
            final["done"] = True
            final["done_reason"] = "length" if chunk.finish_reason == "length" else "stop"
            if request.endpoint == "generate" and not request.raw:
                final["context"] = context_tokens(job, "".join(produced))
            final.update(
                metrics(
                    total_s=end - job.started,
                    load_s=job.load_s,
                    prompt_eval_count=usage.prompt_tokens if usage else 0,
                    prompt_eval_s=first_at - generation_started,
                    eval_count=usage.completion_tokens if usage else 0,
                    eval_s=end - first_at,
                )
            )
            yield final


def merge(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming answer: the final object with all text and all logprobs."""
    final = dict(objects[-1])
    text = "".join(
        o["message"]["content"] if "message" in o else o.get("response", "") for o in objects
    )
    logprobs = [entry for o in objects for entry in o.get("logprobs", ())]
    if "message" in final:
        final["message"] = {"role": "assistant", "content": text}
    else:
        final["response"] = text
    if logprobs:
        final["logprobs"] = logprobs
    return final


def load_response(request: InferenceRequest, reason: str) -> dict[str, Any]:
    """The answer to an empty request, which only loads (or unloads) the model."""
    obj: dict[str, Any] = {"model": request.model, "created_at": created_at()}
    if request.endpoint == "chat":
        obj["message"] = {"role": "assistant", "content": ""}
    else:
        obj["response"] = ""
    obj["done_reason"] = reason
    obj["done"] = True
    return obj


__all__ = ["Job", "context_tokens", "load_response", "merge", "prepare", "run"]

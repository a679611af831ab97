"""Run the models once and keep everything an offline policy evaluation needs.

For each question a trace record (one JSON line) holds the SLM's answer with
its tokens, per-token log-probabilities, top-k alternatives and Signals; the
answer of every fallback (the *perfect* fallback, whose answer is the gold
one, plus any real model); their official scores, token counts and
latencies; and features of the query alone. Policies are then evaluated from
these files in milliseconds, without running a model again.

A token count the server did not report (a failed call, a server that sends
no usage) is `null`, never 0; the readers leave such questions out of token
and cost figures and say how many (`confidence_router.eval.counts`).

Runs are resumable and cached: questions already in the file are skipped, a
fallback added later is run only for the records that lack it, and a record
made with a different SLM, prompt, top-k or token limit is never mixed in
(`TraceConfigError`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.escalation import Escalator
from ..errors import ModelNotFoundError, SLMError, SLMUnavailableError
from ..observe.recorder import slm_part
from ..scoring import clean_prediction, score_answer
from ..signals.context import context_signals
from ..signals.token import compute_signals
from ..types import Generation, Message
from .data import QAExample
from .prompts import PROMPT_VERSION, PROMPT_VERSIONS, STOP, build_messages
from .query_features import query_features

#: Name of the fallback that answers with the gold answer (an upper bound).
PERFECT = "perfect"

Record = dict[str, Any]


class TraceConfigError(ValueError):
    """A trace file holds records made with another configuration."""


@dataclass(frozen=True)
class TraceConfig:
    """What makes two SLM answers comparable: the model, prompt, top-k and token limit."""

    slm: str
    prompt: str
    top_k: int
    max_tokens: int


@dataclass(frozen=True)
class RunSummary:
    """What one run did to one trace file."""

    path: Path
    total: int
    skipped: int
    slm_calls: int
    fallback_calls: int
    slm_failures: int


def perfect_answer(example: QAExample) -> str:
    """The perfect fallback's answer: the first gold answer, or abstention."""
    return example.answers[0] if example.answerable and example.answers else ""


def _round(values: np.ndarray) -> list[float | None]:
    return [round(float(v), 4) if math.isfinite(v) else None for v in values]


def slm_record(
    example: QAExample,
    gen: Generation | None,
    error: SLMError | None,
    messages: Sequence[Message] | None = None,
) -> Record:
    """The SLM part of a record; a failed call is kept (the router would escalate it).

    `messages` (default: the data set's prompt for `example`) is what the
    SLM answered; the context signals are measured against it.
    """
    if gen is None:
        assert error is not None
        failed = f"{error.reason_code}: {error}"
        return slm_part(None, failed, store_text=True, agreement=(0.0, 0.0))
    answer = clean_prediction(gen.text)
    score = score_answer(example.kind, answer, example.answers)
    try:
        prompt = list(messages) if messages is not None else prompt_messages(example)
        signals: dict[str, float] | None = compute_signals(gen, prompt).as_dict()
    except ValueError:
        signals = None
    return {
        "raw": gen.text,
        "answer": answer,
        "em": score.em,
        "f1": score.f1,
        "error": None,
        "signals": signals,
        "tokens": list(gen.tokens),
        "logprobs": _round(gen.token_logprobs),
        "top_logprobs": [_round(row) for row in gen.top_logprobs],
        **gen.usage.counts(),  # an unreported count: None
        "latency_s": round(gen.latency_s, 5),
        "finish_reason": gen.finish_reason,
    }


def sample_records(example: QAExample, samples: Sequence[Generation]) -> list[Record]:
    """Sampled answers (self-consistency), scored like the greedy one, with their token counts."""
    out: list[Record] = []
    for gen in samples:
        answer = clean_prediction(gen.text)
        score = score_answer(example.kind, answer, example.answers)
        out.append(
            {
                "raw": gen.text,
                "answer": answer,
                "em": score.em,
                "f1": score.f1,
                **gen.usage.counts(),
                "finish_reason": gen.finish_reason,
                "latency_s": round(gen.latency_s, 5),
            }
        )
    return out


def perfect_record(example: QAExample, prompt_tokens: int | None) -> Record:
    """The perfect fallback: always right; its token counts are estimates (4 chars a token).

    `prompt_tokens` is the SLM's prompt count; None (unreported, or the SLM
    failed) stays None.
    """
    answer = perfect_answer(example)
    score = score_answer(example.kind, answer, example.answers)
    return {
        "answer": answer,
        "em": score.em,
        "f1": score.f1,
        "error": None,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": max(1, math.ceil(len(answer) / 4)),
        "latency_s": None,
        "model": PERFECT,
    }


def fallback_record(
    example: QAExample, gen: Generation, messages: Sequence[Message] | None = None
) -> Record:
    """A real fallback's answer, scored like the SLM's.

    When the fallback gave log-probabilities (an SLM backend used as the
    fallback), its tokens, logprobs and Signals are kept too, so the same
    answers can be replayed with that model as the SLM (a longer cascade, or
    a policy fitted across models).
    """
    answer = clean_prediction(gen.text)
    score = score_answer(example.kind, answer, example.answers)
    record: Record = {
        "raw": gen.text,
        "answer": answer,
        "em": score.em,
        "f1": score.f1,
        "error": None,
        **gen.usage.counts(),
        "latency_s": round(gen.latency_s, 5),
        "model": gen.model,
        "finish_reason": gen.finish_reason,
    }
    if gen.has_logprobs:
        scored = slm_record(example, gen, None, messages)
        for key in ("signals", "tokens", "logprobs", "top_logprobs"):
            record[key] = scored[key]
    return record


def prompt_messages(example: QAExample, version: str = PROMPT_VERSION) -> list[Message]:
    """The messages the SLM answers for `example` under a prompt version (default `qa-v1`)."""
    return build_messages(example, version)


def add_context_signals(records: Sequence[Record], examples: Sequence[QAExample]) -> int:
    """Measure the context signals of recorded SLM answers against their prompts, in place.

    The prompt is rebuilt from the data set (`examples`), so a record made
    with another prompt version is refused. Log-probability signals are kept
    as recorded.

    Returns:
        How many records were updated.

    Raises:
        TraceConfigError: a record made with another prompt, or not in `examples`.
    """
    by_id = {(ex.kind, ex.id): ex for ex in examples}  # SQuAD 2.0 reuses v1.1 question ids
    updated = 0
    for record in records:
        slm = record.get("slm")
        if not slm or slm.get("signals") is None:
            continue
        prompt_version = record.get("config", {}).get("prompt")
        if prompt_version not in PROMPT_VERSIONS:
            raise TraceConfigError(
                f"record {record['id']} was made with prompt {prompt_version!r}, not one of "
                f"{', '.join(PROMPT_VERSIONS)}: its prompt cannot be rebuilt"
            )
        example = by_id.get((record["dataset"], record["id"]))
        if example is None:
            raise TraceConfigError(
                f"record {record['id']} is not in the {record['dataset']} data given"
            )
        values = context_signals(prompt_messages(example, prompt_version), slm.get("raw", ""))
        slm["signals"] = {**slm["signals"], **values}
        updated += 1
    return updated


def write_traces(path: str | Path, records: Sequence[Record]) -> None:
    """Write records to a trace file atomically (replacing it)."""
    _write_all(Path(path), records)


def load_traces(path: str | Path) -> list[Record]:
    """The records of a trace file, the last one per question id winning (none without a file).

    Raises:
        TraceConfigError: a line that is not JSON (it names the line).
    """
    path = Path(path)
    if not path.exists():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text("utf-8").splitlines(), 1)]
    lines = [(n, line) for n, line in lines if line.strip()]
    records: dict[str, Record] = {}
    for i, (number, line) in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                break  # a run killed mid-write leaves a partial last line
            raise TraceConfigError(f"{path}:{number}: not valid JSON ({exc})") from exc
        records[record["id"]] = record
    return list(records.values())


def _write_all(path: Path, records: Sequence[Record]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _new_record(example: QAExample, config: TraceConfig) -> Record:
    return {
        "id": example.id,
        "dataset": example.kind,
        "question": example.question,
        "answers": list(example.answers),
        "answerable": example.answerable,
        "meta": dict(example.meta),
        "config": asdict(config),
        "query": {
            k: round(v, 5) for k, v in query_features(example.question, example.context).items()
        },
        "slm": None,
        "fallbacks": {},
    }


async def arun_traces(
    examples: Sequence[QAExample],
    slm: Any,
    path: str | Path,
    *,
    fallbacks: Mapping[str, Escalator | None] | None = None,
    max_tokens: int = 32,
    concurrency: int = 1,
    progress: bool = True,
    prompt: str = PROMPT_VERSION,
    samples: int = 0,
    temperature: float = 0.7,
) -> RunSummary:
    """Answer every question not yet in `path` and append its record.

    `fallbacks` maps a name to an Escalator; `None` (or the name
    `"perfect"`) is the perfect fallback, which is always recorded.
    `samples` > 0 also draws that many sampled answers at `temperature`
    (seeds 0..k-1, `slm.asample`) into `record["slm"]["samples"]`, for the
    offline self-consistency analysis; records lacking them are completed.

    Returns:
        A `RunSummary` of what the run did to the file.

    Raises:
        TraceConfigError: an unknown prompt, samples from an SLM that cannot draw
            them, or a file holding answers made with another configuration.
        SLMUnavailableError, ModelNotFoundError: the SLM cannot answer at all.
    """
    from tqdm.auto import tqdm

    if prompt not in PROMPT_VERSIONS:
        raise TraceConfigError(f"unknown prompt {prompt!r}; known: {', '.join(PROMPT_VERSIONS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wanted: dict[str, Escalator | None] = {PERFECT: None, **dict(fallbacks or {})}
    config = TraceConfig(
        slm=str(slm.model),
        prompt=prompt,
        top_k=int(getattr(slm, "top_logprobs", -1)),
        max_tokens=max_tokens,
    )
    sampling = {"k": samples, "temperature": temperature, "seed": 0} if samples else None
    if sampling is not None and not callable(getattr(slm, "asample", None)):
        raise TraceConfigError(f"the SLM {slm.model!r} cannot draw samples (no asample)")

    def lacks_samples(record: Record) -> bool:
        slm_part = record.get("slm")
        return sampling is not None and (
            slm_part is None
            or (slm_part.get("error") is None and slm_part.get("sampling") != sampling)
        )

    existing = {r["id"]: r for r in load_traces(path)}
    todo: list[tuple[QAExample, Record]] = []
    for example in examples:
        record = existing.get(example.id)
        if record is not None and record.get("config") != asdict(config):
            raise TraceConfigError(
                f"{path} already holds question {example.id} made with {record.get('config')}, "
                f"not {asdict(config)}; write to another file or delete this one"
            )
        if record is None:
            todo.append((example, _new_record(example, config)))
        elif any(name not in record["fallbacks"] for name in wanted) or lacks_samples(record):
            todo.append((example, record))
    counts = {"slm": 0, "fallback": 0, "failures": 0}
    semaphore = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(todo), desc=path.stem, unit="q", disable=not progress)

    async def one(example: QAExample, record: Record, handle: Any) -> None:
        messages = prompt_messages(example, prompt)
        async with semaphore:
            if record["slm"] is None:
                gen: Generation | None = None
                error: SLMError | None = None
                try:
                    gen = await slm.agenerate(messages, stop=list(STOP), max_tokens=max_tokens)
                except (SLMUnavailableError, ModelNotFoundError):
                    raise  # nothing to record: the run cannot go on
                except SLMError as exc:
                    error = exc
                    counts["failures"] += 1
                record["slm"] = slm_record(example, gen, error, messages)
                counts["slm"] += 1
            if sampling is not None and lacks_samples(record):
                drawn = await slm.asample(
                    messages,
                    k=samples,
                    temperature=temperature,
                    seed=0,
                    stop=list(STOP),
                    max_tokens=max_tokens,
                )
                record["slm"]["samples"] = sample_records(example, drawn)
                record["slm"]["sampling"] = sampling
            for name, fallback in wanted.items():
                if name in record["fallbacks"]:
                    continue
                if fallback is None:
                    slm_prompt = record["slm"].get("prompt_tokens")  # None: unknown, stays so
                    record["fallbacks"][name] = perfect_record(
                        example, None if slm_prompt is None else int(slm_prompt)
                    )
                    continue
                fb_gen = await fallback.agenerate(messages, stop=list(STOP), max_tokens=max_tokens)
                record["fallbacks"][name] = fallback_record(example, fb_gen, messages)
                counts["fallback"] += 1
        handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        handle.flush()
        bar.update(1)

    try:
        with path.open("a", encoding="utf-8") as handle:
            tasks = [asyncio.ensure_future(one(ex, rec, handle)) for ex, rec in todo]
            try:
                await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
    finally:
        bar.close()
        order = {ex.id: i for i, ex in enumerate(examples)}
        records = sorted(load_traces(path), key=lambda r: order.get(r["id"], len(order)))
        _write_all(path, records)
    return RunSummary(
        path=path,
        total=len(examples),
        skipped=len(examples) - len(todo),
        slm_calls=counts["slm"],
        fallback_calls=counts["fallback"],
        slm_failures=counts["failures"],
    )


def run_traces(
    examples: Sequence[QAExample],
    slm: Any,
    path: str | Path,
    **kwargs: Any,
) -> RunSummary:
    """Synchronous `arun_traces`."""
    return asyncio.run(arun_traces(examples, slm, path, **kwargs))


__all__ = [
    "PERFECT",
    "Record",
    "RunSummary",
    "TraceConfig",
    "TraceConfigError",
    "add_context_signals",
    "arun_traces",
    "fallback_record",
    "load_traces",
    "perfect_answer",
    "perfect_record",
    "prompt_messages",
    "run_traces",
    "sample_records",
    "write_traces",
]

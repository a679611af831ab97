"""Synthetic trace records whose right routing numbers are known analytically (test helper)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from confidence_router.signals import SIGNAL_NAMES


def synthetic_records(
    correct: np.ndarray,
    signals: Mapping[str, np.ndarray] | None = None,
    *,
    seed: int = 0,
    dataset: str = "squad_v1",
    query: Mapping[str, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """Trace records: SLM F1 1 when ``correct`` else 0, the perfect fallback always 1.

    Signals not given are independent noise; the query features are noise
    unless given.
    """
    rng = np.random.default_rng(seed)
    n = len(correct)
    given = dict(signals or {})
    columns = {name: given.get(name, rng.normal(-1.0, 0.5, n)) for name in SIGNAL_NAMES}
    columns["length"] = given.get("length", rng.integers(1, 20, n).astype(float))
    # the query noise has its own stream, so adding a signal does not redraw it
    q_rng = np.random.default_rng([seed, 1])
    q = dict(
        query
        or {"log_question_words": q_rng.normal(2, 0.3, n), "question_overlap": q_rng.random(n)}
    )
    records = []
    for i in range(n):
        f1 = 1.0 if correct[i] else 0.0
        records.append(
            {
                "id": f"q{i}",
                "dataset": dataset,
                "question": f"question {i}?",
                "answers": ["gold"],
                "answerable": True,
                "meta": {},
                "config": {"slm": "synthetic", "prompt": "qa-v1", "top_k": 5, "max_tokens": 32},
                "query": {k: float(v[i]) for k, v in q.items()},
                "slm": {
                    "raw": " answer",
                    "answer": "answer",
                    "em": f1,
                    "f1": f1,
                    "error": None,
                    "signals": {name: float(columns[name][i]) for name in SIGNAL_NAMES},
                    "tokens": [],
                    "logprobs": [],
                    "top_logprobs": [],
                    "prompt_tokens": 200,
                    "completion_tokens": 4,
                    "latency_s": 0.2,
                    "finish_reason": "stop",
                },
                "fallbacks": {
                    "perfect": {
                        "answer": "gold",
                        "em": 1.0,
                        "f1": 1.0,
                        "error": None,
                        "prompt_tokens": 200,
                        "completion_tokens": 1,
                        "latency_s": None,
                        "model": "perfect",
                    }
                },
            }
        )
    return records


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def hand_records(
    slm_f1: list[float],
    fb_f1: list[float],
    min_logprob: list[float],
    *,
    forced: Sequence[int] = (),
    answerable: list[bool] | None = None,
    slm_answers: list[str] | None = None,
    fb_answers: list[str] | None = None,
    dataset: str = "squad_v1",
    fallback: str = "big",
) -> list[dict[str, Any]]:
    """Small records written out by hand: SLM and a real fallback ``fallback``, given F1s.

    Every call costs exactly its price (10**6 tokens: 999,999 prompt + 1
    completion), the SLM takes 1 s and the fallback 3 s; ``forced`` answers are
    empty (the Router escalates them whatever the policy); ``min_logprob`` is
    the one informative signal.
    """
    n = len(slm_f1)
    records = synthetic_records(
        np.array([f > 0.5 for f in slm_f1]),
        {"min_logprob": np.array(min_logprob, dtype=float)},
        dataset=dataset,
    )
    for i, r in enumerate(records):
        slm, perfect = r["slm"], r["fallbacks"]["perfect"]
        slm.update(f1=slm_f1[i], em=float(slm_f1[i] == 1.0), latency_s=1.0)
        slm.update(prompt_tokens=999_999, completion_tokens=1)
        perfect.update(prompt_tokens=999_999, completion_tokens=1)
        if slm_answers is not None:
            slm.update(answer=slm_answers[i], raw=slm_answers[i] or "not in the documents")
        if answerable is not None:
            r["answerable"] = answerable[i]
        if i in forced:
            slm.update(raw="", answer="", signals=None, f1=0.0, em=0.0)
        r["fallbacks"][fallback] = {
            "raw": "x",
            "answer": "x" if fb_answers is None else fb_answers[i],
            "em": float(fb_f1[i] == 1.0),
            "f1": fb_f1[i],
            "error": None,
            "prompt_tokens": 999_999,
            "completion_tokens": 1,
            "latency_s": 3.0,
            "model": fallback,
            "finish_reason": "stop",
        }
    assert len(fb_f1) == len(min_logprob) == n
    return records

"""Folding a stream of TokenChunks into one Generation (shared by backends and router)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .types import Generation, TokenChunk, Usage


def _pad_rows(rows: list[np.ndarray]) -> np.ndarray:
    """Stack (n_i, k_i) matrices into one (sum n_i, max k_i) matrix padded with -inf."""
    rows = [r for r in rows if r.ndim == 2 and r.shape[0] > 0]
    if not rows:
        return np.zeros((0, 0), dtype=np.float64)
    width = max(r.shape[1] for r in rows)
    padded = [
        np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=-np.inf)
        if r.shape[1] < width
        else r
        for r in rows
    ]
    return np.vstack(padded).astype(np.float64, copy=False)


def accumulate(
    chunks: Iterable[TokenChunk],
    *,
    model: str,
    latency_s: float,
    has_logprobs: bool,
) -> Generation:
    """One Generation holding every chunk's text and logprobs, in order.

    When no chunk reported usage, the prompt's tokens are unknown (not 0) and
    the completion's are the logprob entries (one per generated token), or
    unknown for a model without logprobs.
    """
    chunk_list = list(chunks)
    usage: Usage | None = None
    finish_reason: str | None = None
    for chunk in chunk_list:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.finish_reason is not None:
            finish_reason = chunk.finish_reason
    token_logprobs = (
        np.concatenate([np.asarray(c.token_logprobs, dtype=np.float64) for c in chunk_list])
        if chunk_list
        else np.zeros(0, dtype=np.float64)
    )
    if usage is None:
        usage = Usage.reported(None, len(token_logprobs) if has_logprobs else None)
    return Generation(
        text="".join(c.text for c in chunk_list),
        model=model,
        token_logprobs=token_logprobs,
        top_logprobs=_pad_rows([np.asarray(c.top_logprobs) for c in chunk_list]),
        tokens=tuple(t for c in chunk_list for t in c.tokens),
        top_tokens=tuple(t for c in chunk_list for t in c.top_tokens),
        usage=usage,
        latency_s=latency_s,
        finish_reason=finish_reason,
        has_logprobs=has_logprobs,
    )

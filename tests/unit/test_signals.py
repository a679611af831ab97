"""Signals equal hand-computed values, and stay within their bounds for any input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from confidence_router import Generation, compute_signals, signals_from_arrays
from confidence_router.signals import (
    CONTEXT_SIGNAL_NAMES,
    LOGPROB_SIGNAL_NAMES,
    token_entropies,
    token_margins,
)

LN = math.log


def _h(*probs: float) -> float:
    return -sum(p * LN(p) for p in probs if p > 0)


def test_signals_match_hand_computed_values() -> None:
    chosen = np.log([0.5, 0.25])
    top = np.log([[0.5, 0.3, 0.1], [0.4, 0.25, 0.2]])
    s = signals_from_arrays(chosen, top)
    assert s.length == 2
    assert s.mean_logprob == pytest.approx((LN(0.5) + LN(0.25)) / 2)
    assert s.min_logprob == pytest.approx(LN(0.25))
    assert s.sum_logprob == pytest.approx(LN(0.5) + LN(0.25))
    # numpy's default (linear) quantile between the two values
    assert s.q10_logprob == pytest.approx(LN(0.25) + 0.1 * (LN(0.5) - LN(0.25)))
    assert s.median_logprob == pytest.approx((LN(0.5) + LN(0.25)) / 2)
    # the mass outside the top k is one extra outcome: 0.1 and 0.15
    h0, h1 = _h(0.5, 0.3, 0.1, 0.1), _h(0.4, 0.25, 0.2, 0.15)
    assert s.mean_entropy == pytest.approx((h0 + h1) / 2)
    assert s.max_entropy == pytest.approx(max(h0, h1))
    assert s.first_margin == pytest.approx(LN(0.5 / 0.3))
    assert s.mean_margin == pytest.approx((LN(0.5 / 0.3) + LN(0.4 / 0.25)) / 2)


def test_entropy_with_only_the_chosen_token_is_binary_entropy() -> None:
    chosen = np.log([0.8])
    entropy = token_entropies(chosen, np.zeros((1, 0)))
    assert entropy[0] == pytest.approx(_h(0.8, 0.2))
    assert token_margins(chosen, np.zeros((1, 0)))[0] == pytest.approx(LN(0.8 / 0.2))


def test_padding_with_minus_infinity_counts_as_zero_probability() -> None:
    chosen = np.log([0.9])
    padded = np.array([[LN(0.9), -np.inf, -np.inf]])
    assert token_entropies(chosen, padded)[0] == pytest.approx(_h(0.9, 0.1))


def test_top_k_covering_all_mass_gives_exact_entropy() -> None:
    top = np.log([[0.25, 0.25, 0.25, 0.25]])
    assert token_entropies(top[:, 0], top)[0] == pytest.approx(LN(4))


def test_empty_answer_has_zero_length_and_zero_statistics() -> None:
    s = signals_from_arrays(np.zeros(0), np.zeros((0, 5)))
    assert s.length == 0
    values = s.as_dict()
    assert all(values[name] == 0.0 for name in LOGPROB_SIGNAL_NAMES)
    # without messages the context signals keep their no-context values
    assert values["answer_type_match"] == 0.5
    assert all(values[n] == 0.0 for n in CONTEXT_SIGNAL_NAMES if n != "answer_type_match")


def test_non_finite_logprobs_are_rejected() -> None:
    with pytest.raises(ValueError, match="NaN or -inf"):
        signals_from_arrays(np.array([-0.1, np.nan]), np.zeros((2, 0)))
    with pytest.raises(ValueError, match="NaN or -inf"):
        signals_from_arrays(np.array([-np.inf]), np.zeros((1, 0)))


def test_compute_signals_reads_a_generation() -> None:
    gen = Generation(
        text="Paris",
        model="m",
        token_logprobs=np.log([0.9]),
        top_logprobs=np.log([[0.9, 0.05]]),
        has_logprobs=True,
    )
    s = compute_signals(gen)
    assert s.length == 1
    assert s["min_logprob"] == pytest.approx(LN(0.9))
    with pytest.raises(KeyError, match="unknown signal"):
        s["confidence"]


@st.composite
def _logprob_arrays(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int]:
    n = draw(st.integers(1, 40))
    k = draw(st.integers(0, 20))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # k+1 weights: the top k tokens and the rest of the vocabulary
    weights = rng.gamma(draw(st.sampled_from([0.05, 0.5, 2.0])), size=(n, k + 1)) + 1e-12
    probs = weights / weights.sum(axis=1, keepdims=True)
    top = -np.sort(-probs[:, :k], axis=1) if k else np.zeros((n, 0))
    if k:
        chosen = top[:, 0] if draw(st.booleans()) else top[np.arange(n), rng.integers(0, k, n)]
    else:
        chosen = np.clip(probs[:, 0], 1e-12, 1.0)
    with np.errstate(divide="ignore"):
        return np.log(chosen), np.log(top), k


@settings(max_examples=200, deadline=None)
@given(_logprob_arrays())
def test_signal_bounds_hold_for_any_distribution(
    arrays: tuple[np.ndarray, np.ndarray, int],
) -> None:
    chosen, top, k = arrays
    s = signals_from_arrays(chosen, top)
    entropies = token_entropies(chosen, top)
    assert s.length == len(chosen)
    assert np.all(entropies >= 0.0)
    assert np.all(entropies <= math.log(k + 1) + 1e-9)
    assert 0.0 <= s.mean_entropy <= s.max_entropy + 1e-12
    assert s.min_logprob <= s.q10_logprob <= s.q25_logprob <= s.median_logprob <= 0.0
    assert s.min_logprob <= s.mean_logprob <= 0.0
    assert s.sum_logprob <= 0.0
    assert s.first_margin >= 0.0 and s.mean_margin >= 0.0

"""Fixtures of the evaluation tests: a small synthetic trace file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from eval_synthetic import synthetic_records, write_records


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    """A small synthetic trace file (200 questions, 30% right, min_logprob informative)."""
    rng = np.random.default_rng(1)
    correct = rng.random(200) < 0.3
    min_lp = np.where(correct, rng.normal(-0.5, 0.5, 200), rng.normal(-2.0, 0.7, 200))
    return write_records(
        tmp_path / "squad_v1.jsonl", synthetic_records(correct, {"min_logprob": min_lp})
    )

"""``confidence-router eval run --slm embedded:NAME``: rag's spelling loads the embedded model."""

from __future__ import annotations

import json
import math
from pathlib import Path

from confidence_router.cli.eval import main
from tests.support.paths import SQUAD_V1_SAMPLE


def test_eval_run_records_traces_from_an_embedded_slm(tmp_path: Path) -> None:
    """Two questions through SmolLM2 in process, answered again by the perfect fallback."""
    argv = ["run", "--data", str(SQUAD_V1_SAMPLE), "--limit", "2", "--max-tokens", "8"]
    argv += ["--slm", "embedded:smollm2", "--traces", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    lines = (tmp_path / "squad_v1.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    first_ids = [json.loads(line)["id"] for line in SQUAD_V1_SAMPLE.read_text().splitlines()[:2]]
    assert [r["id"] for r in records] == first_ids
    for record in records:
        slm = record["slm"]
        assert record["config"]["slm"] == "smollm2-135m" and slm["error"] is None
        assert 0 < len(slm["tokens"]) == len(slm["logprobs"]) <= 8
        assert all(lp <= 0 for lp in slm["logprobs"])
        signals = slm["signals"]
        assert signals["length"] == len(slm["tokens"])
        assert signals["mean_logprob"] < 0 and signals["mean_entropy"] > 0
        assert all(math.isfinite(v) for v in signals.values())
        assert record["fallbacks"]["perfect"]["f1"] == 1.0

"""Where the sample data sets are: ``data/`` in the repository (see ``data/README.md``)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data"
SQUAD_V1_SAMPLE = DATA_DIR / "squad_v1_dev_sample500.jsonl"
SQUAD_V2_SAMPLE = DATA_DIR / "squad_v2_dev_sample500.jsonl"
HOTPOT_SAMPLE = DATA_DIR / "hotpotqa_dev_distractor_sample300.jsonl"

"""Where the shared data sets are: ``../shared/data`` beside the repository.

CI clones the repository into a fresh folder with a copy of ``shared/`` beside
it, so no absolute path is assumed; ``CONFIDENCE_ROUTER_DATA`` overrides.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("CONFIDENCE_ROUTER_DATA", REPO_ROOT.parent / "shared" / "data"))
SQUAD_V1_SAMPLE = DATA_DIR / "squad_v1_dev_sample500.jsonl"
SQUAD_V2_SAMPLE = DATA_DIR / "squad_v2_dev_sample500.jsonl"
HOTPOT_SAMPLE = DATA_DIR / "hotpotqa_dev_distractor_sample300.jsonl"

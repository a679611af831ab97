"""The API reference pages of the docs site list every public name, and only those."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = Path(__file__).resolve().parents[2] / "docs" / "reference" / "api"
PACKAGES = ["confidence_router", "langchain_confidence_router", "llamaindex_confidence_router"]


@pytest.mark.parametrize("package", PACKAGES)
def test_api_reference_lists_every_public_name(package: str) -> None:
    page = API / f"{package}.md"
    listed = re.findall(rf"^::: {package}\.(\w+)\s*$", page.read_text(encoding="utf-8"), re.M)
    exported = importlib.import_module(package).__all__
    missing = [name for name in exported if name not in listed]
    unknown = [name for name in listed if name not in exported]
    assert not missing, f"add `::: {package}.NAME` to {page.name} for: {', '.join(missing)}"
    assert not unknown, f"{page.name} lists names {package}.__all__ does not export: {unknown}"
    assert len(listed) == len(set(listed)), f"{page.name} lists a name twice"

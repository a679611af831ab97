"""The examples in ConfidenceRouterChat's docstring run as written.

Every ```python block of the class docstring is executed in order, in one
namespace, against the test server (``OLLAMA_HOST`` points the examples'
default hosts at it). Blocks fenced as ```text are sample output, not run.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import pytest

from langchain_confidence_router import ConfidenceRouterChat

FENCE = re.compile(r"^\s*```python\n(.*?)^\s*```", re.DOTALL | re.MULTILINE)


def _blocks() -> list[str]:
    doc = ConfidenceRouterChat.__doc__ or ""
    return [_dedent(block) for block in FENCE.findall(doc)]


def _dedent(block: str) -> str:
    lines = block.splitlines()
    indent = min(len(x) - len(x.lstrip()) for x in lines if x.strip())
    return "\n".join(x[indent:] for x in lines) + "\n"


def test_the_docstring_has_instantiate_invoke_stream_and_async_examples() -> None:
    code = "".join(_blocks())
    for call in (
        "ConfidenceRouterChat(",
        ".invoke(",
        ".stream(",
        "await llm.ainvoke(",
        ".astream(",
    ):
        assert call in code


async def test_docstring_examples_run(
    ollama_host: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", ollama_host)
    namespace: dict[str, Any] = {}
    for block in _blocks():
        code = compile(
            block, "<ConfidenceRouterChat docstring>", "exec", ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        result = eval(code, namespace)  # noqa: S307 - our own docstring
        if result is not None:  # a block with top-level await returns a coroutine
            await result
    out = capsys.readouterr().out
    assert namespace["llm"].stats.queries >= 5
    assert "slm" in out or "llm" in out

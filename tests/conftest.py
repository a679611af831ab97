"""Session fixtures: the real models in process, the Ollama-compatible server, llama-cpp's.

Everything is lazy: a unit test that asks for none of these loads no model
and opens no socket. The server and the in-process fixtures share the same
``LlamaCppSLM`` instances (see ``tests/support/models.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from confidence_router import LlamaCppSLM
from tests.support.llama_server import LlamaCppServer
from tests.support.models import shared_slm
from tests.support.ollama_server import OllamaTestServer, reset_all_faults


@pytest.fixture(scope="session")
def smollm2_slm() -> LlamaCppSLM:
    """SmolLM2-135M-Instruct, chat template, temperature 0, top_logprobs 5."""
    return shared_slm("smollm2")


@pytest.fixture(scope="session")
def gemma3_slm() -> LlamaCppSLM:
    """Gemma 3 270M (base), completion prompts, temperature 0, top_logprobs 5."""
    return shared_slm("gemma3")


@pytest.fixture(scope="session")
def ollama_server() -> Iterator[OllamaTestServer]:
    """The Ollama-compatible server on 127.0.0.1 (``.host``, ``.faults``, ``.requests``)."""
    server = OllamaTestServer().start()
    yield server
    lingering = server.stop()
    assert not lingering, f"server threads still running at session end: {lingering}"


@pytest.fixture(scope="session")
def ollama_host(ollama_server: OllamaTestServer) -> str:
    """The server's base URL, e.g. ``http://127.0.0.1:PORT``."""
    return ollama_server.host


@pytest.fixture(scope="session")
def llama_server() -> Iterator[LlamaCppServer]:
    """llama-cpp-python's own OpenAI-compatible server (SmolLM2), a subprocess.

    ``.base_url`` ends in ``/v1``; ``.model`` is its alias (any name is served).
    """
    server = LlamaCppServer().start()
    yield server
    server.stop()
    assert not server.running


@pytest.fixture(autouse=True)
def _reset_ollama_faults() -> Iterator[None]:
    """Every fault a test switched on is off again after it (stalls released)."""
    yield
    reset_all_faults()

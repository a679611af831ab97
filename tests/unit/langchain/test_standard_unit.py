"""LangChain's standard chat-model unit suite (langchain-tests 1.1.9), no network.

The router is built from an Ollama SLM name and a ChatOllama fallback that
point at a closed port: construction never opens a connection, and the
socket guard in conftest.py would fail any test that tried.
"""

from __future__ import annotations

from typing import Any

from langchain_ollama import ChatOllama
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_confidence_router import ConfidenceRouterChat

NOWHERE = "http://127.0.0.1:9"


class TestConfidenceRouterChatUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ConfidenceRouterChat]:
        return ConfidenceRouterChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "slm_model": "smollm2:135m",
            "base_url": NOWHERE,
            "fallback": ChatOllama(model="gemma3:270m", base_url=NOWHERE),
        }

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # The router holds no API key (the SLM is local or on Ollama; a hosted
        # fallback carries its own), so the suite's `api_key="test"` is left
        # out: an unknown argument is rejected by design.
        params = dict(super().standard_chat_model_params)
        params.pop("api_key")
        return params

    # bind_tools / with_structured_output delegate to the fallback (ChatOllama
    # supports both), so the suite's defaults (True, detected from the
    # overrides) are exercised as they are.

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        # The built SLM reads its host from OLLAMA_HOST, like the ollama client.
        return (
            {"OLLAMA_HOST": "http://127.0.0.1:10"},
            {
                "slm_model": "smollm2:135m",
                "fallback": ChatOllama(model="gemma3:270m", base_url=NOWHERE),
            },
            {"base_url": "http://127.0.0.1:10", "slm_model": "smollm2:135m"},
        )

"""LangChain's standard chat-model integration suite (langchain-tests 1.1.9), real models.

The SLM is SmolLM2-135M and the fallback Gemma 3 270M (a real ``ChatOllama``),
both served over HTTP by the Ollama-compatible test server. The suite's own
flags mark what the router does not do; nothing is skipped by hand:

* ``has_tool_calling = False``, ``has_structured_output = False``: the SLM's
  log-probabilities cannot score a tool call or a schema, so ``bind_tools`` and
  ``with_structured_output`` hand those calls to the fallback unrouted, and
  the test server's models cannot call tools.
* ``supports_model_override = False``: a per-call ``model=`` has no single
  meaning for a pair of models and is rejected with InvalidInputError.
* image/audio/PDF/Anthropic-style inputs stay at the suite's default False:
  the SLM reads text only (non-text content raises InvalidInputError).

The suite runs twice: with the default policy (SmolLM2 keeps the answers it is
sure of and escalates the rest, so both routes occur), and with a policy no
answer can satisfy, so every item is answered by the fallback through the
escalation path (stream forwarding, usage summing, model name).
"""

from __future__ import annotations

from typing import Any

import pytest
from langchain_ollama import ChatOllama
from langchain_tests.integration_tests import ChatModelIntegrationTests

from confidence_router import Bound, OllamaSLM, ThresholdPolicy
from langchain_confidence_router import ConfidenceRouterChat

MAX_TOKENS = 24


class TestConfidenceRouterChatIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, ollama_host: str) -> None:
        self.host = ollama_host

    @property
    def chat_model_class(self) -> type[ConfidenceRouterChat]:
        return ConfidenceRouterChat

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {
            "slm": OllamaSLM("smollm2:135m", host=self.host, timeout=120),
            "fallback": ChatOllama(
                model="gemma3:270m", base_url=self.host, num_predict=MAX_TOKENS, temperature=0
            ),
            "max_tokens": MAX_TOKENS,
        }

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False


class TestConfidenceRouterChatEscalatingIntegration(TestConfidenceRouterChatIntegration):
    """The same suite with every answer escalated to the fallback."""

    @property
    def chat_model_params(self) -> dict[str, Any]:
        never_confident = ThresholdPolicy((Bound("length", max=0),))
        return {**super().chat_model_params, "policy": never_confident}

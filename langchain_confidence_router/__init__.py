"""LangChain face of confidence-router: a chat model that drops into any chain.

`ConfidenceRouterChat` lets a small model answer first and escalates to any
LangChain chat model only when the small model's own log-probabilities say it
is unsure. All routing logic lives in `confidence_router`.
"""

from .chat_models import ConfidenceRouterChat

__all__ = ["ConfidenceRouterChat"]

"""confidence-router for LlamaIndex: a small model answers first, a large one when it is unsure.

`ConfidenceRouterLLM` is a LlamaIndex `LLM`: set `Settings.llm` to it or pass
`llm=` to a query or chat engine. The routing decision travels in every
response's `additional_kwargs["routing"]` and as a `RoutingDecisionEvent`
through LlamaIndex instrumentation. `EmbeddedLLM` turns a core SLM backend
(such as the in-process Gemma 3 270M) into a LlamaIndex LLM, for a fallback that
needs no server.
"""

from .base import ConfidenceRouterLLM
from .embedded import EmbeddedLLM
from .events import RoutingDecisionEvent

__all__ = ["ConfidenceRouterLLM", "EmbeddedLLM", "RoutingDecisionEvent"]

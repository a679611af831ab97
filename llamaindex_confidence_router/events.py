"""The instrumentation event that says which model answered and why."""

from __future__ import annotations

from typing import Any

from llama_index.core.instrumentation.events import BaseEvent


class RoutingDecisionEvent(BaseEvent):
    """Emitted once per routed call, when its answer is complete.

    Sent through `get_dispatcher("llamaindex_confidence_router.base")`, so any
    event handler on the root dispatcher receives it. For `chat`/`complete` (and
    their async forms) it belongs to the span of that call; for a stream it is sent
    when the last piece is produced, in the span of whoever consumes the stream, just
    before LlamaIndex's own `LLMChatEndEvent`/`LLMCompletionEndEvent`.
    `routing` is the same dict as the response's `additional_kwargs["routing"]`.

    Example:
        >>> from llama_index.core.instrumentation import get_dispatcher
        >>> from llama_index.core.instrumentation.event_handlers import BaseEventHandler
        >>> class Routes(BaseEventHandler):
        ...     def handle(self, event, **kwargs):
        ...         if isinstance(event, RoutingDecisionEvent):
        ...             print(event.route, event.reason)
        >>> get_dispatcher().add_event_handler(Routes())
    """

    route: str
    score: float | None = None
    reason: str = ""
    answered_by: str = ""
    routing: dict[str, Any]

    @classmethod
    def class_name(cls) -> str:
        return "RoutingDecisionEvent"


__all__ = ["RoutingDecisionEvent"]

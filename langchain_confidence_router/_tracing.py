"""Making the route visible to callback handlers and LangSmith.

A run's tags and metadata are fixed when it starts, and the route is only
known later, so the decision is recorded as a small child run of the chat
model's run: name `routing_decision`, tag `route:slm` or `route:llm`,
metadata `{"route", "score", "answered_by"}`, inputs the signals, outputs
the routing record. LangChain hands a run manager to the model only on the
non-streamed path (invoke, batch and their async forms), so that is where
the child run appears; streams carry the decision on their first chunk.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)

RUN_NAME = "routing_decision"


def child_manager(run_manager: CallbackManagerForLLMRun, tag: str) -> CallbackManager:
    """Callbacks for a run nested under an LLM run.

    LangChain's LLM run managers have no `get_child` (model runs are
    usually leaves); this is the same recipe as `ParentRunManager.get_child`.
    """
    manager = CallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    manager.add_tags([tag], inherit=False)
    return manager


def achild_manager(run_manager: AsyncCallbackManagerForLLMRun, tag: str) -> AsyncCallbackManager:
    """Async `child_manager`."""
    manager = AsyncCallbackManager(handlers=[], parent_run_id=run_manager.run_id)
    manager.set_handlers(run_manager.inheritable_handlers)
    manager.add_tags(run_manager.inheritable_tags)
    manager.add_metadata(run_manager.inheritable_metadata)
    manager.add_tags([tag], inherit=False)
    return manager


def _parts(routing: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    route = str(routing["route"])
    models = routing.get("models")
    metadata = {
        "route": route,
        "score": routing.get("score"),
        "answered_by": models.get("answered_by") if isinstance(models, Mapping) else None,
    }
    return f"route:{route}", metadata, {"signals": dict(routing.get("signals") or {})}


def trace_decision(
    run_manager: CallbackManagerForLLMRun | None, routing: Mapping[str, Any]
) -> None:
    """Record the decision as a tagged child run of `run_manager`'s run."""
    if run_manager is None:
        return
    tag, metadata, inputs = _parts(routing)
    child = child_manager(run_manager, tag)
    child.add_metadata(metadata, inherit=False)
    run = child.on_chain_start(None, inputs, name=RUN_NAME)
    run.on_chain_end(dict(routing))


async def atrace_decision(
    run_manager: AsyncCallbackManagerForLLMRun | None, routing: Mapping[str, Any]
) -> None:
    """Async `trace_decision`."""
    if run_manager is None:
        return
    tag, metadata, inputs = _parts(routing)
    child = achild_manager(run_manager, tag)
    child.add_metadata(metadata, inherit=False)
    run = await child.on_chain_start(None, inputs, name=RUN_NAME)
    await run.on_chain_end(dict(routing))


__all__ = ["RUN_NAME", "achild_manager", "atrace_decision", "child_manager", "trace_decision"]

"""Every error the router raises, in one tree.

::

    ConfidenceRouterError
    ├── ConfigurationError (also ValueError)   invalid settings, raised at construction
    ├── InvalidInputError (also ValueError)    empty messages, non-text content, ...
    ├── SLMError                               the small model could not give a scored answer
    │   ├── SLMUnavailableError                connection refused / server gone
    │   ├── SLMTimeoutError                    no answer within the timeout
    │   ├── ModelNotFoundError                 the server does not know the model
    │   ├── MissingLogprobsError               an answer came back without log-probabilities
    │   ├── ContextWindowExceededError         the prompt does not fit the model's context
    │   └── SLMResponseError                   any other error the server reported
    │       └── IncompleteResponseError        the stream ended before its terminal marker
    └── FallbackError                          the large model failed after escalation
        └── FallbackTimeoutError               ... or ran past ``Router(fallback_timeout=...)``

By default the Router turns an ``SLMError`` into an escalation (the reason says
which error); with ``strict=True`` it raises it instead. A ``FallbackError``
is raised: there is no answer to give (unless ``on_fallback_error="return_slm"``
and the SLM did answer: then its answer comes back, flagged).
"""

from __future__ import annotations


class ConfidenceRouterError(Exception):
    """Base class of every error raised by confidence-router."""


class ConfigurationError(ConfidenceRouterError, ValueError):
    """A setting is invalid. The message names the field and the bad value."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class InvalidInputError(ConfidenceRouterError, ValueError):
    """The query itself cannot be answered as given."""


class SLMError(ConfidenceRouterError):
    """The small model did not return an answer the router can score."""

    reason_code = "slm_error"

    def __init__(self, message: str, *, model: str | None = None) -> None:
        self.model = model
        super().__init__(message)


class SLMUnavailableError(SLMError):
    reason_code = "slm_unavailable"


class SLMTimeoutError(SLMError):
    reason_code = "slm_timeout"


class ModelNotFoundError(SLMError):
    reason_code = "model_not_found"


class MissingLogprobsError(SLMError):
    reason_code = "missing_logprobs"


class ContextWindowExceededError(SLMError, InvalidInputError):
    reason_code = "context_window_exceeded"


class SLMResponseError(SLMError):
    reason_code = "slm_response_error"


class IncompleteResponseError(SLMResponseError):
    """The stream ended before the answer was complete: no Ollama object with
    ``done: true``, no OpenAI chunk with ``finish_reason``.

    A server that closes the connection cleanly mid-answer (a proxy, a crashed
    worker, llama-cpp-python's server given a streamed over-long prompt) looks
    like a short answer; it never is one. ``tokens_received`` says how many
    generated tokens arrived before the end (0: the server sent nothing).
    """

    reason_code = "slm_incomplete"

    def __init__(self, message: str, *, model: str | None = None, tokens_received: int = 0) -> None:
        self.tokens_received = tokens_received
        super().__init__(message, model=model)


class FallbackError(ConfidenceRouterError):
    """The fallback model failed; the original exception is ``__cause__``."""


class FallbackTimeoutError(FallbackError):
    """The fallback did not finish within the Router's ``fallback_timeout``."""


__all__ = [
    "ConfidenceRouterError",
    "ConfigurationError",
    "ContextWindowExceededError",
    "FallbackError",
    "FallbackTimeoutError",
    "IncompleteResponseError",
    "InvalidInputError",
    "MissingLogprobsError",
    "ModelNotFoundError",
    "SLMError",
    "SLMResponseError",
    "SLMTimeoutError",
    "SLMUnavailableError",
]

"""Construction-time checks the SLM backends share (each error names its field)."""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError

PromptFormat = Literal["chat", "completion"]


def check_int(field: str, value: Any, low: int, high: int | None = None) -> int:
    """`value` if it is an int in `[low, high]`, else ConfigurationError naming `field`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(field, f"must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        limit = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigurationError(field, f"must be {limit}, got {value}")
    return value


def check_prompt_format(prompt_format: Any) -> None:
    """Raise ConfigurationError unless the prompt format is `"chat"` or `"completion"`."""
    if prompt_format not in ("chat", "completion"):
        raise ConfigurationError(
            "prompt_format", f"must be 'chat' or 'completion', got {prompt_format!r}"
        )


def check_temperature(temperature: Any) -> None:
    """Raise ConfigurationError unless the temperature is a finite number >= 0."""
    if not _finite_number(temperature) or temperature < 0:
        raise ConfigurationError("temperature", f"must be a number >= 0, got {temperature!r}")


def check_stop(stop: Sequence[Any]) -> None:
    """Raise ConfigurationError unless `stop` is a list of strings (a lone str is not)."""
    if isinstance(stop, str) or not all(isinstance(s, str) for s in stop):
        raise ConfigurationError("stop", f"must be a list of strings, got {stop!r}")


def check_served_settings(
    model: Any, prompt_format: Any, timeout: Any, temperature: Any, stop: Sequence[Any]
) -> None:
    """Raise ConfigurationError naming the first invalid field of a served SLM."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("model", f"must be a non-empty model name, got {model!r}")
    check_prompt_format(prompt_format)
    if not _finite_number(timeout) or timeout <= 0:
        raise ConfigurationError("timeout", f"must be a number of seconds > 0, got {timeout!r}")
    check_temperature(temperature)
    check_stop(stop)


def import_extra(module: str, *, field: str, package: str, extra: str) -> Any:
    """Import an optional dependency, or raise ConfigurationError naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigurationError(
            field, f"{package} is not installed: pip install 'confidence-router[{extra}]'"
        ) from exc


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


_SECRET_PARAM = re.compile(r"key|token|secret|pass|sig|auth", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` fit for a repr, an error or a log line: credentials replaced by `***`.

    Why: a proxy's `https://user:password@host/v1` or a `?api_key=` query would
    otherwise be repeated in every error message about that server.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


__all__ = [
    "PromptFormat",
    "check_int",
    "check_prompt_format",
    "check_served_settings",
    "check_stop",
    "check_temperature",
    "import_extra",
    "redact_url",
]

"""Construction-time checks the served-SLM backends share (each names its field)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..errors import ConfigurationError


def check_served_settings(
    model: Any, prompt_format: Any, timeout: Any, temperature: Any, stop: Sequence[Any]
) -> None:
    """Raise ConfigurationError naming the first invalid field of a served SLM."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError("model", f"must be a non-empty model name, got {model!r}")
    if prompt_format not in ("chat", "completion"):
        raise ConfigurationError(
            "prompt_format", f"must be 'chat' or 'completion', got {prompt_format!r}"
        )
    if not _finite_number(timeout) or timeout <= 0:
        raise ConfigurationError("timeout", f"must be a number of seconds > 0, got {timeout!r}")
    if not _finite_number(temperature) or temperature < 0:
        raise ConfigurationError("temperature", f"must be a number >= 0, got {temperature!r}")
    if isinstance(stop, str) or not all(isinstance(s, str) for s in stop):
        raise ConfigurationError("stop", f"must be a list of strings, got {stop!r}")


def _finite_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


_SECRET_PARAM = re.compile(r"key|token|secret|pass|sig|auth", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` fit for a repr, an error or a log line: credentials replaced by ``***``.

    Why: a proxy's ``https://user:password@host/v1`` or a ``?api_key=`` query would
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

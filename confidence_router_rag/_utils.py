"""Helpers the app's modules share."""

from __future__ import annotations


def exception_reason(exc: BaseException) -> str:
    """The most specific message in an exception chain (loaders wrap the real cause)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 text ({exc.reason} at byte {exc.start})"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"{type(exc).__name__}: {exc}"


__all__ = ["exception_reason"]

"""Fitted routing policies shipped with the package (JSON; read by policies.defaults)."""

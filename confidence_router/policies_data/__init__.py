"""Fitted routing policies shipped with the package (JSON; see confidence_router.defaults)."""

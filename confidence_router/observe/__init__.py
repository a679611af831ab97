"""What the router did, for whoever runs it: the cost ledger (`ledger`,
`cascade_ledger`), routing traces (`recorder`) and shadow evaluation against the
fallback (`shadow`)."""

from __future__ import annotations

from .cascade_ledger import CascadeStats, StageStats
from .ledger import Ledger, LedgerSnapshot, Price
from .recorder import TraceRecorder

__all__ = ["CascadeStats", "Ledger", "LedgerSnapshot", "Price", "StageStats", "TraceRecorder"]

"""What the router did, for whoever runs it: the cost ledger (:mod:`.ledger`,
:mod:`.cascade_ledger`), routing traces (:mod:`.recorder`) and shadow evaluation
against the fallback (:mod:`.shadow`)."""

from __future__ import annotations

from .cascade_ledger import CascadeLedger, CascadeStats, StageStats
from .ledger import Ledger, LedgerSnapshot, Price
from .recorder import EVAL_KEYS, TraceRecorder, as_recorder, build_record, fallback_part, slm_part
from .shadow import Judge, Monitor, agreement

__all__ = [
    "CascadeLedger",
    "CascadeStats",
    "EVAL_KEYS",
    "Judge",
    "Ledger",
    "LedgerSnapshot",
    "Monitor",
    "Price",
    "StageStats",
    "TraceRecorder",
    "agreement",
    "as_recorder",
    "build_record",
    "fallback_part",
    "slm_part",
]

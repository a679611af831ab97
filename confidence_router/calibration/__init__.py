"""Choosing a policy's threshold from labelled traces, with a finite-sample guarantee.

`calibrate_policy` runs the whole procedure (split, fit, calibrate, verify) and
`save_calibrated` writes its result; `labelled_traces` reads the traces,
`ltt_threshold` chooses a threshold for a quality-loss budget and `rate_threshold`
one for an escalation share. Everything is defined in `.calibrate`, whose
`__all__` this package exports unchanged.
"""

from __future__ import annotations

from . import calibrate
from .calibrate import *  # noqa: F403 (the module's __all__ is the package's API)

__all__ = calibrate.__all__

"""Evaluation of confidence routing on SQuAD v1.1, SQuAD 2.0 and HotpotQA.

Record traces once (`eval.traces`), then evaluate any policy offline
(`eval.analysis`) and write a report (`eval.report`); the command is
`confidence-router eval`. Needs the `eval` extra (matplotlib, tqdm).
"""

from ..scoring import Score, clean_prediction, normalize_answer, score_answer
from .data import DataFormatError, QAExample, load_examples
from .traces import PERFECT, TraceConfigError, load_traces, run_traces

__all__ = [
    "PERFECT",
    "DataFormatError",
    "QAExample",
    "Score",
    "TraceConfigError",
    "clean_prediction",
    "load_examples",
    "load_traces",
    "normalize_answer",
    "run_traces",
    "score_answer",
]

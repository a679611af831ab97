"""`confidence-router ask`: one question through the router on the embedded models."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ..backends.llama_cpp import LlamaCppSLM
from ..errors import ConfidenceRouterError
from ..routing.router import Router
from ..types import Message
from ._args import add_max_tokens

DEFAULT_QUESTION = "What is the capital of France?"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confidence-router ask",
        description="Ask one question: SmolLM2-135M answers first, Gemma 3 270M takes "
        "over when SmolLM2 is unsure. Both run in process; nothing is downloaded.",
    )
    parser.add_argument("question", nargs="?", default=DEFAULT_QUESTION)
    add_max_tokens(parser, default=48)
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        slm = LlamaCppSLM.smollm2(max_tokens=args.max_tokens)
        fallback = LlamaCppSLM.gemma3(max_tokens=args.max_tokens, stop=["\n"])
        # A plain "Question/Answer" frame suits both the chat model and the base model.
        messages = [
            Message("system", "Answer the question in a few words."),
            Message("user", f"Question: {args.question}\nAnswer:"),
        ]
        result = Router(slm, fallback).invoke(messages)
    except ConfidenceRouterError as exc:
        print(f"confidence-router ask: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"answer": result.text, "routing": result.to_dict()}, indent=2))
        return 0
    decision = result.decision
    who = "the small model" if decision.route == "slm" else "the fallback"
    print(f"Q: {args.question}")
    print(f"A: {result.text.strip()}")
    print(f"answered by {who} ({result.answered_by.model}) in {result.latency_s:.2f}s")
    print(f"why: {decision.reason}")
    if decision.signals:
        print("signals: " + ", ".join(f"{k}={v:.3g}" for k, v in decision.signals.items()))
    return 0

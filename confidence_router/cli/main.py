"""The `confidence-router` command: a thin dispatcher to one module per subcommand.

Each subcommand lives in its own module exposing `main(argv) -> int` and is
imported only when used, so `confidence-router eval` needs no LangChain and
`confidence-router rag` needs no plotting library.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "ask": ("confidence_router.cli.ask", "ask one question through the router (embedded models)"),
    "rag": ("confidence_router_rag.cli", "answer questions over a folder of documents"),
    "eval": ("confidence_router.cli.eval", "evaluate routing policies on QA data sets"),
    "calibrate": (
        "confidence_router.cli.calibrate",
        "fit a policy on traces; threshold for a quality-loss budget",
    ),
}


def _usage() -> str:
    lines = ["usage: confidence-router COMMAND [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines += ["", "Run `confidence-router COMMAND --help` for a command's options."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command not in SUBCOMMANDS:
        print(f"confidence-router: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _ = SUBCOMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = {"rag": "rag", "eval": "eval"}.get(command, "local")
        print(
            f"confidence-router {command}: missing dependency ({exc.name}); "
            f"install it with: pip install 'confidence-router[{extra}]'",
            file=sys.stderr,
        )
        return 2
    code: int = module.main(rest)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

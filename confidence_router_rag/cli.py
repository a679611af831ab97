"""`confidence-router rag`: answer questions over a folder of local documents.

Runs offline by default: documents are indexed with BM25 (nothing to
download), Qwen2.5-Coder-0.5B-Instruct answers first in-process, and
Qwen2.5-Coder-1.5B-Instruct (also in-process) takes the questions the 0.5B is
unsure of (`--tiny`: SmolLM2-135M and Gemma 3 270M, fast but weak). The
prompt lets the model answer "not in the documents"; such an answer is routed
like any other (the policy sees the `abstention` signal) and is shown as
the documents not holding the answer. `--slm ollama:MODEL`,
`--slm openai:MODEL@URL` (vLLM, SGLang, llama-server...) and
`--fallback PROVIDER:MODEL` point it at real deployments. `--slm` repeated
runs a ladder, lowest first, each SLM with its default policy: `--slm
embedded:gemma3 --slm embedded --fallback embedded` is Gemma 3 270M, then
Qwen2.5-Coder-0.5B, then the 1.5B (`./scripts/demo --slm embedded:gemma3
--slm embedded`); each answer says which stage gave it.

Exit codes (one message on stderr for every non-zero one):

====  ==========================================================================
0     every question answered
1     an unexpected error (a bug: Python prints the traceback; please report it)
2     bad arguments or configuration (unknown option, bad --fallback, no questions)
3     the documents folder does not exist or is not a folder
4     no documents to index (no .md/.markdown/.txt/.pdf file, or no text in them)
5     a document could not be read (permissions, not UTF-8, a broken PDF)
6     a question is longer than the SLM's context window
7     Ollama (or the SLM's OpenAI-compatible server) could not be reached, or does
      not have the model (SLM or embeddings)
8     the fallback model failed
9     the --output file could not be written
130   interrupted (Ctrl-C)
====  ==========================================================================

Nothing is half-written: `--json` prints its one document only after every
question is answered, and `--output` is written to a temporary file in the
same folder and renamed into place, or not at all.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import io
import json
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TextIO

from confidence_router.backends._checks import redact_url
from confidence_router.backends.base import SLMBackend
from confidence_router.backends.spec import ModelSpec, parse_model_spec
from confidence_router.cli._args import (
    add_max_tokens,
    add_price_options,
    add_server_options,
    fraction_inclusive,
    positive_int,
)
from confidence_router.errors import (
    ConfigurationError,
    FallbackError,
    SLMError,
)
from confidence_router.observe.ledger import Price
from confidence_router.policies.defaults import PolicyChoice
from confidence_router.routing.cascade import Stage
from confidence_router.types import Message

from .chain import QuestionTooLongError, build_chain, needs_demo, token_budget
from .display import Answer, Display, Summary, as_json
from .documents import (
    DEFAULT_EXCLUDE,
    DocumentLoadError,
    DocumentsFolderError,
    NoDocumentsError,
    find_documents,
    load_documents,
    split_documents,
)
from .models import TINY_PAIR, make_chat, make_fallback, make_slm
from .retrieval import RETRIEVERS, EmbeddingsUnavailableError, build_retriever

SCHEMA = "confidence-router/rag/v1"
#: The fallback price the savings estimate assumes by default (per million tokens).
DEFAULT_FALLBACK_PRICE = Price(0.15, 0.60)


class Exit(enum.IntEnum):
    """The command's exit codes (see the module docstring)."""

    OK = 0
    INTERNAL = 1
    USAGE = 2
    FOLDER = 3
    NO_DOCUMENTS = 4
    UNREADABLE = 5
    TOO_LONG = 6
    OLLAMA = 7
    FALLBACK = 8
    OUTPUT = 9
    INTERRUPTED = 130


class CommandError(Exception):
    """A failure with its exit code and the one line shown to the user."""

    def __init__(self, code: Exit, message: str) -> None:
        self.code = code
        super().__init__(message)


# -- arguments ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confidence-router rag",
        description=(
            "Answer questions over a folder of local documents (.md, .txt, .pdf).\n"
            "A small model answers first; a larger one only when the small one is unsure.\n"
            "By default both run in-process and nothing touches the network."
        ),
        epilog=(
            "examples:\n"
            "  confidence-router rag examples/docs --questions examples/questions.txt\n"
            "  confidence-router rag ~/notes -q 'When is the review due?'\n"
            "  confidence-router rag ~/notes --slm ollama:qwen2.5:1.5b "
            "--fallback openai:gpt-4o-mini -q '...'\n"
            "\nexit codes: 0 ok, 2 usage, 3 no such folder, 4 no documents, 5 unreadable "
            "document,\n6 question too long, 7 Ollama unreachable, 8 fallback failed, "
            "9 cannot write --output"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("folder", type=Path, help="folder of documents, searched recursively")
    asking = parser.add_argument_group("questions (default: one per line on stdin)")
    asking.add_argument(
        "-q", "--question", action="append", default=[], help="a question (repeatable)"
    )
    asking.add_argument(
        "--expected",
        type=Path,
        metavar="FILE",
        help="JSON object mapping questions to lists of expected answers; the summary then "
        "counts the right answers of each model (default: QUESTIONS.expected.json beside "
        "--questions FILE, if it exists)",
    )
    asking.add_argument(
        "--questions",
        type=Path,
        metavar="FILE",
        help="file with one question per line, '-' for stdin ('#' lines and blank lines "
        "are skipped)",
    )
    models = parser.add_argument_group("models")
    models.add_argument(
        "--slm",
        action="append",
        default=None,
        metavar="SPEC",
        help="the small model (repeat it for a ladder, lowest first: each SLM answers in "
        "turn until one is sure, each with its default policy): 'embedded' "
        "(Qwen2.5-Coder-0.5B-Instruct, in-process), "
        "'embedded:smollm2', 'embedded:gemma3', 'ollama:MODEL[@URL]' (server default "
        "--ollama-host), or 'openai:MODEL[@URL]' (an OpenAI-compatible server with logprobs: "
        "vLLM, SGLang, llama-server; URL default $OPENAI_BASE_URL, key $OPENAI_API_KEY). "
        "Default: embedded",
    )
    models.add_argument(
        "--fallback",
        default=None,
        metavar="SPEC",
        help="the large model: 'embedded' (Qwen2.5-Coder-1.5B-Instruct, in-process), "
        "'embedded:gemma3', or PROVIDER:MODEL for LangChain's init_chat_model, e.g. "
        "ollama:llama3.1:8b, openai:gpt-4o-mini, openai:MODEL@http://host:8000/v1 "
        "(ollama: and openai: take @URL as for --slm). Default: embedded",
    )
    models.add_argument(
        "--tiny",
        action="store_true",
        help="the fast tiny pair instead of the Qwen pair: --slm embedded:smollm2 "
        "--fallback embedded:gemma3 (for tests and slow machines; both are weak)",
    )
    models.add_argument(
        "--policy",
        action="append",
        metavar="NAME|FILE",
        help="a built-in policy by name (e.g. gemma3-270m/extractive-qa, seed-thresholds) or "
        "a policy saved as JSON (repeatable: one per --slm of a ladder, in order). Default: the "
        "calibrated policy shipped for the SLM, "
        "seed-thresholds for a model without one",
    )
    models.add_argument(
        "--trace",
        type=Path,
        metavar="FILE",
        help="append one JSON trace line per question (signals and ids only) for "
        "`confidence-router calibrate`",
    )
    models.add_argument(
        "--trace-text",
        action="store_true",
        help="also write questions, prompts and answers into the --trace file",
    )
    models.add_argument(
        "--shadow-rate",
        type=fraction_inclusive,
        default=0.0,
        metavar="P",
        help="share of questions whose kept SLM answer is also checked against the fallback, "
        "from 0 to 1 (label for calibrate; kept-answer precision in the summary; default: 0)",
    )
    models.add_argument(
        "--threshold",
        type=float,
        action="append",
        default=None,
        metavar="X",
        help="the policy's threshold: higher escalates more (repeatable: one per --slm of a "
        "ladder, in order)",
    )
    add_max_tokens(models, default=48)
    add_server_options(models, timeout=60.0)
    index = parser.add_argument_group("retrieval")
    index.add_argument("--retriever", choices=RETRIEVERS, default="bm25")
    index.add_argument(
        "--embedding-model",
        default="nomic-embed-text",
        metavar="NAME",
        help="Ollama embedding model for --retriever ollama-embeddings",
    )
    index.add_argument(
        "-k",
        "--top-k",
        type=positive_int,
        default=3,
        metavar="N",
        help="passages per question (default: 3)",
    )
    index.add_argument(
        "--chunk-size",
        type=positive_int,
        default=800,
        metavar="CHARS",
        help="passage length (default: 800)",
    )
    index.add_argument(
        "--chunk-overlap",
        type=int,
        default=80,
        metavar="CHARS",
        help="characters shared by neighbouring passages (default: 80)",
    )
    index.add_argument(
        "--exclude",
        action="append",
        metavar="GLOB",
        help=f"file names to skip (repeatable; default: {' '.join(DEFAULT_EXCLUDE)})",
    )
    out = parser.add_argument_group("output")
    out.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, nothing else"
    )
    out.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the JSON report to FILE"
    )
    out.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_price_options(out, slm=Price(), fallback=DEFAULT_FALLBACK_PRICE)
    return parser


def read_questions(args: argparse.Namespace, stdin: TextIO) -> list[str]:
    """Questions from -q and --questions FILE ('-' is stdin) together; else from stdin."""
    lines: list[str] = list(args.question)
    if args.questions is not None and str(args.questions) == "-":
        lines += stdin.read().splitlines()
    elif args.questions is not None:
        try:
            lines += args.questions.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(
                Exit.USAGE, f"cannot read the questions file {str(args.questions)!r}: {exc}"
            ) from exc
    elif not args.question:
        if stdin.isatty():
            raise CommandError(
                Exit.USAGE, "no questions: give -q QUESTION, --questions FILE, or pipe them in"
            )
        lines += stdin.read().splitlines()
    questions = [q.strip() for q in lines if q.strip() and not q.lstrip().startswith("#")]
    if not questions:
        raise CommandError(Exit.USAGE, "no questions: the input has no non-empty lines")
    return questions


# -- running --------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_native_logs() -> Iterator[None]:
    """Hide llama.cpp's load-time chatter (it prints to stderr even when not verbose);
    replay it if loading fails, since it then explains why."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            yield
    except BaseException:
        sys.stderr.write(captured.getvalue())
        raise


def _policy(value: str | None, threshold: float | None) -> tuple[Any, str, str]:
    """The policy of `--policy` (a built-in name or a JSON file), its name and a line about
    it; `(None, "", "")` when not given (the default is chosen once the SLM is known)."""
    from confidence_router.policies import load_policy
    from confidence_router.policies.defaults import builtin_policy_info, builtin_policy_names
    from confidence_router.policies.defaults import load_builtin_policy as load_named

    if threshold is not None and not math.isfinite(threshold):
        raise CommandError(Exit.USAGE, f"--threshold must be finite, got {threshold!r}")
    if value is None:
        return None, "", ""
    if value in builtin_policy_names():
        return load_named(value), value, str(builtin_policy_info(value)["description"])
    path = Path(value)
    try:
        policy = load_policy(path)
    except FileNotFoundError as exc:
        raise CommandError(
            Exit.USAGE,
            f"--policy {value!r}: no such file, and not a built-in policy "
            f"({', '.join(builtin_policy_names())})",
        ) from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(Exit.USAGE, f"--policy {value!r}: {exc}") from exc
    return policy, str(path), f"loaded from {path}"


def _default_policy(slm_model: str) -> tuple[Any, str, str]:
    """The default policy for this SLM on extractive QA, as a PolicyChoice (so every
    decision names it), its name and a line about it with its provenance."""
    from confidence_router.policies.defaults import choose_policy

    choice = choose_policy(slm_model, "extractive-qa")
    return choice, choice.name, f"default for {slm_model}: {choice.about}"


def _nth(values: Sequence[Any], index: int) -> Any:
    """The value a repeated option gives the `index`-th SLM (None past the last)."""
    return values[index] if index < len(values) else None


def _with_threshold(policy: Any, threshold: float | None) -> Any:
    """The policy (or named default) with `--threshold` applied, when given."""
    if threshold is None:
        return policy
    if isinstance(policy, PolicyChoice):
        return replace(policy, policy=policy.policy.with_threshold(threshold))
    return policy.with_threshold(threshold)


def _policy_of(choice: Any) -> Any:
    """The policy itself, whether given as a policy or as a named default (PolicyChoice)."""
    return choice.policy if isinstance(choice, PolicyChoice) else choice


def _expected_answers(args: argparse.Namespace) -> dict[str, list[str]]:
    """Expected answers by question, from `--expected` or the file beside `--questions`."""
    path: Path | None = args.expected
    if path is None and args.questions is not None and str(args.questions) != "-":
        beside = args.questions.with_name(args.questions.stem + ".expected.json")
        path = beside if beside.is_file() else None
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CommandError(
            Exit.USAGE, f"cannot read expected answers {str(path)!r}: {exc}"
        ) from exc
    if not isinstance(data, dict):
        raise CommandError(Exit.USAGE, f"{str(path)!r}: expected a JSON object")
    expected: dict[str, list[str]] = {}
    for question, answers in data.items():
        if question.startswith("_"):
            continue  # comments such as "_about"
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise CommandError(
                Exit.USAGE, f"{str(path)!r}: answers of {question!r} must be a list of strings"
            )
        expected[question.strip()] = answers
    return expected


def is_right(answer: str, expected: Sequence[str]) -> bool:
    """An answer is right when, after SQuAD normalisation, it contains an expected answer as
    a run of words, or its token F1 against one exceeds 0.5 (the evaluation's criterion).
    No expected answer means the documents do not hold one: then only an abstention
    ("not in the documents") is right."""
    from confidence_router.scoring import normalize_answer, squad_v1_score
    from confidence_router.signals.context import is_abstention

    if not expected:
        return is_abstention(answer)
    if is_abstention(answer):
        return False
    said = f" {normalize_answer(answer)} "
    if any(normalize_answer(e) and f" {normalize_answer(e)} " in said for e in expected):
        return True
    return squad_v1_score(answer, list(expected)).f1 > 0.5


def _preflight(slm: SLMBackend, spec: ModelSpec, ollama_host: str | None) -> None:
    """Reach a served SLM once before indexing, so a dead server fails fast and clearly."""
    served = spec.as_slm_spec()
    if served is None:
        return
    try:
        slm.generate([Message("user", "ping")], max_tokens=1)
    except SLMError as exc:
        host = served.url or (ollama_host if served.provider == "ollama" else None)
        at = f" at {redact_url(host)}" if host else ""
        detail = str(exc).rstrip()
        detail += "" if detail.endswith((".", "?", "!")) else "."
        if served.provider == "openai":
            raise CommandError(
                Exit.OLLAMA,
                f"the SLM openai:{served.model}{at} did not answer: {detail} "
                f"Start the server (vLLM, llama-server, ...) or use --slm embedded.",
            ) from exc
        raise CommandError(
            Exit.OLLAMA,
            f"the SLM ollama:{served.model}{at} did not answer: {detail} Start Ollama{at} "
            f"(`ollama serve`) and pull the model there (`ollama pull {served.model}`), "
            f"or use --slm embedded.",
        ) from exc


def _check_output(path: Path) -> None:
    """Fail before the long part if `--output` could never be written."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CommandError(Exit.OUTPUT, f"--output {str(path)!r} is a folder, not a file")
    if not folder.is_dir():
        raise CommandError(
            Exit.OUTPUT, f"--output {str(path)!r}: folder {str(folder)!r} does not exist"
        )
    if not os.access(folder, os.W_OK):
        raise CommandError(
            Exit.OUTPUT, f"--output {str(path)!r}: folder {str(folder)!r} is not writable"
        )


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` in one step: a temporary file in the same folder, renamed."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise CommandError(Exit.OUTPUT, f"cannot write {str(path)!r}: {exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise CommandError(Exit.OUTPUT, f"cannot write {str(path)!r}: {exc}") from exc


def run(args: argparse.Namespace, display: Display, stdin: TextIO) -> dict[str, Any]:
    """Index, answer, summarise; returns the JSON report. Raises CommandError."""
    started = time.perf_counter()
    if args.output is not None:
        _check_output(args.output)
    questions = read_questions(args, stdin)
    if args.tiny and (args.slm or args.fallback is not None):
        raise CommandError(Exit.USAGE, "--tiny chooses both models: drop --slm and --fallback")
    tiny_slm, tiny_fallback = TINY_PAIR
    slm_values: list[str] = args.slm or [tiny_slm if args.tiny else "embedded"]
    args.fallback = args.fallback or (tiny_fallback if args.tiny else "embedded")
    try:
        slm_specs = [parse_model_spec(value, "--slm") for value in slm_values]
        fallback_spec = parse_model_spec(args.fallback, "--fallback")
    except ConfigurationError as exc:
        raise CommandError(Exit.USAGE, str(exc)) from exc
    if len(slm_specs) > 1 and (args.trace is not None or args.shadow_rate):
        raise CommandError(
            Exit.USAGE,
            "--trace and --shadow-rate record a two-model pair: give one --slm with them",
        )
    policy_values: list[str] = args.policy or []
    thresholds: list[float] = args.threshold or []
    for flag, given in (("--policy", policy_values), ("--threshold", thresholds)):
        if len(given) > len(slm_specs):
            raise CommandError(
                Exit.USAGE,
                f"{flag} is given {len(given)} times for {len(slm_specs)} SLM(s): "
                f"at most one per --slm, in the same order",
            )
    chosen = [_policy(_nth(policy_values, i), _nth(thresholds, i)) for i in range(len(slm_specs))]
    policy, policy_name, policy_about = chosen[0]
    expected = _expected_answers(args)

    # 1. Documents: find, load, split (cheap checks before any model loads).
    root: Path = args.folder
    exclude = tuple(args.exclude) if args.exclude else DEFAULT_EXCLUDE
    try:
        paths = find_documents(root, exclude)
    except DocumentsFolderError as exc:
        raise CommandError(Exit.FOLDER, str(exc)) from exc
    except NoDocumentsError as exc:
        raise CommandError(Exit.NO_DOCUMENTS, str(exc)) from exc
    with display.progress("Loading documents", len(paths)) as advance:
        try:
            docs = load_documents(paths, root, on_file=lambda p: advance(p.name))
        except DocumentLoadError as exc:
            raise CommandError(Exit.UNREADABLE, str(exc)) from exc
    try:
        chunks = split_documents(docs, args.chunk_size, args.chunk_overlap)
    except ConfigurationError as exc:
        raise CommandError(Exit.USAGE, str(exc)) from exc
    if not chunks:
        raise CommandError(
            Exit.NO_DOCUMENTS,
            f"no documents to index in {str(root)!r}: the {len(paths)} files have no text "
            f"(a scanned PDF has none; convert it with OCR first)",
        )

    # 2. The SLM(s), and every question checked against each one's context window.
    slms: list[SLMBackend] = []
    for slm_spec in slm_specs:
        try:
            with _quiet_native_logs():
                slm = make_slm(
                    slm_spec,
                    max_tokens=args.max_tokens,
                    ollama_host=args.ollama_host,
                    timeout=args.timeout,
                )
        except ConfigurationError as exc:
            raise CommandError(Exit.USAGE, str(exc)) from exc
        _preflight(slm, slm_spec, args.ollama_host)
        slms.append(slm)
    slm = slms[0]
    # one prompt for the whole ladder: the worked example if any SLM is a base model
    demo = any(needs_demo(each) for each in slms)
    budgets = [
        replace(b, demo=demo)
        for b in (token_budget(each, args.max_tokens) for each in slms)
        if b is not None
    ]
    for budget in budgets:
        for number, question in enumerate(questions, 1):
            try:
                budget.check_question(question)
            except QuestionTooLongError as exc:
                raise CommandError(Exit.TOO_LONG, f"question {number}: {exc}") from exc

    # 3. The retriever (BM25 here and now; embeddings call Ollama).
    try:
        retriever = build_retriever(
            chunks,
            args.retriever,
            k=args.top_k,
            embedding_model=args.embedding_model,
            ollama_host=args.ollama_host,
        )
    except EmbeddingsUnavailableError as exc:
        raise CommandError(Exit.OLLAMA, str(exc)) from exc
    except ConfigurationError as exc:
        raise CommandError(Exit.USAGE, str(exc)) from exc
    index_time = time.perf_counter() - started

    # 4. The fallback and the router, then the chain.
    if policy is None:
        policy, policy_name, policy_about = _default_policy(slm.model)
    policy = _with_threshold(policy, _nth(thresholds, 0))
    # a ladder: every SLM above the first with its --policy, else its model's default
    upper = [
        (_with_threshold(p, _nth(thresholds, i)), name, about)
        for i, (p, name, about) in (
            (i, chosen[i] if chosen[i][0] is not None else _default_policy(each.model))
            for i, each in enumerate(slms[1:], 1)
        )
    ]
    try:
        with _quiet_native_logs():
            fallback = make_fallback(
                fallback_spec, max_tokens=args.max_tokens, ollama_host=args.ollama_host
            )
            trace: Any = None
            if args.trace is not None:
                from confidence_router.observe.recorder import TraceRecorder

                trace = TraceRecorder(args.trace, store_text=args.trace_text, dataset="rag")
            chat = make_chat(
                slm,
                fallback,
                policy,
                args.slm_price,
                args.fallback_price,
                trace=trace,
                shadow_rate=args.shadow_rate,
                stages=[
                    Stage(each, choice, price=args.slm_price)
                    for each, (choice, _, _) in zip(slms[1:], upper)
                ],
            )
    except ConfigurationError as exc:
        raise CommandError(Exit.USAGE, str(exc)) from exc
    chain = build_chain(retriever, chat, budgets, demo=demo)

    report: dict[str, Any] = {
        "schema": SCHEMA,
        "documents": {
            "folder": str(root),
            "files": len(paths),
            "chunks": len(chunks),
            "retriever": args.retriever,
            "k": args.top_k,
            "index_time_s": round(index_time, 3),
        },
        "models": {
            "slm": slm.model,
            "fallback": str(getattr(chat.router, "fallback_model", args.fallback)),
            "policy": policy_name,
            "policy_provenance": (
                policy.provenance if isinstance(policy, PolicyChoice) else "given"
            ),
            "policy_type": type(_policy_of(policy)).__name__,
            "policy_about": policy_about,
        },
        "prices": {"slm": asdict(args.slm_price), "fallback": asdict(args.fallback_price)},
    }
    if upper:
        firsts = [(policy, policy_name, policy_about), *upper]
        report["models"]["stages"] = [
            {
                "model": each.model,
                "policy": name,
                "policy_provenance": (
                    choice.provenance if isinstance(choice, PolicyChoice) else "given"
                ),
                "policy_type": type(_policy_of(choice)).__name__,
                "policy_about": about,
            }
            for each, (choice, name, about) in zip(slms, firsts)
        ]
    display.header(report)

    # 5. Answer.
    answers: list[Answer] = []
    monitor = None if upper else chat.router.monitor
    # the embedded fallback (llama.cpp through ChatLlamaCpp) runs one call at a time:
    # a shadow check must end before the next question may need the same model
    serial_shadow = monitor is not None and fallback_spec.provider == "embedded"
    answering = time.perf_counter()
    with display.progress("Answering", len(questions)) as advance:
        for number, question in enumerate(questions, 1):
            asked = time.perf_counter()
            try:
                output = chain.invoke(question)
            except FallbackError as exc:
                raise CommandError(
                    Exit.FALLBACK, f"question {number}: {exc}. Check --fallback {args.fallback!r}."
                ) from exc
            except QuestionTooLongError as exc:
                raise CommandError(Exit.TOO_LONG, f"question {number}: {exc}") from exc
            except SLMError as exc:  # only when the router is strict
                raise CommandError(Exit.OLLAMA, f"question {number}: {exc}") from exc
            item = Answer.from_chain(question, output, time.perf_counter() - asked)
            if question in expected:
                item = replace(
                    item,
                    expected=expected[question],
                    right=is_right(item.answer, expected[question]),
                )
            answers.append(item)
            display.answer(number, item)
            advance(question)
            if serial_shadow:
                assert monitor is not None
                monitor.wait(timeout=300)
    answer_time = time.perf_counter() - answering
    if monitor is not None:  # let the shadow checks finish, then flush the trace file
        monitor.wait(timeout=300)
        chat.router.close()

    summary = Summary.build(
        answers, chat.router.stats, index_time, answer_time, time.perf_counter() - started
    )
    display.summary(summary, report["prices"])
    report["answers"] = [as_json(a) for a in answers]
    report["summary"] = as_json(summary)
    if args.shadow_rate:
        shadow = chat.router.stats.to_dict()["shadow"]
        report["shadow"] = shadow
        display.shadow(shadow)
    return report


def main(argv: Sequence[str] | None = None, *, stdin: TextIO | None = None) -> int:
    """Entry point of `confidence-router rag`; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse has printed its message
        return int(exc.code or 0)
    display = Display(machine=args.json, progress=not args.no_progress)
    try:
        with warnings.catch_warnings():
            # langchain-community announces its own sunset on import; not the user's concern.
            warnings.filterwarnings("ignore", message=".*langchain-community.*")
            report = run(args, display, stdin if stdin is not None else sys.stdin)
        text = json.dumps(report, indent=2, ensure_ascii=False)
        if args.output is not None:
            write_atomically(args.output, text + "\n")
        if args.json:
            sys.stdout.write(text + "\n")
            sys.stdout.flush()
        return int(Exit.OK)
    except CommandError as exc:
        display.error(str(exc))
        return int(exc.code)
    except KeyboardInterrupt:
        display.error("interrupted; nothing was written")
        return int(Exit.INTERRUPTED)


__all__ = ["Exit", "build_parser", "is_right", "main", "read_questions", "run", "write_atomically"]

"""`confidence-router eval`: record traces, analyse them, write the report.

```text
confidence-router eval run     --data PATH [--data PATH ...] [--slm SPEC] [--fallback SPEC]
confidence-router eval analyze TRACES ... [--policy [KIND=]FILE]
confidence-router eval report  TRACES ... [--out DIR] [--policy [KIND=]FILE]
confidence-router eval all     --data PATH ... [--out DIR]      (run, then report)
confidence-router eval guarantee TRACES ... [--out DIR]  (the calibrate guarantee section)
confidence-router eval resignal TRACES ... --data PATH ...      (add context signals)
confidence-router eval fit-policy TRACES ... --name SLM/PROFILE --out FILE [--label as-good]
confidence-router eval transfer TRACES ... [--out DIR] [--write-policy FILE]
                                    (leave-one-model-out of the model-agnostic policy)
confidence-router eval ladder TRACES ... --ladder M1,M2,TOP [--out DIR]
                                    (calibrate and compare cascades of N models)
```

Model specs: `qwen-0.5b`, `qwen-1.5b` (Qwen2.5-Coder Instruct, chat format),
`gemma3` and `smollm2` (the embedded GGUF models from PyPI; also written
`embedded:NAME`, as `confidence-router rag` does),
`gguf:PATH` (any local GGUF file), `ollama:MODEL[@URL]` (a model on an Ollama
server, `--ollama-host` or `OLLAMA_HOST`), `openai:MODEL[@URL]` (a model on an
OpenAI-compatible server with logprobs: vLLM, SGLang, llama-server; URL default
`OPENAI_BASE_URL`, key `OPENAI_API_KEY`). The perfect fallback (the gold
answer, an upper bound) is always recorded; `--fallback` adds real ones.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from ..errors import ConfidenceRouterError, ConfigurationError
from ..eval.prompts import PROMPT_VERSION, PROMPT_VERSIONS
from ..observe.ledger import Price
from ..scoring import DATASET_KINDS
from ._args import (
    PRICE_METAVAR,
    add_max_tokens,
    add_price_options,
    add_server_options,
    fraction,
    fraction_inclusive,
    fraction_or_zero,
    positive_int,
    price,
)

DEFAULT_TRACES = Path("bench/results/traces")
DEFAULT_REPORT = Path("bench/results/eval")


class UsageError(Exception):
    """Bad command-line input: printed with the usage hint, exit code 2."""


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[KIND=]PATH",
        help="a JSONL sample or an official SQuAD/HotpotQA JSON file; KIND is one of "
        f"{', '.join(DATASET_KINDS)} (inferred when omitted); repeat for several",
    )
    p.add_argument("--traces", type=Path, default=DEFAULT_TRACES, help="trace folder")
    p.add_argument(
        "--slm",
        default="gemma3",
        metavar="SPEC",
        help="the SLM: an embedded model (qwen-0.5b, qwen-1.5b, gemma3, smollm2, also written "
        "embedded:NAME), gguf:PATH, ollama:MODEL[@URL] or openai:MODEL[@URL] (default: gemma3)",
    )
    p.add_argument(
        "--slm-format",
        choices=("chat", "completion"),
        help="prompt format of the SLM (default: completion for gemma3/gguf, chat otherwise)",
    )
    p.add_argument(
        "--fallback-format",
        choices=("chat", "completion"),
        help="prompt format of the real fallbacks (default: as for --slm-format)",
    )
    p.add_argument(
        "--fallback-top-logprobs",
        dest="fallback_top_k",
        type=int,
        default=5,
        metavar="N",
        help="top log-probabilities per token recorded for a real fallback that gives them "
        "(0-20; so the fallback can also be scored as an SLM; default: 5; its former name "
        "--fallback-top-k still works)",
    )
    _add_former_name(p, "--fallback-top-k", "fallback_top_k", int)
    p.add_argument(
        "--fallback",
        action="append",
        default=[],
        metavar="SPEC",
        help="a real fallback to record next to the perfect fallback, a spec as for --slm "
        "(repeatable)",
    )
    p.add_argument(
        "--limit", type=positive_int, metavar="N", help="first N questions of each data set"
    )
    add_max_tokens(p, default=32)
    p.add_argument(
        "--prompt",
        choices=PROMPT_VERSIONS,
        default=PROMPT_VERSION,
        help="qa-v1: instruction, a worked example, passage, question (default); rag-v2: "
        "the system + user prompt `confidence-router rag` sends a chat SLM (it offers "
        "abstention); rag-v1: the same without abstention",
    )
    p.add_argument(
        "--top-logprobs",
        dest="top_k",
        type=int,
        default=5,
        metavar="N",
        help="top log-probabilities recorded per token (0-20; default: 5; its former name "
        "--top-k still works)",
    )
    _add_former_name(p, "--top-k", "top_k", int)
    p.add_argument("--concurrency", type=positive_int, default=1, metavar="N")
    p.add_argument(
        "--n-ctx", type=positive_int, default=8192, metavar="N", help="context of embedded models"
    )
    add_server_options(p, timeout=120.0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--samples",
        type=int,
        default=0,
        metavar="K",
        help="also record K sampled SLM answers per question (self-consistency; default 0)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=0.7,
        help="sampling temperature of --samples (default 0.7)",
    )


def _add_analysis_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--correct-f1",
        type=fraction_or_zero,
        default=0.5,
        help="F1 above which an answer is right (default: 0.5)",
    )
    p.add_argument("--folds", type=positive_int, default=5, help="cross-validation folds")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0)
    add_price_options(p, slm=Price(0.05, 0.05), fallback=Price(0.5, 1.5))


def _add_policy_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="[KIND=]FILE",
        help="a shipped policy JSON replayed at its own threshold (calls avoided, F1 share, "
        "queries per fallback budget, wall time, tokens); KIND=FILE for one data set only "
        f"({', '.join(DATASET_KINDS)}), repeatable",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="confidence-router eval",
        description="Evaluate confidence routing on SQuAD v1.1, SQuAD 2.0 and HotpotQA.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = sub.add_parser("run", help="answer the questions and record traces")
    _add_run_options(run)
    analyze = sub.add_parser("analyze", help="print the summary table of trace files")
    analyze.add_argument("traces", nargs="+", type=Path, help="trace files or folders")
    analyze.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the full analysis as JSON to FILE"
    )
    _add_former_name(analyze, "--json", "output", Path)
    _add_analysis_options(analyze)
    _add_policy_option(analyze)
    report = sub.add_parser("report", help="write the Markdown report and plots")
    report.add_argument("traces", nargs="+", type=Path, help="trace files or folders")
    report.add_argument("--out", type=Path, default=DEFAULT_REPORT, help="report folder")
    _add_analysis_options(report)
    _add_policy_option(report)
    _add_guarantee_options(report)
    resignal = sub.add_parser(
        "resignal",
        help="measure the context signals of recorded answers against their prompts "
        "(rebuilt from --data), rewriting the trace files",
    )
    resignal.add_argument("traces", nargs="+", type=Path, help="trace files or folders")
    resignal.add_argument("--data", action="append", required=True, metavar="[KIND=]PATH")
    fit = sub.add_parser(
        "fit-policy",
        help="fit a routing policy on trace files (model and regularisation chosen by "
        "inner cross-validation) and save it as JSON, with its out-of-fold AUROC",
    )
    fit.add_argument("traces", nargs="+", type=Path, help="trace files or folders")
    fit.add_argument("--name", required=True, help="policy name, e.g. my-slm/extractive-qa")
    fit.add_argument("--description", default="", help="one line saved with the policy")
    fit.add_argument("--out", type=Path, required=True, help="JSON file to write")
    fit.add_argument(
        "--label",
        choices=("right", "as-good"),
        default="right",
        help="what the policy predicts: right = the SLM's answer has F1 > --correct-f1 against "
        "the gold answers (default); as-good = its F1 is at least the real fallback's",
    )
    fit.add_argument(
        "--fallback",
        help="the real fallback the as-good label compares with (default: the only one recorded)",
    )
    _add_analysis_options(fit)
    transfer = sub.add_parser(
        "transfer",
        help="leave-one-model-out: fit the model-agnostic policy without each model, score it "
        "on that model; write transfer.md and transfer.json (and optionally the shipped policy)",
    )
    transfer.add_argument("traces", nargs="+", type=Path, help="trace files or folders")
    transfer.add_argument("--out", type=Path, default=Path("bench/results/transfer"))
    transfer.add_argument(
        "--correct-f1",
        type=fraction_or_zero,
        default=0.5,
        help="F1 above which an answer is right (default: 0.5)",
    )
    transfer.add_argument("--folds", type=positive_int, default=5, help="folds (own scale, CV)")
    transfer.add_argument("--seed", type=int, default=0)
    transfer.add_argument(
        "--fit-datasets",
        default="squad_v1,squad_v2",
        help="comma-separated data sets the policies are fitted on (default squad_v1,squad_v2)",
    )
    transfer.add_argument(
        "--no-single", action="store_true", help="skip the single-model policies (faster)"
    )
    transfer.add_argument(
        "--write-policy",
        type=Path,
        metavar="FILE",
        help="also fit on every model and write the shipped policy document to FILE",
    )
    transfer.add_argument("--name", default="any-slm/extractive-qa", help="its policy name")
    transfer.add_argument("--description", default="", help="its description (default: generated)")
    ladder = sub.add_parser(
        "ladder",
        help="cascades of N models from traces of each on the same questions: joint "
        "thresholds with the Learn-then-Test guarantee, compared with every two-stage "
        "cascade and the top model alone; write ladder.md and ladder.json",
    )
    ladder.add_argument("traces", nargs="+", type=Path, help="trace files or folders")
    ladder.add_argument(
        "--ladder",
        required=True,
        help="comma-separated model names, smallest first, the top model last",
    )
    ladder.add_argument("--out", type=Path, default=Path("bench/results/ladder"))
    ladder.add_argument("--prompt", default="rag-v2", help="prompt version of every model")
    ladder.add_argument(
        "--model-prompt",
        action="append",
        default=[],
        metavar="MODEL=PROMPT",
        help="another prompt version for one model (repeatable)",
    )
    ladder.add_argument("--scores", choices=("oof", "seed"), default="oof")
    ladder.add_argument(
        "--max-quality-loss",
        dest="max_loss",
        type=fraction,
        default=0.05,
        metavar="EPS",
        help="at most EPS below the top model's F1, with probability --confidence "
        "(default: 0.05; its former name --max-loss still works)",
    )
    _add_former_name(ladder, "--max-loss", "max_loss", fraction)
    ladder.add_argument(
        "--confidence",
        type=fraction,
        default=0.9,
        help="probability that the budget holds (default: 0.9)",
    )
    ladder.add_argument(
        "--procedure", choices=("fixed-sequence", "bonferroni"), default="fixed-sequence"
    )
    ladder.add_argument("--splits", type=positive_int, default=200)
    ladder.add_argument(
        "--share",
        type=fraction_inclusive,
        default=0.95,
        help="of the top model's F1 (default: 0.95)",
    )
    ladder.add_argument(
        "--price",
        action="append",
        default=[],
        metavar=f"MODEL={PRICE_METAVAR}",
        help="assumed price of one model per million input/output tokens, as for --slm-price "
        "(repeatable)",
    )
    ladder.add_argument("--seed", type=int, default=0)
    both = sub.add_parser("all", help="run, then report")
    _add_run_options(both)
    both.add_argument("--out", type=Path, default=DEFAULT_REPORT, help="report folder")
    _add_analysis_options(both)
    _add_policy_option(both)
    _add_guarantee_options(both)
    guarantee = sub.add_parser(
        "guarantee",
        help="check calibrate's quality-loss guarantee over random splits; "
        "(re)write its section of DIR/report.md",
    )
    guarantee.add_argument("traces", nargs="+", type=Path, help="trace files or folders")
    guarantee.add_argument("--out", type=Path, default=DEFAULT_REPORT, help="report folder")
    guarantee.add_argument("--seed", type=int, default=0)
    _add_guarantee_options(guarantee)
    return parser


def _add_former_name(p: argparse.ArgumentParser, flag: str, dest: str, kind: Any) -> None:
    """Keep accepting a flag renamed so that one flag means one thing in every subcommand
    (`--top-k` is rag's passages per question, `--json` prints JSON on stdout,
    `--max-quality-loss` is calibrate's name); hidden from `--help`."""
    p.add_argument(flag, dest=dest, type=kind, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _add_guarantee_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guarantee-splits",
        type=int,
        default=500,
        metavar="N",
        help="random splits for the quality-loss guarantee section (0: leave it out)",
    )


def _cmd_guarantee(args: argparse.Namespace, traces: Sequence[Path], command: str) -> None:
    from ..eval.guarantee import update_report, write_guarantee

    if args.guarantee_splits <= 0:
        return
    path, _ = write_guarantee(
        _trace_files(traces), args.out, splits=args.guarantee_splits, seed=args.seed,
        command=command,
    )  # fmt: skip
    print(f"wrote {path}")
    report = update_report(args.out)
    if report is not None:
        print(f"updated {report}")


def _parse_data(values: Sequence[str]) -> list[tuple[str | None, Path]]:
    parsed: list[tuple[str | None, Path]] = []
    for value in values:
        kind, sep, path = value.partition("=")
        if not sep:
            kind, path = "", value
        if kind and kind not in DATASET_KINDS:
            raise UsageError(
                f"--data {value!r}: unknown data set kind {kind!r}; use one of "
                f"{', '.join(DATASET_KINDS)}"
            )
        if not Path(path).is_file():
            raise UsageError(f"--data {value!r}: no such file {path!r}")
        parsed.append((kind or None, Path(path)))
    return parsed


def build_model(
    spec: str,
    *,
    role: str,
    top_k: int,
    max_tokens: int,
    n_ctx: int,
    prompt_format: Literal["chat", "completion"] | None = None,
    host: str | None = None,
    timeout: float = 120.0,
) -> Any:
    """A backend from a spec: qwen-0.5b, qwen-1.5b, gemma3, smollm2, gguf:, ollama:, openai:."""
    from ..backends import LlamaCppSLM

    given = spec
    if spec == "embedded":  # confidence-router rag's default pair
        spec = "qwen-1.5b" if role == "fallback" else "qwen-0.5b"
    elif spec.startswith("embedded:"):  # rag's spelling of the same models
        spec = spec.removeprefix("embedded:")
    kind, _, rest = spec.partition(":")
    common: dict[str, Any] = {"top_logprobs": top_k, "max_tokens": max_tokens}
    local = {**common, "n_ctx": n_ctx}
    if prompt_format is not None:
        local["prompt_format"] = prompt_format
    if spec == "gemma3":
        return LlamaCppSLM.gemma3(**local)
    if spec == "qwen-0.5b":
        return LlamaCppSLM.qwen_coder_05b(**local)
    if spec == "qwen-1.5b":
        return LlamaCppSLM.qwen_coder_15b(**local)
    if spec == "smollm2":
        return LlamaCppSLM.smollm2(**local)
    if kind == "gguf" and rest:
        local.setdefault("prompt_format", "completion")
        return LlamaCppSLM(rest, **local)
    if kind in ("ollama", "openai") and rest:
        from ..backends.spec import slm_from_spec

        try:
            return slm_from_spec(
                spec,
                field=f"--{role}",
                default_url=host if kind == "ollama" else None,
                prompt_format=prompt_format or "chat",
                timeout=timeout,
                **common,
            )
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from exc
    raise UsageError(
        f"--{role} {given!r}: unknown model spec; use qwen-0.5b, qwen-1.5b, gemma3, "
        f"smollm2 (or embedded[:NAME]), gguf:PATH, "
        f"ollama:MODEL[@URL] or openai:MODEL[@URL]"
    )


def _cmd_run(args: argparse.Namespace) -> list[Path]:
    from ..eval.data import load_examples
    from ..eval.traces import PERFECT, run_traces

    for flag, value in (
        ("--top-logprobs", args.top_k),
        ("--fallback-top-logprobs", args.fallback_top_k),
    ):
        if not 0 <= value <= 20:
            raise UsageError(f"{flag} must be between 0 and 20, got {value}")
    if args.samples < 0 or (args.samples and not args.temperature > 0):
        raise UsageError("--samples must be >= 0 and --temperature > 0")
    data = _parse_data(args.data)
    datasets = []
    for kind, path in data:
        examples = load_examples(path, kind)
        if args.limit:
            examples = examples[: args.limit]
        datasets.append(examples)
    kinds = [ex[0].kind for ex in datasets if ex]
    if len(set(kinds)) != len(kinds):
        raise UsageError(f"--data: give each data set once (got {', '.join(kinds)})")
    options = dict(
        top_k=args.top_k,
        max_tokens=args.max_tokens,
        n_ctx=args.n_ctx,
        host=args.ollama_host,
        timeout=args.timeout,
    )
    slm = build_model(args.slm, role="slm", prompt_format=args.slm_format, **options)
    fallbacks: dict[str, Any] = {}
    for spec in args.fallback:
        if spec == PERFECT:
            continue
        model = build_model(
            spec,
            role="fallback",
            prompt_format=args.fallback_format or args.slm_format,
            **{**options, "top_k": args.fallback_top_k},
        )
        fallbacks[str(model.model)] = model
    written = []
    for examples in datasets:
        if not examples:
            continue
        path = args.traces / f"{examples[0].kind}.jsonl"
        summary = run_traces(
            examples,
            slm,
            path,
            fallbacks=fallbacks,
            max_tokens=args.max_tokens,
            concurrency=args.concurrency,
            progress=not args.no_progress,
            prompt=args.prompt,
            samples=args.samples,
            temperature=args.temperature,
        )
        print(
            f"{path}: {summary.total} questions, {summary.skipped} already done, "
            f"{summary.slm_calls} SLM calls ({summary.slm_failures} failed), "
            f"{summary.fallback_calls} fallback calls"
        )
        written.append(path)
    return written


def _trace_files(paths: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(path.glob("*.jsonl"))
            if not found:
                raise UsageError(f"{path}: no *.jsonl trace files in this folder")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise UsageError(f"{path}: no such trace file or folder")
    return files


def _analysis_settings(args: argparse.Namespace) -> Any:
    from ..eval.analysis import AnalysisSettings

    if args.bootstrap < 0:
        raise UsageError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if args.folds < 2:
        raise UsageError(f"--folds must be at least 2, got {args.folds}")
    return AnalysisSettings(
        correct_f1=args.correct_f1,
        folds=args.folds,
        bootstrap=args.bootstrap,
        seed=args.seed,
        slm_price=_pair(args.slm_price),
        fallback_price=_pair(args.fallback_price),
    )


def _pair(value: Price) -> tuple[float, float]:
    """A price as the analysis records it: (input, output) per million tokens."""
    return (value.input_per_million, value.output_per_million)


def _policies(values: Sequence[str]) -> dict[str, Any]:
    """`--policy [KIND=]FILE` values: data set kind ("" for all) -> (policy, its info)."""
    from ..eval.analysis import load_shipped_policy

    out: dict[str, Any] = {}
    for value in values:
        kind, sep, path = value.partition("=")
        if not sep or kind not in DATASET_KINDS:
            kind, path = "", value
        if not Path(path).is_file():
            raise UsageError(f"--policy {value!r}: no such file {path!r}")
        if kind in out:
            raise UsageError(f"--policy: give one policy per data set (twice for {kind or 'all'})")
        try:
            out[kind] = load_shipped_policy(Path(path))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"--policy {value!r}: cannot load it: {exc}") from exc
    return out


def _cmd_analyze(args: argparse.Namespace) -> None:
    from ..eval.analysis import analyze_files, summary_table

    results = analyze_files(
        _trace_files(args.traces), _analysis_settings(args), _policies(args.policy)
    )
    print(summary_table(results))
    if args.output:
        import json

        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps([r.to_dict() for r in results], indent=1) + "\n")
        print(f"wrote {args.output}")


def _cmd_report(args: argparse.Namespace, traces: Sequence[Path], command: str) -> None:
    from ..eval.analysis import analyze_files
    from ..eval.report import headline_table, write_report

    settings = _analysis_settings(args)
    results = analyze_files(_trace_files(traces), settings, _policies(args.policy))
    path = write_report(results, args.out, settings=settings, command=command)
    print(headline_table(results))
    print(f"wrote {path}")


def _cmd_resignal(args: argparse.Namespace) -> None:
    from ..eval.data import load_examples
    from ..eval.traces import add_context_signals, load_traces, write_traces

    examples = []
    for kind, path in _parse_data(args.data):
        examples += load_examples(path, kind)
    for path in _trace_files(args.traces):
        records = load_traces(path)
        updated = add_context_signals(records, examples)
        write_traces(path, records)
        print(f"{path}: context signals of {updated} of {len(records)} answers")


def _cmd_fit_policy(args: argparse.Namespace) -> None:
    import json

    from ..eval.analysis import fit_profile_policy
    from ..eval.traces import load_traces

    record_sets = [load_traces(path) for path in _trace_files(args.traces)]
    policy, info = fit_profile_policy(
        record_sets, _analysis_settings(args), label=args.label, fallback=args.fallback
    )
    slm, _, profile = args.name.partition("/")
    document = {
        "name": args.name,
        "slm": info["slm"],
        "profile": profile or None,
        "description": args.description,
        "fitted_on": info,
        "policy": policy.to_dict(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=1) + "\n")
    for dataset, row in info["out_of_fold"].items():
        both = ""
        if "out_of_fold_auroc_right" in row:
            both = (
                f"; for 'right' {row['out_of_fold_auroc_right']:.3f}, for 'as-good' "
                f"{row['out_of_fold_auroc_as_good']:.3f}"
            )
        print(
            f"{dataset}: out-of-fold AUROC {row['out_of_fold_auroc']:.3f} for label "
            f"{info['label']!r}{both} (best single signal {row['best_single_signal']} "
            f"{row['best_single_signal_auroc']:.3f}), n={row['n']}"
        )
    print(f"chose {info['chosen']}; wrote {args.out}")


def _cmd_transfer(args: argparse.Namespace, command: str) -> None:
    from ..eval.transfer import TransferSettings, run_transfer

    datasets = tuple(d.strip() for d in args.fit_datasets.split(",") if d.strip())
    unknown = [d for d in datasets if d not in DATASET_KINDS]
    if unknown or not datasets:
        raise UsageError(f"--fit-datasets: use some of {', '.join(DATASET_KINDS)}")
    settings = TransferSettings(
        correct_f1=args.correct_f1,
        folds=args.folds,
        seed=args.seed,
        fit_datasets=datasets,
        single_model=not args.no_single,
    )
    written = run_transfer(
        _trace_files(args.traces),
        settings,
        args.out,
        write_policy=args.write_policy,
        name=args.name,
        description=args.description,
        command=command,
    )
    print("wrote " + ", ".join(map(str, written)))


def _cmd_ladder(args: argparse.Namespace, command: str) -> None:
    from ..eval.ladder import DEFAULT_PRICES, load_answers, run_study, write_ladder

    models = [m.strip() for m in args.ladder.split(",") if m.strip()]
    if len(models) < 2:
        raise UsageError("--ladder: give at least one small model and the top model")
    prompt_for: dict[str, str] = {}
    for item in args.model_prompt:
        model, sep, prompt = item.partition("=")
        if not sep:
            raise UsageError(f"--model-prompt: expected MODEL=PROMPT, got {item!r}")
        prompt_for[model] = prompt
    prices = dict(DEFAULT_PRICES)
    for item in args.price:
        model, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--price: expected MODEL={PRICE_METAVAR}, got {item!r}")
        try:
            prices[model] = _pair(price(value))
        except argparse.ArgumentTypeError as exc:
            raise UsageError(f"--price: {exc}") from None
    book = load_answers(_trace_files(args.traces), args.prompt, prompt_for)
    study = run_study(
        book,
        models,
        scores=args.scores,
        prices=prices,
        share=args.share,
        splits=args.splits,
        max_loss=args.max_loss,
        confidence=args.confidence,
        procedure=args.procedure,
        seed=args.seed,
    )
    md, js = write_ladder(study, args.out, command)
    print(f"wrote {md} and {js}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the message
        return int(exc.code or 0)
    command = "confidence-router eval " + " ".join(argv)
    try:
        if args.command == "run":
            _cmd_run(args)
        elif args.command == "analyze":
            _cmd_analyze(args)
        elif args.command == "report":
            _cmd_report(args, args.traces, command)
            _cmd_guarantee(args, args.traces, command)
        elif args.command == "guarantee":
            _cmd_guarantee(args, args.traces, command)
        elif args.command == "resignal":
            _cmd_resignal(args)
        elif args.command == "fit-policy":
            _cmd_fit_policy(args)
        elif args.command == "transfer":
            _cmd_transfer(args, command)
        elif args.command == "ladder":
            _cmd_ladder(args, command)
        else:
            written = _cmd_run(args)
            _cmd_report(args, written, command)
            _cmd_guarantee(args, written, command)
    except UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"confidence-router eval: error: {exc}", file=sys.stderr)
        return 2
    except (ConfigurationError, ValueError) as exc:
        print(f"confidence-router eval: error: {exc}", file=sys.stderr)
        return 2
    except ConfidenceRouterError as exc:  # a model failed mid-run; the traces keep what is done
        print(
            f"confidence-router eval: {type(exc).__name__}: {exc}\n"
            "(finished questions are saved in the traces; run the same command again to resume)",
            file=sys.stderr,
        )
        return 1
    return 0


__all__ = ["build_model", "main"]

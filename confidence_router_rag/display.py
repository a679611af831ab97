"""What the app shows: each answer and the closing summary, on the terminal and as JSON.

`Answer` and `Summary` are the records of the JSON report
(`as_json`); `Display` prints them with `rich` (answers on stdout,
progress bars and errors on stderr) unless `--json` asked for the report only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from confidence_router.observe.cascade_ledger import CascadeStats
from confidence_router.observe.ledger import LedgerSnapshot
from confidence_router.policies.defaults import PROVENANCE_TEXT


@dataclass(frozen=True)
class Answer:
    """One answered question, as shown to a person and written as JSON."""

    question: str
    answer: str
    route: str
    answered_by: str
    score: float | None
    threshold: float
    reason: str
    latency_s: float
    sources: list[dict[str, Any]]
    input_tokens: int
    output_tokens: int
    signals: dict[str, float] = field(default_factory=dict)
    slm_error: str | None = None
    expected: list[str] | None = None
    right: bool | None = None
    # a ladder (--slm repeated): the stage that answered (1-based) and every stage reached
    answered_stage: int | None = None
    stages: list[dict[str, Any]] | None = None

    @classmethod
    def from_chain(cls, question: str, output: dict[str, Any], latency_s: float) -> Answer:
        message = output["answer"]
        routing: dict[str, Any] = message.response_metadata.get("routing", {})
        models = routing.get("models") or {}
        usage = message.usage_metadata or {}
        sources = [
            {"source": d.metadata.get("source"), "start_index": d.metadata.get("start_index")}
            | ({"page": d.metadata["page"]} if "page" in d.metadata else {})
            for d in output["docs"]
        ]
        return cls(
            question=question,
            answer=str(message.text).strip(),
            route=str(routing.get("route", "?")),
            answered_by=str(models.get("answered_by", "?")),
            score=routing.get("score"),
            threshold=float(routing.get("threshold", 0.0)),
            reason=str(routing.get("reason", "")),
            latency_s=latency_s,
            sources=sources,
            input_tokens=int(usage.get("input_tokens", 0)),
            output_tokens=int(usage.get("output_tokens", 0)),
            signals=dict(routing.get("signals") or {}),
            slm_error=routing.get("slm_error"),
            answered_stage=routing.get("answered_stage"),
            stages=routing.get("stages"),
        )


@dataclass(frozen=True)
class Summary:
    """The closing totals."""

    questions: int
    answered_locally: int
    escalated: int
    fallback_calls_avoided: int
    escalation_rate: float
    cost: float
    baseline_cost: float
    cost_saved: float
    index_time_s: float
    answer_time_s: float
    total_time_s: float
    mean_latency_s: float
    # with expected answers: of the answers with one, how many each model got right
    slm_judged: int = 0
    slm_right: int = 0
    fallback_judged: int = 0
    fallback_right: int = 0
    # model calls whose server reported no token count: the costs leave them out
    unknown_token_calls: int = 0
    # a ladder: its models, lowest first, and how many answers each gave
    stage_models: list[str] | None = None
    answered_by_stage: list[int] | None = None

    @classmethod
    def build(
        cls,
        answers: Sequence[Answer],
        stats: LedgerSnapshot | CascadeStats,
        index_time_s: float,
        answer_time_s: float,
        total_time_s: float,
    ) -> Summary:
        local = sum(1 for a in answers if a.route == "slm")
        stages = stats.stages if isinstance(stats, CascadeStats) else None
        return cls(
            questions=len(answers),
            answered_locally=local,
            escalated=len(answers) - local,
            fallback_calls_avoided=(
                stats.top_calls_avoided
                if isinstance(stats, CascadeStats)
                else stats.fallback_calls_avoided
            ),
            escalation_rate=(len(answers) - local) / len(answers) if answers else 0.0,
            cost=stats.cost,
            baseline_cost=stats.baseline_cost,
            cost_saved=stats.saved,
            index_time_s=index_time_s,
            answer_time_s=answer_time_s,
            total_time_s=total_time_s,
            mean_latency_s=answer_time_s / len(answers) if answers else 0.0,
            slm_judged=sum(1 for a in answers if a.route == "slm" and a.right is not None),
            slm_right=sum(1 for a in answers if a.route == "slm" and a.right),
            fallback_judged=sum(1 for a in answers if a.route != "slm" and a.right is not None),
            fallback_right=sum(1 for a in answers if a.route != "slm" and a.right),
            unknown_token_calls=sum(
                u.prompt_unknown_calls + u.completion_unknown_calls
                for u in stats.tokens_by_model.values()
            ),
            stage_models=None if stages is None else [s.model for s in stages],
            answered_by_stage=None
            if stages is None
            else [sum(1 for a in answers if a.answered_stage == s.stage) for s in stages],
        )


class Display:
    """Human output with `rich` (answers on stdout, progress bars on stderr)."""

    def __init__(self, *, machine: bool, progress: bool) -> None:
        from rich.console import Console

        self.machine = machine
        # file=None: rich writes to whatever sys.stdout is at the time, so answers
        # printed while a progress bar is live appear above it.
        self.out = Console(file=None, highlight=False, soft_wrap=False)
        self.err = Console(stderr=True, highlight=False)
        self.show_progress = progress and self.err.is_terminal

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Any]:
        """A transient progress bar on stderr; yields `advance(label)`."""
        if not self.show_progress:
            yield lambda label="": None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[label]}", style="dim"),
            console=self.err,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total, label="")

            def advance(label: str = "") -> None:
                bar.update(task, advance=1, label=label[:50])

            yield advance

    def header(self, info: dict[str, Any]) -> None:
        if self.machine:
            return
        docs, models = info["documents"], info["models"]
        self.out.print(
            f"[bold]Indexed[/] {docs['files']} files, {docs['chunks']} passages "
            f"({docs['retriever']}, top {docs['k']}) in {docs['index_time_s']:.1f}s"
        )
        if models.get("stages"):
            self.ladder(models)
            return
        self.out.print(
            f"[bold]SLM[/] {models['slm']}   [bold]fallback[/] {models['fallback']}   "
            f"[bold]policy[/] {models['policy']} "
            f"({PROVENANCE_TEXT.get(models.get('policy_provenance', 'given'), 'given')})",
            soft_wrap=True,  # a long policy name stays on the line (the terminal wraps it)
        )
        self.out.print(f"[dim]{models['policy_about']}[/]\n", soft_wrap=True)

    def ladder(self, models: dict[str, Any]) -> None:
        """The ladder, lowest first, then each small model's policy and where it comes from."""
        names = [s["model"] for s in models["stages"]] + [models["fallback"]]
        self.out.print(f"[bold]Ladder[/] {' -> '.join(names)}", soft_wrap=True)
        for number, stage in enumerate(models["stages"], 1):
            provenance = PROVENANCE_TEXT.get(stage["policy_provenance"], "given")
            self.out.print(
                f"  [bold]stage {number}[/] {stage['model']}   [bold]policy[/] "
                f"{stage['policy']} ({provenance})",
                soft_wrap=True,
            )
            self.out.print(f"    [dim]{stage['policy_about']}[/]", soft_wrap=True)
        self.out.print(f"  [bold]stage {len(names)}[/] {models['fallback']} (fallback)\n")

    def answer(self, number: int, item: Answer) -> None:
        if self.machine:
            return
        from rich.markup import escape
        from rich.padding import Padding

        local = item.route == "slm"
        route = "[green]SLM[/]" if local else "[yellow]fallback[/]"
        if item.answered_stage is not None:
            route += f" [dim](stage {item.answered_stage})[/]"
        score = "n/a" if item.score is None else f"{item.score:+.3f}"
        sources = ", ".join(dict.fromkeys(str(s["source"]) for s in item.sources)) or "none"
        text = escape(item.answer) or "(empty answer)"
        meta = (
            f"{route} [dim]{escape(item.answered_by)} · score {score} "
            f"(threshold {item.threshold:+.2f}) · {item.latency_s:.2f}s · "
            f"sources: {escape(sources)}[/]"
        )
        why = f"[dim]why: {escape(item.reason)}[/]"
        self.out.print(f"[bold cyan]Q{number}[/] {escape(item.question)}", soft_wrap=True)
        if self.out.is_terminal:  # wrap under a 4-space indent
            for line, bottom in ((f"[bold]{text}[/]", 0), (meta, 0), (why, 1)):
                self.out.print(Padding(line, (0, 0, bottom, 4), expand=False))
        else:  # piped: one line each, no hard wrapping
            for line in (f"[bold]{text}[/]", meta, why):
                self.out.print("    " + line.replace("\n", "\n    "), soft_wrap=True)
            self.out.print()

    def summary(self, summary: Summary, prices: dict[str, dict[str, float]]) -> None:
        if self.machine:
            return
        from rich.table import Table

        fb = prices["fallback"]
        table = Table(title="Summary", show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column(justify="right")
        n = summary.questions
        table.add_row("questions", str(n))
        table.add_row(
            "answered locally (SLM)",
            f"{summary.answered_locally} ({summary.answered_locally / n:.0%})" if n else "0",
        )
        if summary.stage_models and summary.answered_by_stage:
            for number, (model, count) in enumerate(
                zip(summary.stage_models, summary.answered_by_stage), 1
            ):
                table.add_row(
                    f"  stage {number}: {model}", f"{count} ({count / n:.0%})" if n else "0"
                )
        table.add_row("escalated to the fallback", str(summary.escalated))
        table.add_row("fallback calls avoided", str(summary.fallback_calls_avoided))
        share = summary.cost_saved / summary.baseline_cost if summary.baseline_cost else 0.0
        table.add_row(
            "estimated cost saved",
            f"{summary.cost_saved:.6f} of {summary.baseline_cost:.6f} ({share:.0%})",
        )
        if summary.unknown_token_calls:  # unknown is not zero: say what the costs leave out
            table.add_row(
                "  token counts",
                f"unknown for {summary.unknown_token_calls} model call(s) (the server "
                f"reported none): costs leave them out",
            )
        table.add_row(
            "  at prices per 1M tokens",
            f"fallback {fb['input_per_million']:g}/{fb['output_per_million']:g}, "
            f"SLM {prices['slm']['input_per_million']:g}/{prices['slm']['output_per_million']:g}",
        )
        table.add_row(
            "time", f"{summary.total_time_s:.1f}s total, {summary.mean_latency_s:.2f}s per question"
        )
        if summary.slm_judged or summary.fallback_judged:
            table.add_row(
                "right (expected answers)",
                f"SLM {summary.slm_right} of {summary.slm_judged} kept, "
                f"fallback {summary.fallback_right} of {summary.fallback_judged}",
            )
        self.out.print(table)

    def shadow(self, shadow: dict[str, Any]) -> None:
        """Kept-answer precision from the shadow checks, with its 95% interval."""
        if self.machine:
            return
        precision, ci = shadow["kept_precision"], shadow["kept_precision_ci95"]
        if precision is None:
            self.out.print(f"shadow checks: none finished ({shadow['failures']} failed)")
            return
        self.out.print(
            f"shadow checks: {shadow['agreements']} of {shadow['checks']} kept answers agreed "
            f"with the fallback ({precision:.0%}, 95% CI {ci[0]:.0%}-{ci[1]:.0%}); "
            f"extra fallback cost {shadow['cost']:.6f}"
        )

    def error(self, message: str) -> None:
        """One line on stderr, whatever line breaks the underlying error had."""
        from rich.markup import escape

        message = " ".join(message.split())
        self.err.print(f"[bold red]confidence-router rag:[/] {escape(message)}", soft_wrap=True)


#: Keys only a ladder (--slm repeated) fills; a pair's report does not have them.
_LADDER_KEYS = frozenset({"answered_stage", "stages", "stage_models", "answered_by_stage"})


def as_json(record: Answer | Summary) -> dict[str, Any]:
    """An answer or the summary for the JSON report (ladder keys only for a ladder)."""
    return {k: v for k, v in asdict(record).items() if v is not None or k not in _LADDER_KEYS}


__all__ = ["Answer", "Display", "Summary", "as_json"]

"""Early escalation: how much sooner escalated queries reach the fallback when the router
stops the SLM at the first token that settles the decision.

Two parts, one run:

(a) **Offline replay** on the committed traces (1281 scorable answers of Gemma 3
    270M on SQuAD v1.1, SQuAD 2.0 and HotpotQA). Each answer is replayed token
    by token through the router's own checks (``IncrementalSignals`` and
    ``confidence_router.routing.early_exit``), and timed with the embedded Gemma 3's
    prompt-evaluation and decoding speed measured at the start of the run.
    For the escalated queries: median and p95 time until the fallback starts
    and SLM tokens decoded, early abort against whole answers; the share of
    final decisions that changed. Policies: the default ``ThresholdPolicy``
    and the seed policy without its entropy bound (exact abort, 0 changes by
    construction: checked), and a learned logistic policy and the default
    policy with a learned ``EarlyExitRule`` (fitted on a random half,
    reported on the other, held-out half).
(b) **Live** (``--live N``, default 12 questions; 0 skips it): the same
    held-out SQuAD v1.1 questions through ``Router.astream`` with Gemma 3 as
    SLM and SmolLM2 as fallback, both in process: whole answers, early abort
    (the learned rule), and early abort plus hedging (after 2 tokens, when the
    prefix score lies between the rule's bound and the policy's threshold),
    rotating which goes first; time to first token of escalated and kept
    answers, medians. Noisy on a shared machine: the offline replay
    is the headline.

Run from the repository root::

    .venv/bin/python bench/early_escalation.py   # writes bench/results/early_escalation.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from confidence_router import (
    EarlyExitRule,
    Hedge,
    IncrementalSignals,
    LlamaCppSLM,
    LogisticPolicy,
    Message,
    Policy,
    Router,
    ThresholdPolicy,
)
from confidence_router.eval.data import load_examples
from confidence_router.eval.prompts import STOP, build_prompt
from confidence_router.eval.replay import (
    DecodeSpeed,
    Replayed,
    TraceAnswer,
    load_answers,
    replay,
    speed_from_traces,
)
from confidence_router.routing.early_exit import checks_for

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "bench" / "results" / "traces"
DATASETS = {
    "squad_v1": ROOT / "data" / "squad_v1_dev_sample500.jsonl",
    "squad_v2": ROOT / "data" / "squad_v2_dev_sample500.jsonl",
    "hotpotqa": ROOT / "data" / "hotpotqa_dev_distractor_sample300.jsonl",
}
LOGISTIC_FEATURES = (
    "length",
    "mean_entropy",
    "max_entropy",
    "min_logprob",
    "q10_logprob",
    "q25_logprob",
    "median_logprob",
    "first_margin",
)
MAX_TOKENS = 32  # the traces' token limit


# -- speed of the embedded SLM ---------------------------------------------------------------


def measure_speed(slm: LlamaCppSLM, prompts: list[str], tokens: int = 24) -> dict[str, Any]:
    """Prompt evaluation (s per prompt token) and decoding (s per token), from real streams."""
    prefill, decode = [], []
    for prompt in prompts:
        messages = [Message("user", prompt)]
        n_prompt = len(slm.tokenize_prompt(messages))
        started = time.perf_counter()
        stamps = []
        for chunk in slm.stream(messages, max_tokens=tokens):
            if len(chunk.token_logprobs):
                stamps.append(time.perf_counter())
        if len(stamps) < 3:
            continue
        gaps = np.diff(stamps)
        per_token = float(np.median(gaps))
        decode.append(per_token)
        prefill.append(max(stamps[0] - started - per_token, 0.0) / n_prompt)
    return {
        "prompt_s_per_token": statistics.median(prefill),
        "decode_s_per_token": statistics.median(decode),
        "samples": len(decode),
    }


# -- offline replay ---------------------------------------------------------------------------


def _split(answers: list[TraceAnswer], seed: int) -> tuple[list[TraceAnswer], list[TraceAnswer]]:
    order = np.random.default_rng(seed).permutation(len(answers))
    half = len(answers) // 2
    return [answers[i] for i in order[:half]], [answers[i] for i in order[half:]]


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarise(results: list[Replayed], speed: DecodeSpeed) -> dict[str, Any]:
    escalated = [r for r in results if r.full_route == "llm"]
    kept = [r for r in results if r.full_route == "slm"]
    aborted = [r for r in escalated if r.aborted_after is not None]
    changed = [r for r in results if r.changed]

    def times(rows: list[Replayed], early: bool, prefill: bool) -> list[float]:
        out = []
        for r in rows:
            decoded = r.tokens_early if early else r.tokens_full
            if prefill:
                out.append(speed.until_fallback(r.answer.prompt_tokens, decoded))
            else:  # from the SLM's first decoded token on
                out.append(decoded * speed.decode_s_per_token)
        return out

    full_req, early_req = times(escalated, False, True), times(escalated, True, True)
    full_dec, early_dec = times(escalated, False, False), times(escalated, True, False)
    tokens_full = sum(r.tokens_full for r in escalated)
    tokens_early = sum(r.tokens_early for r in escalated)
    return {
        "answers": len(results),
        "escalated": len(escalated),
        "kept": len(kept),
        "aborted": len(aborted),
        "aborted_share_of_escalated": len(aborted) / len(escalated) if escalated else 0.0,
        "decisions_changed": len(changed),
        "decisions_changed_share": len(changed) / len(results) if results else 0.0,
        "kept_answers_stopped": sum(
            r.full_route == "slm" and r.early_route == "llm" for r in results
        ),
        "slm_tokens_escalated_full": tokens_full,
        "slm_tokens_escalated_early": tokens_early,
        "slm_tokens_saved_share": 1 - tokens_early / tokens_full if tokens_full else 0.0,
        "median_tokens_before_fallback_full": _pct([float(r.tokens_full) for r in escalated], 50),
        "median_tokens_before_fallback_early": _pct([float(r.tokens_early) for r in escalated], 50),
        "until_fallback_s": {
            "from_request": {
                "median_full": _pct(full_req, 50),
                "median_early": _pct(early_req, 50),
                "p95_full": _pct(full_req, 95),
                "p95_early": _pct(early_req, 95),
                "median_of_ratios": _pct([e / f for e, f in zip(early_req, full_req)], 50),
            },
            "decoding_only": {
                "median_full": _pct(full_dec, 50),
                "median_early": _pct(early_dec, 50),
                "p95_full": _pct(full_dec, 95),
                "p95_early": _pct(early_dec, 95),
            },
        },
    }


def offline(answers: list[TraceAnswer], speed: DecodeSpeed, seed: int) -> dict[str, Any]:
    calibration, held_out = _split(answers, seed)
    logistic = LogisticPolicy.fit(
        [a.signals for a in calibration],
        [a.correct for a in calibration],
        features=LOGISTIC_FEATURES,
    )
    cal_prefixes = [a.prefixes() for a in calibration]
    default = ThresholdPolicy()
    scenarios: dict[str, Any] = {}
    exact: list[tuple[str, Policy]] = [
        ("threshold default (exact)", default),
        (
            "threshold length+min_logprob (exact)",
            ThresholdPolicy.seed(max_entropy=None),
        ),
    ]
    for name, policy in exact:
        checks = checks_for(policy, True)
        scenarios[name] = {
            "policy": policy.to_dict(),
            "evaluated_on": "all answers",
            **summarise(replay(answers, policy, checks), speed),
        }
    for name, policy in (
        ("logistic + learned rule (held-out)", logistic),
        ("threshold default + learned rule (held-out)", default),
    ):
        rule = EarlyExitRule.fit(policy, cal_prefixes, max_changed=0.01)
        checks = checks_for(policy, rule)
        scenarios[name] = {
            "policy": policy.to_dict(),
            "rule": {k: v for k, v in rule.to_dict().items() if k != "policy"},
            "evaluated_on": f"held-out half ({len(held_out)} answers, split seed {seed})",
            **summarise(replay(held_out, policy, checks), speed),
        }
    return scenarios


def safety_check(answers: list[TraceAnswer], seeds: int = 3) -> list[dict[str, Any]]:
    """Held-out share of changed decisions of rules fitted to 1% with and without the margin."""
    rows = []
    for seed in range(seeds):
        calibration, held_out = _split(answers, seed)
        policy = LogisticPolicy.fit(
            [a.signals for a in calibration],
            [a.correct for a in calibration],
            features=LOGISTIC_FEATURES,
        )
        cal, test = [a.prefixes() for a in calibration], [a.prefixes() for a in held_out]
        for safety in (1.0, 0.5):
            rule = EarlyExitRule.fit(policy, cal, max_changed=0.01, safety=safety)
            rows.append(
                {
                    "seed": seed,
                    "safety": safety,
                    "calibration_changed_share": rule.calibration["changed_share"],
                    "held_out_changed_share": rule.evaluate(test)["changed_share"],
                }
            )
    return rows


def quantile_accuracy(answers: list[TraceAnswer]) -> dict[str, Any]:
    """The streaming quantile estimate against the exact quantiles on a long real stream."""
    stream = np.concatenate([a.logprobs for a in answers])
    out: dict[str, Any] = {"stream_tokens": int(len(stream)), "by_buffer": {}}
    for buffer in (0, 64, 256):
        acc = IncrementalSignals(exact_quantiles_up_to=buffer)
        errors: list[float] = []
        exact_sorted: list[float] = []
        for i, value in enumerate(stream.tolist()):
            acc.push(np.array([value]), np.array([[value]]))
            exact_sorted.append(value)
            if i + 1 >= 100 and (i + 1) % 50 == 0:
                want = np.quantile(exact_sorted, [0.10, 0.25, 0.50])
                errors.append(float(np.max(np.abs(np.array(acc.quantile_values()) - want))))
        out["by_buffer"][str(buffer)] = {
            "max_abs_error_nats": max(errors),
            "median_abs_error_nats": statistics.median(errors),
            "checked_prefixes": len(errors),
        }
    out["answers_longer_than_exact_buffer"] = sum(len(a.logprobs) > 1024 for a in answers)
    return out


# -- live through Router.astream ------------------------------------------------------------------


async def _ttft(router: Router, messages: list[Message]) -> tuple[float, float, str, str]:
    started = time.perf_counter()
    first = None
    result = None
    async for chunk in router.astream(messages, stop=list(STOP), max_tokens=MAX_TOKENS):
        if first is None and chunk.text:
            first = time.perf_counter() - started
        if chunk.result is not None:
            result = chunk.result
    total = time.perf_counter() - started
    assert result is not None
    return (first if first is not None else total), total, result.route, result.decision.reason


def live(
    slm: LlamaCppSLM,
    fallback: LlamaCppSLM,
    policy: Policy,
    rule: EarlyExitRule,
    n: int,
    held_out_ids: set[str],
) -> dict[str, Any]:
    examples = [e for e in load_examples(DATASETS["squad_v1"]) if e.id in held_out_ids][:n]
    whole = Router(slm, fallback, policy, early_abort=False)
    early = Router(slm, fallback, policy, early_abort=rule)
    hedge = Hedge(after_tokens=2, low=rule.bound, high=policy.threshold)
    hedged = Router(slm, fallback, policy, early_abort=rule, hedge=hedge)
    configs = [("whole", whole), ("early", early), ("hedged", hedged)]
    rows = []

    async def run() -> None:
        await _ttft(whole, [Message("user", build_prompt(examples[0]))])  # warm-up
        for i, example in enumerate(examples):
            messages = [Message("user", build_prompt(example))]
            order = configs[i % 3 :] + configs[: i % 3]
            row: dict[str, Any] = {"id": example.id}
            for name, router in order:
                ttft, total, route, reason = await _ttft(router, messages)
                row[name] = {"ttft_s": ttft, "total_s": total, "route": route, "reason": reason}
            rows.append(row)

    asyncio.run(run())

    def med(group: list[dict[str, Any]], side: str, key: str) -> float:
        return statistics.median(r[side][key] for r in group) if group else float("nan")

    escalated = [r for r in rows if r["whole"]["route"] == "llm"]
    kept = [r for r in rows if r["whole"]["route"] == "slm"]
    summary: dict[str, Any] = {}
    for label, group in (("escalated", escalated), ("kept", kept)):
        summary[label] = {"questions": len(group)}
        for name, _ in configs:
            summary[label][f"median_ttft_{name}_s"] = med(group, name, "ttft_s")
            if name != "whole":
                summary[label][f"median_ratio_{name}_to_whole"] = (
                    statistics.median(r[name]["ttft_s"] / r["whole"]["ttft_s"] for r in group)
                    if group
                    else float("nan")
                )
    for name, _ in configs[1:]:
        summary[f"decisions_changed_{name}"] = sum(
            r["whole"]["route"] != r[name]["route"] for r in rows
        )
    summary["hedge"] = {"after_tokens": hedge.after_tokens, "low": hedge.low, "high": hedge.high}
    summary["hedged_queries"] = sum("hedged" in r["hedged"]["reason"] for r in rows)
    return {"questions": len(rows), "summary": summary, "rows": rows}


# -- report ---------------------------------------------------------------------------------------


def _table(scenarios: dict[str, Any]) -> str:
    head = (
        f"{'scenario':<44} {'esc':>4} {'abort':>6} {'changed':>8} {'tok saved':>9} "
        f"{'median until fallback (req)':>28} {'p95 (req)':>16} {'median (decode)':>18}"
    )
    lines = [head, "-" * len(head)]
    for name, s in scenarios.items():
        req = s["until_fallback_s"]["from_request"]
        dec = s["until_fallback_s"]["decoding_only"]
        lines.append(
            f"{name:<44} {s['escalated']:>4} {s['aborted_share_of_escalated']:>6.0%} "
            f"{s['decisions_changed']:>3} ({s['decisions_changed_share']:>4.1%}) "
            f"{s['slm_tokens_saved_share']:>8.0%} "
            f"{req['median_full'] * 1e3:>9.0f} -> {req['median_early'] * 1e3:>5.0f} ms "
            f"({1 - req['median_early'] / req['median_full']:>4.0%}) "
            f"{req['p95_full'] * 1e3:>6.0f} -> {req['p95_early'] * 1e3:>5.0f} ms "
            f"{dec['median_full'] * 1e3:>6.0f} -> {dec['median_early'] * 1e3:>4.0f} ms"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "early_escalation.json"
    )
    parser.add_argument(
        "--live", type=int, default=12, help="questions for the live part (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0, help="calibration/held-out split")
    parser.add_argument("--speed-prompts", type=int, default=4)
    parser.add_argument(
        "--keep-live",
        action="store_true",
        help="with --live 0: keep the live part of an earlier run found in --out",
    )
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    answers = load_answers([TRACES / f"{name}.jsonl" for name in DATASETS])
    slm = LlamaCppSLM.gemma3(top_logprobs=5, max_tokens=MAX_TOKENS, n_ctx=8192)
    examples = load_examples(DATASETS["squad_v1"])[: args.speed_prompts]
    measured = measure_speed(slm, [build_prompt(e) for e in examples])
    speed = DecodeSpeed(measured["prompt_s_per_token"], measured["decode_s_per_token"])
    print(
        f"Gemma 3 270M in process: prompt {speed.prompt_s_per_token * 1e3:.2f} ms/token, "
        f"decoding {speed.decode_s_per_token * 1e3:.1f} ms/token ({measured['samples']} streams)"
    )
    trace_speed, fit = speed_from_traces([TRACES / f"{name}.jsonl" for name in DATASETS])
    print(
        f"as the traces recorded it (least squares over {fit['answers']:.0f} answers): prompt "
        f"{trace_speed.prompt_s_per_token * 1e3:.2f} ms/token, decoding "
        f"{trace_speed.decode_s_per_token * 1e3:.1f} ms/token, "
        f"+{trace_speed.overhead_s * 1e3:.0f} ms per call"
    )
    scenarios = offline(answers, trace_speed, args.seed)
    print("offline replay, timed at the traces' recorded speed (the headline):")
    print(_table(scenarios))
    measured_scenarios = offline(answers, speed, args.seed)
    print("offline replay, timed at the speed measured now:")
    print(_table(measured_scenarios))
    result: dict[str, Any] = {
        "slm": slm.model,
        "speed_measured_now": measured,
        "speed_from_traces": {
            "prompt_s_per_token": trace_speed.prompt_s_per_token,
            "decode_s_per_token": trace_speed.decode_s_per_token,
            "overhead_s": trace_speed.overhead_s,
            **fit,
        },
        "offline": scenarios,
        "offline_at_speed_measured_now": measured_scenarios,
        "quantile_estimate": quantile_accuracy(answers),
        "learned_rule_safety": safety_check(answers),
    }
    for row in result["learned_rule_safety"]:
        print(
            f"learned rule fitted to 1% with safety {row['safety']}, split {row['seed']}: "
            f"changed {row['calibration_changed_share']:.1%} of calibration and "
            f"{row['held_out_changed_share']:.1%} of held-out decisions"
        )
    if not args.live and args.keep_live and args.out.exists():
        earlier = json.loads(args.out.read_text())
        if "live" in earlier:
            run = earlier["live"].get("from_earlier_run") or earlier.get("environment")
            result["live"] = {**earlier["live"], "from_earlier_run": run}
    if args.live:
        calibration, held_out = _split(answers, args.seed)
        policy = LogisticPolicy.fit(
            [a.signals for a in calibration],
            [a.correct for a in calibration],
            features=LOGISTIC_FEATURES,
        )
        rule = EarlyExitRule.fit(policy, [a.prefixes() for a in calibration], max_changed=0.01)
        fallback = LlamaCppSLM.smollm2(max_tokens=16)
        result["live"] = live(slm, fallback, policy, rule, args.live, {a.id for a in held_out})
        s = result["live"]["summary"]
        for label in ("escalated", "kept"):
            g = s[label]
            print(
                f"live astream, {label} ({g['questions']} questions): median time to first token "
                f"{g['median_ttft_whole_s']:.2f}s whole answers, {g['median_ttft_early_s']:.2f}s "
                f"early abort, {g['median_ttft_hedged_s']:.2f}s early abort + hedging "
                f"(median ratios {g.get('median_ratio_early_to_whole', float('nan')):.2f}, "
                f"{g.get('median_ratio_hedged_to_whole', float('nan')):.2f})"
            )
        print(
            f"live decisions changed: early {s['decisions_changed_early']}, hedged "
            f"{s['decisions_changed_hedged']}; hedged queries {s['hedged_queries']}"
        )
    result["environment"] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

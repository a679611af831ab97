#!/usr/bin/env bash
# Record the traces the evaluation, the shipped policies and the ladder rest on: every
# model answers the same questions with the prompt `confidence-router rag` sends
# (rag-v2). Resumable: each step skips the questions its trace file already holds, so
# run it again after an interruption. Hours of CPU on 2 cores; it grows the files in
# stages (200 SQuAD questions each and 40 HotpotQA ones, then 500 and 150) so that a
# partial run is balanced across data sets. Commit bench/results/traces-* as it goes.
#
#   nohup bench/record_traces.sh > bench/results/record_traces.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
cr=.venv/bin/confidence-router
run() {  # run TRACES_DIR SLM [extra args...]
  local out=$1 slm=$2
  shift 2
  "$cr" eval run --prompt rag-v2 --slm "$slm" --traces "bench/results/$out" --no-progress "$@"
}
for stage in 1 2; do
  squad=$([ $stage = 1 ] && echo 200 || echo 500)
  hotpot=$([ $stage = 1 ] && echo 40 || echo 150)
  # The real pair: Qwen2.5-Coder 0.5B answers, 1.5B is the fallback (its logprobs kept,
  # so it can be scored as an SLM too), both in chat format with their own template.
  run traces-qwen qwen-0.5b --fallback qwen-1.5b --fallback-format chat \
    --data data/squad_v1_dev_sample500.jsonl --data data/squad_v2_dev_sample500.jsonl \
    --limit "$squad"
  # The tiny models on the same questions: the ladder's bottom stage and more models
  # for a policy that transfers (fast: about a second a question).
  for tiny in gemma3 smollm2; do
    run "traces-$tiny-rag" "$tiny" \
      --data data/squad_v1_dev_sample500.jsonl --data data/squad_v2_dev_sample500.jsonl \
      --limit "$squad"
  done
  run traces-qwen qwen-0.5b --fallback qwen-1.5b --fallback-format chat \
    --data data/hotpotqa_dev_distractor_sample300.jsonl --limit "$hotpot"
  for tiny in gemma3 smollm2; do
    run "traces-$tiny-rag" "$tiny" --data data/hotpotqa_dev_distractor_sample300.jsonl \
      --limit "$hotpot"
  done
done
echo "record_traces: done"

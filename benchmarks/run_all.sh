#!/usr/bin/env bash
# Runs every stage benchmark and collects their JSON lines into one file.
#   benchmarks/run_all.sh [OUT.jsonl]      (default results/benchmarks.jsonl)
# On a CUDA machine the GPU figures come first in each script; CPU-only machines skip them.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-results/benchmarks.jsonl}
mkdir -p "$(dirname "$out")"
: > "$out"
status=0
for bench in benchmarks/bench_*.py; do
  echo "== $bench" >&2
  if ! python "$bench" | tee -a "$out"; then
    echo "{\"what\": \"$bench failed\"}" | tee -a "$out"
    status=1
  fi
done
exit $status

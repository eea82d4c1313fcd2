#!/usr/bin/env bash
# Run every decoder's fuzz target for SECONDS (default 600) one after another and print one line
# per target: executions, corpus size, result. Not part of CI.
#   schemas/fuzz/run-all.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(fluentbit filebeat vector ilogtail cri docker k8s_audit access otlp_proto otlp_json)
mkdir -p logs
RUSTC_BOOTSTRAP=1 cargo fuzz build --release
for t in "${targets[@]}"; do
  log="logs/$t.log"
  status=ok
  RUSTC_BOOTSTRAP=1 cargo fuzz run --release "$t" -- -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || status="FAILED (see schemas/fuzz/$log and artifacts/$t)"
  execs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  cov=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1)
  corpus=$(ls "corpus/$t" 2>/dev/null | wc -l)
  echo "$t: ${secs}s, ${execs:-?} executions, ${cov:-cov ?}, corpus $corpus inputs, $status"
done

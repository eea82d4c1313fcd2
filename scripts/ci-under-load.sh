#!/usr/bin/env bash
# Soak check for issue 18 item 4: runs `.ci/run` N times in a row (default 3), each on a fresh
# clone of this repository's HEAD, while a busy loop keeps one core loaded; stops at the first
# failure. Not part of CI (a run under load takes ~25 min with a warm cache, ~90 min cold).
#   scripts/ci-under-load.sh [N]      logs and a summary under ${LOGLAKE_SOAK_DIR:-/tmp/ci-under-load}
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
N="${1:-3}"
OUT="${LOGLAKE_SOAK_DIR:-/tmp/ci-under-load}"
mkdir -p "$OUT"
python3 -c 'while True: pass' &
BURN=$!
trap 'kill $BURN 2>/dev/null' EXIT
for i in $(seq 1 "$N"); do
  clone="$OUT/clone"
  rm -rf "$clone" && git clone -q "$ROOT" "$clone"
  commit=$(git -C "$clone" rev-parse --short HEAD)
  start=$(date +%s)
  (cd "$clone" && .ci/run) > "$OUT/run$i.log" 2>&1
  rc=$?
  summary=$(grep -E "Summary \[" "$OUT/run$i.log" | tail -1 | sed -E 's/^ +//')
  echo "run $i/$N commit $commit rc=$rc $(( $(date +%s) - start ))s $summary" | tee -a "$OUT/summary"
  [ "$rc" -eq 0 ] || exit "$rc"
done

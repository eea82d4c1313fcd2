#!/usr/bin/env bash
# Runs loglake's benchmarks (not part of CI; each prints a Markdown table for BENCHMARKS.md).
#   scripts/bench.sh [decode|query|archive|compact ...]     (default: all four)
# Installs, idempotently, the test services (tansu, moto) and a venv with the pinned DuckDB of
# scripts/requirements-bench.txt. Env: LOGLAKE_BENCH_ROWS (query bench, default 50000000),
# LOGLAKE_BENCH_GB (archive and compact benches, default 2), LOGLAKE_BENCH_DIR (query bench table
# folder). The compact bench runs delta-rs and DuckDB's delta extension from the test venv
# (scripts/requirements-test.txt pins deltalake, duckdb and duckdb-extension-delta together).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${LOGLAKE_CACHE_DIR:-$HOME/.cache/loglake}"
eval "$(scripts/install-test-deps.sh)"

REQ="$ROOT/scripts/requirements-bench.txt"
VENV="$CACHE/venv-bench-$(sha256sum "$REQ" | cut -c1-12)"
if [[ ! -f "$VENV/.complete" ]]; then
  echo "bench: creating python venv $VENV from $REQ..." >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQ" >&2
  touch "$VENV/.complete"
fi
export LOGLAKE_BENCH_PYTHON="$VENV/bin/python"

which=("$@")
[ ${#which[@]} -gt 0 ] || which=(decode query archive compact)
for b in "${which[@]}"; do
  case "$b" in
    decode) cargo bench --workspace --bench decode ;;
    query) cargo bench --workspace --bench queries -- --rows "${LOGLAKE_BENCH_ROWS:-50000000}" \
             --dir "${LOGLAKE_BENCH_DIR:-$ROOT/target/bench-lake}" ;;
    archive) cargo bench -p loglake --bench archive -- --gb "${LOGLAKE_BENCH_GB:-2}" ;;
    compact) cargo bench -p loglake --bench compact -- --gb "${LOGLAKE_BENCH_GB:-2}" \
               --python "$LOGLAKE_TEST_VENV/bin/python" ;;
    *) echo "unknown benchmark $b (decode, query, archive, compact)" >&2; exit 2 ;;
  esac
done

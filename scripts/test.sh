#!/usr/bin/env bash
# The README's test command: installs what the suite needs (cached under ~/.cache/loglake),
# then runs the format check, clippy with -D warnings, and every test of the workspace against a
# real Kafka-protocol broker (tansu) and a real S3 server (moto) that the test harness starts on
# 127.0.0.1 and stops when the tests end.
#
# Honours LOGLAKE_TEST_KAFKA_BROKERS / LOGLAKE_TEST_S3_ENDPOINT (+ AWS_* and
# LOGLAKE_TEST_S3_BUCKET) to run the same suite against your own Kafka and S3/MinIO.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

START=$(date +%s)
phase() { echo; echo "==> [$(( $(date +%s) - START ))s] $*"; }

phase "installing test dependencies (cached)"
eval "$(scripts/install-test-deps.sh)"
echo "Kafka broker: $("$LOGLAKE_TANSU_BIN" --version) (sqlite storage)"
echo "S3 server:    moto $("$LOGLAKE_TEST_VENV/bin/python" -c 'import moto; print(moto.__version__)') (server mode)"

# One target dir for the whole run: clippy, the test build and the test run share it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

phase "cargo fmt --check"
cargo fmt --all --check

phase "one arrow / parquet / object_store in the dependency graph"
versions="$(cargo tree --locked --workspace -e normal --prefix none | sed -E 's/ \(.*$//' | sort -u)"
for crate in arrow arrow-array parquet object_store datafusion deltalake-core; do
  found="$(grep -E "^$crate v" <<<"$versions" || true)"
  if [[ "$(grep -c . <<<"$found")" -gt 1 ]]; then
    echo "more than one version of $crate in the dependency graph:"; echo "$found"; exit 1
  fi
  echo "${found:-$crate: not used}"
done

phase "cargo clippy --all-targets -D warnings"
cargo clippy --locked --workspace --all-targets -- -D warnings

# One build of everything with one feature set: `cargo build --bin loglake` alone would resolve
# the dependencies' features without the tests' dev-dependencies and compile datafusion, deltalake
# and arrow a second time.
phase "building the loglake binary and the tests"
cargo build --locked --workspace --all-targets

phase "running tests"
cargo test --locked --workspace

phase "done"

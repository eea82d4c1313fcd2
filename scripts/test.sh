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

# One target dir for the whole run: clippy, the test build and the test run share it. It lives
# in the cache outside the clone, one per toolchain, so a later run (CI on a fresh clone of the
# same machine) rebuilds only what changed; cargo's fingerprints decide what that is. A fresh
# machine starts it empty. LOGLAKE_CACHE_DIR or CARGO_TARGET_DIR move it.
CACHE="${LOGLAKE_CACHE_DIR:-$HOME/.cache/loglake}"
TOOLCHAIN_KEY="$(rustc -V | sha256sum | cut -c1-12)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target-$TOOLCHAIN_KEY}"
mkdir -p "$CARGO_TARGET_DIR"
echo "target dir:   $CARGO_TARGET_DIR"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

phase "cargo fmt --check"
cargo fmt --all --check

phase "modules under 600 lines outside tests (functions: clippy's too_many_lines below)"
python3 scripts/check-module-sizes.py

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

# cargo-nextest: one process per test (each integration test gets its own broker and S3
# server), the heavy ones alone on the machine (.config/nextest.toml). The workspace has no
# doctests (`cargo test --doc` would find none), so nextest runs every test there is.
phase "running tests (cargo nextest)"
cargo nextest run --locked --workspace --no-fail-fast

phase "done"

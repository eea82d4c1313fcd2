#!/usr/bin/env bash
# Installs what the test suite needs, idempotently, into a cache outside the clone
# (default ~/.cache/loglake, override with LOGLAKE_CACHE_DIR):
#   - tansu 0.6.0, a Kafka-protocol broker (built from crates.io once, ~15 CPU minutes; skipped when
#     the cached binary already reports the pinned version)
#   - cargo-nextest, when the machine does not have it
#   - a Python venv with the pinned packages of scripts/requirements-test.txt (moto S3 server, ...)
#   - buildah, Debian's package, when the machine does not have it (builds and runs the container
#     image of deploy/Containerfile in tests/tests/it/deploy.rs)
#   - Debian's prometheus-pushgateway, when the machine does not have it (the nightly job's push)
#   - kubernetes-validate (pinned below) in a small venv of its own, so that its pin does not
#     change the hash of the big test venv; it bundles the Kubernetes schemas and works offline
# Prints shell `export` lines for the test harness on stdout; progress goes to stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LOGLAKE_CACHE_DIR:-$HOME/.cache/loglake}"
TANSU_VERSION="0.6.0"
mkdir -p "$CACHE"

log() { echo "install-test-deps: $*" >&2; }

# Debian packages the tests need (buildah, the Pushgateway, tmux, chromium): one `apt-get update`
# per run at most; without recommended packages unless the first argument is --with-recommends.
SUDO=()
[[ "$(id -u)" == 0 ]] || SUDO=(sudo)
APT_UPDATED=""
apt_install() {
  local opts=(--no-install-recommends)
  if [[ "${1:-}" == "--with-recommends" ]]; then opts=(); shift; fi
  if [[ -z "$APT_UPDATED" ]]; then
    "${SUDO[@]}" apt-get update -qq >&2
    APT_UPDATED=1
  fi
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${opts[@]}" "$@" >&2
}

# --- tansu (Kafka-protocol broker, SQLite storage) -----------------------------------------------
TANSU_ROOT="$CACHE/tansu-$TANSU_VERSION"
TANSU_BIN="$TANSU_ROOT/bin/tansu"
if [[ -x "$TANSU_BIN" ]] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  log "tansu $TANSU_VERSION cached at $TANSU_BIN"
else
  log "building tansu $TANSU_VERSION with SQLite storage (one-off, ~15 CPU minutes)..."
  # A private target dir keeps the broker's build out of the project's target dir.
  CARGO_TARGET_DIR="$CACHE/tansu-build" cargo install tansu --version "$TANSU_VERSION" --locked \
    --features libsql --root "$TANSU_ROOT" >&2
  rm -rf "$CACHE/tansu-build"
  "$TANSU_BIN" --version >&2
fi

# --- cargo-nextest (the test runner of scripts/test.sh) --------------------------------------------
if cargo nextest --version >/dev/null 2>&1; then
  log "cargo-nextest: $(cargo nextest --version 2>/dev/null | head -1)"
else
  log "installing cargo-nextest (one-off)..."
  cargo install cargo-nextest --locked >&2
fi

# --- Python venv (moto S3 server and friends) -----------------------------------------------------
REQ="$ROOT/scripts/requirements-test.txt"
REQ_HASH="$(sha256sum "$REQ" | cut -c1-12)"
VENV="$CACHE/venv-$REQ_HASH"
if [[ -f "$VENV/.complete" ]]; then
  log "python venv cached at $VENV"
else
  log "creating python venv $VENV from $REQ..."
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q -r "$REQ" >&2
  touch "$VENV/.complete"
fi

# --- the export readers (tests/tests/it/export.rs), added to the same venv -------------------------
# pyarrow reads the ML Parquet shards and the Hive layout, `tfrecord` (an independent TFRecord
# reader, with TensorFlow's example.proto) reads the TFRecord shards, crc32c checks their CRCs.
EXPORT_PKGS=(pyarrow==26.0.1 tfrecord==1.14.6 crc32c==2.9.post0 numpy==2.4.6 protobuf==7.36.2)
EXPORT_MARK="$VENV/.export-$(echo "${EXPORT_PKGS[*]}" | sha256sum | cut -c1-12)"
if [[ -f "$EXPORT_MARK" ]]; then
  log "export readers cached in $VENV"
else
  log "installing the export readers into $VENV: ${EXPORT_PKGS[*]}..."
  "$VENV/bin/pip" install --disable-pip-version-check -q "${EXPORT_PKGS[@]}" >&2
  touch "$EXPORT_MARK"
fi

# --- buildah (the container image test) ------------------------------------------------------------
if command -v buildah >/dev/null 2>&1; then
  log "$(buildah --version)"
else
  log "installing buildah (Debian package, one-off)..."
  apt_install --with-recommends buildah
  buildah --version >&2
fi

# --- Prometheus Pushgateway (the nightly job's metrics push) ---------------------------------------
if command -v prometheus-pushgateway >/dev/null 2>&1; then
  log "prometheus-pushgateway: $(command -v prometheus-pushgateway)"
else
  log "installing prometheus-pushgateway (Debian package, one-off)..."
  apt_install prometheus-pushgateway
  # the package enables a system service; the tests start their own on a free port
  "${SUDO[@]}" systemctl disable --now prometheus-pushgateway >/dev/null 2>&1 || true
fi

# --- kubernetes-validate (the manifest test), in its own venv --------------------------------------
KUBERNETES_VALIDATE_VERSION="1.37.0"
KV_VENV="$CACHE/venv-kubernetes-validate-$KUBERNETES_VALIDATE_VERSION"
if [[ -f "$KV_VENV/.complete" ]]; then
  log "kubernetes-validate $KUBERNETES_VALIDATE_VERSION cached at $KV_VENV"
else
  log "creating python venv $KV_VENV with kubernetes-validate $KUBERNETES_VALIDATE_VERSION..."
  rm -rf "$KV_VENV"
  python3 -m venv "$KV_VENV"
  "$KV_VENV/bin/pip" install --disable-pip-version-check -q \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" >&2
  touch "$KV_VENV/.complete"
fi

# --- tmux (loglake query's prompt test drives the REPL in a terminal) -------------------------------
if command -v tmux >/dev/null 2>&1; then
  log "$(tmux -V)"
else
  log "installing tmux (Debian package, one-off)..."
  apt_install tmux
fi

# --- Chromium (the report test renders loglake report's page headless) -----------------------------
if command -v chromium >/dev/null 2>&1; then
  log "chromium: $(command -v chromium)"
else
  log "installing chromium (Debian package, one-off)..."
  apt_install chromium fonts-dejavu-core
fi

echo "export LOGLAKE_TANSU_BIN='$TANSU_BIN'"
echo "export LOGLAKE_MOTO_BIN='$VENV/bin/moto_server'"
echo "export LOGLAKE_TEST_VENV='$VENV'"
echo "export LOGLAKE_KUBERNETES_VALIDATE='$KV_VENV/bin/kubernetes-validate'"
echo "export LOGLAKE_PUSHGATEWAY_BIN='$(command -v prometheus-pushgateway)'"

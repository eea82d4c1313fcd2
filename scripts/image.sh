#!/usr/bin/env bash
# Builds loglake's container image from deploy/Containerfile, with no registry: the image is
# `FROM scratch` plus a root filesystem this script lays out in a build context:
#   /usr/local/bin/loglake                 the binary (debug info stripped; symbols kept)
#   the shared libraries it links (ldd) and the dynamic loader, at the paths ldd names
#   /etc/ssl/certs/ca-certificates.crt     this machine's CA bundle (TLS to Kafka and S3)
#   /etc/passwd, /etc/group                root and the non-root user loglake (65532:65532)
#   /tmp                                   mode 1777 (HOME of the user; an emptyDir on Kubernetes)
# then builds it with Debian's buildah (`buildah bud --isolation chroot`, storage driver vfs).
#
#   scripts/image.sh [--binary PATH] [--tag NAME] [--context DIR] [--storage-root DIR] [--prepare-only]
#
#   --binary PATH        the loglake binary (default: $CARGO_TARGET_DIR/release/loglake if it
#                        exists, else $CARGO_TARGET_DIR/debug/loglake; CARGO_TARGET_DIR defaults
#                        to scripts/test.sh's, ~/.cache/loglake/target-<toolchain hash>)
#   --tag NAME           image name (default loglake:dev, stored as localhost/loglake:dev)
#   --context DIR        lay the build context out in DIR and keep it (default: a temporary
#                        folder, removed afterwards). DIR must be empty or absent.
#   --storage-root DIR   buildah's storage root (its --root; run root DIR/run): e.g. a
#                        throw-away folder for a test. Default: buildah's own.
#   --prepare-only       lay the context out and stop (build it elsewhere with
#                        `podman build -f deploy/Containerfile DIR` or `docker build ...`).
#
# The libraries come from this machine, so the image runs where the binary runs: build the binary
# and the image on the same distribution (here Debian 12, glibc 2.36).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() { echo "image.sh: $*" >&2; exit 1; }
log() { echo "image.sh: $*" >&2; }

BINARY=""
TAG="loglake:dev"
CONTEXT=""
STORAGE_ROOT=""
PREPARE_ONLY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) BINARY="${2:?--binary needs a path}"; shift 2 ;;
    --tag) TAG="${2:?--tag needs a name}"; shift 2 ;;
    --context) CONTEXT="${2:?--context needs a folder}"; shift 2 ;;
    --storage-root) STORAGE_ROOT="${2:?--storage-root needs a folder}"; shift 2 ;;
    --prepare-only) PREPARE_ONLY=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

if [[ -z "$BINARY" ]]; then
  TARGET="${CARGO_TARGET_DIR:-${LOGLAKE_CACHE_DIR:-$HOME/.cache/loglake}/target-$(rustc -V 2>/dev/null | sha256sum | cut -c1-12)}"
  for b in "$TARGET/release/loglake" "$TARGET/debug/loglake" "$ROOT/target/release/loglake" "$ROOT/target/debug/loglake"; do
    if [[ -x "$b" ]]; then BINARY="$b"; break; fi
  done
  [[ -n "$BINARY" ]] || die "no loglake binary under $TARGET or $ROOT/target: build it (cargo build --release) or pass --binary"
fi
[[ -x "$BINARY" ]] || die "$BINARY is not an executable file"

if [[ -z "$CONTEXT" ]]; then
  CONTEXT="$(mktemp -d "${TMPDIR:-/tmp}/loglake-image.XXXXXX")"
  trap 'rm -rf "$CONTEXT"' EXIT
else
  mkdir -p "$CONTEXT"
  [[ -z "$(ls -A "$CONTEXT")" ]] || die "--context $CONTEXT is not empty"
fi
FS="$CONTEXT/rootfs"
log "binary $BINARY"
log "context $CONTEXT"

# --- the root filesystem -------------------------------------------------------------------------
mkdir -p "$FS/usr/local/bin" "$FS/etc/ssl/certs" "$FS/tmp"
chmod 1777 "$FS/tmp"
# A debug build carries ~0.5 GB of DWARF; the symbol table stays, so backtraces keep their names.
objcopy --strip-debug "$BINARY" "$FS/usr/local/bin/loglake"
chmod 0755 "$FS/usr/local/bin/loglake"

# Every library the binary links, and the loader, copied (symlinks resolved) to the path ldd
# names: the loader finds them in its built-in system folders, so no ld.so.cache is needed.
copy_lib() {
  local path="$1"
  [[ "$path" == /* && -e "$path" ]] || die "library $path (from ldd) not found"
  mkdir -p "$FS$(dirname "$path")"
  cp -L "$path" "$FS$path"
}
ldd_out="$(ldd "$BINARY" 2>&1)" || die "ldd $BINARY failed: $ldd_out"
if grep -q "not found" <<<"$ldd_out"; then die "ldd: missing libraries:"$'\n'"$ldd_out"; fi
if grep -q "statically linked" <<<"$ldd_out"; then die "$BINARY is statically linked: not what this script expects"; fi
while read -r line; do
  case "$line" in
    *"=> /"*) lib="${line#*=> }"; copy_lib "${lib%% (*}" ;;   # libz.so.1 => /lib/.../libz.so.1 (0x…)
    /*) copy_lib "${line%% (*}" ;;                             # /lib64/ld-linux-x86-64.so.2 (0x…)
    *) ;;                                                      # linux-vdso.so.1 (0x…): the kernel's
  esac
done <<<"$ldd_out"
# The loader the binary names in its ELF header (PT_INTERP) must be there under that name.
interp="$(readelf -l "$BINARY" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
[[ -z "$interp" || -e "$FS$interp" ]] || copy_lib "$interp"

CA=/etc/ssl/certs/ca-certificates.crt
[[ -f "$CA" ]] || die "$CA not found (apt-get install ca-certificates)"
cp -L "$CA" "$FS$CA"

cat >"$FS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
loglake:x:65532:65532:loglake:/tmp:/sbin/nologin
EOF
cat >"$FS/etc/group" <<'EOF'
root:x:0:
loglake:x:65532:
EOF
cp "$ROOT/deploy/Containerfile" "$CONTEXT/Containerfile"
log "root filesystem: $(du -sh "$FS" | cut -f1) ($(find "$FS" -type f | wc -l) files)"

if [[ "$PREPARE_ONLY" == 1 ]]; then
  trap - EXIT
  log "prepared; build it with: podman build -f $CONTEXT/Containerfile -t $TAG $CONTEXT"
  exit 0
fi

# --- the build -----------------------------------------------------------------------------------
command -v buildah >/dev/null || die "buildah not found: apt-get install buildah (scripts/install-test-deps.sh does)"
BUILDAH=(buildah --storage-driver vfs)
if [[ -n "$STORAGE_ROOT" ]]; then
  mkdir -p "$STORAGE_ROOT"
  BUILDAH+=(--root "$STORAGE_ROOT" --runroot "$STORAGE_ROOT/run")
fi
"${BUILDAH[@]}" bud --isolation chroot --format oci -f "$CONTEXT/Containerfile" -t "$TAG" "$CONTEXT" >&2
log "built $TAG: $("${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$TAG")"

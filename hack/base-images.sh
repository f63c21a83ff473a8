#!/usr/bin/env bash
# Build the local base images from Debian root filesystems, without any container registry.
#
# No image can be pulled here (registries are unreachable; only the Debian archive is), so every
# base image is a `debootstrap --variant=minbase` root filesystem, trimmed, then imported:
#
#   localhost/sampledb-base:bookworm   bookworm + python3, python3-venv, ca-certificates, tzdata
#                                      (the operator image's base: see BASE_IMAGE in the Dockerfile)
#   localhost/sampledb-postgres:17     trixie + postgresql-17   (its bin dir first on PATH)
#   localhost/sampledb-postgres:15     bookworm + postgresql-15 (its bin dir first on PATH)
#
# Cached: an image is skipped when it exists with the label io.sampledb.base-images.version equal
# to BASE_IMAGES_VERSION below. Bump that number when you change what goes into an image, and the
# next run rebuilds them all. Needs root (debootstrap) and podman (or docker).
#
# Usage: hack/base-images.sh [--force] [base|postgres-17|postgres-15 ...]   (default: all three)
# Environment: CONTAINER_TOOL (default: podman if installed, else docker),
#              DEBIAN_MIRROR (default: http://deb.debian.org/debian), TMPDIR (scratch space),
#              SAMPLEDB_DEBOOTSTRAP_CACHE (downloaded packages; default ~/.cache/sampledb-operator/debootstrap).
set -euo pipefail

BASE_IMAGES_VERSION=1
VERSION_LABEL=io.sampledb.base-images.version
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Downloaded .deb files are kept here (per suite), so a rebuild after a version bump downloads
# only what changed; `rm -rf` it freely.
CACHE_DIR=${SAMPLEDB_DEBOOTSTRAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sampledb-operator/debootstrap}
ALL_IMAGES=(base postgres-17 postgres-15)
DEFAULT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

started=$SECONDS
log() { printf '[base-images +%ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

if [ -z "${CONTAINER_TOOL:-}" ]; then
  if command -v podman >/dev/null 2>&1; then CONTAINER_TOOL=podman; else CONTAINER_TOOL=docker; fi
fi

# image name, Debian suite, extra packages, PATH prefix (empty: none)
spec_of() {
  case "$1" in
    base) echo "localhost/sampledb-base:bookworm bookworm python3,python3-venv,ca-certificates,tzdata -" ;;
    postgres-17) echo "localhost/sampledb-postgres:17 trixie postgresql-17,ca-certificates,tzdata /usr/lib/postgresql/17/bin" ;;
    postgres-15) echo "localhost/sampledb-postgres:15 bookworm postgresql-15,ca-certificates,tzdata /usr/lib/postgresql/15/bin" ;;
    *) die "unknown image '$1' (known: ${ALL_IMAGES[*]})" ;;
  esac
}

image_version() {
  "$CONTAINER_TOOL" image inspect --format "{{ index .Config.Labels \"$VERSION_LABEL\" }}" "$1" 2>/dev/null || true
}

# Remove what a container never needs: package lists and caches, docs (keeping the copyright
# files), man pages, translations, logs. The dpkg database stays, so `apt-get` still works.
trim_rootfs() {
  local root=$1
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old "$root"/var/log/* \
    "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* "$root"/usr/share/lintian
  find "$root"/usr/share/doc -mindepth 1 -not -type d -not -name copyright -delete
  find "$root"/usr/share/doc -mindepth 1 -type d -empty -delete
  # A fixed machine-id would be shared by every container; systemd-less images need none.
  : >"$root"/etc/machine-id
  # postgresql-common creates a "main" cluster on install: an image ships binaries, not a database.
  if [ -d "$root"/etc/postgresql ]; then
    rm -rf "$root"/etc/postgresql/*/main "$root"/var/lib/postgresql/*/main
  fi
}

build_image() {
  local name=$1 image suite packages bindir root t0 path
  read -r image suite packages bindir <<<"$(spec_of "$name")"
  if [ "$FORCE" = 0 ] && [ "$(image_version "$image")" = "$BASE_IMAGES_VERSION" ]; then
    log "$image: up to date (base-images version $BASE_IMAGES_VERSION), skipped"
    return
  fi
  root=$(mktemp -d "${TMPDIR:-/var/tmp}/sampledb-rootfs.XXXXXX")
  ROOTS+=("$root")
  log "$image: debootstrap $suite (minbase + $packages) into $root"
  t0=$SECONDS
  mkdir -p "$CACHE_DIR/$suite"
  if ! debootstrap --variant=minbase --cache-dir="$CACHE_DIR/$suite" --include="$packages" "$suite" "$root" "$MIRROR" \
    >"$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    die "$image: debootstrap failed (full log: $root.log)"
  fi
  log "$image: debootstrap done in $((SECONDS - t0)) s"
  trim_rootfs "$root"
  path=$DEFAULT_PATH
  [ "$bindir" = - ] || path="$bindir:$DEFAULT_PATH"
  t0=$SECONDS
  log "$image: importing ($(du -sh "$root" | cut -f1) root filesystem)"
  tar --numeric-owner -C "$root" -c . | "$CONTAINER_TOOL" import \
    --change "ENV PATH=$path" \
    --change "ENV LANG=C.UTF-8" \
    --change "LABEL $VERSION_LABEL=$BASE_IMAGES_VERSION" \
    --change "LABEL org.opencontainers.image.description=\"Debian $suite minbase + $packages (hack/base-images.sh)\"" \
    --change 'CMD ["/bin/bash"]' \
    - "$image" >/dev/null
  log "$image: imported in $((SECONDS - t0)) s"
  rm -rf "$root" "$root.log"
}

FORCE=0
names=()
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) spec_of "$arg" >/dev/null; names+=("$arg") ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=("${ALL_IMAGES[@]}")

command -v "$CONTAINER_TOOL" >/dev/null 2>&1 || die "$CONTAINER_TOOL is not installed (apt-get install podman runc)"

ROOTS=()
cleanup() { local r; for r in "${ROOTS[@]}"; do rm -rf "$r"; done; }
trap cleanup EXIT

needs_debootstrap=0
for name in "${names[@]}"; do
  read -r image _ <<<"$(spec_of "$name")"
  if [ "$FORCE" = 1 ] || [ "$(image_version "$image")" != "$BASE_IMAGES_VERSION" ]; then needs_debootstrap=1; fi
done
if [ "$needs_debootstrap" = 1 ]; then
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed (apt-get install debootstrap)"
fi

for name in "${names[@]}"; do
  build_image "$name"
done
for name in "${names[@]}"; do
  read -r image _ <<<"$(spec_of "$name")"
  log "$image: $("$CONTAINER_TOOL" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
done
log "done in $((SECONDS - started)) s"

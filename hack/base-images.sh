#!/usr/bin/env bash
# Build the local base images from Debian root filesystems, without any container registry.
#
# No image can be pulled here (registries are unreachable; only the Debian archive is), so every
# base image is a `debootstrap --variant=minbase` root filesystem, trimmed, then imported:
#
#   localhost/sampledb-base:bookworm   bookworm + python3, python3-venv, ca-certificates, tzdata
#                                      (the operator image's base: see BASE_IMAGE in the Dockerfile)
#   localhost/sampledb-postgres:18     forky + postgresql-18    (its bin dir first on PATH)
#   localhost/sampledb-postgres:17     trixie + postgresql-17   (its bin dir first on PATH)
#   localhost/sampledb-postgres:15     bookworm + postgresql-15 (its bin dir first on PATH)
#   localhost/sampledb-pause:1         hack/pause/pause.c compiled statically (the real node's Pod sandbox)
#
# The PostgreSQL images meet the operand-image contract the operator's Pods rely on (README,
# "Operand images"): user and group `postgres` are 999, as in the official images, because the
# Pods run as uid 999 and initdb refuses to run as a uid that has no passwd entry; `initdb`,
# `postgres`, `pg_ctl`, `pg_isready`, `psql`, `pg_dump`, `pg_dumpall`, `pg_restore`, `pg_basebackup`,
# `pg_rewind` and `pg_controldata` are on PATH, and `pgbackrest` (WAL archiving, `resources/archive.py`).
#
# Cached: an image is skipped when it exists with the label io.sampledb.base-images.version equal
# to BASE_IMAGES_VERSION below. Bump that number when you change what goes into an image, and the
# next run rebuilds them all. Needs root (debootstrap) and podman (or docker).
#
# Usage: hack/base-images.sh [--force] [base|postgres-18|postgres-17|postgres-15|pause ...]   (default: all)
# Environment: CONTAINER_TOOL (default: podman if installed, else docker),
#              DEBIAN_MIRROR (default: http://deb.debian.org/debian), TMPDIR (scratch space),
#              SAMPLEDB_DEBOOTSTRAP_CACHE (downloaded packages; default ~/.cache/sampledb-operator/debootstrap).
set -euo pipefail

BASE_IMAGES_VERSION=3
VERSION_LABEL=io.sampledb.base-images.version
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Downloaded .deb files are kept here (per suite), so a rebuild after a version bump downloads
# only what changed; `rm -rf` it freely.
CACHE_DIR=${SAMPLEDB_DEBOOTSTRAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sampledb-operator/debootstrap}
ALL_IMAGES=(base postgres-18 postgres-17 postgres-15 pause)
POSTGRES_UID=999
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
    postgres-18) echo "localhost/sampledb-postgres:18 forky postgresql-18,pgbackrest,ca-certificates,tzdata /usr/lib/postgresql/18/bin" ;;
    postgres-17) echo "localhost/sampledb-postgres:17 trixie postgresql-17,pgbackrest,ca-certificates,tzdata /usr/lib/postgresql/17/bin" ;;
    postgres-15) echo "localhost/sampledb-postgres:15 bookworm postgresql-15,pgbackrest,ca-certificates,tzdata /usr/lib/postgresql/15/bin" ;;
    pause) echo "localhost/sampledb-pause:1 - - -" ;;
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

# A system id (below 999) that no user or group of the root filesystem has.
spare_id() {
  local id
  for id in $(seq 998 -1 900); do
    chroot "$1" getent "$2" "$id" >/dev/null || { echo "$id"; return; }
  done
  die "no free system id in $1"
}

# If a user (passwd) or group other than postgres has id 999, give it a spare id, files included.
move_aside() {
  local root=$1 db=$2 mod=$3 flag=$4 own=$5 other spare test
  other=$(chroot "$root" getent "$db" "$POSTGRES_UID" | cut -d: -f1 || true)
  [ -n "$other" ] && [ "$other" != postgres ] || return 0
  spare=$(spare_id "$root" "$db")
  chroot "$root" "$mod" "$flag" "$spare" "$other"
  test=-uid; [ "$db" = group ] && test=-gid
  find "$root" -xdev "$test" "$POSTGRES_UID" -exec "$own" -h "$spare" {} +
  log "moved $db entry $other from $POSTGRES_UID to $spare"
}

# Give `postgres` the uid/gid the Pods run as (Debian's package picks the next free system id),
# and move every file it owned along with it.
renumber_postgres() {
  local root=$1 old_uid old_gid
  old_uid=$(chroot "$root" id -u postgres) || die "$root has no postgres user"
  old_gid=$(chroot "$root" id -g postgres)
  [ "$old_uid" = "$POSTGRES_UID" ] && [ "$old_gid" = "$POSTGRES_UID" ] && return
  # Newer suites give 999 to a system group of their own (forky: lpadmin); it moves aside.
  move_aside "$root" passwd usermod -u chown
  move_aside "$root" group groupmod -g chgrp
  chroot "$root" groupmod -g "$POSTGRES_UID" postgres
  chroot "$root" usermod -u "$POSTGRES_UID" -g "$POSTGRES_UID" postgres
  find "$root" -xdev -uid "$old_uid" -exec chown -h "$POSTGRES_UID" {} +
  find "$root" -xdev -gid "$old_gid" -exec chgrp -h "$POSTGRES_UID" {} +
}

# The Pod sandbox image: one static binary, no shell, runs as nobody.
build_pause() {
  local image=$1 root
  command -v gcc >/dev/null 2>&1 || die "gcc is needed to build the pause image (apt-get install gcc libc6-dev)"
  root=$(mktemp -d "${TMPDIR:-/var/tmp}/sampledb-pause.XXXXXX")
  ROOTS+=("$root")
  gcc -static -Os -s -o "$root/pause" "$(dirname "$0")/pause/pause.c"
  tar --numeric-owner --owner=0 --group=0 -C "$root" -c pause | "$CONTAINER_TOOL" import \
    --change 'ENTRYPOINT ["/pause"]' --change 'USER 65535:65535' \
    --change "LABEL $VERSION_LABEL=$BASE_IMAGES_VERSION" \
    --change 'LABEL org.opencontainers.image.description="Pod sandbox (hack/pause/pause.c)"' \
    - "$image" >/dev/null
  log "$image: built"
}

build_image() {
  local name=$1 image suite packages bindir root t0 path script
  read -r image suite packages bindir <<<"$(spec_of "$name")"
  if [ "$FORCE" = 0 ] && [ "$(image_version "$image")" = "$BASE_IMAGES_VERSION" ]; then
    log "$image: up to date (base-images version $BASE_IMAGES_VERSION), skipped"
    return
  fi
  if [ "$name" = pause ]; then build_pause "$image"; return; fi
  root=$(mktemp -d "${TMPDIR:-/var/tmp}/sampledb-rootfs.XXXXXX")
  ROOTS+=("$root")
  log "$image: debootstrap $suite (minbase + $packages) into $root"
  t0=$SECONDS
  mkdir -p "$CACHE_DIR/$suite"
  # An older debootstrap (bookworm's) has no script for a newer suite; Debian's own script for
  # every suite after trixie is sid's, which is what newer debootstraps link it to.
  script=()
  [ -e "/usr/share/debootstrap/scripts/$suite" ] || script=(/usr/share/debootstrap/scripts/sid)
  if ! debootstrap --variant=minbase --cache-dir="$CACHE_DIR/$suite" --include="$packages" "$suite" "$root" "$MIRROR" \
    "${script[@]}" >"$root.log" 2>&1; then
    tail -n 30 "$root.log" >&2
    die "$image: debootstrap failed (full log: $root.log)"
  fi
  log "$image: debootstrap done in $((SECONDS - t0)) s"
  trim_rootfs "$root"
  case "$packages" in *postgresql-*) renumber_postgres "$root" ;; esac
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
  [ "$name" = pause ] && continue
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

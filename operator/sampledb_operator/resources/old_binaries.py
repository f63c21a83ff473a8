"""The old major's binaries inside the new major's image, for `pg_upgrade` (`jobs/upgrade.py`, method Copy).

`pg_upgrade` runs the new major's binaries and needs the old major's `postgres`, `pg_ctl`,
`pg_controldata` and `pg_resetwal` with their libraries and share files. No Debian release carries
two of our majors (15: bookworm, 17: trixie, 18: forky), so the old ones come from the old image,
copied by a container that runs it (COPY_SCRIPT) into a folder both containers mount (OLD_DIR,
an emptyDir); the new image then runs them (USE_SCRIPT). Measured on our images
(docs/plans/fast-upgrade.md §7): the copy is about 80 MB.

- COPY_SCRIPT (old image): `pg_config --bindir --pkglibdir --sharedir` copied under OLD_DIR at
  their own paths (PostgreSQL finds its lib and share folders relative to its binaries), without
  the JIT provider (`llvmjit.so` present but unloadable makes queries fail; absent, JIT is off),
  and every library the copied files need except glibc's own (a newer glibc runs older binaries;
  an older one must never shadow it) into OLD_DIR/libs. Writes OLD_DIR/bindir last: its presence
  means the copy is whole.
- USE_SCRIPT (new image, sourced; its errors go through the script's `fail` when it has one):
  links into OLD_DIR/compat only the sonames the new root lacks
  (to closure: a library found there may need another one), so the new binaries keep their own
  libraries; checks that the old `postgres` answers with the expected major; sets OLD_BIN and
  LD_LIBRARY_PATH for what follows. A soname neither root has stops it, naming it.
Needs in both images: `sh`, `cp`, `ldd`, `pg_config`, coreutils; uid 999 can write OLD_DIR.
"""

from __future__ import annotations

OLD_DIR = "/var/run/sampledb-old"  # an emptyDir shared by the two containers

# glibc's own libraries: never copied (see the module docstring).
_GLIBC = "libc.so.*|libm.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*|libresolv.so.*|libutil.so.*"

COPY_SCRIPT = f"""set -eu
old={OLD_DIR}
rm -rf "$old/bindir" "$old/usr" "$old/libs"
for dir in "$(pg_config --bindir)" "$(pg_config --pkglibdir)" "$(pg_config --sharedir)"; do
  mkdir -p "$old$(dirname "$dir")"
  cp -a "$dir" "$old$dir"
done
lib="$old$(pg_config --pkglibdir)"
rm -rf "$lib"/llvmjit* "$lib/bitcode"
mkdir -p "$old/libs"
for file in "$old$(pg_config --bindir)"/* "$lib"/*.so; do ldd "$file" 2>/dev/null || :; done |
  sed -n 's/.*=> \\(\\/[^ ]*\\) .*/\\1/p' | sort -u | while read -r path; do
    case "${{path##*/}}" in {_GLIBC}) continue ;; esac
    cp -L "$path" "$old/libs/"
  done
pg_config --bindir > "$old/bindir.tmp" && mv "$old/bindir.tmp" "$old/bindir"
echo "sampledb: $(pg_config --version) copied to $old ($(du -sh "$old" | cut -f1))"
"""

# Sourced with the expected old major in $1.
USE_SCRIPT = f"""old={OLD_DIR}
command -v fail > /dev/null 2>&1 || fail() {{ echo "sampledb: $1" >&2; exit 1; }}
[ -f "$old/bindir" ] || fail "no complete copy of the old binaries in $old"
OLD_BIN="$old$(cat "$old/bindir")"
mkdir -p "$old/compat"
missing() {{
  for file in "$OLD_BIN"/* "$OLD_BIN"/../lib/*.so "$old"/compat/*; do
    [ -f "$file" ] && LD_LIBRARY_PATH="$old/compat" ldd "$file" 2>/dev/null
  done | sed -n 's/^[[:space:]]*\\([^ ]*\\) => not found.*/\\1/p' | sort -u
}}
rounds=0
while names="$(missing)" && [ -n "$names" ] && [ $((rounds += 1)) -le 10 ]; do
  for name in $names; do
    [ -f "$old/libs/$name" ] || fail "the old binaries need $name, which neither image has"
    ln -sf "$old/libs/$name" "$old/compat/$name"
  done
done
export LD_LIBRARY_PATH="$old/compat"
version="$("$OLD_BIN/postgres" -V 2>&1)" || fail "the old postgres does not run in this image: $version"
case "$version" in *" $1."*) ;; *) fail "expected PostgreSQL $1 in $old, found: $version" ;; esac
echo "sampledb: $version runs here (libraries from the old image: $(ls "$old/compat" | tr '\\n' ' '))"
"""

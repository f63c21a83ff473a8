"""The old major's binaries in the new major's image (resources/old_binaries.py), on our real images.

The old image copies its binaries to a shared folder; the new image, as uid 999, runs them with
only the libraries its own root lacks, and `pg_upgrade --link` from a real old cluster keeps every
row and index. Our images come from different Debian releases (15 bookworm, 17 trixie, 18 forky),
so each pair crosses one. Not 17 -> 18: these builds of 17 give every column an attribute option
`pg_attver` that 18 refuses when pg_upgrade restores the schema (docs/plans/fast-upgrade.md §7);
that pair stays on the logical path until a check catches it before any downtime.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sampledb_operator.resources.old_binaries import COPY_SCRIPT, OLD_DIR, USE_SCRIPT
from tests.postgres.conftest import IMAGE, PODMAN_RUN, image_majors

ROWS = "select count(*) || ':' || sum(hashtext(s)) from t"
OLD_CLUSTER = f"""{COPY_SCRIPT}
initdb -D /work/old --data-checksums -U postgres >/dev/null
pg_ctl -D /work/old -o "-c unix_socket_directories=/work -c listen_addresses=''" -w -l /work/old.log start >/dev/null
psql -h /work -U postgres -XAqc "create extension pg_trgm;
  create table t as select g id, md5(g::text) s from generate_series(1, 100000) g;
  create index on t (s); create index on t using gin (s gin_trgm_ops)"
psql -h /work -U postgres -XAtc "{ROWS}"
pg_ctl -D /work/old -m fast -w stop >/dev/null
"""
UPGRADE = f"""set -eu
set -- "$OLD_MAJOR"
. /work/use.sh
initdb -D /work/new --data-checksums -U postgres >/dev/null
cd /work
pg_upgrade -b "$OLD_BIN" -B "$(pg_config --bindir)" -d /work/old -D /work/new --link --socketdir=/work \
  -o '-c jit=off' -U postgres > /work/upgrade.log 2>&1 || {{ tail -20 /work/upgrade.log; exit 1; }}
unset LD_LIBRARY_PATH
pg_ctl -D /work/new -o "-c unix_socket_directories=/work -c listen_addresses=''" -w -l /work/new.log start >/dev/null
psql -h /work -U postgres -XAtc "show server_version_num"
psql -h /work -U postgres -XAtc "{ROWS}"
psql -h /work -U postgres -XAqtc "set enable_seqscan = off; select count(*) from t where s like '%abc%'"
psql -h /work -U postgres -XAqtc "set enable_indexscan = off; set enable_bitmapscan = off;
  select count(*) from t where s like '%abc%'"
pg_ctl -D /work/new -m fast -w stop >/dev/null
"""


def podman(major: int, work: Path, script: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`script` in our image of `major`, as uid 999, with `work` at /work and its `old-binaries` at OLD_DIR."""
    argv = [*PODMAN_RUN, "--user", "999:999", "-v", f"{work}:/work", "-v", f"{work / 'old-binaries'}:{OLD_DIR}"]
    argv += [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    return subprocess.run([*argv, IMAGE.format(major=major), "sh", "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def run(major: int, work: Path, script: str, **env: str) -> str:
    done = podman(major, work, script, **env)
    assert done.returncode == 0, f"{script[:60]!r} in {major} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def workspace(tmp_path: Path, *majors: int) -> Path:
    """A folder both containers write (uid 999), once our images of `majors` are there."""
    available = image_majors(majors)
    if available != sorted(majors):
        pytest.fail(f"needs our images of {majors} (make base-images); found {available}")
    (tmp_path / "old-binaries").mkdir()
    for path in (tmp_path, tmp_path / "old-binaries"):
        path.chmod(0o777)
    (tmp_path / "use.sh").write_text(USE_SCRIPT, encoding="utf-8")
    return tmp_path


@pytest.mark.parametrize(("old", "new"), [(15, 17), (15, 18)])
def test_the_old_majors_binaries_run_in_the_new_image_and_pg_upgrade_link_keeps_every_row(
    old: int, new: int, tmp_path: Path
) -> None:
    work = workspace(tmp_path, old, new)
    copied = run(old, work, OLD_CLUSTER)
    assert f"sampledb: PostgreSQL {old}." in copied, copied
    before = copied.strip().splitlines()[-1]
    out = run(new, work, UPGRADE, OLD_MAJOR=str(old)).strip().splitlines()
    assert f"sampledb: postgres (PostgreSQL) {old}." in out[0], out
    assert out[1].startswith(str(new)), f"the new server is {new}: {out}"
    assert out[2] == before, "every row, byte for byte"
    assert out[3] == out[4] and int(out[3]) > 0, "the trigram index answers what a scan answers"


def test_a_missing_copy_or_another_major_is_refused_by_name(tmp_path: Path) -> None:
    work = workspace(tmp_path, 15, 17)
    missing = podman(17, work, "set -- 15; . /work/use.sh")
    assert missing.returncode != 0 and "no complete copy of the old binaries" in missing.stderr, missing.stderr
    run(15, work, COPY_SCRIPT)
    wrong = podman(17, work, "set -- 14; . /work/use.sh")
    assert wrong.returncode != 0 and "expected PostgreSQL 14" in wrong.stderr, wrong.stderr

"""Benchmark: base backup and restore through our path against pgBackRest run by hand (issue #17).

The issue's target: our path costs at most 1.1x what the tool costs run by hand on the same data.
Our path is what the Pod runs (`resources/archive.py`): `pgbackrest.sh backup-run ID` (the stanza
made this cluster's, the backup annotated with ID, then `info` as JSON for the status) and
`pgbackrest.sh restore` (what a recovering primary's start script runs). By hand is the one
pgBackRest command a DBA would type, with the same configuration and keys. The operator's own part
(an exec to start the backup, one every 10 s to follow it) runs elsewhere and is not counted.

One server as the Pod runs it (this machine's PostgreSQL, the newest installed) archives to a real
S3 store on loopback (versitygw, TLS, `tests/objectstore.py`), loaded with `--mib` of table data.
Each run takes a full backup both ways and restores the newest backup both ways into a fresh
folder, in alternating order (odd runs ours first) so a drift of the machine falls on both sides.
Measured per command: wall time, and CPU (user + system of the command and everything it ran:
`RUSAGE_CHILDREN`; the server's own work for a backup is outside it, and alike both ways).

Then the time to recover: after a last base backup, rows are committed until the server has
written `--wal-mib` of WAL (default 1024: an hour at 291 KiB/s; only the amount matters to a
recovery, so it is written as fast as the server goes) and the store holds all of it; then,
`--recoveries` times (default 3), a new server is restored into an empty folder through our path
and started by the Pod's start script, which replays the archive to its end and promotes: timed
until it accepts writes, and its rows must be exactly those committed.

Reported, median ± spread over `--runs` (default 5): each ratio ours / by hand (CPU: the target;
wall time: for information), and our throughput in MiB/s of database per second of wall time;
the time to recover over the recoveries.

The table goes to stdout and to `benchmarks/results/basebackup-<date>-<commit>.md`
(`--results-dir` elsewhere for smoke runs); progress to stderr.

Run from the repository root as root: `make bench-base-backup`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_base_backup.py [--runs 5] [--mib 256]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import result_files
from benchmarks.bench_archive import host_runtime
from benchmarks.report import (
    Row,
    Target,
    exit_on_sigterm,
    judge,
    machine_rows,
    markdown_table,
    pair_ratios,
    progress,
    spread_text,
)
from sampledb_operator.resources import archive
from tests.objectstore import ObjectStore, start_object_store
from tests.postgres.conftest import Server, start_server, stop_server
from tests.postgres.test_archive_script import archived, archiving_instance, wait_for
from tests.postgres.test_base_backup import restored

TARGET = Target(1.1, "<= 1.1")
ROW_BYTES = 100  # about what one row of `load` takes on disk (tuple header, id, two md5s)
COMMAND_TIMEOUT = 3600
DROP_CACHES = Path("/proc/sys/vm/drop_caches")  # root only, as the benchmark runs
CHURN = "SELECT count(*) || ':' || sum(hashtext(id || payload)) FROM churn"


@dataclass(frozen=True)
class Cost:
    """What one command took."""

    wall: float
    cpu: float


def measure(argv: list[str], *, settle: bool = True) -> Cost:
    """Run `argv` to its end; its wall time and the CPU of it and every process it ran (all waited for).

    `settle`: the page cache is written out and dropped first, so every command starts with as much free memory: a
    restore right after a large `rm` (the last restore's folder) found pages free, the one after the backups
    had to reclaim them, and paid up to 40 % more system CPU for it (measured 2026-11-29).
    """
    if settle:
        os.sync()
        DROP_CACHES.write_text("1\n")
    before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        output = f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        raise RuntimeError(f"{argv[-1][:200]} failed ({done.returncode}):\n{output}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Cost(wall, cpu)


def ours(server: Server, args: str) -> list[str]:
    """`pgbackrest.sh ARGS`, as the Pod runs it."""
    return server.command(f"sh {server.root}/config/{archive.SCRIPT_FILE} {args}", {})


def by_hand(server: Server, args: str) -> list[str]:
    """`pgbackrest ARGS` with the same configuration, include path (the keys) and stanza as the script's."""
    script = server.root / "config" / archive.SCRIPT_FILE
    return server.command(f"eval \"$(grep '^pgbackrest=' {script})\"; $pgbackrest {args}", {})


def load(server: Server, mib: int) -> int:
    """Fill a table with about `mib` MiB; the database's size in bytes."""
    rows = mib * 1024 * 1024 // ROW_BYTES
    server.psql("CREATE TABLE big AS SELECT g AS id, md5(g::text) AS a, md5((g * 7)::text) AS b "  # noqa: S608 (an int)
                f"FROM generate_series(1, {rows}) AS g; CHECKPOINT")  # fmt: skip
    return int(server.psql("SELECT pg_database_size(current_database())"))


def fresh_folder(server: Server, root: Path, name: str) -> Path:
    """An empty folder the postgres user owns, for a restore."""
    folder = root / name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(mode=0o700)
    os.chown(folder, *server.runtime.owner)
    return folder


def one_run(server: Server, root: Path, run: int) -> dict[str, tuple[Cost, Cost]]:
    """Backup and restore, ours and by hand (ours first on odd runs): (ours, by hand) for each."""
    first_ours = run % 2 == 1
    costs: dict[str, tuple[Cost, Cost]] = {}
    backups = {
        "ours": ours(server, f"backup-run bench-{run}"),
        "hand": by_hand(server, "backup --type=full --start-fast"),
    }
    restores = {
        "ours": lambda: ours(server, f"restore --pg1-path={fresh_folder(server, root, 'restore')}"),
        "hand": lambda: by_hand(server, f"restore --pg1-path={fresh_folder(server, root, 'restore')}"),
    }
    order = ("ours", "hand") if first_ours else ("hand", "ours")
    taken = {side: measure(backups[side]) for side in order}
    costs["backup"] = (taken["ours"], taken["hand"])
    restored = {side: measure(restores[side]()) for side in order}
    costs["restore"] = (restored["ours"], restored["hand"])
    shutil.rmtree(root / "restore", ignore_errors=True)
    return costs


def write_wal(server: Server, mib: int) -> str:
    """Commit rows until the server has written `mib` MiB of WAL, then wait for it all in the store.

    The count and checksum of the rows written, for the recovered copy to match.
    """
    server.psql("CREATE TABLE churn (id bigint, payload text)")
    start = server.psql("SELECT pg_current_wal_lsn()")
    written, batch = 0.0, 0
    while written < mib:
        batch += 1
        server.psql(f"INSERT INTO churn SELECT g, md5(g::text) FROM generate_series({batch} * 50000, "  # noqa: S608
                    f"{batch} * 50000 + 49999) AS g")  # fmt: skip
        written = float(server.psql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{start}') / 1048576"))
        if batch % 20 == 0:
            progress(f"{written:.0f} MiB of WAL written")
    last = server.psql("SELECT pg_walfile_name(pg_switch_wal())")
    wait_for(lambda: archived(server, last), f"segment {last} archived", timeout=900)
    return server.psql(CHURN)


def time_to_recover(primary: Server, root: Path, store: ObjectStore, run: int, expected: str) -> float:
    """Seconds from an empty folder to a new server promoted at the end of the archive, with every row."""
    start = time.perf_counter()
    server = restored(primary, primary.runtime, root / f"recovered-{run}", store, uid=f"uid-recovered-{run}")
    took = time.perf_counter() - start
    try:
        found = server.psql(CHURN)
        if found != expected:
            raise RuntimeError(f"recovery {run}: the rows written after the backup are {found}, not {expected}")
    finally:
        stop_server(server)
        shutil.rmtree(root / f"recovered-{run}", ignore_errors=True)
    return took


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table and write it to a results file of its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="runs, each both ways (default 5)")
    parser.add_argument("--mib", type=int, default=256, help="table data to load, MiB (default 256)")
    parser.add_argument("--wal-mib", type=int, default=1024,
                        help="WAL written after the last backup: an hour at a steady rate, MiB (default 1024)")
    parser.add_argument("--recoveries", type=int, default=3, help="recoveries to the latest point (default 3)")
    result_files.add_results_dir(parser)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    runtime = host_runtime()
    path = result_files.new_file("basebackup", args.results_dir)
    machine = machine_rows(("store", "versitygw on loopback, TLS"))  # the load before the runs
    root = Path(tempfile.mkdtemp(prefix="bench-base-backup-"))
    root.chmod(0o755)
    store = start_object_store(root / "store")
    server: Server | None = None
    results: dict[str, list[tuple[Cost, Cost]]] = {"backup": [], "restore": []}
    recoveries: list[float] = []
    try:
        server = start_server(archiving_instance(store), runtime, root / "server", "bench-Pw-1", root, store=store)
        size = load(server, args.mib)
        progress(f"database loaded: {size / 2**20:.0f} MiB")
        for run in range(1, args.runs + 1):
            for operation, pair in one_run(server, root, run).items():
                results[operation].append(pair)
                progress(f"run {run} {operation}: ours {pair[0].wall:.1f} s wall {pair[0].cpu:.1f} s CPU, "
                         f"by hand {pair[1].wall:.1f} s wall {pair[1].cpu:.1f} s CPU")  # fmt: skip
        measure(ours(server, "backup-run bench-last"))  # the base backup the recoveries start from
        expected = write_wal(server, args.wal_mib)
        for run in range(1, args.recoveries + 1):
            recoveries.append(time_to_recover(server, root, store, run, expected))
            progress(f"recovery {run}: {recoveries[-1]:.1f} s")
    finally:
        if server is not None:
            stop_server(server)
        store.stop()
        shutil.rmtree(root, ignore_errors=True)
    section = f"pgBackRest full backup and restore, PostgreSQL {runtime.major}, {size / 2**20:.0f} MiB database"
    rows = []
    for operation, pairs in results.items():
        cpu = judge(pair_ratios([o.cpu for o, _ in pairs], [h.cpu for _, h in pairs]), TARGET)
        wall = pair_ratios([o.wall for o, _ in pairs], [h.wall for _, h in pairs])
        throughput = [size / 2**20 / o.wall for o, _ in pairs]
        rows += [
            Row(section, f"**{operation} CPU**, ours / by hand", cpu.value(), cpu.cell()),
            Row(section, f"{operation} wall time, ours / by hand", spread_text(wall)),
            Row(section, f"{operation} throughput, ours", spread_text(throughput, 1, " MiB/s")),
        ]
    recovery = (
        f"Recovery to the latest point: the newest base backup of the {size / 2**20:.0f} MiB database, then "
        f"{args.wal_mib} MiB of WAL (an hour at {args.wal_mib / 3600 * 1024:.0f} KiB/s)"
    )
    rows.append(Row(recovery, "empty folder -> restored, replayed, promoted, every row there",
                    spread_text(recoveries, 1, " s")))  # fmt: skip
    table = markdown_table([*rows, *machine])
    given = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"make bench-base-backup BENCH_BASE_BACKUP_ARGS='{given}'" if given else "make bench-base-backup"
    path.write_text(result_files.header("Base backup and restore: our path against pgBackRest by hand", path,
                                        command) + table, encoding="utf-8")  # fmt: skip
    sys.stdout.write(table)
    progress(f"table written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: the recovery point objective of continuous archiving with the defaults (issue #17).

What is at risk when a primary and its volume are lost is every commit whose WAL segment has not
reached the object store yet. On a busy database segments fill and are archived at once; on an
idle-ish one a segment fills slowly and only `archive_timeout` (30 s by default, `resources/
archive.py`) closes it, so that is where the figure is largest. Each run:

1. starts a fresh server as the Pod runs it (the StatefulSet's start script, the ConfigMap's
   postgresql.conf, pgbackrest.conf and pgbackrest.sh; this machine's PostgreSQL, the newest
   installed) archiving to a real S3 store on loopback (versitygw with TLS, `tests/objectstore.py`);
2. commits one small row every `--every` seconds (default 5: idle-ish) for `--seconds` (120);
3. notes, for each commit, when `pg_stat_archiver.last_archived_wal` (what the operator reports)
   first reaches the commit's segment, polling every 0.1 s.

Reported, as median ± spread over the runs (`--runs`, default 5): the longest a commit stayed at
risk in the run (the RPO observed, judged against the issue's 60 s), and the median. The
resolution is the poll (0.1 s) plus one psql round trip.

The table goes to stdout and to `benchmarks/results/archive-<date>-<commit>.md` (`--results-dir`
elsewhere for smoke runs); progress to stderr.

Run from the repository root as root: `make bench-archive`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_archive.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import result_files
from benchmarks.report import (
    Row,
    Target,
    exit_on_sigterm,
    judge,
    machine_rows,
    markdown_table,
    progress,
    spread_text,
)
from tests.objectstore import start_object_store
from tests.postgres.conftest import Runtime, Server, installed_majors, start_server, stop_server
from tests.postgres.test_archive_script import archiving_instance

TARGET = Target(60.0, "<= 60 s")


@dataclass(frozen=True)
class Commit:
    """One committed row: when, and in which WAL segment."""

    at: float
    segment: str


def at_risk(commits: Sequence[Commit], archived: Sequence[tuple[float, str]]) -> list[float]:
    """Seconds each commit waited until the archiver reported its segment (or a later one) archived.

    `archived` is the archiver's last archived segment as polled, in time order. A commit never
    reported archived is an error: the run did not wait long enough, and its figure would be low.
    """
    waits = []
    for commit in commits:
        reached = next((at for at, segment in archived if at >= commit.at and segment >= commit.segment), None)
        if reached is None:
            raise RuntimeError(f"the commit at segment {commit.segment} was never reported archived")
        waits.append(reached - commit.at)
    return waits


def one_run(runtime: Runtime, root: Path, seconds: float, every: float) -> list[float]:
    """A fresh server and store; commits every `every` s for `seconds`; each commit's time at risk."""
    store = start_object_store(root / "store")
    server: Server | None = None
    try:
        instance = archiving_instance(store)
        server = start_server(instance, runtime, root / "server", "bench-Pw-1", root, store=store)
        server.psql("CREATE TABLE t (id serial, at timestamptz default now())")
        polled: list[tuple[float, str]] = []
        done = threading.Event()

        def poll() -> None:
            assert server is not None
            while not done.is_set():
                name = server.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
                polled.append((time.time(), name[:24]))
                time.sleep(0.1)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        commits = []
        end = time.time() + seconds
        while time.time() < end:
            lsn = server.psql("INSERT INTO t DEFAULT VALUES RETURNING pg_walfile_name(pg_current_wal_lsn())")
            commits.append(Commit(time.time(), lsn.splitlines()[0]))
            time.sleep(every)
        last = commits[-1].segment
        deadline = time.time() + 120
        while not any(segment >= last for _, segment in list(polled)) and time.time() < deadline:
            time.sleep(0.5)
        done.set()
        poller.join()
        return at_risk(commits, polled)
    finally:
        if server is not None:
            stop_server(server)
        store.stop()


def host_runtime() -> Runtime:
    """This machine's newest PostgreSQL, for a server run as the Pod runs it."""
    majors = installed_majors()
    if not majors:
        raise SystemExit("needs this machine's PostgreSQL: hack/host-packages.sh ci installs postgresql-15")
    return Runtime(majors[-1])


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table and write it to a results file of its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="fresh servers, one after the other (default 5)")
    parser.add_argument("--seconds", type=float, default=120, help="how long each run commits (default 120)")
    parser.add_argument("--every", type=float, default=5, help="seconds between commits (default 5)")
    result_files.add_results_dir(parser)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    runtime = host_runtime()
    path = result_files.new_file("archive", args.results_dir)
    machine = machine_rows(("store", "versitygw on loopback, TLS"))  # the load before the runs
    longest, medians = [], []
    for run in range(1, args.runs + 1):
        root = Path(tempfile.mkdtemp(prefix="bench-archive-"))
        root.chmod(0o755)
        try:
            waits = one_run(runtime, root, args.seconds, args.every)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        longest.append(max(waits))
        medians.append(statistics.median(waits))
        progress(f"run {run}: {len(waits)} commits, at risk for at most {longest[-1]:.1f} s "
                 f"(median {medians[-1]:.1f} s)")  # fmt: skip
    section = (
        f"WAL archiving, defaults (archive_timeout 30 s), PostgreSQL {runtime.major}, one commit every "
        f"{args.every:g} s for {args.seconds:g} s (runs: {args.runs})"
    )
    rpo = judge(longest, TARGET)
    table = markdown_table(
        [
            Row(section, "**recovery point**: longest a commit stayed unarchived", rpo.value(1, " s"), rpo.cell(1)),
            Row(section, "median time a commit stayed unarchived", spread_text(medians, 1, " s")),
            *machine,
        ]
    )
    given = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"make bench-archive BENCH_ARCHIVE_ARGS='{given}'" if given else "make bench-archive"
    path.write_text(result_files.header("Continuous archiving: recovery point", path, command) + table,
                    encoding="utf-8")  # fmt: skip
    sys.stdout.write(table)
    progress(f"table written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

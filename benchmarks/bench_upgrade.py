"""Benchmark on the real node: the downtime of a major upgrade, end to end, as an application sees it.

Why (issue #14): the lifecycle benchmark adds up the upgrade Jobs' script times on the host, which
leaves out everything a user waits for besides: the operator's reconcile turns between steps, the
StatefulSet scaled down and up, Pods stopped, scheduled and started, the probes. Here nothing is
summed. For each run, on one local cluster with a real node and the operator running:

1. an empty SampleDB of the old major (15 by default) is created and becomes Ready, and its
   application database gets `--rows` rows;
2. a writer starts in a client Pod that connects like an application (the client Service's DNS
   name, the generated Secret's user: `tests/node`'s client Pod), and inserts one row at a time in
   a loop, printing for each attempt its start and end (the node's clock) and either the server
   version that accepted it or a refusal;
3. `spec.postgres.version` is set to the new major (17 by default), and the run waits until the
   operator reports the upgrade Succeeded, the instance is Ready and the writer has had a write
   accepted by the new major;
4. the downtime is the time from the end of the last write the old major accepted to the end of
   the first write the new major accepted. Its resolution is the writer's pace (the median time
   between attempts, given as a figure). Every write reported accepted must be in the table
   afterwards, and the rows written before the upgrade too: a lost one stops the run.

Each run does this for every method (`--methods`, default Logical and Copy:
`spec.postgres.upgrade.method`) at every size (`--rows`, default 100,000 and 14,000,000 rows of
the `bulk` table: about 10 MiB and 1 GiB of database), side by side: the cases of one run follow
each other, so a slower period of the machine touches every case alike. With Copy among the
methods every instance archives to an object store in the node's network (`tests/node`'s
store), Logical ones too, so both run with the same configuration. The size is measured
(`pg_database_size` of the application database), not assumed.

Reported: the downtime's median and spread over the runs (`--runs`, default 5) for each method and
size, the Copy downtime's slope per GiB between the smallest and the largest size, and per case
the time from the version change to the write stop (the operator's turns, and for Copy the
online base backup and the check) and from the first new write to Ready. The helpers of the real-node tests
(`tests/node/test_journey.py`, `tests/node/conftest.py`) create, wait for and query the instances,
as the user journey's upgrade test does.

The table goes to stdout and to a new file per run, `benchmarks/results/upgrade-<date>-<commit>.md`
(`--results-dir` elsewhere for smoke runs); progress to stderr; the cluster's and the operator's
logs stay in a temporary folder.

Run from the repository root as root: `make bench-upgrade`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_upgrade.py [--runs 5] [--from 15] [--to 17]
[--methods Logical,Copy] [--rows 100000,14000000]`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import result_files
from benchmarks.bench_node import NODE, node_cluster
from benchmarks.report import Row, exit_on_sigterm, machine_rows, markdown_table, progress, spread_text
from sampledb_localcluster import LocalCluster
from sampledb_localcluster.tools import tool_path
from sampledb_operator.k8s.api import KubeApi, load_client
from tests.integration.conftest import wait_for
from tests.node.test_archiving import node_object_store
from tests.node.test_journey import app_sql, sampledb, start_client, status, upgrade_phase, wait_phase

NAMESPACE = "default"
# The writer's table (its id tells which writes were accepted) and the data present before the upgrade.
SETUP = (
    "create table upgrade_probe (id bigserial primary key, at timestamptz default clock_timestamp()); "
    "create table bulk as select g as id, md5(g::text) as payload from generate_series(1, :rows) g"
)
# One attempt after another, each its own connection (psql), 2 s to connect at most: a Service
# without a ready endpoint refuses at once, a stopping server may hang until the timeout.
WRITER = """
deadline=$(( $(date +%s) + $1 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  s=$(date +%s.%N)
  if out=$(PGCONNECT_TIMEOUT=2 psql -XAtq -v ON_ERROR_STOP=1 \\
      -c "insert into upgrade_probe default values returning id, current_setting('server_version_num')" 2>/dev/null)
  then echo "$s $(date +%s.%N) ok $out"
  else echo "$s $(date +%s.%N) refused"
  fi
  sleep 0.05
done
"""
UPGRADE_TIMEOUT = 900.0
METHODS = ("Logical", "Copy")
ROWS_PER_GIB = 14_000_000  # of SETUP's bulk table, about


@dataclass(frozen=True)
class Attempt:
    """One write attempt of the writer: when it started and ended (node clock), and its outcome."""

    started: float
    ended: float
    row: int | None = None  # the id of the row written; None when refused
    major: int | None = None  # the major of the server that accepted it


def parse_attempt(line: str) -> Attempt | None:
    """A writer line ('<start> <end> ok <id>|<server_version_num>' or '<start> <end> refused'); None if not one."""
    parts = line.split()
    if len(parts) < 3 or parts[2] not in ("ok", "refused"):
        return None
    started, ended = float(parts[0]), float(parts[1])
    if parts[2] == "refused":
        return Attempt(started, ended)
    row, _, version = parts[3].partition("|")
    return Attempt(started, ended, int(row), int(version) // 10000)


@dataclass(frozen=True)
class Outage:
    """What the writer saw around the upgrade."""

    last_old: Attempt  # the last write the old major accepted
    first_new: Attempt  # the first write the new major accepted
    refused: int  # attempts refused in between
    pace: float  # median seconds from one attempt's start to the next

    @property
    def seconds(self) -> float:
        """From the last write accepted by the old major to the first accepted by the new one."""
        return self.first_new.ended - self.last_old.ended


def outage(attempts: Sequence[Attempt], old: int, new: int) -> Outage:
    """The writes stopping and coming back, from the writer's attempts in order; raises if they make no sense."""
    first = next((i for i, a in enumerate(attempts) if a.major == new), None)
    if first is None:
        raise RuntimeError(f"the writer never had a write accepted by PostgreSQL {new}")
    before = [i for i in range(first) if attempts[i].major == old]
    if not before:
        raise RuntimeError(f"the writer had no write accepted by PostgreSQL {old} before the upgrade")
    late = [a for a in attempts[first:] if a.major is not None and a.major != new]
    if late:
        raise RuntimeError(f"PostgreSQL {late[0].major} accepted a write after PostgreSQL {new} had: {late[0]}")
    others = {a.major for a in attempts if a.major not in (None, old, new)}
    if others:
        raise RuntimeError(f"writes accepted by unexpected majors {sorted(others)}")
    last = before[-1]
    starts = [a.started for a in attempts]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    refused = sum(1 for a in attempts[last + 1 : first] if a.major is None)
    return Outage(attempts[last], attempts[first], refused, statistics.median(gaps) if gaps else 0.0)


class Kubectl:
    """The pinned kubectl against the cluster, called as the node tests' `kubectl` fixture is."""

    def __init__(self, kubeconfig: Path) -> None:
        self.argv = [str(tool_path("kubectl")), "--kubeconfig", str(kubeconfig)]

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        """Run it; its stdout, or an error naming the command when it fails (and `check`)."""
        result = subprocess.run([*self.argv, *args], capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout


class Writer:
    """The write loop running in the client Pod, its lines collected as they come."""

    def __init__(self, kubectl: Kubectl, client: str, seconds: float) -> None:
        argv = [*kubectl.argv, "exec", "-n", NAMESPACE, client, "--", "sh", "-c", WRITER, "writer", str(int(seconds))]
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.attempts: list[Attempt] = []
        self._thread = threading.Thread(target=self._read, name="writer", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.process.stdout is not None  # for the type checker: stdout=PIPE
        for line in self.process.stdout:
            attempt = parse_attempt(line)
            if attempt is not None:
                self.attempts.append(attempt)

    def accepted_by(self, major: int) -> bool:
        """Whether a write has been accepted by `major` yet."""
        return any(a.major == major for a in list(self.attempts))

    def stop(self) -> list[Attempt]:
        """End the loop (the exec session with it) and return every attempt."""
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)
        self._thread.join(timeout=10)
        return list(self.attempts)


@dataclass(frozen=True)
class Case:
    """One method at one size."""

    method: str
    rows: int


@dataclass(frozen=True)
class RunFigures:
    """One upgrade, as the writer and the API saw it."""

    outage: Outage
    to_write_stop: float  # from the version change to the last write the old major accepted
    to_ready: float  # from the first write the new major accepted to status Ready, upgrade Succeeded
    mib: float  # the application database's size before the upgrade


def check_rows(kubectl: Kubectl, client: str, attempts: Sequence[Attempt], rows: int) -> None:
    """Every write reported accepted and every row written before the upgrade are in the new major's tables."""
    stored = {int(v) for v in app_sql(kubectl, NAMESPACE, client, "select id from upgrade_probe").split()}
    lost = sorted({a.row for a in attempts if a.row is not None} - stored)
    if lost:
        raise RuntimeError(f"{len(lost)} writes reported accepted are not in the table after the upgrade: {lost[:10]}")
    kept = int(app_sql(kubectl, NAMESPACE, client, "select count(*) from bulk"))
    if kept != rows:
        raise RuntimeError(f"{kept} of the {rows} rows written before the upgrade are there after it")


def one_upgrade(
    api: KubeApi, kubectl: Kubectl, versions: tuple[int, int], name: str, case: Case, store: dict[str, Any] | None
) -> RunFigures:
    """Create an instance of the old major, fill it, start the writer, upgrade by `case`, measure; delete it all."""
    old, new = versions
    gib = case.rows / ROWS_PER_GIB
    spec: dict[str, Any] = {
        "postgres": {"version": old, "upgrade": {"method": case.method}},
        # The old cluster, the new one and the WAL of the load: about three times the data.
        "storage": {"size": f"{max(1, math.ceil(3 * gib + 0.5))}Gi"},
        "deletionPolicy": "Delete",
    }
    if store is not None:
        spec["backup"] = {"objectStore": store}
    api.create(sampledb(name, NAMESPACE, old, **spec))
    client = ""
    try:
        wait_phase(api, NAMESPACE, name, timeout=300)
        client = start_client(api, NAMESPACE, name, old)
        app_sql(kubectl, NAMESPACE, client, SETUP.replace(":rows", str(int(case.rows))))
        mib = int(app_sql(kubectl, NAMESPACE, client, "select pg_database_size(current_database())")) / 2**20
        writer = Writer(kubectl, client, UPGRADE_TIMEOUT + 120)
        try:
            wait_for(lambda: writer.accepted_by(old), timeout=60, what=f"the writer's first write to {old}")
            changed = time.time()
            api.merge_patch("SampleDB", NAMESPACE, name, {"spec": {"postgres": {"version": new}}})
            wait_for(lambda: writer.accepted_by(new), timeout=UPGRADE_TIMEOUT, what=f"a write accepted by {new}",
                     interval=0.5)  # fmt: skip
            wait_for(lambda: upgrade_phase(api, NAMESPACE, name) == "Succeeded", timeout=UPGRADE_TIMEOUT,
                     what="the upgrade to succeed", interval=0.5)  # fmt: skip
            wait_phase(api, NAMESPACE, name, timeout=UPGRADE_TIMEOUT)
            ready = time.time()
        finally:
            attempts = writer.stop()
        used = (status(api, NAMESPACE, name).get("upgrade") or {}).get("method")
        if used != case.method:
            raise RuntimeError(f"{name} was upgraded by {used}, not {case.method}")
        seen = outage(attempts, old, new)
        check_rows(kubectl, client, attempts, case.rows)
        figures = RunFigures(seen, seen.last_old.ended - changed, ready - seen.first_new.ended, mib)
        progress(
            f"{name} ({case.method}, {mib:,.0f} MiB): downtime {seen.seconds:.1f} s ({seen.refused} writes refused, "
            f"one every {seen.pace:.2f} s); change -> write stop {figures.to_write_stop:.1f} s"
        )
        return figures
    finally:
        api.delete("SampleDB", NAMESPACE, name)
        api.delete("SampleDBBackup", NAMESPACE, f"{name}-upgrade{new}-1")  # Copy's, not owned by the SampleDB
        if client:
            api.delete("Pod", NAMESPACE, client)
        wait_for(lambda: api.get("SampleDB", NAMESPACE, name) is None, timeout=300, what=f"{name} deleted")
        wait_for(lambda: api.get("Pod", NAMESPACE, f"{name}-0") is None, timeout=300, what=f"{name}-0 gone")


def case_rows(versions: tuple[int, int], case: Case, runs: Sequence[RunFigures]) -> list[Row]:
    """Downtime (the headline), then the parts around it, each as median ± spread over the runs."""
    mib = statistics.median(r.mib for r in runs)
    section = (
        f"Upgrade {versions[0]} -> {versions[1]} by {case.method}, {case.rows:,} rows ({mib:,.0f} MiB), "
        f"real node (runs: {len(runs)})"
    )
    refused = ", ".join(str(r.outage.refused) for r in runs)
    return [
        Row(
            section,
            "**downtime**: last write accepted by the old major -> first accepted by the new",
            spread_text([r.outage.seconds for r in runs], 1, " s"),
        ),
        Row(
            section, "writer's pace: median time between attempts", spread_text([r.outage.pace for r in runs], 2, " s")
        ),
        Row(section, "writes refused during the downtime (each run)", refused),
        Row(
            section,
            "version changed -> last write accepted by the old major (operator turns; Copy: base backup, check)",
            spread_text([r.to_write_stop for r in runs], 1, " s"),
        ),
        Row(
            section,
            "first write accepted by the new major -> status Ready, upgrade Succeeded",
            spread_text([r.to_ready for r in runs], 1, " s"),
        ),
    ]


def slope_rows(figures: dict[Case, list[RunFigures]]) -> list[Row]:
    """Per method, how the median downtime grows per GiB between the smallest and the largest size."""
    rows = []
    for method in dict.fromkeys(c.method for c in figures):
        cases = sorted((c for c in figures if c.method == method), key=lambda c: c.rows)
        if len(cases) < 2:
            continue
        small, large = figures[cases[0]], figures[cases[-1]]
        gib = (statistics.median(r.mib for r in large) - statistics.median(r.mib for r in small)) / 1024
        seconds = statistics.median(r.outage.seconds for r in large) - statistics.median(
            r.outage.seconds for r in small
        )
        rows.append(
            Row("Downtime by size", f"{method}: growth per GiB of database (medians)", f"{seconds / gib:.1f} s")
        )
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="upgrades to measure, one after the other (default 5)")
    parser.add_argument("--from", dest="old", type=int, default=15, help="major to upgrade from (default 15)")
    parser.add_argument("--to", dest="new", type=int, default=17, help="major to upgrade to (default 17)")
    parser.add_argument(
        "--rows",
        default="100000,14000000",
        help="sizes: rows in the database before, comma-separated (default 100000,14000000)",
    )
    parser.add_argument("--methods", default="Logical,Copy", help="upgrade methods, comma-separated (default both)")
    result_files.add_results_dir(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.new <= args.old:
        parser.error("--runs must be at least 1 and --to above --from")
    try:
        args.rows = [int(r) for r in args.rows.split(",")]
    except ValueError:
        parser.error(f"--rows takes counts of rows separated by commas, not {args.rows!r}")
    args.methods = args.methods.split(",")
    if not set(args.methods) <= set(METHODS):
        parser.error(f"--methods takes some of {', '.join(METHODS)}")
    return args


@contextlib.contextmanager
def store_for(
    cluster: LocalCluster, api: KubeApi, methods: Sequence[str], tmp: Path
) -> Iterator[dict[str, Any] | None]:
    """The objectStore every instance archives to when Copy is measured (its base backup needs one); else None."""
    if "Copy" not in methods:
        yield None
        return
    with node_object_store(api, load_client(str(cluster.kubeconfig)), cluster, NAMESPACE, tmp / "store") as found:
        yield found[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table and write it to a results file of its own."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    path = result_files.new_file("upgrade", args.results_dir)
    machine = machine_rows(("node", NODE))
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-upgrade-"))  # kept: the cluster's and the operator's logs
    progress(f"logs in {tmp}")
    versions = (args.old, args.new)
    cases = [Case(method, count) for count in args.rows for method in args.methods]
    figures: dict[Case, list[RunFigures]] = {case: [] for case in cases}
    with node_cluster(list(versions), tmp, rows) as (cluster, api), store_for(cluster, api, args.methods, tmp) as store:
        kubectl = Kubectl(cluster.kubeconfig)
        for run, (index, case) in itertools.product(range(args.runs), enumerate(cases)):
            figures[case].append(one_upgrade(api, kubectl, versions, f"up{run}-{index}", case, store))
    measured = [row for case in cases for row in case_rows(versions, case, figures[case])]
    table = markdown_table([*measured, *slope_rows(figures), *rows, *machine])
    given = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"make bench-upgrade BENCH_UPGRADE_ARGS='{given}'" if given else "make bench-upgrade"
    path.write_text(
        result_files.header("The real node: major upgrade downtime", path, command) + table, encoding="utf-8"
    )
    sys.stdout.write(table)
    progress(f"table written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

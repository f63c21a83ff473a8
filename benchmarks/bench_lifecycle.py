"""Benchmark of the SampleDB lifecycle Jobs' scripts on real PostgreSQL: backup, restore, major upgrade.

Why (issue #5): backups, restores and major upgrades run through shell scripts the operator puts in
Jobs. This measures, and only measures (nothing asserts on time), what those scripts cost:

1. Cost of our scripts against the plain tools on the same data, side by side in one run: at
   least 5 runs of each, interleaved (ours, plain, ours, plain, ...). Our scripts do strictly more
   than the plain tools (a checksum, a rename, a summary; role and database set-up), so they cannot
   honestly be reported faster: the headline is the ratio ours/plain of CPU seconds (user +
   system of the script's processes and of the server backends that served them), one ratio per
   interleaved pair, target 1.1 or better, judged by the rule of `benchmarks/report.py` (a
   verdict only when the spread over the pairs is smaller than the distance to 1.1). Wall-clock
   ratios are secondary: on a shared 2-core machine they move by 30 % and more between runs.
   Both variants run on the same host PostgreSQL server (the oldest installed
   major, normally 15) with the same client binaries, the same user (`postgres`, via runuser, as the
   tests run scripts) and the same disk:
   - backup: our backup Job's script (`backup_script`: pg_dump custom format, SHA-256, rename, JSON
     summary) with verify off, against `pg_dump --format=custom --compress=6`;
   - backup with verify on (our script also restores the dump into a scratch database and drops it)
     against the same done by hand (pg_dump, createdb, pg_restore, dropdb), as its own row;
   - restore: the initial-configuration Job's script with RESTORE_FILE (create role and database,
     `pg_restore --single-transaction` into it) into a fresh database, against `createdb` plus
     `pg_restore --no-owner --single-transaction --exit-on-error`.
   Between two timed runs (untimed): scratch databases dropped, CHECKPOINT, sync, so one run's
   writes are not paid for by the next. Throughput is the database's size on disk
   (pg_database_size: tables, TOAST and indexes) divided by the wall-clock time. CPU seconds of a
   run: of the script's processes (getrusage of waited-for children) and of the server backends
   that served it (the postmaster's time of exited children), which a loaded machine distorts much
   less than wall clock. Also the sha256sum step alone, and one reference pg_dump at
   `--compress=0` and `1` (what zlib level 6 costs).
   The data is a realistic application database generated server-side with generate_series
   (customers, products, orders, order lines, order events with jsonb; primary keys, secondary
   and unique indexes, foreign keys; vacuumed and frozen before timing), of `--size-mb` on disk.
2. The time each step of a major upgrade (old major -> 17) takes on the same database, through
   the upgrade Jobs' scripts run as their Jobs run them (tests/postgres/test_upgrade_scripts.py):
   the old major on the host, the new one in the podman image `localhost/sampledb-postgres:17`.
   BACKUP (from its write stop), CHECK, RUN, and the restart (the server's start script in the
   image, until an INSERT by the application role succeeds), and their sum. This is NOT the
   downtime a user sees: the StatefulSet's scale-down and scale-up, the operator's reconcile turns
   between Jobs and Pod scheduling are not in it. The downtime is measured end to end, on the real
   node with a writer, by `benchmarks/bench_upgrade.py`.

The table (with the machine it ran on and the load average at start and end) goes to stdout and
to a new file per run, `benchmarks/results/lifecycle-<date>-<commit>.md` (`--results-dir`
elsewhere for smoke runs); progress goes to stderr. Servers started here are stopped and the work
folder (several times the database size) is removed at the end, on an exception, on Ctrl-C and on
SIGTERM (`--keep` keeps the folder).

Run from the repository root, as root (scripts run as the `postgres` user): `make bench-lifecycle`,
or `PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_lifecycle.py [--quick] [--size-mb N]
[--reps N (>= 5)] [--part all|comparison|upgrade]`. Needs postgresql-15 (or another major below 17)
installed and the image from `make base-images`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import report, result_files
from benchmarks.report import (
    Row,
    Target,
    exit_on_sigterm,
    judge,
    load_average,
    markdown_table,
    pair_ratios,
    progress,
    spread_text,
)
from sampledb_operator.jobs import upgrade
from sampledb_operator.jobs.backup import backup_env, backup_script
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.jobs.upgrade import Step
from sampledb_operator.resources.instance import Instance
from tests.postgres.conftest import (
    IMAGE,
    PODMAN_RUN,
    Runtime,
    Server,
    client_bin,
    image_majors,
    installed_majors,
    start_server,
    stop_server,
)
from tests.postgres.test_lifecycle_scripts import SHOP, env_of, folder
from tests.postgres.test_scripts import APP_PASSWORD, job_env, secret_data
from tests.postgres.test_upgrade_scripts import Upgrade, restart
from tests.unit.conftest import make_instance

NEW_MAJOR = 17
SUPERUSER_PASSWORD = "superuser-secret-Pw1"  # noqa: S105 - a throwaway local server
APP = {"user": "shopper", "password": APP_PASSWORD, "database": "shop"}
RESTORED_DATABASE = "restored"  # the fresh database both restore variants fill
PLAIN_VERIFY_DATABASE = "plain_verify"
RATIO_TARGET = 1.1
MIN_REPS = 5  # issue #14: a spread needs runs; fewer than 5 pairs says little on a shared machine
MIB = 1024 * 1024
# Size on disk of the schema below: about 12 MiB of fixed part (products, catalogs) and 1,270 orders
# (with their lines, events and customers) per MiB. The size is reported as measured.
FIXED_MIB = 12
ORDERS_PER_MIB = 1270
LINES_PER_ORDER = 3
EVENTS_PER_ORDER = 2
PRODUCTS = 20_000


# -- output ----------------------------------------------------------------------------------------

STARTED = time.monotonic()


def seconds(value: float) -> str:
    """A duration with a precision that suits its size."""
    return f"{value:.2f} s" if value < 10 else f"{value:.1f} s"


def size(count: int) -> str:
    """Bytes as MiB."""
    return f"{count / MIB:,.1f} MiB"


NOTES = """
Notes:
- Times are of the whole script or command as a Job container runs it (runuser as `postgres` on
  the host, `podman run` for the PostgreSQL 17 image), on a shared machine: see the load averages.
  MiB/s is the source database's size on disk (tables, TOAST, indexes) per wall-clock second.
  Dumps and data fit in the page cache.
- Comparisons: the runs are interleaved (ours, plain, ours, plain, ...) and each pair gives one
  ratio. A figure reads "median ± spread (n = pairs: each)", the spread being the largest distance
  from the median to a pair. The headline is the CPU ratio (3): our scripts do strictly more work
  than the plain tools, so a wall-clock ratio below 1 is the machine's noise, not a speed-up. A
  target gets a verdict only when the spread is smaller than the distance to it
  (`benchmarks/report.py`), else "inconclusive".
- (1) Not the downtime a user sees: the StatefulSet's scale-down and scale-up are not in it (Pod
  termination, the old server's shutdown reported apart, the new Pod's scheduling and container
  start), nor the operator's reconcile turns and one Pod start per Job between steps, nor moving
  and chown-ing the data directory between steps (harness work). `make bench-upgrade` measures
  the downtime end to end on the real node.
- (2) The wall clock from the write stop to the first accepted write, with everything between the
  steps (old server shutdown, harness work).
- (3) CPU seconds (user + system) of the script's processes (runuser, sh, pg_dump, sha256sum,
  pg_restore, psql: getrusage of waited-for children) and of the server backends that served them
  (the postmaster's cumulative time of exited children; includes any autovacuum worker that ended
  meanwhile). Less sensitive to the machine's load than wall clock, which waits for a core.
"""


# -- machine ---------------------------------------------------------------------------------------


def _output(argv: Sequence[str]) -> str:
    """A command's first line of output, or '?' when it fails."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
        return result.stdout.strip().splitlines()[0]
    return "?"


def filesystem(path: Path) -> str:
    """Type, device and mount point of the filesystem holding `path`."""
    line = _output(["sh", "-c", f"df -PT {shlex.quote(str(path))} | tail -n 1"])
    parts = line.split()
    return f"{parts[1]} on {parts[0]} (mounted at {parts[-1]})" if len(parts) >= 7 else line


def machine_rows(workdir: Path, old: Runtime, new: Runtime) -> list[Row]:
    """The machine, the disk the data and dumps are on, and both PostgreSQL versions."""
    bin_dir = Path("/usr/lib/postgresql") / str(old.major) / "bin"
    image = new.image or "?"
    return report.machine_rows(
        ("disk of the data and the dumps", filesystem(workdir)),
        (f"PostgreSQL {old.major} (host server and client binaries)", _output([str(bin_dir / "pg_dump"), "--version"])),
        (f"PostgreSQL {new.major} ({image}, podman)", _output([*PODMAN_RUN, image, "postgres", "--version"])),
    )


# -- running scripts -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """One run of a script: wall clock, and CPU seconds (user + system) of its processes and of the server."""

    seconds: float
    client_cpu: float  # the script's own processes (pg_dump, sha256sum, pg_restore, psql, ...)
    server_cpu: float | None  # the server backends that served it (None when not measurable)
    stdout: str


def children_cpu() -> float:
    """CPU seconds of this process's waited-for descendants (runuser, the shell, the tools)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cpu(server: Server) -> float | None:
    """CPU seconds of the server's exited children (backends of finished sessions), from the postmaster.

    Only on the host (a container's postmaster.pid holds a pid of its own namespace).
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        if server.runtime.image is None:
            pid = int((server.root / "data" / "pgdata" / "postmaster.pid").read_text().split()[0])
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime, cstime
    return None


def run_timed(server: Server, script: str, env: dict[str, str], what: str) -> Timing:
    """Run a script as the Job container would (see Server.command): its wall clock, CPU and stdout.

    Not Server.run_script: its 180 s timeout is for tests, and a 1 GiB dump can take longer. Nothing
    else may run children meanwhile (the CPU figures are differences of cumulative counters).
    """
    cpu, backends = children_cpu(), server_cpu(server)
    started = time.perf_counter()
    result = subprocess.run(server.command(script, env), capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-3000:]}")
    client = children_cpu() - cpu
    time.sleep(0.3)  # the postmaster reaps the finished backends
    after = server_cpu(server)
    served = None if backends is None or after is None else after - backends
    return Timing(elapsed, client, served, result.stdout)


def sql(
    server: Server, statements: str, *, user: str = "postgres", password: str | None = None, db: str = "postgres"
) -> str:
    """Statements through psql over TCP, one by one (so VACUUM works), without a timeout (Server.psql has 60 s)."""
    env = {**os.environ, "PGPASSWORD": password or server.superuser_password, "PGCONNECT_TIMEOUT": "10"}
    argv = [str(client_bin() / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
            "-p", str(server.port), "-U", user, "-d", db, "-f", "-"]  # fmt: skip
    result = subprocess.run(argv, input=statements, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"psql failed: {result.stderr[-3000:]}")
    return result.stdout.strip()


def settle(server: Server) -> None:
    """Untimed, between two timed runs: write out what the previous run dirtied."""
    sql(server, "CHECKPOINT;")
    os.sync()


# -- the data --------------------------------------------------------------------------------------


def generation_sql(orders: int) -> str:
    """A realistic application schema, filled server-side, then indexed, constrained and frozen."""
    customers = max(1000, orders // 10)
    return f"""
SELECT setseed(0.5);
SET maintenance_work_mem = '256MB';
CREATE TABLE customers (id bigint NOT NULL, email text NOT NULL, full_name text NOT NULL,
  country char(2) NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE products (id int NOT NULL, sku text NOT NULL, title text NOT NULL,
  price numeric(10,2) NOT NULL, attributes jsonb NOT NULL);
CREATE TABLE orders (id bigint NOT NULL, customer_id bigint NOT NULL, placed_at timestamptz NOT NULL,
  status text NOT NULL, total numeric(12,2) NOT NULL, shipping_address text NOT NULL);
CREATE TABLE order_lines (order_id bigint NOT NULL, line smallint NOT NULL, product_id int NOT NULL,
  quantity int NOT NULL, unit_price numeric(10,2) NOT NULL);
CREATE TABLE order_events (id bigint NOT NULL, order_id bigint NOT NULL, kind text NOT NULL,
  at timestamptz NOT NULL, payload jsonb NOT NULL);
INSERT INTO products SELECT g, 'SKU-' || lpad(g::text, 6, '0'), 'Product ' || left(md5(g::text), 12),
  round((1 + random() * 500)::numeric, 2),
  jsonb_build_object('color', (ARRAY['red', 'green', 'blue', 'black'])[1 + g % 4], 'weight_g', g % 5000,
                     'tags', jsonb_build_array('t' || g % 17, 't' || g % 23))
  FROM generate_series(1, {PRODUCTS}) g;
INSERT INTO customers SELECT g, 'user' || g || '@example.com', initcap(left(md5(g::text), 10)) || ' '
  || initcap(right(md5(g::text), 12)), (ARRAY['DE', 'FR', 'US', 'GB', 'JP', 'BR'])[1 + g % 6],
  timestamptz '2020-01-01' + g * interval '17 seconds'
  FROM generate_series(1, {customers}) g;
INSERT INTO orders SELECT g, 1 + (random() * ({customers} - 1))::bigint,
  timestamptz '2021-01-01' + g * interval '11 seconds',
  (ARRAY['placed', 'paid', 'shipped', 'delivered', 'cancelled'])[1 + (random() * 4)::int],
  round((10 + random() * 900)::numeric, 2), (g % 997) || ' ' || left(md5(g::text), 14) || ' Street, '
  || (ARRAY['Berlin', 'Paris', 'Austin', 'Leeds', 'Osaka', 'Recife'])[1 + g % 6]
  FROM generate_series(1, {orders}) g;
INSERT INTO order_lines SELECT o, l, 1 + (random() * ({PRODUCTS} - 1))::int, 1 + (random() * 4)::int,
  round((1 + random() * 200)::numeric, 2)
  FROM generate_series(1, {orders}) o, generate_series(1, {LINES_PER_ORDER}) l;
INSERT INTO order_events SELECT g, 1 + (g - 1) / {EVENTS_PER_ORDER},
  (ARRAY['created', 'paid', 'packed', 'shipped'])[1 + g % 4],
  timestamptz '2021-01-01' + g * interval '5 seconds',
  jsonb_build_object('by', 'system', 'ip', '10.0.' || g % 256 || '.' || g % 97, 'ref', left(md5(g::text), 16))
  FROM generate_series(1, {orders * EVENTS_PER_ORDER}) g;
ALTER TABLE customers ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX customers_email ON customers (email);
ALTER TABLE products ADD PRIMARY KEY (id);
CREATE UNIQUE INDEX products_sku ON products (sku);
ALTER TABLE orders ADD PRIMARY KEY (id);
CREATE INDEX orders_customer ON orders (customer_id);
CREATE INDEX orders_placed ON orders (placed_at);
ALTER TABLE order_lines ADD PRIMARY KEY (order_id, line);
CREATE INDEX order_lines_product ON order_lines (product_id);
ALTER TABLE order_events ADD PRIMARY KEY (id);
CREATE INDEX order_events_order ON order_events (order_id);
ALTER TABLE orders ADD FOREIGN KEY (customer_id) REFERENCES customers;
ALTER TABLE order_lines ADD FOREIGN KEY (order_id) REFERENCES orders, ADD FOREIGN KEY (product_id) REFERENCES products;
ALTER TABLE order_events ADD FOREIGN KEY (order_id) REFERENCES orders;
CREATE VIEW open_orders AS SELECT * FROM orders WHERE status IN ('placed', 'paid');
VACUUM (FREEZE, ANALYZE);
"""  # noqa: S608 - fixed statements, only integers interpolated


@dataclass(frozen=True)
class Data:
    """The application database as generated."""

    orders: int
    bytes: int
    tables: dict[str, int]
    generation: float


TABLES = ("customers", "products", "orders", "order_lines", "order_events")


def row_counts(server: Server, db: str) -> dict[str, int]:
    """Rows per table of the application's schema."""
    query = " UNION ALL ".join(f"SELECT '{t}', count(*) FROM {t}" for t in TABLES)  # noqa: S608 - fixed names
    out = sql(server, query + ";", db=db)
    return {name: int(rows) for name, rows in (line.split("|") for line in out.splitlines())}


def database_bytes(server: Server, db: str) -> int:
    """The database's size on disk."""
    return int(sql(server, f"SELECT pg_database_size('{db}');"))


def generate(server: Server, size_mb: int) -> Data:
    """Fill the application database (as its owner) with about `size_mb` MiB on disk."""
    orders = max(10_000, (size_mb - FIXED_MIB) * ORDERS_PER_MIB)
    progress(f"generating about {size_mb} MiB: {orders:,} orders, {orders * LINES_PER_ORDER:,} order lines, ...")
    started = time.perf_counter()
    sql(server, generation_sql(orders), user=APP["user"], password=APP["password"], db=APP["database"])
    sql(server, "CHECKPOINT;")
    elapsed = time.perf_counter() - started
    data = Data(orders, database_bytes(server, "shop"), row_counts(server, "shop"), elapsed)
    progress(f"generated {size(data.bytes)} on disk in {elapsed:.0f} s")
    return data


def data_rows(data: Data) -> list[Row]:
    """What was measured on."""
    section = "Data (database `shop`)"
    tables = ", ".join(f"{name} {rows:,}" for name, rows in data.tables.items())
    return [
        Row(section, "size on disk (pg_database_size)", size(data.bytes)),
        Row(section, "rows per table (5 tables, 11 indexes, 4 foreign keys, 1 view)", tables),
        Row(section, "generated server-side (generate_series) and frozen in", seconds(data.generation)),
    ]


# -- the servers -----------------------------------------------------------------------------------


@dataclass
class Lab:
    """The work folder, the instance and the servers started in it (stopped at the end)."""

    workdir: Path
    instance: Instance = field(default_factory=lambda: make_instance(SHOP))
    servers: list[Server] = field(default_factory=list)

    def start(self, runtime: Runtime, name: str) -> Server:
        """A server started by the StatefulSet's start script, with the application role and database."""
        root = self.workdir / name
        root.mkdir()
        progress(f"starting PostgreSQL {runtime.id} ({name})")
        server = start_server(self.instance, runtime, root, SUPERUSER_PASSWORD, self.workdir)
        self.servers.append(server)
        job = init_job(self.instance)
        script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
        run_timed(server, script, job_env(job, server, secret_data(self.instance, server)), "the init Job's script")
        return server

    def stop(self) -> None:
        """Stop every server started here."""
        for server in self.servers:
            stop_server(server)


# -- 1. ours against the plain tools ---------------------------------------------------------------


@dataclass
class Variant:
    """One side of a comparison: a timed run, and what to do after it (untimed)."""

    name: str
    run: Callable[[], Timing]
    timings: list[Timing] = field(default_factory=list)

    @property
    def times(self) -> list[float]:
        """Wall-clock seconds of each run."""
        return [t.seconds for t in self.timings]

    def cpu(self) -> tuple[float, float | None]:
        """Median CPU seconds of the script's processes and of the server's backends."""
        served = [t.server_cpu for t in self.timings if t.server_cpu is not None]
        return statistics.median(t.client_cpu for t in self.timings), statistics.median(served) if served else None


def interleaved(server: Server, variants: tuple[Variant, Variant], reps: int, what: str) -> None:
    """`reps` runs of each, interleaved (ours, plain, ours, plain, ...); a settled server before each run."""
    for rep in range(reps):
        for variant in variants:
            settle(server)
            variant.timings.append(variant.run())
            last = variant.timings[-1]
            progress(
                f"{what} {rep + 1}/{reps}, {variant.name}: {last.seconds:.1f} s (CPU: script {last.client_cpu:.1f} s, "
                f"server {last.server_cpu or 0:.1f} s; load {load_average()})"
            )


def cpu_seconds(timing: Timing) -> float:
    """CPU seconds of one run: the script's processes and the server backends that served it."""
    if timing.server_cpu is None:
        raise RuntimeError("no server CPU figure: the comparison needs the host server (its postmaster's counters)")
    return timing.client_cpu + timing.server_cpu


def compared_rows(section: str, ours: Variant, plain: Variant, data_bytes: int) -> list[Row]:
    """The CPU ratio per interleaved pair (headline, judged), then CPU and wall clock of each side."""
    cpu = {variant.name: [cpu_seconds(t) for t in variant.timings] for variant in (ours, plain)}
    headline = judge(pair_ratios(cpu[ours.name], cpu[plain.name]), Target(RATIO_TARGET, f"<= {RATIO_TARGET}"))
    client = pair_ratios([t.client_cpu for t in ours.timings], [t.client_cpu for t in plain.timings])
    wall = pair_ratios(ours.times, plain.times)
    headline_what = "**ratio ours/plain of CPU seconds** (script + server, per pair) (3)"
    secondary = "no verdict: ours does strictly more work"
    rows = [
        Row(section, headline_what, headline.value(3), headline.cell(3)),
        Row(section, "ratio ours/plain of CPU seconds, script's processes only (per pair)", spread_text(client, 3)),
        Row(section, "ratio ours/plain of wall clock (per pair; secondary)", spread_text(wall, 3), secondary),
    ]
    for variant in (ours, plain):
        client_median, served = variant.cpu()
        value = f"{seconds(client_median)} + {seconds(served) if served is not None else '?'}"
        rows.append(Row(section, f"{variant.name.split(' ')[0]}: CPU median, script's processes + server (3)", value))
    for variant in (ours, plain):
        median = statistics.median(variant.times)
        value = f"{spread_text(variant.times, 1, ' s')}, {data_bytes / MIB / median:.1f} MiB/s"
        rows.append(Row(section, f"{variant.name}: wall clock", value))
    return rows


@dataclass
class Comparison:
    """Part 1: everything it needs on one server."""

    lab: Lab
    server: Server
    data: Data
    reps: int

    def __post_init__(self) -> None:
        self.dumps = folder(self.server, self.lab.workdir, "dumps")
        self.log = self.lab.workdir / "backup-termination-log"
        self.log.touch()
        self.server.chown(self.log)
        self.superuser = self.server.superuser_env()
        self.source = self.dumps / "source.dump"  # what both restore variants read
        self.sizes: dict[str, int] = {}

    def backup_env(self, *, verify: bool) -> dict[str, str]:
        """The backup Job's environment, aimed at the server."""
        instance = self.lab.instance
        return env_of(instance, self.server, backup_env(instance, label="bench", verify=verify, retain=None))

    def ours_backup(self, *, verify: bool) -> Timing:
        """Our backup Job's script; its dump becomes the restore source, the previous one is removed."""
        script = backup_script(mount=str(self.dumps), termination_log=str(self.log))
        timing = run_timed(self.server, script, self.backup_env(verify=verify), "our backup script")
        summary = json.loads(self.log.read_text())
        if summary["verified"] is not verify:
            raise RuntimeError(f"our backup script reported {summary}")
        dump = self.dumps / summary["file"]
        self.sizes["ours"] = dump.stat().st_size
        dump.replace(self.source)
        dump.with_suffix(".sha256").unlink()
        return timing

    def plain_backup(self, *, verify: bool) -> Timing:
        """pg_dump as the backup script calls it; with verify, the same restore check by hand."""
        target = self.dumps / "plain.dump"
        script = f'pg_dump --format=custom --compress=6 --no-password --file="{target}" shop'
        if verify:
            db = PLAIN_VERIFY_DATABASE
            script += f' && createdb {db} && pg_restore --exit-on-error --no-owner --dbname={db} "{target}"'
            script += f" && dropdb {db}"
        timing = run_timed(self.server, script, self.superuser, "plain pg_dump")
        self.sizes["plain"] = target.stat().st_size
        target.unlink()
        return timing

    def ours_restore(self) -> Timing:
        """The init Job's script with RESTORE_FILE, into a database it creates."""
        instance = make_instance({"database": {"name": RESTORED_DATABASE, "owner": APP["user"]}})
        job = init_job(instance, ("backups", self.source.name))
        env = job_env(job, self.server, secret_data(instance, self.server))
        env["RESTORE_FILE"] = str(self.source)  # where the claim is mounted here
        script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
        timing = run_timed(self.server, script, env, "the init Job's restore")
        if "restoring" not in timing.stdout:
            raise RuntimeError(f"the init Job did not restore: {timing.stdout}")
        self.check_restored()
        return timing

    def plain_restore(self) -> Timing:
        """Plain `createdb`, then pg_restore with the flags of the init Job (less --role)."""
        db = RESTORED_DATABASE
        script = (
            f'createdb {db} && pg_restore --no-owner --single-transaction --exit-on-error --dbname={db} "{self.source}"'
        )
        timing = run_timed(self.server, script, self.superuser, "plain pg_restore")
        self.check_restored()
        return timing

    def check_restored(self) -> None:
        """Untimed: every row arrived; then the database goes again."""
        restored = row_counts(self.server, RESTORED_DATABASE)
        if restored != self.data.tables:
            raise RuntimeError(f"the restore is incomplete: {restored} != {self.data.tables}")
        self.sizes["restored"] = database_bytes(self.server, RESTORED_DATABASE)
        sql(self.server, f"DROP DATABASE {RESTORED_DATABASE};")

    def sha256_seconds(self) -> list[float]:
        """The backup script's checksum step alone, on the same dump (page-cached, as in the script)."""
        script = f'sha256sum "{self.source}" > /dev/null'
        return [run_timed(self.server, script, self.superuser, "sha256sum").seconds for _ in range(self.reps)]

    def compression_reference(self) -> str:
        """For reference, one plain pg_dump at --compress=0 and 1: what zlib level 6 costs (not our choice's test)."""
        target, figures = self.dumps / "reference.dump", []
        for level in (0, 1):
            settle(self.server)
            script = f'pg_dump --format=custom --compress={level} --no-password --file="{target}" shop'
            timing = run_timed(self.server, script, self.superuser, "reference pg_dump")
            figures.append(
                f"{level}: {seconds(timing.seconds)}, CPU {seconds(timing.client_cpu)}, {size(target.stat().st_size)}"
            )
            target.unlink()
            progress(f"reference pg_dump --compress={level}: {timing.seconds:.1f} s")
        return "; ".join(figures)

    def rows(self) -> list[Row]:
        """Backup, backup with verify and restore, each ours vs plain."""
        data_bytes, reps = self.data.bytes, self.reps
        progress(f"backup: our script vs plain pg_dump, {reps} runs each, interleaved")
        ours = Variant("ours (backup Job script, verify off)", lambda: self.ours_backup(verify=False))
        plain = Variant("plain `pg_dump --format=custom --compress=6`", lambda: self.plain_backup(verify=False))
        interleaved(self.server, (ours, plain), reps, "backup")
        section = f"Backup, PostgreSQL {self.server.runtime.major} ({reps} runs each, interleaved ours, plain, ...)"
        rows = compared_rows(section, ours, plain, data_bytes)
        sha = self.sha256_seconds()
        rows += [
            Row(section, "dump size: ours / plain", f"{size(self.sizes['ours'])} / {size(self.sizes['plain'])}"),
            Row(
                section,
                "of which sha256sum of the dump alone: median (runs)",
                f"{seconds(statistics.median(sha))} ({', '.join(f'{t:.2f}' for t in sha)})",
            ),
            Row(
                section,
                "reference, plain pg_dump, 1 run each at --compress= (time, script CPU, dump size)",
                self.compression_reference(),
            ),
        ]

        progress(f"backup with verify: our script vs pg_dump + createdb + pg_restore + dropdb, {reps} runs each")
        ours = Variant("ours (backup Job script, verify on)", lambda: self.ours_backup(verify=True))
        plain = Variant("plain pg_dump, createdb, pg_restore, dropdb", lambda: self.plain_backup(verify=True))
        interleaved(self.server, (ours, plain), reps, "backup with verify")
        section = f"Backup with verify (dump + restore into a scratch database + drop; {reps} runs each)"
        rows += compared_rows(section, ours, plain, data_bytes)

        progress(f"restore: the init Job's restore step vs plain pg_restore, {reps} runs each, interleaved")
        ours = Variant("ours (init Job script, RESTORE_FILE)", self.ours_restore)
        plain = Variant(
            "plain `createdb` + `pg_restore --no-owner --single-transaction --exit-on-error`", self.plain_restore
        )
        interleaved(self.server, (ours, plain), reps, "restore")
        section = (
            f"Restore into a fresh database, PostgreSQL {self.server.runtime.major} ({reps} runs each, interleaved)"
        )
        rows += compared_rows(section, ours, plain, data_bytes)
        rows.append(Row(section, "restored database size on disk", size(self.sizes["restored"])))
        return rows


# -- 2. major-upgrade downtime ---------------------------------------------------------------------


@dataclass(frozen=True)
class StepRun:
    """One upgrade step: its duration, its summary, and when chosen lines of its output appeared."""

    started: float  # time.perf_counter() at the start
    seconds: float
    summary: dict[str, Any]
    marks: dict[str, float]


def run_step(steps: Upgrade, step: Step, runtime: Runtime, server: Server | None, marks: Sequence[str] = ()) -> StepRun:
    """Run one step's script as its Job would (Upgrade.run without its test timeout), timing its output lines.

    Handing the folders to the runtime's postgres user (harness work: in a cluster every Pod runs as
    the same uid) happens before the clock starts.
    """
    steps.log.write_text("")
    runner = Server(runtime, steps.root, 0, "", steps.workdir)
    for path in [steps.backups, steps.log, *([steps.root / "data"] if step in upgrade.OFFLINE_STEPS else [])]:
        runner.chown(path)
    argv = runner.command(upgrade.SCRIPTS[step], steps.env(server))
    seen: dict[str, float] = {}
    output = steps.workdir / f"upgrade-{step.value}.log"
    started = time.perf_counter()
    with (
        output.open("w") as log,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc,
    ):
        assert proc.stdout is not None  # for the type checker: stdout=PIPE
        for line in proc.stdout:
            now = time.perf_counter() - started
            log.write(f"{now:8.2f} {line}")
            seen |= {mark: now for mark in marks if mark in line and mark not in seen}
        code = proc.wait()
    elapsed = time.perf_counter() - started
    text = steps.log.read_text().strip()
    summary = json.loads(text) if text else {}
    if code != 0:
        raise RuntimeError(f"upgrade step {step.value} failed (exit {code}): {summary}; output in {output}")
    missing = [mark for mark in marks if mark not in seen]
    if missing:
        raise RuntimeError(f"upgrade step {step.value} did not print {missing}; output in {output}")
    return StepRun(started, elapsed, summary, seen)


def first_write(server: Server) -> None:
    """An INSERT by the application role: the moment the database serves writes again."""
    server.psql(
        "CREATE TABLE IF NOT EXISTS upgrade_probe (at timestamptz); INSERT INTO upgrade_probe VALUES (now())", **APP
    )


def upgrade_rows(lab: Lab, old: Server, new_runtime: Runtime, data: Data) -> list[Row]:
    """Part 2: BACKUP, CHECK, RUN, restart on the new major until a write is accepted; VERIFY after."""
    old_runtime = old.runtime
    steps = Upgrade(lab.instance, old, lab.workdir, new_runtime)
    stopping, dumping = "stopping writes", "dumping every database"
    progress(f"upgrade {old_runtime.major} -> {new_runtime.major}: BACKUP (write stop, pg_dumpall, row counts)")
    backup = run_step(steps, Step.BACKUP, old_runtime, old, (stopping, dumping))
    write_stop = backup.started + backup.marks[stopping]
    try:
        first_write(old)
    except RuntimeError as error:
        if "read-only transaction" not in str(error):
            raise
    else:
        raise RuntimeError("the old server still accepted a write after the BACKUP step")
    progress(f"BACKUP done in {backup.seconds:.1f} s: {backup.summary}; stopping the old server (scale-down)")
    started = time.perf_counter()
    stop_server(old)
    shutdown = time.perf_counter() - started
    progress("CHECK (in the new image)")
    check = run_step(steps, Step.CHECK, new_runtime, None)
    creating, restoring = "creating the PostgreSQL", "restoring"
    progress("RUN (initdb, restore into a private server, row counts, swap)")
    run = run_step(steps, Step.RUN, new_runtime, None, (creating, restoring))
    progress(f"RUN done in {run.seconds:.1f} s; starting PostgreSQL {new_runtime.major} on the upgraded data")
    started = time.perf_counter()
    new = restart(old, new_runtime, lab.instance, "db-new")
    lab.servers.append(new)
    ready = time.perf_counter() - started
    first_write(new)
    written = time.perf_counter()
    restart_seconds = written - started
    wall = written - write_stop
    progress(f"PostgreSQL {new_runtime.major} accepted a write {restart_seconds:.1f} s after its start; VERIFY")
    verify = run_step(steps, Step.VERIFY, new_runtime, new)
    started = time.perf_counter()
    restored = row_counts(new, "shop")
    counting = time.perf_counter() - started  # one pass of what table_counts does, from the host
    if restored != data.tables:
        raise RuntimeError(f"rows differ after the upgrade: {restored} != {data.tables}")
    dump_bytes = steps.dump.stat().st_size
    # On the host, as BACKUP runs it (the old server is stopped; only its runtime is used).
    sha = run_timed(old, f'sha256sum "{steps.dump}" > /dev/null', {}, "sha256sum").seconds

    backup_down = backup.seconds - backup.marks[stopping]
    steps_total = backup_down + check.seconds + run.seconds + restart_seconds
    section = f"Upgrade {old_runtime.major} -> {new_runtime.major} steps, {size(data.bytes)} database (1)"
    return [
        Row(
            section,
            "BACKUP from its write stop: write stop (incl. `sleep 1`, sessions ended)",
            seconds(backup.marks[dumping] - backup.marks[stopping]),
        ),
        Row(
            section,
            "BACKUP: pg_dumpall, row counts of every table, sha256sum, rename",
            seconds(backup.seconds - backup.marks[dumping]),
        ),
        Row(section, "BACKUP step (from the write stop)", seconds(backup_down)),
        Row(section, "CHECK step (new image: major, tools, sha256sum -c of the dump)", seconds(check.seconds)),
        Row(section, "RUN: initdb and private server start", seconds(run.marks[restoring] - run.marks[creating])),
        Row(
            section,
            "RUN: psql restore of the dump, row counts, shutdown, sync, swap",
            seconds(run.seconds - run.marks[restoring]),
        ),
        Row(section, "RUN step (incl. container start)", seconds(run.seconds)),
        Row(
            section,
            f"restart: PostgreSQL {new_runtime.major} start script until ready / until a write is accepted",
            f"{seconds(ready)} / {seconds(restart_seconds)}",
        ),
        Row(
            section,
            "sum of the steps' times from the write stop to a write accepted (NOT the downtime: (1))",
            seconds(steps_total),
        ),
        Row(section, "wall clock write stop to first write, harness work included (2)", seconds(wall)),
        Row(
            section, f"not in the total: old server shutdown (PostgreSQL {old_runtime.major}, smart)", seconds(shutdown)
        ),
        Row(
            section, "not in the total: VERIFY step (after writes resumed; mostly row counts)", seconds(verify.seconds)
        ),
        Row(
            section,
            "pg_dumpall file (plain SQL); sha256sum of it alone (done in BACKUP and CHECK)",
            f"{size(dump_bytes)}; {seconds(sha)}",
        ),
        Row(section, "count(*) of every table alone, one pass (BACKUP and RUN do one each)", seconds(counting)),
        Row(
            section,
            "tables checked by row count (RUN) / found by VERIFY (with the write probe's table)",
            f"{run.summary.get('tables')} / {verify.summary.get('tables')}",
        ),
    ]


# -- orchestration ---------------------------------------------------------------------------------


def runtimes() -> tuple[Runtime, Runtime]:
    """The host's PostgreSQL (the oldest major below 17) and the PostgreSQL 17 image."""
    old = [m for m in installed_majors() if m < NEW_MAJOR]
    if not old:
        raise SystemExit("needs a host PostgreSQL below 17 under /usr/lib/postgresql (.ci/run installs postgresql-15)")
    if NEW_MAJOR not in image_majors((NEW_MAJOR,)):
        raise SystemExit(f"needs the image {IMAGE.format(major=NEW_MAJOR)}: run `make base-images`")
    return Runtime(old[0]), Runtime(NEW_MAJOR, IMAGE.format(major=NEW_MAJOR))


@dataclass(frozen=True)
class Options:
    """What to run."""

    size_mb: int
    reps: int
    part: str
    keep: bool


def run(options: Options, workdir: Path) -> list[Row]:
    """Start the servers, measure, and stop them whatever happens."""
    old_runtime, new_runtime = runtimes()
    rows = machine_rows(workdir, old_runtime, new_runtime)
    lab = Lab(workdir)
    with contextlib.ExitStack() as stack:
        stack.callback(lab.stop)
        server = lab.start(old_runtime, "db")
        data = generate(server, options.size_mb)
        rows += data_rows(data)
        if options.part in ("all", "comparison"):
            rows += Comparison(lab, server, data, options.reps).rows()
        if options.part in ("all", "upgrade"):
            settle(server)
            rows += upgrade_rows(lab, server, new_runtime, data)
        progress("stopping the servers")
    rows.insert(
        next(i for i, row in enumerate(rows) if row.figure.startswith("load average")) + 1,
        Row("Machine", "load average 1/5/15 min at end", load_average()),
    )
    return rows


def write_results(path: Path, table: str, command: str) -> None:
    """Keep the table in the run's own results file (a run of one part, `--part`, too)."""
    title = "Lifecycle benchmark: backup, restore and major upgrade through the Jobs' scripts"
    path.write_text(result_files.header(title, path, command) + table + NOTES, encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mb", type=int, help="database size on disk in MiB (default 1024, 100 with --quick)")
    parser.add_argument("--quick", action="store_true", help="smoke run: a 100 MiB database")
    parser.add_argument(
        "--reps",
        type=int,
        default=MIN_REPS,
        help=f"timed runs of each variant, interleaved (default and least {MIN_REPS})",
    )
    parser.add_argument(
        "--part", choices=("all", "comparison", "upgrade"), default="all", help="measure only one part (default all)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (data, dumps, logs)")
    result_files.add_results_dir(parser)
    args = parser.parse_args(argv)
    if args.reps < MIN_REPS:
        parser.error(f"--reps must be at least {MIN_REPS}: a ratio's spread needs that many interleaved pairs")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and keep it in benchmarks/results/."""
    args = parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("run as root: the scripts run as the postgres user via runuser, as the tests run them")
    options = Options(args.size_mb or (100 if args.quick else 1024), args.reps, args.part, args.keep)
    path = result_files.new_file("lifecycle", args.results_dir)
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # so the cleanup below also runs on SIGTERM
    workdir = Path(tempfile.mkdtemp(prefix="sampledb-bench-lifecycle-"))
    workdir.chmod(0o755)  # the postgres user must reach it
    try:
        rows = run(options, workdir)
    except BaseException:
        for log in sorted(workdir.glob("*/server.log")):
            progress(f"{log}:\n{''.join(log.read_text(errors='replace').splitlines(keepends=True)[-15:])}")
        progress(f"failed after {time.monotonic() - STARTED:.0f} s")
        raise
    finally:
        if options.keep:
            progress(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows.append(Row("Run", "benchmark run time (generation included)", seconds(time.monotonic() - STARTED)))
    table = markdown_table(rows)
    print(table + NOTES, end="")
    given = list(sys.argv[1:] if argv is None else argv)
    command = "make bench-lifecycle" + (f" BENCH_LIFECYCLE_ARGS='{' '.join(given)}'" if given else "")
    write_results(path, table, command)
    progress(f"table written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

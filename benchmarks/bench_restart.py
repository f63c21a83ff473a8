"""Restart benchmark (issue #15): the operator's own cost over N ready instances, apart from the cluster's.

Why: in the scale benchmark (`bench_scale.py`) the cluster, not the operator, sets the pace at
thousands of instances (the controller manager, the scheduler and kwok saturated both cores at
5,000), so the operator's memory there says little about the operator. Here nothing else runs: for
each N (default 1,000, 2,000 and 5,000), on a fresh bare cluster (etcd and the API server only,
`LocalCluster(node="none")`: no controller acts on what is created) with the conversion webhook as
two processes:

1. A client process (`bench_scale.create_all`) creates the N SampleDBs and their 7 children from
   the operator's own builders, and writes the children's status as a cluster leaves them once the
   instance is ready (`bench_scale.ready_status`: the StatefulSet's replica ready on its current
   revision, the init Job complete).
2. The operator starts once and adopts them: its finalizer, status Ready and an event each. The run
   waits until every SampleDB is Ready (a LIST) and the operator has been quiet for 10 s; the
   requests it took are reported per instance.
3. Then `--restarts` times (default 3): SIGTERM, start again, wait until N passes are counted and
   it has been quiet for 10 s, and `--settle-seconds` more (default 20). For each restart: the
   start-up peak (VmHWM), the steady RSS (median VmRSS of the last 10 s), CPU seconds, requests by
   verb from the audit log, writes, GETs of objects (the CRD and Lease upkeep apart), and the RSS
   over time as CSV in the working folder (`--keep`).

Figures per N are medians over the restarts with their spread; the slope of the steady RSS over N
(least squares through the N medians) gives KiB per instance and the intercept. Targets at
N = 5,000: steady RSS <= 150 MiB and start-up peak <= 1.5x steady (judged over the restarts by the
rule of `benchmarks/report.py`), 0 writes and 0 GETs of objects on every restart.

The table (with the machine it ran on) goes to stdout and to a new file per run,
`benchmarks/results/restart-<date>-<commit>.md` (`--results-dir` elsewhere for smoke runs);
progress goes to stderr. Everything started here is stopped at the end, on an exception, on Ctrl-C
and on SIGTERM.

Run from the repository root: `make bench-restart`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_restart.py [--sizes 1000,2000,5000] [--restarts 3]`.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import result_files
from benchmarks.audit import ApiCount, AuditLog, Lower, Upper, check_lower, check_upper
from benchmarks.bench_scale import (
    CLUSTER_ARGS,
    OPERATOR_NAMESPACE,
    OperatorProcess,
    _each,
    await_reconciled,
    bind_operator_role,
    create_all,
    install_crds,
    machine_rows,
    mib,
    passes_after,
)
from benchmarks.report import (
    Row,
    Target,
    count_verdict,
    exit_on_sigterm,
    judge,
    load_average,
    markdown_table,
    progress,
    spread_text,
    wait_until,
)
from sampledb_localcluster import OPERATOR_USER, LocalCluster
from sampledb_operator.k8s.api import KubeApi, load_client
from tests.webhook_process import start_webhook

MEMORY_TARGET_MIB = 150.0
PEAK_RATIO_TARGET = 1.5
TARGET_N = 5000
ADOPT_TIMEOUT = 1800.0


@dataclass
class RestartRun:
    """One restart over N unchanged instances."""

    peak_kib: int
    steady_kib: int
    cpu_seconds: float
    api: ApiCount
    quiet_at: float  # seconds from the start until the last pass


@dataclass
class SizeFigures:
    """Everything measured at one N."""

    total: int
    created_seconds: float = 0.0
    adopt_seconds: float = 0.0
    adopt_api: ApiCount = field(default_factory=ApiCount)
    restarts: list[RestartRun] = field(default_factory=list)


def ready_count(api: KubeApi) -> int:
    """SampleDBs whose status says Ready, from one LIST."""
    items = api._request("GET", f"/apis/sampledb.io/v1/namespaces/{OPERATOR_NAMESPACE}/sampledbs")["items"]
    return sum(1 for item in items if (item.get("status") or {}).get("phase") == "Ready")


def bring_up(stack: contextlib.ExitStack, workdir: Path, total: int) -> tuple[LocalCluster, KubeApi, AuditLog]:
    """A bare cluster (stopped by `stack`) with the webhook, the CRDs, RBAC and the namespace."""
    service_range = {"kube-apiserver": CLUSTER_ARGS["kube-apiserver"]}  # a ClusterIP per instance
    cluster = LocalCluster(state_dir=workdir / f"cluster-{total}", node="none", extra_args=service_range)
    stack.callback(cluster.stop)
    progress(f"N={total:,}: starting a bare control plane (etcd and the API server only)")
    cluster.start()
    hooks = start_webhook(workdir / f"webhook-{total}", ca=(cluster.ca_cert, cluster.ca_key), replicas=2)
    stack.callback(hooks.stop)
    admin = KubeApi(load_client(str(cluster.kubeconfig)))
    install_crds(admin, hooks)
    bind_operator_role(admin)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}}
    admin._request("POST", "/api/v1/namespaces", body=namespace)
    return cluster, admin, AuditLog(cluster.audit_log, OPERATOR_USER)


def adopt(cluster: LocalCluster, admin: KubeApi, audit: AuditLog, figures: SizeFigures, log: Path) -> OperatorProcess:
    """The operator's first start over the ready children: until every SampleDB is Ready and it is quiet."""
    total = figures.total
    start = audit.offset()
    started = time.monotonic()
    operator = OperatorProcess(cluster, log)
    try:
        await_reconciled(operator, total, ADOPT_TIMEOUT)
        wait_until(lambda: ready_count(admin) == total, f"all {total:,} SampleDBs Ready", ADOPT_TIMEOUT, interval=5)
        await_reconciled(operator, total, ADOPT_TIMEOUT)  # the passes the status writes caused
        figures.adopt_seconds = time.monotonic() - started
        figures.adopt_api = audit.requests(start, audit.offset())
        check_lower("adoption", figures.adopt_api, Lower(ready=total))
        upper = Upper(figures.adopt_seconds, passes_after(operator, 0), starts=1, objects=8 * total)
        check_upper("adoption", figures.adopt_api, upper)
    except BaseException:
        operator.stop()
        raise
    progress(f"N={total:,}: adopted in {figures.adopt_seconds:.0f} s, {figures.adopt_api.per(total)} requests each")
    return operator


def restart(
    cluster: LocalCluster, audit: AuditLog, old: OperatorProcess, total: int, files: tuple[Path, Path], settle: float
) -> tuple[OperatorProcess, RestartRun]:
    """Stop the operator, start it again over the N unchanged instances, measure it."""
    old.stop()
    old.memory.save(files[0])
    start = audit.offset()
    started = time.monotonic()
    operator = OperatorProcess(cluster, files[1])
    try:
        reconciled = await_reconciled(operator, total, ADOPT_TIMEOUT)
        time.sleep(settle)
        api = audit.requests(start, audit.offset())
        passes = passes_after(operator, 0)
        check_lower("restart", api, Lower())
        check_upper("restart", api, Upper(time.monotonic() - started, passes, starts=1, objects=8 * total))
        run = RestartRun(
            peak_kib=operator.memory.peak_kib(),
            steady_kib=operator.memory.steady_kib(time.monotonic()),
            cpu_seconds=operator.cpu_seconds(),
            api=api,
            quiet_at=reconciled.last_pass_at,
        )
    except BaseException:
        operator.stop()
        raise
    progress(
        f"N={total:,}: restart: peak {mib(run.peak_kib)}, steady {mib(run.steady_kib)}, CPU {run.cpu_seconds:.1f} s, "
        f"{api.total:,} requests ({api.by_verb()}), last pass at {run.quiet_at:.1f} s"
    )
    return operator, run


def measure(total: int, restarts: int, settle: float, workdir: Path) -> SizeFigures:
    """Bulk-create, adopt and restart at one N, on a cluster of its own."""
    figures = SizeFigures(total)
    with contextlib.ExitStack() as stack:
        cluster, admin, audit = bring_up(stack, workdir, total)
        progress(f"N={total:,}: creating {total:,} SampleDBs and their {7 * total:,} children, ready")
        started = time.monotonic()
        create_all(str(cluster.kubeconfig), OPERATOR_NAMESPACE, total, None, ready=True)
        figures.created_seconds = time.monotonic() - started
        operator = adopt(cluster, admin, audit, figures, workdir / f"operator-{total}-0.log")
        try:
            for index in range(1, restarts + 1):
                files = (workdir / f"memory-{total}-{index - 1}.csv", workdir / f"operator-{total}-{index}.log")
                operator, run = restart(cluster, audit, operator, total, files, settle)
                figures.restarts.append(run)
        finally:
            operator.stop()
            operator.memory.save(workdir / f"memory-{total}-{restarts}.csv")
    return figures


# -- rows ------------------------------------------------------------------------------------------


def size_rows(figures: SizeFigures) -> list[Row]:
    """One N: adoption, then every restart's memory, CPU and requests."""
    total, runs = figures.total, figures.restarts
    section = f"N = {total:,} ({len(runs)} restarts)"
    steady = [r.steady_kib / 1024 for r in runs]
    ratios = [r.peak_kib / r.steady_kib for r in runs]
    at_target = total == TARGET_N
    memory = judge(steady, Target(MEMORY_TARGET_MIB, f"<= {MEMORY_TARGET_MIB:g} MiB")) if at_target else None
    peak = judge(ratios, Target(PEAK_RATIO_TARGET, f"<= {PEAK_RATIO_TARGET:g}")) if at_target else None
    apis = [r.api for r in runs]
    adoption = f"{figures.adopt_seconds:.0f} s / {figures.adopt_api.per(total)}"
    gets = [f"{a.object_gets:,} ({a.verbs['get']:,})" for a in apis]
    return [
        Row(section, "bulk creation of the ready objects (client)", f"{figures.created_seconds:.0f} s"),
        Row(section, "adoption (first start): seconds / requests per instance", adoption),
        Row(
            section,
            "steady RSS after a restart",
            memory.value(1, " MiB") if memory else spread_text(steady, 1, " MiB"),
            memory.cell(1) if memory else "",
        ),
        Row(section, "start-up peak (VmHWM)", spread_text([r.peak_kib / 1024 for r in runs], 1, " MiB")),
        Row(
            section,
            "start-up peak / steady",
            peak.value() if peak else spread_text(ratios),
            peak.cell() if peak else "",
        ),
        Row(section, "CPU seconds from the start", spread_text([r.cpu_seconds for r in runs], 1)),
        Row(section, "last pass after the start", spread_text([r.quiet_at for r in runs], 1, " s")),
        Row(section, "requests (by verb)", _each([f"{a.total:,} ({a.by_verb()})" for a in apis])),
        Row(
            section,
            "writes",
            _each([f"{a.write_count:,}" for a in apis]),
            count_verdict([a.write_count for a in apis], 0, "0 writes"),
        ),
        Row(
            section,
            "GETs of objects (all GETs: discovery, CRD and Lease reads included)",
            _each(gets),
            count_verdict([a.object_gets for a in apis], 0, "0 GETs"),
        ),
    ]


def slope_rows(sizes: Sequence[SizeFigures]) -> list[Row]:
    """Steady RSS against N: least squares through each N's median."""
    if len(sizes) < 2:
        return []
    xs = [float(s.total) for s in sizes]
    ys = [statistics.median(r.steady_kib for r in s.restarts) for s in sizes]
    fit = statistics.linear_regression(xs, ys)
    points = ", ".join(f"N = {int(x):,}: {mib(y)}" for x, y in zip(xs, ys, strict=True))
    return [
        Row("Memory over N", "steady RSS, medians", points),
        Row(
            "Memory over N", "slope / intercept (least squares)", f"{fit.slope:.1f} KiB/instance / {mib(fit.intercept)}"
        ),
    ]


FOOTNOTES = """
Definitions: see the docstring of `benchmarks/bench_restart.py`. A figure over the restarts reads
"median ± spread (n = restarts: each)", the spread being the largest distance from the median to a
restart; a target gets a verdict only when that spread is smaller than the median's distance to it.
Nothing but the benchmark ran on the bare cluster: no controller, scheduler or node.
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and keep it in a results file of its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="1000,2000,5000", help="comma-separated N values (default 1000,2000,5000)")
    parser.add_argument("--restarts", type=int, default=3, help="restarts per N (default 3)")
    parser.add_argument("--settle-seconds", type=float, default=20.0, help="after a restart is quiet (default 20)")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, memory CSVs)")
    result_files.add_results_dir(parser)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="sampledb-bench-restart-"))
    path = result_files.new_file("restart", args.results_dir)
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_restart.py", *given])
    rows = machine_rows()
    sizes: list[SizeFigures] = []
    try:
        for total in (int(size) for size in args.sizes.split(",")):
            sizes.append(measure(total, args.restarts, args.settle_seconds, workdir))
            rows += size_rows(sizes[-1])
    except BaseException:
        progress(f"failed; logs are kept in {workdir}")
        raise
    rows += [*slope_rows(sizes), Row("Machine", "load average 1/5/15 min at the end", load_average())]
    table = markdown_table(rows)
    path.write_text(result_files.header("Restart benchmark", path, command) + table + FOOTNOTES, encoding="utf-8")
    print(table + FOOTNOTES, end="")
    progress(f"table written to {path}")
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

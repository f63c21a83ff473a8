"""Benchmark on the real node: how long writes stop when the primary changes, as an application sees it.

Why (issue #16): the targets are for the time an application cannot write, not for the operator's
own steps. For one instance of two servers, on one local cluster with a real node and the operator
running, each run:

1. waits until both servers are ready (the former primary rejoined as a standby);
2. starts a writer in a client Pod (the read-write Service's DNS name, the generated Secret's user:
   `bench_upgrade.Writer`), one row per connection, 2 s to connect at most;
3. acts 3 s into it:
   - failover: the primary's Pod deleted with no grace (`kubectl delete --force --grace-period=0`);
   - server killed: the primary's postmaster SIGKILLed through containerd, its Pod left alone
     (the kubelet restarts the container; the failover fences the Pod before it elects);
   - switchover: the annotation `sampledb.io/switchover-to` set to the standby;
4. waits for `status.currentPrimary` to name the other server and a write accepted after it.

Reported, each as median ± spread over the runs (`--runs`, default 5, per kind): the write outage
(the longest gap between two accepted writes after the act; its resolution is the writer's pace,
also given), act -> writes resume, and the acknowledged writes missing afterwards (a failover is
asynchronous: it may lose some; a switchover must lose none, and a loss stops the run).

What the figures depend on: the readiness probe (every 5 s; a dead server makes the Pod not ready
at once, a hung one after 3 failures), the fence (the old primary's Pod deleted with a 1 s grace,
and the kubelet's confirmation that it stopped: most of the failover's time), the switchover's
clean stop (the preStop hook's fast shutdown), kube-proxy moving the Service.

The table goes to stdout and to `benchmarks/results/failover-<date>-<commit>.md` (`--results-dir`
elsewhere for smoke runs); progress to stderr; logs stay in a temporary folder.

Run from the repository root as root: `make bench-failover`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_failover.py [--runs 5]`.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import result_files
from benchmarks.bench_node import NODE, node_cluster
from benchmarks.bench_upgrade import SETUP, Attempt, Kubectl, Writer
from benchmarks.report import (
    Row,
    Target,
    count_verdict,
    exit_on_sigterm,
    judge,
    machine_rows,
    markdown_table,
    progress,
    spread_text,
)
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.resources.instance import SWITCHOVER_ANNOTATION
from tests.integration.conftest import wait_for
from tests.node.conftest import kill_server
from tests.node.test_journey import app_sql, sampledb, start_client, status, wait_phase

NAMESPACE = "default"
NAME = "ha"
VERSION = 17
FAILOVER_TARGET = Target(10.0, "<= 10 s (goal 5 s)")
SWITCHOVER_TARGET = Target(5.0, "<= 5 s")


@dataclass(frozen=True)
class Run:
    """One change of primary, as the writer saw it."""

    outage: float  # the longest gap between two accepted writes after the act
    resumed: float  # from the act to the write that ended that gap
    lost: int  # writes reported accepted and missing afterwards
    pace: float  # median seconds between the writer's attempts


def measure(attempts: Sequence[Attempt], acted: float, stored: set[int]) -> Run:
    """The outage around `acted` (node clock) and the accepted writes not in `stored`."""
    accepted = [a for a in attempts if a.row is not None]
    if not accepted or accepted[0].ended >= acted or accepted[-1].ended <= acted:
        raise RuntimeError("the writer must have writes accepted before and after the act")
    gap, resumed = max((b.ended - a.ended, b.ended) for a, b in itertools.pairwise(accepted) if b.ended > acted)
    pace = statistics.median(b.started - a.started for a, b in itertools.pairwise(attempts))
    lost = sum(1 for a in accepted if a.row not in stored)
    return Run(gap, resumed - acted, lost, pace)


def primary(api: KubeApi) -> str | None:
    """The primary as the status records it."""
    return status(api, NAMESPACE, NAME).get("currentPrimary")


def both_ready(api: KubeApi) -> bool:
    """Both servers ready and no change of primary under way."""
    current = status(api, NAMESPACE, NAME)
    return current.get("readyInstances") == 2 and (current.get("failover") or {}).get("state") in (None, "Completed")


def one_change(api: KubeApi, kubectl: Kubectl, client: str, kind: str, act: Callable[[str, str], None]) -> Run:
    """Wait for two ready servers, run the writer, act on the primary, wait for the other one to serve."""
    wait_for(lambda: both_ready(api), timeout=300, what="both servers ready", interval=1)
    old = primary(api) or f"{NAME}-0"
    other = f"{NAME}-1" if old == f"{NAME}-0" else f"{NAME}-0"
    writer = Writer(kubectl, client, 120)
    try:
        wait_for(lambda: any(a.row for a in list(writer.attempts)), timeout=60, what="the writer's first write")
        time.sleep(3)
        acted = time.time()
        act(old, other)
        wait_for(lambda: primary(api) == other, timeout=120, what=f"{other} promoted", interval=0.2)
        promoted = time.time()
        wait_for(lambda: any(a.row and a.started > promoted for a in list(writer.attempts)), timeout=120,
                 what="writes accepted again", interval=0.5)  # fmt: skip
        time.sleep(2)
    finally:
        attempts = writer.stop()
    stored = {int(v) for v in app_sql(kubectl, NAMESPACE, client, "select id from upgrade_probe").split()}
    run = measure(attempts, acted, stored)
    progress(f"{kind} {old} -> {other}: writes stopped {run.outage:.1f} s, resumed {run.resumed:.1f} s after "
             f"the act, {run.lost} acknowledged writes lost (one attempt every {run.pace:.2f} s)")  # fmt: skip
    if kind == "switchover" and run.lost:
        raise RuntimeError(f"a switchover lost {run.lost} acknowledged writes")
    return run


def rows_for(kind: str, runs: Sequence[Run], target: Target) -> list[Row]:
    """The outage (judged), when writes resumed, the writes lost and the writer's pace."""
    section = f"{kind.capitalize()}, 2 servers, PostgreSQL {VERSION}, real node (runs: {len(runs)})"
    outage = judge([r.outage for r in runs], target)
    losses = [r.lost for r in runs]
    lost_target = count_verdict(losses, 0, "0") if kind == "switchover" else ""
    return [
        Row(section, "**writes stopped**: longest gap between accepted writes", outage.value(1, " s"), outage.cell(1)),
        Row(section, "act -> writes accepted again", spread_text([r.resumed for r in runs], 1, " s")),
        Row(section, "acknowledged writes lost (each run)", ", ".join(map(str, losses)), lost_target),
        Row(section, "writer's pace: median time between attempts", spread_text([r.pace for r in runs], 2, " s")),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table and write it to a results file of its own."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, help="failovers and switchovers each (default 5)")
    result_files.add_results_dir(parser)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    path = result_files.new_file("failover", args.results_dir)
    machine = machine_rows(("node", NODE))
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-failover-"))  # kept: the cluster's and the operator's logs
    progress(f"logs in {tmp}")
    with node_cluster([VERSION], tmp, rows) as (cluster, api):
        kubectl = Kubectl(cluster.kubeconfig)
        api.create(sampledb(NAME, NAMESPACE, VERSION, instances=2, deletionPolicy="Delete"))
        wait_phase(api, NAMESPACE, NAME, timeout=300)
        client = start_client(api, NAMESPACE, NAME, VERSION)
        app_sql(kubectl, NAMESPACE, client, SETUP.replace(":rows", "1000"))

        def kill(old: str, other: str) -> None:
            kubectl("delete", "pod", "-n", NAMESPACE, old, "--grace-period=0", "--force")

        def crash(old: str, other: str) -> None:
            kill_server(api, cluster, NAMESPACE, old)

        def ask(old: str, other: str) -> None:
            api.merge_patch("SampleDB", NAMESPACE, NAME, {"metadata": {"annotations": {SWITCHOVER_ANNOTATION: other}}})

        failovers = [one_change(api, kubectl, client, "failover", kill) for _ in range(args.runs)]
        crashes = [one_change(api, kubectl, client, "server killed", crash) for _ in range(args.runs)]
        switchovers = [one_change(api, kubectl, client, "switchover", ask) for _ in range(args.runs)]
    table = markdown_table(
        [
            *rows_for("failover", failovers, FAILOVER_TARGET),
            *rows_for("server killed", crashes, FAILOVER_TARGET),
            *rows_for("switchover", switchovers, SWITCHOVER_TARGET),
            *rows,
            *machine,
        ]
    )
    given = " ".join(sys.argv[1:] if argv is None else argv)
    command = f"make bench-failover BENCH_FAILOVER_ARGS='{given}'" if given else "make bench-failover"
    path.write_text(result_files.header("The real node: failover and switchover", path, command) + table,
                    encoding="utf-8")  # fmt: skip
    sys.stdout.write(table)
    progress(f"table written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

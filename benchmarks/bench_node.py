"""Benchmark on the real node: how long from `kubectl apply` of an empty SampleDB to a database that answers.

Why: on simulated nodes "Ready" costs only API round trips; on the real node it is the Pod
sandbox, initdb, the server's start, the probes, the init Job (a second Pod) reaching the server
through the Service's DNS name, and the status write. This measures, and only measures:

- for each major (15, 17, 18), N instances created one after the other (the previous one deleted
  first, so each has the node to itself): seconds from the create request to `status.phase =
  Ready`, and to the first `select 1` answered over the server's socket (`kubectl exec`);
- the median, the spread (min-max) and the p90 of each, per major.

One local cluster with a real node and one operator process serve every run, so cluster start-up
is not counted (the cluster's own start time is given as a figure). The table (with the machine and
its load) goes to stdout and to a new file per run, `benchmarks/results/node-<date>-<commit>.md`
(`--results-dir` elsewhere for smoke runs); progress to stderr. `node_cluster` is shared with
`bench_upgrade.py`, which measures a major upgrade's downtime on the same kind of cluster.

Run from the repository root as root: `make bench-node`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_node.py [--runs 10] [--majors 17]`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from benchmarks import result_files
from benchmarks.report import Row, exit_on_sigterm, machine_rows, markdown_table, progress, wait_until
from sampledb_localcluster import LocalCluster
from sampledb_localcluster.images import node_images
from sampledb_localcluster.tools import tool_path
from sampledb_operator.k8s.api import KubeApi, load_client
from tests.integration.conftest import OPERATOR_SA, REPO
from tests.operator_process import healthy, spawn_operator
from tests.webhook_process import free_port

NODE = "local real node (containerd 1.6, kubelet v1.34.4)"


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool_path("kubectl")), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, check=False)  # fmt: skip


def setup(cluster: LocalCluster) -> None:
    """The CRDs and the operator's RBAC, as `make install` and the chart would."""
    for args in (("apply", "--server-side", "-f", str(REPO / "crds")),
                 ("wait", "--for=condition=established", "--timeout=60s", "-f", str(REPO / "crds")),
                 ("apply", "-f", str(REPO / "config/rbac/role.yaml")),
                 ("create", "clusterrolebinding", "sampledb-operator", "--clusterrole=sampledb-operator",
                  f"--serviceaccount={OPERATOR_SA[0]}:{OPERATOR_SA[1]}")):  # fmt: skip
        result = _kubectl(cluster.kubeconfig, *args)
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr}")


def _one(api: KubeApi, cluster: LocalCluster, major: int, run: int) -> tuple[float, float]:
    name = f"pg{major}-{run}"
    spec = {"postgres": {"version": major}, "storage": {"size": "1Gi"}, "deletionPolicy": "Delete"}
    body = {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": {"name": name, "namespace": "default"},
            "spec": spec}  # fmt: skip
    begin = time.monotonic()
    api.create(body)
    wait_until(lambda: ((api.get("SampleDB", "default", name) or {}).get("status") or {}).get("phase") == "Ready",
               f"{name} Ready", timeout=300, interval=0.1)  # fmt: skip
    ready = time.monotonic() - begin
    query = ("exec", f"{name}-0", "-c", "postgres", "--", "psql", "-h", "/var/run/postgresql", "-U", "postgres",
             "-XAtc", "select 1")  # fmt: skip
    wait_until(lambda: _kubectl(cluster.kubeconfig, *query).stdout.strip() == "1", f"{name} to answer", timeout=60)
    answered = time.monotonic() - begin
    api.delete("SampleDB", "default", name)
    wait_until(lambda: api.get("SampleDB", "default", name) is None, f"{name} deleted", timeout=120)
    wait_until(lambda: api.get("Pod", "default", f"{name}-0") is None, f"{name}-0 gone", timeout=120)
    return ready, answered


def _measured(api: KubeApi, cluster: LocalCluster, major: int, run: int) -> tuple[float, float]:
    """One run, with what the cluster shows when it fails (the logs stay in the kept folder)."""
    try:
        ready, answered = _one(api, cluster, major, run)
    except RuntimeError:
        for what in ("sampledb,statefulset,pod,pvc,pv,job -o wide", "events --sort-by=.lastTimestamp"):
            sys.stderr.write(_kubectl(cluster.kubeconfig, "get", *what.split()).stdout)
        raise
    progress(f"PostgreSQL {major} run {run + 1}: Ready {ready:.1f} s, answers {answered:.1f} s")
    return ready, answered


def _summary(major: int, what: str, values: list[float]) -> Row:
    ordered = sorted(values)
    p90 = ordered[max(0, round(0.9 * len(ordered)) - 1)]
    value = (f"median {statistics.median(values):.1f} s (min {ordered[0]:.1f}, max {ordered[-1]:.1f}, "
             f"p90 {p90:.1f}; n = {len(values)})")  # fmt: skip
    return Row(f"PostgreSQL {major}", what, value)


@contextlib.contextmanager
def node_cluster(majors: list[int], tmp: Path, rows: list[Row]) -> Iterator[tuple[LocalCluster, KubeApi]]:
    """A local cluster with a real node (images of `majors` loaded), CRDs, RBAC and the operator running.

    Its start time goes into `rows`; everything is stopped when the block ends; logs stay in `tmp`.
    """
    begin = time.monotonic()
    with LocalCluster(tmp / "cluster", node="real", images=node_images(majors), timeout=120) as cluster:
        rows.append(Row("Cluster", "start with a real node, images loaded", f"{time.monotonic() - begin:.1f} s"))
        setup(cluster)
        health = free_port()
        operator = spawn_operator(str(cluster.operator_kubeconfig), tmp / "operator.log",
                                  metrics_port=free_port(), health_port=health, log_level="INFO")  # fmt: skip
        try:
            wait_until(lambda: healthy(health), "the operator", timeout=60)
            yield cluster, KubeApi(load_client(str(cluster.kubeconfig)))
        finally:
            operator.terminate()
            operator.wait(timeout=30)


def main() -> int:
    """Measure, print the table and write it to a results file of its own."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--majors", default="15,17,18")
    result_files.add_results_dir(parser)
    args = parser.parse_args()
    majors = [int(m) for m in args.majors.split(",")]
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    path = result_files.new_file("node", args.results_dir)
    machine = machine_rows(("node", NODE))
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench-node-"))  # kept: the cluster's and the operator's logs
    progress(f"logs in {tmp}")
    with node_cluster(majors, tmp, rows) as (cluster, api):
        for major in majors:
            times = [_measured(api, cluster, major, run) for run in range(args.runs)]
            rows.append(_summary(major, "apply -> status Ready", [t[0] for t in times]))
            rows.append(_summary(major, "apply -> `select 1` answered", [t[1] for t in times]))
    table = markdown_table([*rows, *machine])
    given = " ".join(sys.argv[1:])
    command = f"make bench-node BENCH_NODE_ARGS='{given}'" if given else "make bench-node"
    text = result_files.header("The real node: apply to Ready", path, command) + table
    path.write_text(text, encoding="utf-8")
    sys.stdout.write(table)
    progress(f"table written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

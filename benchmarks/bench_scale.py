"""Scale benchmark of the SampleDB operator (issue #7): convergence against a floor, memory, API load.

Everything runs on the local control plane (`sampledb_localcluster`: etcd, kube-apiserver with its
audit log, controller manager, scheduler, kwok playing the kubelet, the stand-in volume
provisioner) with the conversion webhook as two real processes, and the operator as a process
started exactly as `make run` starts it (`python -m sampledb_operator run`, all namespaces, its
defaults), with the operator's identity and the ClusterRole of config/rbac/role.yaml. This
measures, and only measures (nothing asserts on time), for each N (default 100, 1,000, 5,000),
`--repeats` times (default 3) with the phases alternating (operator, floor, operator, floor, ...),
each phase on a fresh cluster of its own, so that a change of load hits both sides alike:

1. The floor, on a fresh cluster: a plain client creates, for N instances, the SampleDB (as a user
   would) and then the very manifests the operator would create (the same pure builders:
   credentials Secret, ConfigMap, headless and client Service, StatefulSet, PodDisruptionBudget
   and the init Job, fingerprint annotation included), with as many workers as the operator has
   reconcile threads (asyncio's default executor: min(32, cores + 4)). Done once every
   StatefulSet has a ready replica and every init Job is complete: the cluster's own work
   (volumes, scheduling, Pods, Jobs) is in the floor. No status, finalizer or event is written.
2. The operator, on another fresh cluster: the same N SampleDBs created at once by the same number
   of workers; converged once every instance has its 7 children and status.phase == Ready with
   status.observedGeneration == metadata.generation (Ready implies a ready replica and a complete
   init Job). Both phases are observed through watches (one per kind, metadata only where
   existence is all that matters), not by polling. Reported: both times, the ratio
   operator/floor, one per repeat (target 1.5 or better at N = 1,000, judged by the rule of
   `benchmarks/report.py`: a verdict only when the ratios' spread is smaller than their median's
   distance to 1.5), child objects per second, and the machine's load during every phase
   (/proc/loadavg, busy CPU, the CPU of the top processes outside the benchmark).
3. Memory of the operator process, sampled every 0.5 s from /proc/PID/status: the peak (VmHWM)
   while converging, the steady RSS after convergence (median VmRSS over the last 10 s of an idle
   settle period), and after a restart with N objects present (SIGTERM, start again, wait until
   every instance has been reconciled and the operator has been quiet for 10 s) the start-up peak
   and RSS (target: under 150 MiB at N = 1,000).
4. API load, counted from the API server's audit log (requests by the operator's user, by verb),
   never from the operator's own bookkeeping: requests per instance converged, requests and
   writes after convergence, writes caused by the restart with N unchanged objects, and writes in
   an idle period (`--idle-seconds`, default 300 s, extrapolated to an hour; the issue asks for an
   hour: pass `--idle-seconds 3600` to measure one). Target: zero writes when nothing changed.
   Every count is checked before it is reported (`benchmarks/audit.py`): a rotated audit log or
   a count below what the run must have sent, or above what the operator's cadence and passes
   explain, stops the run with the count and the bound named.

The table (with the machine it ran on) goes to stdout and to a new file per run,
`benchmarks/results/scale-<date>-<commit>.md` (`--results-dir` elsewhere for smoke runs);
progress goes to stderr. Everything started here (clusters, webhook replicas, the operator) is
stopped at the end, on an exception, on Ctrl-C and on SIGTERM.

Run from the repository root: `make bench-scale`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_scale.py [--quick] [--sizes 100,1000]
[--repeats 3] [--idle-seconds 300]`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import math
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from importlib import metadata
from itertools import zip_longest
from pathlib import Path
from queue import Empty
from typing import Any

import yaml

from benchmarks import load, report, result_files
from benchmarks.audit import (
    RECONCILE_THREADS,
    ApiCount,
    AuditLog,
    AuditRotatedError,
    ImplausibleCountError,
    Lower,
    Upper,
    check_lower,
    check_upper,
)
from benchmarks.load import PhaseLoad
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
from sampledb_localcluster import OPERATOR_USER, LocalCluster, load_versions
from sampledb_localcluster.components import fake_node
from sampledb_operator.api import crdgen
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.k8s.api import RESOURCES, ApiError, KubeApi, load_client
from sampledb_operator.reconcile import children
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import generate_password
from sampledb_operator.settings import Settings
from tests.operator_process import healthy, metrics, spawn_operator
from tests.webhook_process import WebhookReplicas, free_port, start_webhook

REPO = Path(__file__).resolve().parents[1]
FLOOR_NAMESPACE = "bench-floor"
OPERATOR_NAMESPACE = "bench-operator"
# The operator reconciles on asyncio's default executor: min(32, cores + 4) threads. The floor's
# client and the creators of the SampleDBs get as many workers.
WORKERS = RECONCILE_THREADS
SAMPLE_SECONDS = 0.5
STEADY_WINDOW = 10.0
QUIET_SECONDS = 10.0
UNCONVERGED_RESTART_SECONDS = 600.0
PROGRESS_SECONDS = 15.0
RATIO_TARGET = 1.5
MEMORY_TARGET_MIB = 150.0
TARGET_N = 1000
# Observe/decide/act (#15): per instance converged, the writes it needs, its status and finalizer;
# the operator's CPU per instance converged; a pass reads from the watch caches, never by GET.
REQUESTS_TARGET = 13.0
CPU_TARGET_MS = 30.0
# How long after a window ends the operator's pass count is read, so that it includes the passes
# still running at the end (a pass of an unchanged instance takes a fraction of a second).
COUNT_GRACE_SECONDS = 2.0
CREATED_AT = "2026-01-05T10:00:00Z"  # the time written into ready statuses (`ready_status`)
CHILD_KINDS = 7  # Secret, ConfigMap, 2 Services, StatefulSet, PodDisruptionBudget, init Job
# Fake nodes added next to the harness's one (110 Pods): big enough that scheduling never waits for room.
NODE_PODS = 1000
NODE_RESOURCES = {"cpu": "1000", "memory": "4Ti", "pods": str(NODE_PODS), "ephemeral-storage": "100Ti"}
# The harness's Service range (a /24) has room for about 250 ClusterIPs, one per SampleDB: widen it
# (the last occurrence of a flag wins). The first address, which the API server's certificate names,
# stays the same.
SERVICE_RANGE = "10.0.0.0/16"
# The controller manager's and the scheduler's clients default to 20 and 50 requests/s (a burst of
# 30 and 100). Each StatefulSet costs its controller a claim, a Pod and status updates, and every
# waiting Pod an event, so at thousands of instances the cluster, not the operator, set the pace:
# 2,000 bare StatefulSets had 44 ready after 264 s with the defaults and 1,180 after 144 s with
# these (one run each). Both phases get the same limits, as a cluster sized for N instances would.
CLIENT_LIMITS = ["--kube-api-qps=200", "--kube-api-burst=400"]
CLUSTER_ARGS = {
    "kube-apiserver": [f"--service-cluster-ip-range={SERVICE_RANGE}"],
    "kube-controller-manager": [f"--service-cluster-ip-range={SERVICE_RANGE}", *CLIENT_LIMITS],
    "kube-scheduler": CLIENT_LIMITS,
}
META_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
META_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    sizes: tuple[int, ...]
    floor_sizes: tuple[int, ...]  # the sizes that also get a floor phase
    idle_seconds: float
    settle_seconds: float
    timeout: float
    repeats: int = 3  # operator and floor phases per N, alternating


# -- output ----------------------------------------------------------------------------------------


FOOTNOTES = f"""
Definitions:

- Runs: per N, `--repeats` operator and floor phases alternating (operator, floor, operator, ...),
  each on a fresh cluster. A figure over the runs reads "median ± spread (n = runs: each run)",
  the spread being the largest distance from the median to a run. A target gets a verdict only
  when that spread is smaller than the median's distance to the target (`benchmarks/report.py`),
  otherwise "inconclusive"; counts (writes) meet "0" only if every run does.
- Floor: on a fresh cluster, a plain client with {WORKERS} workers (as many as the operator's
  reconcile threads) creates per instance the SampleDB and then the 7 manifests the operator's
  own builders produce (Secret, ConfigMap, headless and client Service, StatefulSet,
  PodDisruptionBudget, init Job); done when every StatefulSet has a ready replica and every init
  Job is complete. It writes no status, finalizer or event and reads nothing.
- Operator: on another fresh cluster, the same SampleDBs created by {WORKERS} workers, the
  operator (one process, started before them, watching all namespaces) does the rest; converged
  when every instance has its 7 children and status.phase is Ready with status.observedGeneration
  equal to metadata.generation. Both clocks start before the first SampleDB is created and stop
  when a watch shows the last instance done. Objects per second: child objects (7 per instance)
  divided by that time.
- Memory: the operator process's VmHWM (peak) and VmRSS from /proc, sampled every {SAMPLE_SECONDS} s;
  steady = median VmRSS over the last {STEADY_WINDOW:.0f} s of the idle period named. Restart: SIGTERM,
  start again with the N objects present, wait until N reconciles are counted and the operator has
  been quiet for {QUIET_SECONDS:.0f} s.
- API load: audit log events of the operator's user ({OPERATOR_USER}), one per request (a watch is
  counted when it starts); writes are create/update/patch/delete. Requests per instance converged:
  every request between the start of the creation and convergence, divided by N. The idle figure
  is measured over the period given and extrapolated linearly to one hour.
- Fake nodes (kwok) are added so that Pods never wait for room ({NODE_PODS} Pods per node), and
  the controller manager's and scheduler's clients may send 200 requests/s (burst 400) instead of
  their defaults of 20 and 50 (which made the cluster, not the operator, set the pace at thousands
  of instances); the components run with their default flags otherwise.
- Load while converging: /proc/loadavg at the first create and at the end of the wait, the
  machine's busy CPU seconds over the phase against what its cores could give, and the CPU
  seconds of processes outside the benchmark (not this process or its descendants), the top 3
  named. Figures measured while something else used the cores are not a quiet machine's.
- Checked counts: before any count is reported, the run stops if the audit log rotated or if a
  count is below what the run must have sent (a create per child object seen, a status PATCH per
  Ready instance, a GET per reconcile pass) or above what the operator's watch cadence, start-ups
  and counted passes explain (`benchmarks/audit.py`).
"""


def write_results(path: Path, table: str, command: str, state: str) -> None:
    """Keep the table in the run's own results file (rewritten as the run goes on)."""
    header = (
        result_files.header("Scale benchmark", path, command) + f"State: {state}. Definitions: below the table.\n\n"
    )
    path.write_text(header + table + FOOTNOTES, encoding="utf-8")


def mib(kib: float) -> str:
    """KiB as MiB."""
    return f"{kib / 1024:.1f} MiB"


# -- machine ---------------------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def machine_rows() -> list[Row]:
    """The machine, the local cluster's component versions and the operator's libraries."""
    versions = load_versions()
    toolchain = ", ".join(
        f"{name} {versions.get(key, '?')}"
        for name, key in (("Kubernetes", "KUBERNETES_VERSION"), ("etcd", "ETCD_VERSION"), ("kwok", "KWOK_VERSION"))
    )
    libraries = ", ".join(f"{name} {_version(name)}" for name in ("kopf", "kubernetes", "pydantic"))
    return report.machine_rows(("cluster", toolchain), ("libraries", libraries))


# -- objects ---------------------------------------------------------------------------------------


def instance_name(index: int) -> str:
    """The name of instance `index`."""
    return f"db-{index:05d}"


def sampledb(index: int, namespace: str) -> Obj:
    """A SampleDB as a user writes it: a version, a few parameters, a volume."""
    return {
        "apiVersion": "sampledb.io/v1",
        "kind": "SampleDB",
        "metadata": {"name": instance_name(index), "namespace": namespace, "labels": {"team": f"team-{index % 7}"}},
        "spec": {
            "postgres": {
                "version": (15, 16, 17)[index % 3],
                "parameters": {"max_connections": "200", "shared_buffers": "256MB", "work_mem": "8MB"},
            },
            "storage": {"size": f"{1 + index % 20}Gi"},
            "deletionPolicy": "Delete",
        },
    }


def ready_status(created: Obj, at: str) -> Obj | None:
    """The status a cluster leaves on a child once the instance is ready (None: a kind with no status of interest).

    For `benchmarks/bench_restart.py`, whose cluster runs no controller: the StatefulSet with its one
    replica ready on its current revision, the init Job complete.
    """
    meta = created["metadata"]
    if created["kind"] == "StatefulSet":
        revision = f"{meta['name']}-1"
        replicas = ("replicas", "readyReplicas", "currentReplicas", "updatedReplicas", "availableReplicas")
        revisions = {"currentRevision": revision, "updateRevision": revision}
        return {**dict.fromkeys(replicas, 1), **revisions, "observedGeneration": meta["generation"]}
    if created["kind"] == "Job":
        conditions = [
            {"type": kind, "status": "True", "lastProbeTime": at, "lastTransitionTime": at}
            for kind in ("SuccessCriteriaMet", "Complete")
        ]
        return {"startTime": at, "completionTime": at, "succeeded": 1, "ready": 0, "conditions": conditions}
    return None


def floor_manifests(created: Obj, settings: Settings) -> list[Obj]:
    """What the operator creates for a new SampleDB, from its own builders, in its order."""
    instance = Instance.from_object(created, settings)
    actions = [children.plan_secret(instance, None)]
    actions += [children.plan_child(child, instance, None) for child in children.CHILDREN]
    manifests = [action.fill(generate_password) if action.fill else action.body for action in actions if action]
    return [*manifests, init_job(instance)]


# -- cluster set-up --------------------------------------------------------------------------------


def _succeeds(call: Callable[[], object]) -> bool:
    try:
        call()
    except (ApiError, ValueError):  # ValueError: the plain-text 404 of a group not served yet
        return False
    return True


def _node_ready(api: KubeApi, name: str) -> bool:
    node = api._request("GET", f"/api/v1/nodes/{name}")
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def add_nodes(api: KubeApi, instances: int) -> int:
    """Big fake nodes for the Pods of `instances` StatefulSets and init Jobs; returns how many."""
    names = [f"bench-node-{index}" for index in range(max(1, math.ceil(2 * instances / NODE_PODS)))]
    for name in names:
        node: Obj = dict(fake_node(name))
        node["status"] = {"capacity": NODE_RESOURCES, "allocatable": NODE_RESOURCES}
        api._request("POST", "/api/v1/nodes", body=node)
    for name in names:
        wait_until(lambda n=name: _node_ready(api, n), f"kwok to mark node {name} Ready")  # type: ignore[misc]
    return len(names)


def _established(api: KubeApi, name: str) -> bool:
    crd = api.get("CustomResourceDefinition", None, name) or {}
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def install_crds(api: KubeApi, hooks: WebhookReplicas) -> None:
    """The generated CRDs, their conversion webhook pointed at the loopback replicas.

    Returns once every served version answers a LIST from its watch cache, so that the operator's
    first watches do not meet "storage is (re)initializing".
    """
    ca_bundle = base64.b64encode(hooks.ca_cert.read_bytes()).decode()
    collections = []
    for crd in crdgen.all_crds().values():
        conversion = crd["spec"].get("conversion") or {}
        if conversion.get("strategy") == "Webhook":
            conversion["webhook"]["clientConfig"] = {"url": hooks.url, "caBundle": ca_bundle}
        api.create(crd)
        name, spec = crd["metadata"]["name"], crd["spec"]
        wait_until(lambda n=name: _established(api, n), f"CRD {name} to be established")  # type: ignore[misc]
        served = [v["name"] for v in spec["versions"] if v.get("served")]
        collections += [f"/apis/{spec['group']}/{version}/{spec['names']['plural']}" for version in served]
    for path in collections:
        wait_until(
            lambda p=path: _succeeds(lambda: api._request("GET", p, query={"resourceVersion": "0", "limit": "1"})),  # type: ignore[misc]
            f"{path} to be served from the watch cache",
        )


def bind_operator_role(api: KubeApi) -> None:
    """The ClusterRole of config/rbac/role.yaml bound to the operator's identity, as the chart does."""
    role = yaml.safe_load((REPO / "config/rbac/role.yaml").read_text(encoding="utf-8"))
    namespace, _, account = OPERATOR_USER.removeprefix("system:serviceaccount:").partition(":")
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "sampledb-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "namespace": namespace, "name": account}],
    }
    api._request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", body=role)
    api._request("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", body=binding)


def create_namespace(api: KubeApi, namespace: str) -> None:
    """A namespace whose `default` ServiceAccount exists (Pods are refused before it does)."""
    api._request(
        "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    wait_until(
        lambda: _succeeds(lambda: api._request("GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/default")),
        f"ServiceAccount {namespace}/default",
    )


@dataclass
class Environment:
    """One fresh cluster with the webhook and CRDs installed."""

    cluster: LocalCluster
    hooks: WebhookReplicas
    admin: KubeApi
    nodes: int
    audit: AuditLog


def bring_up(stack: contextlib.ExitStack, workdir: Path, name: str, instances: int) -> Environment:
    """Start a cluster (stopped by `stack`), its webhook replicas, CRDs, nodes and RBAC."""
    cluster = LocalCluster(state_dir=workdir / name, extra_args=CLUSTER_ARGS)
    stack.callback(cluster.stop)
    progress(f"{name}: starting a fresh local control plane")
    cluster.start()
    hooks = start_webhook(workdir / f"{name}-webhook", ca=(cluster.ca_cert, cluster.ca_key), replicas=2)
    stack.callback(hooks.stop)
    admin = KubeApi(load_client(str(cluster.kubeconfig)))
    nodes = add_nodes(admin, instances)
    install_crds(admin, hooks)
    bind_operator_role(admin)
    progress(f"{name}: cluster ready ({nodes} extra fake node(s), 2 webhook replicas)")
    return Environment(cluster, hooks, admin, nodes, AuditLog(cluster.audit_log, OPERATOR_USER))


# -- watching what happens -------------------------------------------------------------------------


class Tracker:
    """Which instances are done: each needs every one of its slots satisfied at the same time."""

    def __init__(self, names: Sequence[str], slots: Sequence[str]) -> None:
        self._lock = threading.Lock()
        self._missing: dict[str, set[str]] = {name: set(slots) for name in names}
        self._done_at: dict[str, float] = {}
        self.changed = threading.Event()

    def set(self, name: str, slot: str, ok: bool) -> None:
        """Record that `slot` of instance `name` is (or is no longer) satisfied."""
        with self._lock:
            missing = self._missing.get(name)
            if missing is None:
                return
            was_done = not missing
            if ok:
                missing.discard(slot)
            else:
                missing.add(slot)
            if not missing and not was_done:
                self._done_at[name] = time.monotonic()
            elif missing:
                self._done_at.pop(name, None)
        self.changed.set()

    @property
    def total(self) -> int:  # noqa: D102
        return len(self._missing)

    def done(self) -> int:
        """How many instances are done now."""
        with self._lock:
            return len(self._done_at)

    def times(self) -> list[float]:
        """When each done instance became done (monotonic clock), sorted."""
        with self._lock:
            return sorted(self._done_at.values())

    def satisfied(self, slots: Sequence[str]) -> int:
        """How many (instance, slot) pairs among `slots` are satisfied now, e.g. child objects seen."""
        with self._lock:
            return sum(len(set(slots) - missing) for missing in self._missing.values())

    def missing_summary(self, limit: int = 3) -> str:
        """A few instances that are not done, with what they lack."""
        with self._lock:
            lacking = [f"{name}: {sorted(slots)}" for name, slots in self._missing.items() if slots]
        return "; ".join(lacking[:limit]) + (f" (+{len(lacking) - limit} more)" if len(lacking) > limit else "")


Route = Callable[[Obj, bool], tuple[str, str, bool] | None]  # (object, deleted) -> (instance, slot, ok)


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (HTTP 410): list again."""


class Watcher(threading.Thread):
    """LIST then WATCH one kind in one namespace, feeding a Tracker; re-lists when the watch expires."""

    def __init__(
        self, kubeconfig: str, kind: str, namespace: str, route: Route, tracker: Tracker, *, meta: bool
    ) -> None:
        super().__init__(name=f"watch-{kind}", daemon=True)
        self._client: Any = load_client(kubeconfig)  # its own connection pool: a watch holds a connection
        self._path = RESOURCES[kind].path(namespace)
        self._route = route
        self._tracker = tracker
        self._meta = meta
        self.listed = threading.Event()
        self.stopped = threading.Event()
        self._stream: Any = None

    def stop(self) -> None:
        """End the watch now, from another thread."""
        self.stopped.set()
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.shutdown()

    def _get(self, query: dict[str, str], accept: str) -> Any:
        params = self._client.param_serialize(
            "GET",
            self._path,
            query_params=list(query.items()),
            header_params={"Accept": accept},
            auth_settings=["BearerToken"],
        )
        return self._client.call_api(*params, _request_timeout=(10, 120))

    def _feed(self, obj: Obj, deleted: bool) -> None:
        routed = self._route(obj, deleted)
        if routed is not None:
            self._tracker.set(*routed)

    def _list(self) -> str:
        token, version = "", ""
        while True:
            query = {"limit": "500", **({"continue": token} if token else {})}
            response = self._get(query, META_LIST if self._meta else "application/json")
            page = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"LIST {self._path}: HTTP {response.status}: {page.get('message')}")
            for item in page.get("items") or []:
                self._feed(item, False)
            version = str(page["metadata"]["resourceVersion"])
            token = page["metadata"].get("continue") or ""
            if not token:
                return version

    def _watch(self, version: str) -> str:
        query = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true", "timeoutSeconds": "60"}
        response = self._get(query, META_WATCH if self._meta else "application/json")
        stream = self._stream = response.response
        try:
            if response.status != 200:
                raise RuntimeError(f"WATCH {self._path}: HTTP {response.status}: {stream.read()[:300]!r}")
            for line in stream:
                if self.stopped.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event["object"]
                if event["type"] == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchExpiredError
                    raise RuntimeError(f"WATCH {self._path}: {obj.get('message')}")
                version = str(obj["metadata"]["resourceVersion"])
                if event["type"] != "BOOKMARK":
                    self._feed(obj, event["type"] == "DELETED")
        finally:
            self._stream = None
            stream.release_conn()
        return version

    def run(self) -> None:  # noqa: D102
        while not self.stopped.is_set():
            try:
                version = self._list()
                self.listed.set()
                while not self.stopped.is_set():
                    version = self._watch(version)
            except WatchExpiredError:
                continue
            except Exception as err:  # the observer must survive a hiccup of a busy API server
                if self.stopped.is_set():
                    return
                progress(f"watch {self._path}: {err!r}; listing again in 1 s")
                time.sleep(1)


@contextlib.contextmanager
def watching(
    kubeconfig: str, namespace: str, routes: dict[str, tuple[Route, bool]], tracker: Tracker
) -> Iterator[None]:
    """Run one Watcher per kind (route, metadata-only) until the block ends; starts once all have listed."""
    watchers = [
        Watcher(kubeconfig, kind, namespace, route, tracker, meta=meta) for kind, (route, meta) in routes.items()
    ]
    for watcher in watchers:
        watcher.start()
    try:
        for watcher in watchers:
            wait_until(watcher.listed.is_set, f"the first LIST of {watcher.name}", timeout=120)
        yield
    finally:
        for watcher in watchers:
            watcher.stop()
        for watcher in watchers:
            watcher.join(timeout=10)


def _strip(name: str, suffix: str) -> str | None:
    return name.removesuffix(suffix) if name.endswith(suffix) else None


def exists(slot: str, suffix: str = "") -> Route:
    """A route: the instance owning `<instance><suffix>` has that child."""

    def route(obj: Obj, deleted: bool) -> tuple[str, str, bool] | None:
        owner = _strip(obj["metadata"]["name"], suffix) if suffix else obj["metadata"]["name"]
        return None if owner is None else (owner, slot, not deleted)

    return route


def service_route(obj: Obj, deleted: bool) -> tuple[str, str, bool] | None:
    """Headless (`<instance>-hl`) and client (`<instance>`) Services fill different slots."""
    name = obj["metadata"]["name"]
    headless = _strip(name, "-hl")
    return (headless, "service-headless", not deleted) if headless else (name, "service", not deleted)


def ready_route(obj: Obj, deleted: bool) -> tuple[str, str, bool] | None:
    """The SampleDB reports Ready for its current generation."""
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    ok = not deleted and status.get("phase") == "Ready" and status.get("observedGeneration") == generation
    return obj["metadata"]["name"], "ready", ok


def replica_route(obj: Obj, deleted: bool) -> tuple[str, str, bool] | None:
    """The StatefulSet has a ready replica."""
    ready = int((obj.get("status") or {}).get("readyReplicas") or 0)
    return obj["metadata"]["name"], "replica-ready", not deleted and ready >= 1


def job_complete_route(obj: Obj, deleted: bool) -> tuple[str, str, bool] | None:
    """The init Job has completed."""
    owner = _strip(obj["metadata"]["name"], "-init")
    if owner is None:
        return None
    conditions = (obj.get("status") or {}).get("conditions") or []
    complete = any(c.get("type") == "Complete" and c.get("status") == "True" for c in conditions)
    return owner, "job-complete", not deleted and complete


OPERATOR_ROUTES: dict[str, tuple[Route, bool]] = {
    "SampleDB": (ready_route, False),
    "Secret": (exists("secret", "-credentials"), True),
    "ConfigMap": (exists("configmap", "-config"), True),
    "Service": (service_route, True),
    "StatefulSet": (exists("statefulset"), True),
    "PodDisruptionBudget": (exists("pdb"), True),
    "Job": (exists("init-job", "-init"), True),
}
OPERATOR_SLOTS = ("ready", "secret", "configmap", "service-headless", "service", "statefulset", "pdb", "init-job")
FLOOR_ROUTES: dict[str, tuple[Route, bool]] = {
    "StatefulSet": (replica_route, False),
    "Job": (job_complete_route, False),
}
FLOOR_SLOTS = ("created", "replica-ready", "job-complete")
CHILD_SLOTS = OPERATOR_SLOTS[1:]  # the 7 children the operator creates per instance


# -- the operator process and its memory -----------------------------------------------------------


@dataclass(frozen=True)
class MemorySample:
    """One reading of /proc/PID/status."""

    at: float
    rss_kib: int
    hwm_kib: int


class MemorySampler(threading.Thread):
    """Reads VmRSS and VmHWM of a process every SAMPLE_SECONDS until it exits or is stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(name=f"memory-{pid}", daemon=True)
        self._status = Path(f"/proc/{pid}/status")
        self.samples: list[MemorySample] = []
        self.stopped = threading.Event()

    def read(self) -> MemorySample | None:
        """One reading now; None once the process is gone."""
        fields: dict[str, int] = {}
        try:
            text = self._status.read_text(encoding="utf-8")
        except OSError:
            return None
        for line in text.splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                fields[name] = int(value.split()[0])
        if len(fields) < 2:
            return None
        return MemorySample(time.monotonic(), fields["VmRSS"], fields["VmHWM"])

    def run(self) -> None:  # noqa: D102
        while not self.stopped.is_set():
            sample = self.read()
            if sample is None:
                return
            self.samples.append(sample)
            self.stopped.wait(SAMPLE_SECONDS)

    def save(self, path: Path) -> None:
        """The samples as CSV (seconds since the first sample, VmRSS and VmHWM in KiB), for a closer look."""
        first = self.samples[0].at if self.samples else 0.0
        lines = ["seconds,rss_kib,hwm_kib", *(f"{s.at - first:.1f},{s.rss_kib},{s.hwm_kib}" for s in self.samples)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def peak_kib(self) -> int:
        """The process's peak RSS so far (VmHWM)."""
        return max((s.hwm_kib for s in self.samples), default=0)

    def current_kib(self) -> int:
        """The latest RSS reading."""
        return self.samples[-1].rss_kib if self.samples else 0

    def steady_kib(self, until: float, window: float = STEADY_WINDOW) -> int:
        """Median RSS over the `window` seconds before `until`."""
        values = [s.rss_kib for s in self.samples if until - window <= s.at <= until]
        return int(statistics.median(values)) if values else self.current_kib()


def code_version() -> str:
    """The commit the operator code on disk comes from (read when each operator process starts)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "operator"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return commit + (" with uncommitted changes in operator/" if changed else "")


class OperatorProcess:
    """`python -m sampledb_operator run` with the operator's identity, defaults, INFO logs."""

    def __init__(self, cluster: LocalCluster, log_path: Path) -> None:
        self.log_path = log_path
        self.code = code_version()
        self.metrics_port, health_port = free_port(), free_port()
        without_settings = {key: value for key, value in os.environ.items() if not key.startswith("SAMPLEDB_")}
        self.process = spawn_operator(
            str(cluster.operator_kubeconfig),
            log_path,
            metrics_port=self.metrics_port,
            health_port=health_port,
            log_level="INFO",
            environ=without_settings,  # the operator's defaults, whatever this shell exports
        )
        self.started = time.monotonic()
        self.memory = MemorySampler(self.process.pid)
        self.memory.start()
        try:
            wait_until(lambda: self._healthy(health_port), f"the operator to report healthy (log: {log_path})")
        except BaseException:
            self.stop()  # the caller never gets hold of a process that did not come up
            raise

    def _healthy(self, port: int) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"the operator exited with code {self.process.returncode}; log: {self.log_path}")
        return healthy(port)

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the process has used so far; 0 once it is gone."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def reconciles(self) -> float:
        """Reconcile passes so far (success and error), from the operator's /metrics."""
        values = metrics(self.metrics_port)
        return sum(value for name, value in values.items() if name.startswith("sampledb_reconcile_total{"))

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.memory.stopped.set()


def log_problems(paths: Sequence[Path]) -> tuple[int, int, list[str]]:
    """ERROR and WARNING lines in the operator's logs, and a few ERROR lines as evidence."""
    errors = warnings = 0
    examples: list[str] = []
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as log:
            for line in log:
                if " ERROR " in line or line.startswith("Traceback"):
                    errors += 1
                    if len(examples) < 3:
                        examples.append(line.strip()[:300])
                elif " WARNING " in line:
                    warnings += 1
    return errors, warnings, examples


# -- the phases ------------------------------------------------------------------------------------


@dataclass
class Convergence:
    """How a phase went: when it started, when each instance was done, whether all were, the load."""

    started: float
    times: list[float]
    total: int
    client_cpu: float = 0.0  # CPU seconds of the creating client process
    ended: float = 0.0  # when the wait ended (done or gave up)
    load: PhaseLoad | None = None  # the machine from the first create to the end of the wait

    @property
    def complete(self) -> bool:  # noqa: D102
        return len(self.times) == self.total

    @property
    def seconds(self) -> float:
        """Until the last instance was done (or until the phase gave up)."""
        return (self.times[-1] if self.complete else self.ended) - self.started

    def half_seconds(self) -> float:
        """Until half of the instances were done."""
        index = math.ceil(self.total / 2) - 1
        return self.times[index] - self.started if len(self.times) > index else float("nan")


def _creator_process(kubeconfig: str, namespace: str, total: int, with_children: bool, ready: bool, queue: Any) -> None:
    """In a child process: create the N SampleDBs, and with `with_children` what the operator would.

    With `ready`, also the children's status as a cluster leaves it (`ready_status`).

    Reports each instance done as its index on `queue`, then ("cpu", seconds used), then None; an
    error as a string. A process of its own, so that it does not share an interpreter lock with
    the watches (the operator, too, is a process of its own).
    """
    api = KubeApi(load_client(kubeconfig))
    settings = Settings.from_env({})

    def one(index: int) -> None:
        created = api.create(sampledb(index, namespace))
        if with_children:
            for manifest in floor_manifests(created, settings):
                child = api.create(manifest)
                status = ready_status(child, CREATED_AT) if ready else None
                if status is not None:
                    api.merge_patch(
                        child["kind"], namespace, child["metadata"]["name"], {"status": status}, status=True
                    )
        queue.put(index)

    try:
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="creator") as pool:
            for future in as_completed([pool.submit(one, index) for index in range(total)]):
                future.result()
    except BaseException as err:
        queue.put(f"creating objects failed: {err!r}")
        raise
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(("cpu", usage.ru_utime + usage.ru_stime))
    queue.put(None)


def create_all(kubeconfig: str, namespace: str, total: int, tracker: Tracker | None, *, ready: bool = False) -> float:
    """Create the N SampleDBs at once from a child process with WORKERS threads; returns its CPU seconds.

    With a tracker (the floor), the operator's children too, each instance marked "created"; with
    `ready`, the children in the state a cluster leaves them ready (`ready_status`).
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    children_too = tracker is not None or ready
    child = context.Process(
        target=_creator_process, args=(kubeconfig, namespace, total, children_too, ready, queue), daemon=True
    )
    child.start()
    cpu = 0.0
    created = 0
    started = time.monotonic()
    next_report = started + PROGRESS_SECONDS
    try:
        while True:
            if time.monotonic() >= next_report:
                next_report += PROGRESS_SECONDS
                progress(f"created {created:,}/{total:,} instances after {time.monotonic() - started:.0f} s")
            try:
                item = queue.get(timeout=1)
            except Empty:
                if not child.is_alive():
                    raise RuntimeError(f"the creator process exited with code {child.exitcode}") from None
                continue
            if item is None:
                break
            if isinstance(item, str):
                raise RuntimeError(item)
            if isinstance(item, tuple):
                cpu = float(item[1])
                continue
            created += 1
            if tracker is not None:
                tracker.set(instance_name(int(item)), "created", True)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    return cpu


def await_convergence(
    tracker: Tracker, label: str, started: float, timeout: float, status: Callable[[], str] = lambda: ""
) -> bool:
    """Wait until every instance is done, printing progress; False on timeout."""
    deadline = started + timeout
    next_report = time.monotonic() + PROGRESS_SECONDS
    while tracker.done() < tracker.total:
        if time.monotonic() > deadline:
            progress(f"{label}: gave up after {timeout:.0f} s; not done: {tracker.missing_summary()}")
            return False
        tracker.changed.wait(1.0)
        tracker.changed.clear()
        if time.monotonic() >= next_report:
            next_report += PROGRESS_SECONDS
            elapsed = time.monotonic() - started
            progress(f"{label}: {tracker.done():,}/{tracker.total:,} done after {elapsed:.0f} s{status()}")
    return True


def run_floor(env: Environment, total: int, timeout: float) -> Convergence:
    """The floor: a plain client creates what the operator would; the cluster does its part."""
    create_namespace(env.admin, FLOOR_NAMESPACE)
    tracker = Tracker([instance_name(index) for index in range(total)], FLOOR_SLOTS)
    kubeconfig = str(env.cluster.kubeconfig)
    with watching(kubeconfig, FLOOR_NAMESPACE, FLOOR_ROUTES, tracker):
        before = load.sample()
        result = Convergence(time.monotonic(), [], total)
        progress(f"floor N={total:,}: creating {total:,} SampleDBs and their {CHILD_KINDS * total:,} children")
        result.client_cpu = create_all(kubeconfig, FLOOR_NAMESPACE, total, tracker)
        created = time.monotonic() - result.started
        progress(f"floor N={total:,}: all created after {created:.1f} s; waiting for the cluster")
        await_convergence(tracker, f"floor N={total:,}", result.started, timeout)
        result.ended = time.monotonic()
        result.load = load.phase_load(before, load.sample(), result.ended - result.started)
    result.times = tracker.times()
    return result


@dataclass
class OperatorFigures:
    """Everything measured around the operator in one operator phase (one N, one repeat)."""

    convergence: Convergence
    convergence_api: ApiCount
    reconciles: float
    peak_kib: int
    steady_kib: int
    settle_api: ApiCount
    restart: Restart | None = None
    restart_peak_kib: int = 0
    restart_steady_kib: int = 0
    restart_api: ApiCount | None = None
    idle_seconds: float = 0.0
    idle_api: ApiCount | None = None
    idle_reconciles: float = 0.0
    idle_rss_kib: int = 0
    logs: list[Path] = field(default_factory=list)
    durations: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # operator CPU seconds by period
    code: list[str] = field(default_factory=list)  # the operator code each process started from


def settle(operator: OperatorProcess, seconds: float) -> int:
    """Leave the operator alone for `seconds`; its steady RSS at the end."""
    time.sleep(seconds)
    return operator.memory.steady_kib(time.monotonic())


@dataclass
class Restart:
    """How a restarted operator got through the objects present (seconds from its process start)."""

    counted_at: float = float("nan")  # when as many reconcile passes as instances had been counted
    last_pass_at: float = float("nan")  # when the pass count last grew
    passes: float = 0.0
    quiet: bool = False  # no new pass for QUIET_SECONDS before the wait ended


def await_reconciled(operator: OperatorProcess, total: int, timeout: float) -> Restart:
    """After a start: wait until `total` reconcile passes are counted and none for QUIET_SECONDS."""
    deadline = time.monotonic() + timeout
    restart = Restart()
    last_change = time.monotonic()
    next_report = time.monotonic() + PROGRESS_SECONDS
    while time.monotonic() < deadline:
        value = operator.reconciles()
        now = time.monotonic()
        if value != restart.passes:
            restart.passes, last_change = value, now
            restart.last_pass_at = now - operator.started
        if math.isnan(restart.counted_at) and value >= total:
            restart.counted_at = now - operator.started
        if not math.isnan(restart.counted_at) and now - last_change >= QUIET_SECONDS:
            restart.quiet = True
            return restart
        if now >= next_report:
            next_report += PROGRESS_SECONDS
            progress(f"restart: {value:,.0f} reconcile passes after {now - operator.started:.0f} s")
        time.sleep(0.5)
    return restart


def passes_after(operator: OperatorProcess, before: float) -> float:
    """Reconcile passes since `before`, read COUNT_GRACE_SECONDS after a window ends.

    A pass still running at the end of a window has requests in it; read this much later, the
    count includes it (a pass of an unchanged instance takes a fraction of a second).
    """
    time.sleep(COUNT_GRACE_SECONDS)
    return operator.reconciles() - before


def converge(env: Environment, operator: OperatorProcess, total: int, plan: Plan) -> OperatorFigures:
    """Create the N SampleDBs and wait until the operator has made every one Ready; checked API counts."""
    audit = env.audit
    tracker = Tracker([instance_name(index) for index in range(total)], OPERATOR_SLOTS)
    with watching(str(env.cluster.kubeconfig), OPERATOR_NAMESPACE, OPERATOR_ROUTES, tracker):
        start_offset = audit.offset()
        passes_before, cpu_before, before = operator.reconciles(), operator.cpu_seconds(), load.sample()
        result = Convergence(time.monotonic(), [], total)
        progress(f"operator N={total:,}: creating {total:,} SampleDBs")
        result.client_cpu = create_all(str(env.cluster.kubeconfig), OPERATOR_NAMESPACE, total, None)
        progress(f"operator N={total:,}: all created after {time.monotonic() - result.started:.1f} s")

        def status() -> str:
            return f"; operator RSS {mib(operator.memory.current_kib())}, load {os.getloadavg()[0]:.1f}"

        await_convergence(tracker, f"operator N={total:,}", result.started, plan.timeout, status)
        result.ended = time.monotonic()
        # The window after convergence starts here: its passes are counted from the same moment (the
        # status writes of the last instances cause one more pass each, whose reads fall after it).
        end_offset, passes_at_end = audit.offset(), operator.reconciles()
        seen = Lower(tracker.satisfied(CHILD_SLOTS), tracker.satisfied(("ready",)))
        cpu_converged = operator.cpu_seconds()
        result.load = load.phase_load(before, load.sample(), result.ended - result.started)
    result.times = tracker.times()
    passes = passes_after(operator, passes_before)
    # The watches see an object right after its write is committed, and the audit line of that write
    # is written in the same moment: the lower bounds are checked on a window a little longer.
    check_lower("convergence", audit.requests(start_offset, audit.offset()), seen)
    counted = audit.requests(start_offset, end_offset)
    check_upper("convergence", counted, Upper(result.ended - result.started, passes, busy_edges=1))
    figures = OperatorFigures(result, counted, passes, operator.memory.peak_kib(), 0, ApiCount())
    figures.durations["convergence"] = time.monotonic() - result.started
    figures.cpu["convergence"] = cpu_converged - cpu_before
    progress(
        f"operator N={total:,}: {'converged' if result.complete else 'NOT converged'} after "
        f"{result.seconds:.1f} s; peak RSS {mib(figures.peak_kib)}; settling {plan.settle_seconds:.0f} s"
    )
    figures.steady_kib = settle(operator, plan.settle_seconds)
    settled_offset = audit.offset()
    figures.settle_api = audit.requests(end_offset, settled_offset)
    upper = Upper(plan.settle_seconds, passes_after(operator, passes_at_end), busy_edges=1)
    check_upper("after convergence", figures.settle_api, upper)
    return figures


def restart(
    env: Environment, old: OperatorProcess, figures: OperatorFigures, plan: Plan, files: tuple[Path, Path]
) -> OperatorProcess:
    """Stop the operator and start it again with the N objects present; checked API counts.

    `files`: where the old process's memory samples go, and the new process's log.
    """
    total = figures.convergence.total
    # Not converged (gave up): still restart, for the start-up memory with N objects present,
    # but the objects are still changing, so its requests are not those of unchanged objects.
    converged = figures.convergence.complete
    wait = plan.timeout if converged else min(plan.timeout, UNCONVERGED_RESTART_SECONDS)
    progress(f"operator N={total:,}: restarting the operator with {total:,} objects present")
    started = time.monotonic()
    old.stop()
    old.memory.save(files[0])
    restart_offset = env.audit.offset()
    operator = OperatorProcess(env.cluster, files[1])
    figures.code.append(operator.code)
    try:
        figures.restart = await_reconciled(operator, total, wait)
        restarted_offset = env.audit.offset()
        figures.restart_api = env.audit.requests(restart_offset, restarted_offset)
        check_lower("restart", figures.restart_api, Lower())
        seconds = time.monotonic() - started
        busy = 0 if converged else 1  # converged: the old process was idle, the new one quiet at the end
        upper = Upper(seconds, passes_after(operator, 0), busy_edges=busy, starts=1, objects=total)
        check_upper("restart", figures.restart_api, upper)
        figures.restart_peak_kib = operator.memory.peak_kib()
        figures.restart_steady_kib = operator.memory.steady_kib(time.monotonic())
        figures.durations["restart"] = time.monotonic() - started
        figures.cpu["restart"] = operator.cpu_seconds()
        progress(
            f"operator N={total:,}: after the restart {figures.restart.passes:,.0f} reconcile passes, the last at "
            f"{figures.restart.last_pass_at:.1f} s; {figures.restart_api.write_count} writes; peak RSS "
            f"{mib(figures.restart_peak_kib)}"
        )
    except BaseException:
        operator.stop()  # the caller only ever stops the process it was given
        raise
    return operator


def idle(env: Environment, operator: OperatorProcess, figures: OperatorFigures, seconds: float) -> None:
    """Leave the restarted operator alone; checked API counts of the period."""
    total = figures.convergence.total
    progress(f"operator N={total:,}: idle for {seconds:.0f} s")
    start_offset = env.audit.offset()
    reconciles_before, cpu_before = operator.reconciles(), operator.cpu_seconds()
    started = time.monotonic()
    time.sleep(seconds)
    figures.idle_seconds = time.monotonic() - started
    end_offset = env.audit.offset()
    figures.idle_reconciles = operator.reconciles() - reconciles_before
    figures.idle_api = env.audit.requests(start_offset, end_offset)
    passes = passes_after(operator, reconciles_before)
    check_upper("idle", figures.idle_api, Upper(figures.idle_seconds, passes, busy_edges=1 if passes else 0))
    figures.idle_rss_kib = operator.memory.steady_kib(time.monotonic())
    figures.durations["idle"] = figures.idle_seconds
    figures.cpu["idle"] = operator.cpu_seconds() - cpu_before
    progress(f"operator N={total:,}: idle: {figures.idle_api.write_count} writes, {figures.idle_api.total} requests")


def run_operator(env: Environment, total: int, plan: Plan, workdir: Path, tag: str) -> OperatorFigures:
    """Convergence, memory, restart and idle figures of the operator for N instances (one repeat)."""
    create_namespace(env.admin, OPERATOR_NAMESPACE)
    logs = [workdir / f"operator-{tag}-1.log", workdir / f"operator-{tag}-2.log"]
    phase_started = time.monotonic()
    operator = OperatorProcess(env.cluster, logs[0])
    try:
        time.sleep(2)  # its start-up requests (CRD check, initial LIST and WATCH) stay out of the window
        code = operator.code
        figures = converge(env, operator, total, plan)
        figures.logs, figures.code = logs, [code]
        operator = restart(env, operator, figures, plan, (workdir / f"memory-{tag}-1.csv", logs[1]))
        if not figures.convergence.complete:
            progress(f"operator N={total:,}: not converged, so no idle figures")
            return figures
        idle(env, operator, figures, plan.idle_seconds)
        return figures
    finally:
        operator.stop()
        operator.memory.save(workdir / f"memory-{tag}-{2 if operator.log_path == logs[1] else 1}.csv")
        progress(f"operator N={total:,}: phase took {time.monotonic() - phase_started:.0f} s")


# -- rows ------------------------------------------------------------------------------------------


@dataclass
class SizeRuns:
    """Every phase measured at one N: the operator's and the floor's, in the order they ran."""

    total: int
    operators: list[OperatorFigures] = field(default_factory=list)
    floors: list[Convergence] = field(default_factory=list)
    nodes: int = 0
    floor_seconds: list[float] = field(default_factory=list)  # each floor phase, its cluster included


def _phase_time(phase: Convergence) -> str:
    if phase.complete:
        return f"{phase.seconds:.1f} s (half at {phase.half_seconds():.1f} s)"
    return f"NOT DONE: {len(phase.times):,}/{phase.total:,} after {phase.seconds:.0f} s (gave up)"


def _times(phases: Sequence[Convergence]) -> str:
    """Each run's time; the median ± spread when every run finished."""
    each = "; ".join(_phase_time(phase) for phase in phases)
    if len(phases) > 1 and all(phase.complete for phase in phases):
        return f"{spread_text([phase.seconds for phase in phases], 1, ' s')}; each: {each}"
    return each


def _median_or_dash(values: Sequence[float], digits: int) -> str:
    return f"{statistics.median(values):.{digits}f}" if values else "-"


def ratio_row(section: str, runs: SizeRuns) -> Row:
    """Operator / floor, one ratio per repeat (the phases ran alternately), judged by rule 1 at TARGET_N."""
    pairs = [(op.convergence, floor) for op, floor in zip(runs.operators, runs.floors, strict=False)]
    ratios = [op.seconds / floor.seconds for op, floor in pairs if op.complete and floor.complete]
    what = f"ratio operator / floor (one per repeat, phases alternating; {len(ratios)} of {len(pairs)} pairs done)"
    if not ratios:
        return Row(section, what, "-")
    if runs.total != TARGET_N:
        return Row(section, what, spread_text(ratios))
    judged = judge(ratios, Target(RATIO_TARGET, f"<= {RATIO_TARGET:g}"))
    return Row(section, what, judged.value(), judged.cell())


def convergence_rows(runs: SizeRuns) -> list[Row]:
    """Times, ratio, objects per second, CPU and the load of every phase for one N."""
    total, section = runs.total, f"N = {runs.total:,}: convergence"
    ops = [figures.convergence for figures in runs.operators]
    floor_text = _times(runs.floors) if runs.floors else "not measured at this N (--floor-sizes)"
    rows = [
        Row(section, "floor: all children, a ready replica, init Job complete", floor_text),
        Row(section, "operator: all children, Ready, observedGeneration current", _times(ops)),
    ]
    if runs.floors:
        rows.append(ratio_row(section, runs))
    done = [[phase.seconds for phase in phases if phase.complete] for phases in (runs.floors, ops)]
    objects = " / ".join(_median_or_dash([CHILD_KINDS * total / s for s in seconds], 1) for seconds in done)
    instances = " / ".join(_median_or_dash([total / s for s in seconds], 2) for seconds in done)
    passes = [figures.reconciles / total for figures in runs.operators]
    client_cpu = _median_or_dash([phase.client_cpu for phase in runs.floors], 1)
    operator_cpu = _median_or_dash([figures.cpu.get("convergence", 0.0) for figures in runs.operators], 1)
    per_instance_ms = [1000 * figures.cpu.get("convergence", 0.0) / total for figures in runs.operators]
    rows += [
        Row(section, f"child objects per second ({CHILD_KINDS} per instance), medians: floor / operator", objects),
        Row(section, "instances per second, medians: floor / operator", instances),
        Row(section, "reconcile passes per instance (the operator's own metric)", spread_text(passes)),
        Row(section, "CPU seconds, medians: floor's client process / operator", f"{client_cpu} / {operator_cpu}"),
        _cpu_row(section, total, per_instance_ms),
    ]
    order = [("operator", op) for op in ops]
    order = [item for pair in zip_longest(order, [("floor", f) for f in runs.floors]) for item in pair if item]
    counts: Counter[str] = Counter()
    for kind, phase in order:
        counts[kind] += 1
        load_text = phase.load.text() if phase.load else "?"
        rows.append(Row(section, f"load while converging: {kind} run {counts[kind]}", load_text))
    return rows


def _cpu_row(section: str, total: int, per_instance_ms: list[float]) -> Row:
    what = "operator CPU per instance converged (ms)"
    if total != TARGET_N or not per_instance_ms:
        return Row(section, what, spread_text(per_instance_ms, 1, " ms") if per_instance_ms else "-")
    judged = judge(per_instance_ms, Target(CPU_TARGET_MS, f"<= {CPU_TARGET_MS:g} ms"))
    return Row(section, what, judged.value(1, " ms"), judged.cell(1))


def memory_rows(runs: SizeRuns, settle_seconds: float) -> list[Row]:
    """The operator's RSS for one N, the peaks judged by rule 1 over the repeats at TARGET_N."""
    section = f"N = {runs.total:,}: operator memory (MiB, one value per repeat)"
    target = Target(MEMORY_TARGET_MIB, f"< {MEMORY_TARGET_MIB:g} MiB")

    def row(what: str, kib: Sequence[int], *, judged: bool = False) -> Row:
        values = [k / 1024 for k in kib]
        if judged and runs.total == TARGET_N:
            verdict = judge(values, target)
            return Row(section, what, verdict.value(1, " MiB"), verdict.cell(1))
        return Row(section, what, spread_text(values, 1, " MiB"))

    operators = runs.operators
    rows = [
        row("peak RSS from start to convergence (VmHWM)", [f.peak_kib for f in operators], judged=True),
        row(f"steady RSS after convergence (idle {settle_seconds:.0f} s)", [f.steady_kib for f in operators]),
    ]
    restarted = [f for f in operators if f.restart_api is not None]
    if restarted:
        note = "" if all(f.convergence.complete for f in restarted) else " (some NOT converged: still changing)"
        peaks = [f.restart_peak_kib for f in restarted]
        rows.append(row(f"start-up peak after a restart with {runs.total:,} objects (VmHWM){note}", peaks, judged=True))
        rows.append(row("RSS once the restart has settled", [f.restart_steady_kib for f in restarted]))
    idled = [f for f in operators if f.idle_api is not None]
    if idled:
        rows.append(row("RSS at the end of the idle period", [f.idle_rss_kib for f in idled]))
    return rows


def _each(values: Sequence[str]) -> str:
    return values[0] if len(values) == 1 else "; ".join(f"run {i}: {v}" for i, v in enumerate(values, start=1))


def _writes_text(writes: Sequence[int], apis: Sequence[ApiCount], hourly: Sequence[float] = ()) -> str:
    """Each run's writes (and their hourly rate), with a few of the writes as evidence."""
    each = [f"{w:,} / {h:,.0f}" for w, h in zip(writes, hourly, strict=True)] if hourly else [f"{w:,}" for w in writes]
    examples = [write for api in apis for write in api.writes][:3]
    return _each(each) + (f" (e.g. {'; '.join(examples)})" if examples else "")


def _restart_progress(figures: OperatorFigures) -> str:
    restart = figures.restart
    if restart is None:
        return "-"
    text = f"{restart.counted_at:.1f} s / last pass at {restart.last_pass_at:.1f} s ({restart.passes:,.0f} passes)"
    return text + ("" if restart.quiet else "; still busy when the wait ended")


def restart_rows(section: str, runs: SizeRuns) -> list[Row]:
    """The restart with N objects present: passes, CPU, requests and writes of each repeat."""
    restarted = [f for f in runs.operators if f.restart_api is not None]
    apis = [f.restart_api for f in restarted if f.restart_api is not None]
    if not apis:
        return []
    total = runs.total
    converged = all(f.convergence.complete for f in restarted)
    what = f"{total:,} unchanged objects" if converged else f"{total:,} objects, NOT all converged (still changing)"
    writes = [api.write_count for api in apis]
    target = count_verdict(writes, 0, "0 writes") if converged else "not comparable: not converged"
    cpu = [f.cpu.get("restart", 0.0) for f in restarted]
    return [
        Row(
            section,
            f"restart with {what}: passes counted after / quiet",
            _each([_restart_progress(f) for f in restarted]),
        ),
        Row(section, "restart: operator CPU seconds from its start", spread_text(cpu, 1)),
        Row(section, "restart: requests (by verb)", _each([f"{a.total:,} ({a.by_verb()})" for a in apis])),
        Row(section, "restart: writes", _writes_text(writes, apis), target),
        Row(
            section,
            "restart: GETs of objects (CRD and Lease upkeep apart: all GETs)",
            _each([f"{a.object_gets:,} (all: {a.verbs['get']:,})" for a in apis]),
            count_verdict([a.object_gets for a in apis], 0, "0 GETs"),
        ),
    ]


def idle_rows(section: str, runs: SizeRuns) -> list[Row]:
    """The idle period after the restart, each repeat: requests, passes, CPU, writes (extrapolated)."""
    idled = [f for f in runs.operators if f.idle_api is not None]
    apis = [f.idle_api for f in idled if f.idle_api is not None]
    if not apis:
        return []
    seconds = statistics.median(f.idle_seconds for f in idled)
    writes = [api.write_count for api in apis]
    hourly = [api.write_count / (f.idle_seconds / 3600) for api, f in zip(apis, idled, strict=True)]
    each = [f"{a.total:,} ({a.by_verb()}); {f.idle_reconciles:,.0f}" for a, f in zip(apis, idled, strict=True)]
    cpu = [f.cpu.get("idle", 0.0) for f in idled]
    return [
        Row(section, f"idle {seconds:.0f} s after the restart: requests (by verb); reconcile passes", _each(each)),
        Row(section, "idle: operator CPU seconds", spread_text(cpu, 1)),
        Row(
            section,
            f"idle: writes measured in {seconds:.0f} s / extrapolated to 1 hour",
            _writes_text(writes, apis, hourly),
            count_verdict(writes, 0, "0 writes"),
        ),
    ]


def api_rows(runs: SizeRuns, settle_seconds: float) -> list[Row]:
    """The operator's requests, from the audit log (checked before this), for one N and every repeat."""
    total, section = runs.total, f"N = {runs.total:,}: API load (audit log, operator's user)"
    apis = [f.convergence_api for f in runs.operators]
    done = "converged" if all(f.convergence.complete for f in runs.operators) else "until giving up (NOT converged)"
    settled = [f"{f.settle_api.total:,} / {f.settle_api.write_count:,}" for f in runs.operators]
    per_instance = [a.total / total for a in apis]
    requests = Target(REQUESTS_TARGET, f"<= {REQUESTS_TARGET:g}")
    judged = judge(per_instance, requests) if total == TARGET_N else None
    rows = [
        Row(
            section,
            f"requests per instance {done}",
            judged.value() if judged else spread_text(per_instance),
            judged.cell() if judged else "",
        ),
        Row(section, "  by verb", _each([a.per(total) for a in apis])),
        Row(
            section,
            f"GETs of objects {done} (a pass observes from the watch caches; all GETs)",
            _each([f"{a.object_gets:,} ({a.verbs['get']:,})" for a in apis]),
            count_verdict([a.object_gets for a in apis], 0, "0 GETs"),
        ),
        Row(section, f"writes per instance {done}", spread_text([a.write_count / total for a in apis])),
        Row(section, "failed requests while converging (verb code: count)", _each([a.failed() for a in apis])),
        Row(section, f"after convergence, idle {settle_seconds:.0f} s: requests / writes", _each(settled)),
    ]
    return rows + restart_rows(section, runs) + idle_rows(section, runs)


def run_rows(runs: SizeRuns) -> list[Row]:
    """How the run went for one N: durations, nodes, operator code and log."""
    section = f"N = {runs.total:,}: run"
    logs = [path for figures in runs.operators for path in figures.logs if path.exists()]
    errors, warnings, examples = log_problems(logs)
    durations = _each(["; ".join(f"{k} {v:.0f} s" for k, v in f.durations.items()) for f in runs.operators])
    floors = ", ".join(f"{seconds:.0f} s" for seconds in runs.floor_seconds) or "-"
    codes = sorted({code for figures in runs.operators for code in figures.code})
    rows = [
        Row(section, "fake nodes added (besides the harness's one)", str(runs.nodes)),
        Row(section, "phase durations: floor (its cluster included)", floors),
        Row(section, "phase durations: operator", durations),
        Row(section, "operator code (git) at every start", " / ".join(codes) or "?"),
        Row(section, "operator log: ERROR / WARNING lines (all repeats)", f"{errors:,} / {warnings:,}"),
    ]
    if examples:
        rows.append(Row(section, "first ERROR lines", " / ".join(e.replace("|", "\\|") for e in examples)))
    return rows


# -- orchestration ---------------------------------------------------------------------------------


def operator_phase(total: int, plan: Plan, workdir: Path, tag: str, runs: SizeRuns) -> None:
    """One operator phase on a fresh cluster of its own."""
    with contextlib.ExitStack() as stack:
        env = bring_up(stack, workdir, f"operator-{tag}", total)
        runs.nodes = env.nodes
        runs.operators.append(run_operator(env, total, plan, workdir, tag))
        env.audit.offset()  # one last look: a rotation at the very end still fails the run
        progress(f"operator N={total:,} ({tag}): stopping its cluster")


def floor_phase(total: int, plan: Plan, workdir: Path, tag: str, runs: SizeRuns) -> None:
    """One floor phase on a fresh cluster of its own."""
    with contextlib.ExitStack() as stack:
        started = time.monotonic()
        env = bring_up(stack, workdir, f"floor-{tag}", total)
        floor = run_floor(env, total, plan.timeout)
        runs.floors.append(floor)
        runs.floor_seconds.append(time.monotonic() - started)
        outcome = "done" if floor.complete else "NOT done"
        progress(f"floor N={total:,} ({tag}): {outcome} after {floor.seconds:.1f} s; stopping its cluster")


def measure_size(total: int, plan: Plan, workdir: Path) -> list[Row]:
    """Operator and floor phases alternately (operator, floor, operator, ...), each on a fresh cluster."""
    runs = SizeRuns(total)
    for repeat in range(1, plan.repeats + 1):
        tag = f"{total}-{repeat}"
        progress(f"N={total:,}: repeat {repeat}/{plan.repeats}")
        operator_phase(total, plan, workdir, tag, runs)
        if total in plan.floor_sizes:
            floor_phase(total, plan, workdir, tag, runs)
    return [
        *convergence_rows(runs),
        *memory_rows(runs, plan.settle_seconds),
        *api_rows(runs, plan.settle_seconds),
        *run_rows(runs),
    ]


def run(plan: Plan, workdir: Path, rows: list[Row], save: Callable[[list[Row], str], None]) -> None:
    """Every size in turn into `rows`; a size that fails is reported and the next one still runs.

    Counts that cannot be true (`ImplausibleCountError`) and a rotated audit log stop the whole run:
    the figures of that cluster cannot be trusted, and a table must never show them. The table so
    far is saved after each size (`save`), so that an interrupted run keeps what it measured.
    """
    rows += machine_rows()
    for index, total in enumerate(plan.sizes):
        size_started = time.monotonic()
        try:
            rows += measure_size(total, plan, workdir)
        except (ImplausibleCountError, AuditRotatedError):
            raise
        except Exception as err:
            progress(f"N={total:,} failed: {err!r}")
            rows.append(Row(f"N = {total:,}", "FAILED", str(err).replace("|", "\\|")[:300]))
        progress(f"N={total:,} took {time.monotonic() - size_started:.0f} s in all")
        remaining = plan.sizes[index + 1 :]
        if remaining:
            save(rows, f"partial: N = {', '.join(map(str, remaining))} still to run")
    rows.append(Row("Machine", "load average 1/5/15 min at the end", load_average()))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: N = 50 and 200, idle 60 s, settle 20 s")
    parser.add_argument("--sizes", help="comma-separated N values (default 100,1000,5000; --quick: 50,200)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="operator and floor phases per N, alternating (default 3)"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        help="idle period after the restart (default 300; --quick 60); the issue asks for 3600",
    )
    parser.add_argument(
        "--floor-sizes", help="the sizes that also get a floor phase (default: all); the others run the operator only"
    )
    parser.add_argument("--settle-seconds", type=float, help="idle period after convergence (default 30; --quick 20)")
    parser.add_argument("--timeout", type=float, default=3600, help="give up on a convergence after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the working folder (logs, audit logs) after success")
    result_files.add_results_dir(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def make_plan(args: argparse.Namespace) -> Plan:
    """The plan from the command line."""

    def numbers(text: str) -> tuple[int, ...]:
        return tuple(int(size.replace("_", "")) for size in text.split(","))

    sizes = numbers(args.sizes or ("50,200" if args.quick else "100,1000,5000"))
    return Plan(
        sizes=sizes,
        floor_sizes=numbers(args.floor_sizes) if args.floor_sizes else sizes,
        idle_seconds=args.idle_seconds if args.idle_seconds is not None else (60 if args.quick else 300),
        settle_seconds=args.settle_seconds if args.settle_seconds is not None else (20 if args.quick else 30),
        timeout=args.timeout,
        repeats=args.repeats,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and keep it in a results file of its own."""
    args = parse_args(argv)
    plan = make_plan(args)
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # so the cleanup below also runs on SIGTERM
    workdir = Path(tempfile.mkdtemp(prefix="sampledb-bench-scale-"))
    path = result_files.new_file("scale", args.results_dir)
    progress(f"working folder {workdir}; sizes {', '.join(map(str, plan.sizes))}; {WORKERS} workers; {path}")
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_scale.py", *given])
    if not given:
        command = f"make bench-scale` (`{command}"

    def save(rows: list[Row], state: str) -> None:
        write_results(path, markdown_table(rows), command, state)
        progress(f"table ({state}) written to {path}")

    rows: list[Row] = []
    try:
        run(plan, workdir, rows, save)
    except BaseException as err:
        progress(f"failed; logs of the operator and the clusters are kept in {workdir}")
        if rows:
            rows.append(Row("Run", "INTERRUPTED", f"{type(err).__name__}: {err}".replace("|", "\\|")[:300]))
            save(rows, "interrupted")
        raise
    if args.keep:
        progress(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(markdown_table(rows) + FOOTNOTES, end="")
    save(rows, "complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())

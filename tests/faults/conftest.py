"""Fault-injection fixtures (issue #7): an operator process the tests may SIGKILL, and a reproducible seed.

The suite reuses the integration fixtures (admin client, CRDs wired to two conversion-webhook
replicas, the operator's RBAC) but not its session operator: here every test starts its own
`python -m sampledb_operator run`, which it kills, restarts or watches through an API server
outage. Two operators acting on one cluster would race each other, so this folder runs in its own
pytest invocation, with its own local clusters (`make test-faults`): one with simulated (kwok)
nodes for the bookkeeping tests (the `admin`, `cluster`, `killable_operator` and `released`
fixtures), and, started on first use, one with a real node for the tests that check data in
PostgreSQL and real Pods' logs (the `node_*` fixtures; `realnode.py` has their tools). The real
node takes a network slot of its own, so this tier runs beside `tests/node` (hack/test-tiers.sh).

No test removes a finalizer while an operator runs: clean-up deletes the SampleDBs and lets the
operator finalise them (:func:`release`).

Randomness (kill delays, generated input) comes from one seed per run, printed in the header and
the summary; `SAMPLEDB_FAULT_SEED=<seed>` replays a run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s

from sampledb_localcluster import LocalCluster
from sampledb_operator.api import crdgen
from sampledb_operator.k8s.api import ApiError, KubeApi, load_client
from tests.conftest import _wait_for_default_service_account, external_kubeconfig, namespace_name
from tests.faults.realnode import Kubectl, start_real_cluster
from tests.integration.conftest import (  # noqa: F401 - fixtures, re-exported for this folder
    OPERATOR_SA,
    REPO,
    admin,
    apply,
    conversion_webhook,
    crds,
    free_port,
    operator_rbac,
    wait_for,
    wired_crd,
)
from tests.node.conftest import RESTRICTED
from tests.operator_process import healthy, metrics, spawn_operator
from tests.webhook_process import WebhookReplicas, start_webhook

SEED_ENV = "SAMPLEDB_FAULT_SEED"


def _seed_from_env() -> int:
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return secrets.randbelow(2**32)
    try:
        return int(raw)
    except ValueError:
        raise pytest.UsageError(f"{SEED_ENV} must be an integer, not {raw!r}") from None


FAULT_SEED = _seed_from_env()


def pytest_report_header(config: pytest.Config) -> str:
    return f"fault seed: {FAULT_SEED} (replay with {SEED_ENV}={FAULT_SEED})"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.write_line(f"fault seed: {FAULT_SEED} (replay with {SEED_ENV}={FAULT_SEED})")


@pytest.hookimpl(trylast=True)  # after -m/-k deselection
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a run that mixes these tests with other cluster tests (it must be its own invocation).

    The integration suite's session operator would act next to the operator these tests kill (two
    operators racing on one cluster), and this folder's local cluster differs from theirs.
    """
    here = Path(__file__).parent
    ours = [item for item in items if here in item.path.parents]
    theirs = [
        item.nodeid
        for item in items
        if here not in item.path.parents and {"kube_config", "local_cluster"} & set(getattr(item, "fixturenames", ()))
    ]
    if ours and theirs:
        raise pytest.UsageError(
            f"tests/faults must run in its own pytest invocation (make test-faults), not with {theirs[0]} "
            f"and {len(theirs) - 1} other cluster test(s): it starts, kills and restarts its own operator"
        )


@pytest.fixture(scope="session")
def fault_seed() -> int:
    """The run's seed: from $SAMPLEDB_FAULT_SEED, else random (and printed)."""
    return FAULT_SEED


# -- the operator as a process the tests may kill --------------------------------------------------


@dataclass
class Incarnation:
    """One start of the operator process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    health_port: int
    metrics_port: int
    started: float  # time.monotonic() at spawn


@dataclass
class KillableOperator:
    """`python -m sampledb_operator run` with the operator's identity, started, SIGKILLed and restarted at will.

    Every start gets fresh ports and its own log file, so the evidence of each incarnation (and
    of what a kill interrupted) is kept.
    """

    kubeconfig: str
    directory: Path
    incarnations: list[Incarnation] = field(default_factory=list)

    @property
    def current(self) -> Incarnation:
        assert self.incarnations, "the operator was never started"
        return self.incarnations[-1]

    @property
    def pid(self) -> int:
        return self.current.process.pid

    def alive(self) -> bool:
        return bool(self.incarnations) and self.current.process.poll() is None

    def start(self, *, wait_healthy: bool = True, timeout: float = 60) -> Incarnation:
        """Spawn a new incarnation (the previous one must be gone); optionally wait for /healthz."""
        assert not self.alive(), f"the operator already runs as pid {self.pid}"
        log_path = self.directory / f"operator-{len(self.incarnations)}.log"
        health_port, metrics_port = free_port(), free_port()
        process = spawn_operator(self.kubeconfig, log_path, metrics_port=metrics_port, health_port=health_port)
        incarnation = Incarnation(process, log_path, health_port, metrics_port, time.monotonic())
        self.incarnations.append(incarnation)
        if wait_healthy:
            self.wait_healthy(timeout)
        return incarnation

    def wait_healthy(self, timeout: float = 60) -> None:
        def healthy() -> bool:
            if not self.alive():
                code = self.current.process.returncode
                raise AssertionError(f"the operator exited with code {code}:\n{self.current_log()[-3000:]}")
            return self.healthy()

        wait_for(healthy, timeout=timeout, what=f"the operator to report healthy (log: {self.current.log_path})")

    def healthy(self) -> bool:
        """/healthz of the current incarnation answers 200."""
        return healthy(self.current.health_port)

    def kill(self) -> float:
        """SIGKILL the current incarnation (no clean-up of any kind); return how long it had lived."""
        incarnation = self.current
        incarnation.process.send_signal(signal.SIGKILL)
        incarnation.process.wait(timeout=10)
        assert incarnation.process.returncode == -signal.SIGKILL
        return time.monotonic() - incarnation.started

    def stop(self) -> None:
        """SIGTERM (kopf's graceful stop), SIGKILL after 15 s."""
        if not self.alive():
            return
        process = self.current.process
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def current_log(self) -> str:
        return self.current.log_path.read_text(errors="replace")

    def log(self) -> str:
        """The logs of every incarnation, in order."""
        return "".join(i.log_path.read_text(errors="replace") for i in self.incarnations)

    def metrics(self) -> dict[str, float]:
        """The current incarnation's own metrics (name{labels} -> value)."""
        return metrics(self.current.metrics_port)


def _own_operator(cluster: LocalCluster, tmp_path: Path) -> Iterator[KillableOperator]:
    runner = KillableOperator(str(cluster.operator_kubeconfig), tmp_path)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
        print(f"\noperator logs: {', '.join(str(i.log_path) for i in runner.incarnations)}")


@pytest.fixture
def killable_operator(
    cluster: LocalCluster,
    crds: list[str],  # noqa: F811
    operator_rbac: None,  # noqa: F811
    tmp_path: Path,
) -> Iterator[KillableOperator]:
    """This test's own operator process, started and healthy; stopped (or already dead) afterwards."""
    yield from _own_operator(cluster, tmp_path)


RELEASE_TIMEOUT = 120.0


def release(api: KubeApi, namespace: str, operator: KillableOperator, *, timeout: float = RELEASE_TIMEOUT) -> None:
    """Delete every SampleDB of `namespace` and wait until the operator has finalised them all.

    Each is switched to deletionPolicy Delete first (a final snapshot per instance would only slow
    the clean-up down), then deleted the way a user would. The finalizer is never removed by hand
    while an operator runs: that would race the operator's own deletion steps. Should the operator
    not finish in time, it is stopped first, the finalizers are removed then (so the next test
    starts clean), and the clean-up fails naming what the operator left behind.
    """
    if not operator.alive():
        operator.start()  # a test that failed between a kill and the restart
    for obj in api.list_objects("SampleDB", namespace):
        name = obj["metadata"]["name"]
        if (obj.get("spec") or {}).get("deletionPolicy") != "Delete":
            try:
                api.merge_patch("SampleDB", namespace, name, {"spec": {"deletionPolicy": "Delete"}})
            except ApiError as err:
                if err.status not in (404, 422):  # 422: a spec that no longer validates; the operator copes
                    raise
        api.delete("SampleDB", namespace, name)

    def remaining() -> list[str]:
        return sorted(obj["metadata"]["name"] for obj in api.list_objects("SampleDB", namespace))

    try:
        wait_for(lambda: not remaining(), timeout=timeout, what=f"the operator to delete every SampleDB in {namespace}")
    except AssertionError:
        left = remaining()
        operator.stop()
        for name in left:
            try:
                api.merge_patch("SampleDB", namespace, name, {"metadata": {"finalizers": None}})
            except ApiError as err:
                if err.status != 404:
                    raise
        wait_for(lambda: not remaining(), timeout=60, what=f"every SampleDB in {namespace} to be gone")
        raise AssertionError(
            f"the operator did not finalise {left} within {timeout:.0f} s of their deletion "
            f"(stopped, then their finalizers removed; log: {operator.current.log_path})"
        ) from None


@pytest.fixture
def released(admin: KubeApi, namespace: str, killable_operator: KillableOperator) -> Iterator[str]:  # noqa: F811
    """The test namespace; afterwards the operator has deleted its SampleDBs (see :func:`release`).

    Otherwise the next test's operator would inherit hundreds of objects to finalise, and its
    timings (and logs) would measure this test's leftovers.
    """
    yield namespace
    release(admin, namespace, killable_operator)


# The node lifecycle controller marks a Node NotReady, and its Pods not ready, when the Node's
# heartbeat is older than this grace period (50 s by default). An API server outage stops kwok's
# heartbeats too; a real kubelet would report its Pods ready again afterwards, kwok never does.
# So the grace period outlasts the outage here, and what the tests measure is the operator.
NODE_GRACE = "--node-monitor-grace-period=3m"


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """This run's own local control plane, as tests/conftest.py starts it, with NODE_GRACE."""
    state_dir = tmp_path_factory.mktemp("local-cluster")
    with LocalCluster(state_dir=state_dir, extra_args={"kube-controller-manager": [NODE_GRACE]}) as local:
        yield local


@pytest.fixture
def cluster(request: pytest.FixtureRequest) -> LocalCluster:
    """The run's local cluster: these tests stop its components and read its audit log."""
    if external_kubeconfig(request.config):
        pytest.skip("fault injection stops the API server and reads its audit log: it needs the local cluster")
    local: LocalCluster = request.getfixturevalue("local_cluster")
    return local


# -- the real node: the scenarios that check data in PostgreSQL ---------------------------------------


@pytest.fixture(scope="session")
def node_cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A second local cluster, with one real node, started on first use (kwok serves the other tests).

    Its node takes its own network slot, so it runs beside the `tests/node` tier's real node.
    """
    if external_kubeconfig(request.config):
        pytest.skip("the data checks run PostgreSQL on the local cluster's real node")
    cluster = start_real_cluster(tmp_path_factory.mktemp("real-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def node_admin(node_cluster: LocalCluster) -> KubeApi:
    """The admin client of the real-node cluster."""
    return KubeApi(load_client(str(node_cluster.kubeconfig)))


@pytest.fixture(scope="session")
def node_kubectl(node_cluster: LocalCluster) -> Kubectl:
    """kubectl against the real-node cluster (exec and logs go through its kubelet)."""
    return Kubectl(str(node_cluster.kubeconfig))


@pytest.fixture(scope="session")
def node_webhook(node_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookReplicas]:
    """Two conversion-webhook replicas on loopback for the real-node cluster's API server."""
    hooks = start_webhook(tmp_path_factory.mktemp("node-webhook"), ca=(node_cluster.ca_cert, node_cluster.ca_key),
                          replicas=2)  # fmt: skip
    yield hooks
    hooks.stop()


@pytest.fixture(scope="session")
def node_installed(node_admin: KubeApi, node_webhook: WebhookReplicas) -> None:
    """The CRDs (wired to the webhook replicas) and the operator's RBAC on the real-node cluster."""
    names = []
    for crd in crdgen.all_crds().values():
        apply(node_admin, wired_crd(crd, node_webhook))
        names.append(crd["metadata"]["name"])
    for name in names:
        wait_for(lambda n=name: _established(node_admin, n), what=f"CRD {name} to be established")  # type: ignore[misc]
    rbac = k8s.RbacAuthorizationV1Api(node_admin._client)  # setup only; the operator never uses this
    role = yaml.safe_load((REPO / "config/rbac/role.yaml").read_text())
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "sampledb-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "namespace": OPERATOR_SA[0], "name": OPERATOR_SA[1]}],
    }
    rbac.create_cluster_role(role)
    rbac.create_cluster_role_binding(binding)


def _established(api: KubeApi, name: str) -> bool:
    conditions = ((api.get("CustomResourceDefinition", None, name) or {}).get("status") or {}).get("conditions")
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions or [])


@pytest.fixture
def node_operator(node_cluster: LocalCluster, node_installed: None, tmp_path: Path) -> Iterator[KillableOperator]:
    """This test's own operator process on the real-node cluster; stopped (or already dead) afterwards."""
    yield from _own_operator(node_cluster, tmp_path)


@contextlib.contextmanager
def node_namespace(api: KubeApi, operator: KillableOperator, name: str) -> Iterator[str]:
    """A namespace enforcing Pod Security "restricted" (as tests/node's); released, then deleted, afterwards.

    Every Pod the operator creates must be admitted under the strictest standard. The namespace
    itself is not waited for: its Pods' termination only slows the run down.
    """
    core = k8s.CoreV1Api(api._client)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=RESTRICTED)))
    _wait_for_default_service_account(core, name)
    try:
        yield name
    finally:
        try:
            release(api, name, operator, timeout=240)
        finally:
            core.delete_namespace(name)


@pytest.fixture
def node_released(
    request: pytest.FixtureRequest, node_admin: KubeApi, node_operator: KillableOperator
) -> Iterator[str]:
    """A fresh restricted namespace on the real-node cluster; afterwards the operator has deleted its SampleDBs."""
    with node_namespace(node_admin, node_operator, namespace_name(request.node.name)) as name:
        yield name

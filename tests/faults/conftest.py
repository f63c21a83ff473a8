"""Fault-injection fixtures (issue #7): an operator process the tests may SIGKILL, and a reproducible seed.

The suite reuses the integration fixtures (admin client, CRDs wired to two conversion-webhook
replicas, the operator's RBAC) but not its session operator: here every test starts its own
`python -m sampledb_operator run`, which it kills, restarts or watches through an API server
outage. Two operators acting on one cluster would race each other, so this folder runs in its own
pytest invocation, with its own local cluster (`make test-faults`).

Randomness (kill delays, generated input) comes from one seed per run, printed in the header and
the summary; `SAMPLEDB_FAULT_SEED=<seed>` replays a run.
"""

from __future__ import annotations

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

from sampledb_localcluster import LocalCluster
from sampledb_operator.k8s.api import ApiError, KubeApi
from tests.conftest import external_kubeconfig
from tests.integration.conftest import (  # noqa: F401 - fixtures, re-exported for this folder
    REPO,
    admin,
    conversion_webhook,
    crds,
    free_port,
    operator_rbac,
    wait_for,
)
from tests.operator_process import healthy, metrics, spawn_operator

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


@pytest.fixture
def killable_operator(
    cluster: LocalCluster,
    crds: list[str],  # noqa: F811
    operator_rbac: None,  # noqa: F811
    tmp_path: Path,
) -> Iterator[KillableOperator]:
    """This test's own operator process, started and healthy; stopped (or already dead) afterwards."""
    runner = KillableOperator(str(cluster.operator_kubeconfig), tmp_path)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
        print(f"\noperator logs: {', '.join(str(i.log_path) for i in runner.incarnations)}")


@pytest.fixture
def released(admin: KubeApi, namespace: str, killable_operator: KillableOperator) -> Iterator[str]:  # noqa: F811
    """The test namespace; afterwards its SampleDBs are gone before the next test's operator starts.

    Otherwise the next operator would inherit hundreds of objects to finalise, and its timings (and
    logs) would measure this test's leftovers. The finalizer is removed here rather than by the
    operator: what the test checks is done, and the operator may be the worse for it.
    """
    yield namespace
    for obj in admin.list_objects("SampleDB", namespace):
        name = obj["metadata"]["name"]
        try:
            admin.merge_patch("SampleDB", namespace, name, {"metadata": {"finalizers": None}})
        except ApiError as err:
            if err.status != 404:
                raise
        admin.delete("SampleDB", namespace, name)
    wait_for(
        lambda: not admin.list_objects("SampleDB", namespace),
        timeout=60,
        what=f"every SampleDB in {namespace} to be deleted",
        interval=0.5,
    )


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

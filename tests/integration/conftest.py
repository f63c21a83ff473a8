"""Integration fixtures: the CRDs installed, RBAC for the operator, and the operator as a process.

The operator runs out of cluster exactly as `make run` starts it, with the local cluster's
operator identity (a client certificate for `system:serviceaccount:sampledb-system:sampledb-operator`),
so the ClusterRole in config/rbac/role.yaml is what authorises it: a missing permission fails here.
"""

from __future__ import annotations

import base64
import copy
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from sampledb_operator.api import crdgen
from sampledb_operator.k8s.api import ApiError, KubeApi, load_client
from tests.conftest import external_kubeconfig
from tests.operator_process import healthy, metrics, spawn_operator
from tests.webhook_process import WebhookReplicas, free_port, start_webhook

REPO = Path(__file__).resolve().parents[2]
OPERATOR_SA = ("sampledb-system", "sampledb-operator")
T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], *, timeout: float = 60, what: str = "condition", interval: float = 0.2
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")


@pytest.fixture(scope="session")
def admin(kube_config: str) -> KubeApi:
    """Our own API wrapper with the admin identity (the tests' hands)."""
    return KubeApi(load_client(kube_config))


def apply(api: KubeApi, manifest: dict[str, Any]) -> None:
    """Create, or replace the content of, a cluster object (for setup only)."""
    kind, meta = manifest["kind"], manifest["metadata"]
    try:
        api.create(manifest)
    except ApiError as err:
        if not err.conflict:
            raise
        current = api.get(kind, meta.get("namespace"), meta["name"])
        assert current is not None
        body = {**manifest, "metadata": {**meta, "resourceVersion": current["metadata"]["resourceVersion"]}}
        api.merge_patch(kind, meta.get("namespace"), meta["name"], body)


def _crd_established(api: KubeApi, name: str) -> bool:
    crd = api.get("CustomResourceDefinition", None, name) or {}
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


@pytest.fixture(scope="session")
def conversion_webhook(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebhookReplicas | None]:
    """Two webhook replicas on one loopback port, with a certificate from the local cluster's CA.

    Pods are simulated on the local cluster, so the API server reaches the webhook at a loopback
    URL; on an existing cluster the webhook is expected to be installed there (Helm or OLM).
    """
    if external_kubeconfig(request.config):
        yield None
        return
    cluster = request.getfixturevalue("local_cluster")
    hooks = start_webhook(tmp_path_factory.mktemp("webhook"), ca=(cluster.ca_cert, cluster.ca_key), replicas=2)
    yield hooks
    hooks.stop()


def wired_crd(crd: dict[str, Any], hooks: WebhookReplicas | None) -> dict[str, Any]:
    """The CRD with its conversion webhook pointed at the test replicas (when we run them)."""
    if hooks is None or crd["spec"].get("conversion", {}).get("strategy") != "Webhook":
        return crd
    wired = copy.deepcopy(crd)
    ca_bundle = base64.b64encode(hooks.ca_cert.read_bytes()).decode()
    # `service: None` removes the packaged Service reference when this is a merge patch.
    wired["spec"]["conversion"]["webhook"]["clientConfig"] = {"url": hooks.url, "caBundle": ca_bundle, "service": None}
    return wired


VALIDATING_WEBHOOK = REPO / "charts/sampledb-operator/files/validating-webhook.yaml"
TEST_REGISTRATION = "sampledb-tests-v1beta1"


def register_validating_webhook(admin: KubeApi, hooks: WebhookReplicas) -> None:
    """The chart's ValidatingWebhookConfiguration (from its single source), calling the test replicas."""
    from kubernetes import client

    source = yaml.safe_load(VALIDATING_WEBHOOK.read_text())
    url = f"https://127.0.0.1:{hooks.port}{source['path']}"
    ca_bundle = base64.b64encode(hooks.ca_cert.read_bytes()).decode()
    body = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": TEST_REGISTRATION},
        "webhooks": [{**source["webhook"], "clientConfig": {"url": url, "caBundle": ca_bundle}}],
    }
    registrations = client.AdmissionregistrationV1Api(admin._client)  # setup only
    try:
        registrations.create_validating_webhook_configuration(body)
    except client.ApiException as err:
        if err.status != 409:
            raise
        registrations.replace_validating_webhook_configuration(TEST_REGISTRATION, body)


def unregister_validating_webhook(admin: KubeApi) -> None:
    from kubernetes import client

    try:
        client.AdmissionregistrationV1Api(admin._client).delete_validating_webhook_configuration(TEST_REGISTRATION)
    except client.ApiException as err:
        if err.status != 404:
            raise


@pytest.fixture(scope="session")
def crds(admin: KubeApi, conversion_webhook: WebhookReplicas | None) -> Iterator[list[str]]:
    """The generated CRDs, installed, wired to the conversion webhook and established.

    With the test replicas, the v1beta1 update check is registered too, as Helm and OLM install it,
    and removed at the end: left behind (failurePolicy Fail) it would refuse every v1beta1 update
    once the replicas stop.
    """
    names = []
    for crd in crdgen.all_crds().values():
        apply(admin, wired_crd(crd, conversion_webhook))
        names.append(crd["metadata"]["name"])
    if conversion_webhook is not None:
        register_validating_webhook(admin, conversion_webhook)
    for name in names:
        wait_for(lambda n=name: _crd_established(admin, n), what=f"CRD {name} to be established")  # type: ignore[misc]
    yield names
    if conversion_webhook is not None:
        unregister_validating_webhook(admin)


@pytest.fixture(scope="session")
def operator_rbac(request: pytest.FixtureRequest, admin: KubeApi) -> None:
    """Bind the operator's ClusterRole to its identity on the local cluster."""
    if external_kubeconfig(request.config):
        return  # an existing cluster: the operator runs with the given credentials
    from kubernetes import client

    rbac = client.RbacAuthorizationV1Api(admin._client)  # setup only; the operator never uses this
    role = yaml.safe_load((REPO / "config/rbac/role.yaml").read_text())
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "sampledb-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role["metadata"]["name"]},
        "subjects": [{"kind": "ServiceAccount", "namespace": OPERATOR_SA[0], "name": OPERATOR_SA[1]}],
    }
    for create, replace, body in (
        (rbac.create_cluster_role, rbac.replace_cluster_role, role),
        (rbac.create_cluster_role_binding, rbac.replace_cluster_role_binding, binding),
    ):
        try:
            create(body)
        except client.ApiException as err:
            if err.status != 409:
                raise
            replace(body["metadata"]["name"], body)


@dataclass
class OperatorProcess:
    """The operator running as a subprocess, with its log and metrics at hand."""

    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_port: int

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """Current values of the operator's own metrics (name{labels} -> value)."""
        return metrics(self.metrics_port)


def _operator_kubeconfig(request: pytest.FixtureRequest, kube_config: str) -> str:
    if external_kubeconfig(request.config):
        return kube_config
    cluster = request.getfixturevalue("local_cluster")
    return str(cluster.operator_kubeconfig)


@pytest.fixture(scope="session")
def operator(
    request: pytest.FixtureRequest,
    kube_config: str,
    crds: list[str],
    operator_rbac: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[OperatorProcess]:
    """`python -m sampledb_operator run` against the test cluster, for the whole session."""
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    metrics_port, health_port = free_port(), free_port()
    process = spawn_operator(
        _operator_kubeconfig(request, kube_config), log_path, metrics_port=metrics_port, health_port=health_port
    )
    running = OperatorProcess(process, log_path, metrics_port)

    def started() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the operator exited with code {process.returncode}:\n{running.log()[-3000:]}")
        return healthy(health_port)

    try:
        wait_for(started, timeout=60, what=f"the operator to report healthy (log: {log_path})")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        print(f"\noperator log: {log_path}")

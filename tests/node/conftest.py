"""Real-node fixtures: a local cluster whose node runs real containers, the operator, and eyes inside PostgreSQL.

The session starts ONE :class:`LocalCluster` with ``node="real"`` (containerd, kubelet, kube-proxy
and CoreDNS in a network namespace of their own; our Debian-built PostgreSQL 15, 17 and 18 images
loaded under the operator's default image names), installs the CRDs and runs the operator as a
process exactly as the integration tier does. Every check of data goes through PostgreSQL itself:
``psql`` in the server's container over its local socket, or in a client Pod over the client
Service's DNS name with the generated Secret, the way an application connects.

Test namespaces enforce Pod Security "restricted", so every Pod the operator creates is admitted
under the strictest standard or the test fails.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sampledb_localcluster import LocalCluster
from sampledb_localcluster.images import CONTAINERD_NAMESPACE
from sampledb_localcluster.tools import tool_path
from sampledb_operator.k8s.api import KubeApi
from tests.conftest import _wait_for_default_service_account, namespace_name
from tests.integration.conftest import (  # noqa: F401 - fixtures reused as they are
    admin,
    apply,
    conversion_webhook,
    crds,
    operator,
    operator_rbac,
    wait_for,
)

RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
    "sampledb.test/test-namespace": "true",
}
SOCKET_DIR = "/var/run/postgresql"
CLIENT_POD = "client"


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The session's cluster, with a real node (overrides the kwok cluster of tests/conftest.py)."""
    with LocalCluster(state_dir=tmp_path_factory.mktemp("real-cluster"), node="real", timeout=120) as cluster:
        yield cluster


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s_api: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security "restricted", with the operator running."""
    request.getfixturevalue("operator")
    core, api = k8s.CoreV1Api(k8s_api), KubeApi(k8s_api)
    name = namespace_name(request.node.name)
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=RESTRICTED)))
    _wait_for_default_service_account(core, name)
    try:
        yield name
    finally:
        for obj in api.list_objects("SampleDB", name):  # Snapshot instances would hold the namespace
            api.merge_patch("SampleDB", name, obj["metadata"]["name"], {"spec": {"deletionPolicy": "Delete"}})
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


@pytest.fixture(scope="session")
def kubectl(kube_config: str) -> Any:
    """``kubectl(*args)``: run the pinned kubectl against the test cluster and return its stdout."""
    binary = str(tool_path("kubectl"))

    def run(*args: str, timeout: float = 120, check: bool = True) -> str:
        result = subprocess.run(
            [binary, "--kubeconfig", kube_config, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    return run


@pytest.fixture
def psql(kubectl: Any) -> Any:
    """``psql(namespace, instance, sql, db=...)``: as the superuser, in the server's container, over its socket."""

    def run(namespace: str, instance: str, sql: str, *, db: str = "postgres", check: bool = True) -> str:
        exec_ = ["exec", "-n", namespace, f"{instance}-0", "-c", "postgres", "--"]
        client = ["psql", "-h", SOCKET_DIR, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-XAtc", sql]
        out = kubectl(*exec_, *client, check=check)
        return str(out).strip()

    return run


def restricted_pod(namespace: str, name: str, image: str, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Pod that idles in ``image`` and satisfies Pod Security "restricted", like the operator's Pods."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 999,
                "runAsGroup": 999,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "psql",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", "infinity"],
                    "env": env or [],
                    "securityContext": {
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True,
                    },
                }
            ],
        },
    }


def client_pod(namespace: str, instance: str, image: str, *, database: str) -> dict[str, Any]:
    """A Pod that connects like an application: the client Service's DNS name, the generated Secret."""
    secret = f"{instance}-credentials"
    env = [
        {"name": "PGHOST", "value": f"{instance}.{namespace}.svc"},
        {"name": "PGDATABASE", "value": database},
        {"name": "PGCONNECT_TIMEOUT", "value": "10"},
        {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": secret, "key": "username"}}},
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}},
    ]
    return restricted_pod(namespace, f"{CLIENT_POD}-{instance}", image, env)


def ids(output: str) -> set[int]:
    """The integers of one-column query output."""
    return {int(line) for line in output.split()}


def checksum(rows: str) -> str:
    """A fingerprint of query output (ordered rows), to compare data before and after an operation."""
    return hashlib.sha256(rows.encode()).hexdigest()


def logs_dir(cluster: LocalCluster) -> Path:
    """Where the node's Pod logs are (kept with the cluster's other logs)."""
    return cluster.log_dir / "pods"


def kill_server(api: KubeApi, cluster: LocalCluster, namespace: str, pod: str) -> None:
    """SIGKILL the server's postmaster from the host (inside, PID 1 ignores it): a crash, its Pod stays."""
    statuses = ((api.get("Pod", namespace, pod) or {}).get("status") or {}).get("containerStatuses") or []
    container = next(s["containerID"] for s in statuses if s["name"] == "postgres").removeprefix("containerd://")
    ctr = ["ctr", "--address", str(cluster.containerd_socket), "--namespace", CONTAINERD_NAMESPACE]
    subprocess.run([*ctr, "task", "kill", "--signal", "SIGKILL", container], check=True, capture_output=True)

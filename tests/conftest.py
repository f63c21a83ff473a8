"""Shared pytest configuration: markers by folder, and the Kubernetes cluster the tests talk to.

Cluster selection: pass ``--kubeconfig PATH`` (option registered by pytest-helm-charts) or set
``$KUBECONFIG`` to test against an existing cluster. Otherwise ONE local control plane
(``sampledb_localcluster.LocalCluster``: etcd, kube-apiserver, controller manager, scheduler and
kwok as local processes) is started for the whole session, on first use only, so unit-only runs
never start it.

Fixtures:
    local_cluster   session   the LocalCluster (always a local one; logs, CA, audit log, ...)
    kube_config     session   admin kubeconfig path (overrides pytest-helm-charts' fixture, so
                              its ``kube_cluster`` fixture (pykube) uses the same cluster)
    k8s_api         session   kubernetes.client.ApiClient for the admin kubeconfig
    namespace       function  a fresh namespace per test, deleted afterwards
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException

from sampledb_localcluster import LocalCluster

TESTS_DIR = Path(__file__).parent
FOLDER_MARKERS = ("unit", "postgres", "integration", "node", "e2e", "faults")


# -- markers ---------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    # Also declared in pytest.ini; repeated so the markers exist when that file is not used.
    for marker in FOLDER_MARKERS:
        config.addinivalue_line("markers", f"{marker}: tests under tests/{marker}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test by its folder, so `-m unit` / `-m "not e2e"` select by kind."""
    for item in items:
        try:
            folder = item.path.relative_to(TESTS_DIR).parts[0]
        except ValueError:
            continue
        if folder in FOLDER_MARKERS:
            item.add_marker(getattr(pytest.mark, folder))


def pytest_report_header(config: pytest.Config) -> str:
    external = external_kubeconfig(config)
    return f"kubernetes: {'existing cluster from ' + external if external else 'local control plane (on demand)'}"


# -- cluster ---------------------------------------------------------------------------------------


def external_kubeconfig(config: pytest.Config) -> str | None:
    """The kubeconfig of an existing cluster to test against, if one was given."""
    return config.getoption("kubeconfig", default=None) or os.environ.get("KUBECONFIG") or None


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A local control plane for the whole session; its files (logs!) stay in pytest's tmp dir."""
    with LocalCluster(state_dir=tmp_path_factory.mktemp("local-cluster")) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kube_config(request: pytest.FixtureRequest) -> str:
    """Admin kubeconfig path: the given existing cluster, else the session's local cluster."""
    external = external_kubeconfig(request.config)
    if external:
        return external
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return str(cluster.kubeconfig)


@pytest.fixture(scope="session")
def k8s_api(kube_config: str) -> Iterator[k8s.ApiClient]:
    """A `kubernetes` client for the admin kubeconfig (wrap it: `k8s.CoreV1Api(k8s_api)`)."""
    api = k8s_config.new_client_from_config(config_file=kube_config)
    try:
        yield api
    finally:
        api.close()


def namespace_name(test_name: str) -> str:
    """A DNS-1123 label derived from the test name, unique per call, at most 63 characters."""
    suffix = "-" + secrets.token_hex(3)
    base = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-") or "test"
    return base[: 63 - len(suffix)].rstrip("-") + suffix


@pytest.fixture
def namespace(request: pytest.FixtureRequest, k8s_api: k8s.ApiClient) -> Iterator[str]:
    """A fresh namespace for one test, ready for Pods (its `default` ServiceAccount exists)."""
    core = k8s.CoreV1Api(k8s_api)
    name = namespace_name(request.node.name)
    core.create_namespace(
        k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={"sampledb.test/test-namespace": "true"}))
    )
    _wait_for_default_service_account(core, name)
    try:
        yield name
    finally:
        # Not waiting for the namespace to go: its finalisation only slows the run down.
        try:
            core.delete_namespace(name)
        except ApiException as error:
            if error.status != 404:
                raise


def _wait_for_default_service_account(core: k8s.CoreV1Api, namespace: str, timeout: float = 90.0) -> None:
    """Pods are rejected until the controller manager has created the namespace's `default` SA.

    90 s: after the fault suite's API server outage the controller manager may still be re-listing
    (under load, 30 s was once not enough).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except ApiException as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def live_processes_mentioning(state_dir: Path) -> list[list[str]]:
    """argv of every live (not zombie) process whose arguments mention a path under `state_dir`."""
    marker = f"{state_dir}/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode().split("\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if state != "Z" and any(marker in arg for arg in argv):
            found.append(argv)
    return found

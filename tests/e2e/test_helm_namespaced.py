"""The chart's namespace-restricted mode with two operator replicas, on the real node.

One release watches one namespace (`watchNamespaces`), with two operator replicas behind leader
election (`ci/ha-values.yaml`). While SampleDBs are being created in the watched namespace, the
leading Pod is deleted: the standby takes the Lease (the handover is timed from the deletion to the
new holder), no Job is created twice (every Job the namespace ever had is watched, by name and
UID), and every instance converges to Ready with real PostgreSQL. A SampleDB in another namespace is
left alone, and the RBAC the chart renders for this mode is enough (the instances converge) and no
more (`kubectl auth can-i` for what it must not do).

Runs after tests/e2e/test_helm_chart.py's release is gone (modules run in file order, and its
release is module-scoped): a cluster-wide operator would serve the other namespace too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch

from tests.e2e.installs import (
    CHART,
    Release,
    delete_namespaces,
    delete_sampledbs,
    deployment_available,
    new_namespace,
    sampledb,
)
from tests.integration.conftest import wait_for

RELEASE = "watcher"
FULLNAME = f"{RELEASE}-sampledb-operator"
INSTANCES = ("a", "b", "c")


@dataclass
class Setup:
    release: Release
    watched: str
    other: str


@pytest.fixture(scope="module")
def setup(kube_config: str) -> Iterator[Setup]:
    watched = new_namespace(kube_config, "sampledb-team")
    other = new_namespace(kube_config, "sampledb-other")
    system = new_namespace(kube_config, "sampledb-e2e-ns")
    release = Release(RELEASE, system, kube_config)
    try:
        release.install("--set", f"watchNamespaces={{{watched}}}", "--values", str(CHART / "ci" / "ha-values.yaml"))
        yield Setup(release, watched, other)
    finally:
        delete_sampledbs(release, watched)
        release.kubectl("delete", "sampledbs.sampledb.io", "--all", "-n", other, "--wait=false", check=False)
        release.helm("uninstall", RELEASE, "--ignore-not-found", "--wait", "--timeout", "120s", check=False)
        delete_namespaces(kube_config, system, watched, other)


def lease_holder(release: Release) -> str:
    holder: str = release.get("lease", FULLNAME)["spec"].get("holderIdentity") or ""
    return holder


class JobWatch:
    """Every Job a namespace gets while it runs, by name: a second UID for a name is a second create."""

    def __init__(self, api: k8s.ApiClient, namespace: str) -> None:
        self.uids: dict[str, set[str]] = {}
        self._batch, self._namespace = k8s.BatchV1Api(api), namespace
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JobWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():  # each stream lists first, so nothing between two streams is missed
            for event in watch.Watch().stream(self._batch.list_namespaced_job, self._namespace, timeout_seconds=3):
                job = event["object"]
                self.uids.setdefault(job.metadata.name, set()).add(job.metadata.uid)


def test_leader_handover_while_instances_are_created(setup: Setup, k8s_api: Any) -> None:
    release, watched = setup.release, setup.watched
    for name in (FULLNAME, f"{FULLNAME}-webhook"):
        assert deployment_available(release.get("deployment", name)), name
    wait_for(lambda: lease_holder(release) or None, what="a leader")
    leader = lease_holder(release)
    leader_pod = leader.split("_", 1)[0]
    pods = {
        p["metadata"]["name"]
        for p in release.items("pods", release.namespace, "-l", "app.kubernetes.io/component=operator")
    }
    assert leader_pod in pods and len(pods) == 2, (leader, pods)

    with JobWatch(k8s_api, watched) as jobs:
        release.apply(setup.other, sampledb("ignored"))
        release.apply(watched, *(sampledb(name) for name in INSTANCES))
        time.sleep(1)  # the leader has started on them
        deleted = time.monotonic()
        release.kubectl("delete", "pod", leader_pod, "-n", release.namespace, "--wait=false")
        wait_for(lambda: (lease_holder(release) not in ("", leader)) or None, what="a new leader", timeout=120)
        handover = time.monotonic() - deleted
        new_leader = lease_holder(release).split("_", 1)[0]
        release.wait_ready(watched, *INSTANCES)
        converged = time.monotonic() - deleted
    print(
        f"\nleader {leader_pod} deleted: {new_leader} held the Lease after {handover:.1f} s; "
        f"{len(INSTANCES)} instances Ready after {converged:.1f} s"
    )
    # The standby, or the Pod that replaced the deleted one: whichever asked first after the old
    # leader released the Lease on SIGTERM (the standby asks every lease/3 = 5 s).
    now_running = {
        p["metadata"]["name"]
        for p in release.items("pods", release.namespace, "-l", "app.kubernetes.io/component=operator")
    }
    assert new_leader != leader_pod and new_leader in now_running, (new_leader, now_running)
    assert {f"{name}-init" for name in INSTANCES} <= set(jobs.uids), jobs.uids
    twice = {name: uids for name, uids in jobs.uids.items() if len(uids) > 1}
    assert not twice, f"Jobs created more than once: {twice}"
    for name in INSTANCES:
        assert release.query(watched, name, "SELECT 1") == "1"


def test_an_instance_outside_the_watched_namespaces_is_left_alone(setup: Setup) -> None:
    release = setup.release
    # The watched instances converged (the test above) since this one was created: time enough.
    ignored = release.get("sampledb", "ignored", setup.other)
    assert "status" not in ignored and not ignored["metadata"].get("finalizers"), ignored
    for kind in ("statefulsets", "secrets", "services", "jobs"):
        made = [
            i["metadata"]["name"]
            for i in release.items(kind, setup.other)
            if i["metadata"]["name"].startswith("ignored")
        ]
        assert made == [], f"{kind} made in an unwatched namespace: {made}"


def test_rbac_is_enough_and_no_more(setup: Setup) -> None:
    release, watched, other = setup.release, setup.watched, setup.other
    account = FULLNAME
    # Enough: the instances above converged with these rights; spot-check the main ones.
    for verb, resource in (
        ("patch", "sampledbs.sampledb.io"),
        ("create", "statefulsets.apps"),
        ("create", "jobs.batch"),
    ):
        assert release.can(account, verb, resource, "-n", watched), (verb, resource)
    assert release.can(account, "list", "customresourcedefinitions.apiextensions.k8s.io")
    assert release.can(account, "patch", "leases.coordination.k8s.io", "-n", release.namespace)
    # No more: nothing in other namespaces, nothing cluster-wide but the CRDs.
    for verb, resource in (
        ("patch", "sampledbs.sampledb.io"),
        ("get", "secrets"),
        ("create", "statefulsets.apps"),
        ("patch", "leases.coordination.k8s.io"),
        ("create", "pods/exec"),
    ):
        assert not release.can(account, verb, resource, "-n", other), (verb, resource)
    for verb, resource in (("list", "secrets"), ("patch", "sampledbs.sampledb.io"), ("create", "clusterroles")):
        assert not release.can(account, verb, resource, "--all-namespaces"), (verb, resource)
    assert not release.can(account, "delete", "customresourcedefinitions.apiextensions.k8s.io")
    assert not release.can(account, "create", "customresourcedefinitions.apiextensions.k8s.io")


def test_uninstall_removes_every_object_of_the_release(setup: Setup) -> None:
    release = setup.release
    delete_sampledbs(release, setup.watched)  # while the operator runs: it removes their finalizers
    manifest = release.manifest()
    cluster_roles = [d["metadata"]["name"] for d in manifest if d["kind"] == "ClusterRole"]
    release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    wait_for(
        lambda: (
            not release.leftovers([release.namespace, setup.watched, setup.other], {"ClusterRole": cluster_roles})
            or None
        ),
        what="every object of the release to be gone",
        timeout=90,
    )

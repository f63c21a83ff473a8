"""The API server goes away for 30 s while the operator works; the same operator process recovers.

The local cluster stops only its kube-apiserver (`LocalCluster.stop_component`), etcd and the
rest keep running, then starts it again on the same port with the same data. The operator is not
restarted: it must ride the outage out (its watches and reconciles fail meanwhile), then converge
every instance, without creating any Job twice. The conversion webhook replicas the CRDs point
at must still serve the API server once it is back.
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from sampledb_localcluster import LocalCluster
from sampledb_operator.k8s.api import KubeApi, Resource
from tests.audit_log import audit_entries
from tests.faults.checks import OPERATOR_USER, check_jobs, describe, init_purpose, not_ready, sampledb
from tests.faults.conftest import KillableOperator
from tests.integration.conftest import wait_for
from tests.webhook_process import WebhookReplicas

# How long the API server stays down once stopped (stopping itself takes up to 5 s more), as the
# issue asks. kwok's Node heartbeats stop too; the faults cluster's node grace period (NODE_GRACE in
# conftest.py) outlasts the outage, so Pods stay Ready and what is measured is the operator.
OUTAGE_SECONDS = 30.0
# The operator must be writing again this soon after the API server is back (its watches reconnect
# with kopf's backoff, its failed reconciles retry with theirs).
RESUME_SECONDS = 60.0
INSTANCES = 20
WRITES = ("create", "update", "patch", "delete")
V1BETA1 = Resource("/apis/sampledb.io/v1beta1", "sampledbs")


@pytest.mark.timeout(300)
def test_operator_recovers_from_an_api_server_outage_without_restarting(
    admin: KubeApi,
    released: str,
    killable_operator: KillableOperator,
    cluster: LocalCluster,
    conversion_webhook: WebhookReplicas | None,
) -> None:
    assert conversion_webhook is not None  # the local cluster's CRDs convert through the test replicas
    namespace, pid = released, killable_operator.pid
    audit_offset = cluster.audit_log.stat().st_size
    names = [f"db-{i}" for i in range(INSTANCES)]
    for name in names:
        admin.create(sampledb(name, namespace))
    # Work genuinely in flight: the operator has started (a StatefulSet exists) and not finished.
    wait_for(lambda: any(admin.get("StatefulSet", namespace, n) for n in names), what="the operator at work")
    converging = not_ready(admin, namespace, names)
    apiserver_pid = cluster.status().get("kube-apiserver")
    assert apiserver_pid, "no running API server to stop"
    cluster.stop_component("kube-apiserver")
    down = time.monotonic()
    # Down for real: its process is gone and its port refuses connections (status() would only read
    # the pid file that stopping removes).
    assert not _running(apiserver_pid), f"the API server (pid {apiserver_pid}) still runs"
    assert not _accepts(cluster.server), f"{cluster.server} still accepts connections"
    print(f"API server stopped with {len(converging)} of {INSTANCES} instances still converging")
    assert converging, "every instance was Ready before the outage: it interrupted nothing"
    while time.monotonic() - down < OUTAGE_SECONDS:
        assert killable_operator.alive(), f"the operator died during the outage:\n{killable_operator.log()[-3000:]}"
        time.sleep(1)
    cluster.start_component("kube-apiserver")
    back, back_at = time.monotonic(), datetime.now(UTC)
    # kwok 0.7 can lose a Pod scheduled just before the outage: in CI on 2026-11-28 a Pod scheduled
    # 3 s before the stop got no stage from kwok until it was deleted, and its instance stayed
    # Provisioning. A kubelet lists its Pods again when it reconnects; restarting kwok gives the
    # simulated node that re-list. The harness's stand-in volume provisioner can likewise miss a
    # claim made as the API server stopped (CI, 2026-11-28: data-db-12-0 was never provisioned, so
    # its Pod stayed unschedulable); a restart makes it list the claims again. The scheduler parks a
    # Pod it found unschedulable (its claim unbound as the API server stopped) for up to 5 minutes
    # unless an event it watches moves it: on 2026-11-29 three instances stayed Provisioning in CI
    # (the cluster's logs were lost; the test now prints what it sees and CI keeps the logs), so the
    # scheduler is restarted too. The operator, which is what is under test, keeps running.
    for component in ("kwok", "volume-provisioner", "kube-scheduler"):
        cluster.stop_component(component)
        cluster.start_component(component)

    began = time.monotonic()
    pending = not_ready(admin, namespace, names)
    while pending and time.monotonic() - began < 180:
        time.sleep(1)
        pending = not_ready(admin, namespace, names)
    if pending:
        stuck = [p.split(":")[0] for p in pending]
        pytest.fail(f"not converged 180 s after the API server came back:\n{describe(admin, namespace, stuck)}")
    print(f"all {INSTANCES} instances Ready {time.monotonic() - back:.1f} s after the API server came back")

    audit = audit_entries(cluster.audit_log, audit_offset)
    writes_after = [
        e.time
        for e in audit
        if e.user == OPERATOR_USER and e.verb in WRITES and e.namespace == namespace and e.time >= back_at
    ]
    assert writes_after, "the operator wrote nothing after the outage"
    resumed = (min(writes_after) - back_at).total_seconds()
    print(f"the operator wrote again {resumed:.1f} s after the API server came back")
    assert resumed < RESUME_SECONDS
    assert killable_operator.pid == pid and killable_operator.alive(), "the operator process was replaced"
    assert len(killable_operator.incarnations) == 1
    assert killable_operator.healthy(), "the operator no longer reports healthy"
    purposes = [init_purpose(db) for db in (admin.get("SampleDB", namespace, n) for n in names) if db]
    report = check_jobs(admin, namespace, purposes, audit)
    assert report.problems == [], "; ".join(report.problems)
    # The webhook replicas outlived the outage, and the restarted API server converts through them.
    assert all(p.poll() is None for p in conversion_webhook.processes), "a webhook replica exited"
    items = admin._request("GET", V1BETA1.path(namespace))["items"]
    assert sorted(i["metadata"]["name"] for i in items) == sorted(names)
    assert {i["apiVersion"] for i in items} == {"sampledb.io/v1beta1"}
    assert {i["status"]["phase"] for i in items} == {"Ready"}


def _running(pid: int) -> bool:
    """A live process (not a zombie left for its parent to reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _accepts(url: str) -> bool:
    address = urlsplit(url)
    try:
        with socket.create_connection((address.hostname, address.port), timeout=2):
            return True
    except OSError:
        return False

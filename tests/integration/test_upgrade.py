"""Major upgrades on the real API server: each step's Job once, in order, and a rollback on failure.

Pods are simulated here (their Jobs succeed), so these tests prove the orchestration: the state
machine in status, the StatefulSet scaled down and switched, one Job per step, events and
conditions. What the Jobs' scripts do to real data is proven in tests/postgres.
"""

from __future__ import annotations

from typing import Any

import pytest

from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.settings import DEFAULT_IMAGES
from tests.integration.conftest import wait_for
from tests.integration.test_operator import (
    _failing_job,
    _job_failed,
    condition,
    events_for,
    get_db,
    sampledb,
    wait_ready,
)

pytestmark = pytest.mark.usefixtures("operator")
STEPS = ["backup", "check", "run", "verify"]


def upgrade_status(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return dict((get_db(admin, namespace, name).get("status") or {}).get("upgrade") or {})


def upgrade_jobs(admin: KubeApi, namespace: str) -> list[str]:
    return sorted(
        j["metadata"]["name"] for j in admin.list_objects("Job", namespace, labels={"sampledb.io/upgrade-to": "17"})
    )


def statefulset_image(admin: KubeApi, namespace: str, name: str) -> str:
    sts = admin.get("StatefulSet", namespace, name)
    assert sts is not None
    return str(sts["spec"]["template"]["spec"]["containers"][0]["image"])


def start_on_15(admin: KubeApi, namespace: str, name: str) -> None:
    admin.create(sampledb(name, namespace, {"postgres": {"version": 15}, "storage": {"size": "1Gi"}}))
    ready = wait_ready(admin, namespace, name)
    assert ready["status"]["version"] == 15


def test_upgrade_runs_each_step_once_and_reports(admin: KubeApi, namespace: str) -> None:
    start_on_15(admin, namespace, "up")
    admin.merge_patch("SampleDB", namespace, "up", {"spec": {"postgres": {"version": 17}}})
    phases = set()

    def succeeded() -> bool:
        status = upgrade_status(admin, namespace, "up")
        phases.add(status.get("phase"))
        return status.get("phase") == "Succeeded"

    wait_for(succeeded, timeout=180, what="the upgrade to succeed")
    ready = wait_ready(admin, namespace, "up")
    assert ready["status"]["version"] == 17
    assert ready["status"]["image"] == DEFAULT_IMAGES[17] == statefulset_image(admin, namespace, "up")
    assert {"BackingUp", "Upgrading", "Succeeded"} <= phases
    assert upgrade_jobs(admin, namespace) == sorted(f"up-upgrade17-1-{s}" for s in STEPS)
    status = ready["status"]["upgrade"]
    assert (status["fromVersion"], status["toVersion"], status["attempt"]) == (15, 17, 1)
    assert status["fromImage"] == DEFAULT_IMAGES[15]
    assert status["backup"] == "up-backups:/backups/up/upgrade-15-to-17-1.sql"
    assert admin.get("PersistentVolumeClaim", namespace, "up-backups") is not None
    run = admin.get("Job", namespace, "up-upgrade17-1-run")
    assert run is not None
    pod = run["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == DEFAULT_IMAGES[17]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-up-0"}} in pod["volumes"]
    reasons = [e["reason"] for e in events_for(admin, namespace, "up")]
    assert "UpgradeStarted" in reasons and "UpgradeSucceeded" in reasons
    assert condition(ready, "Degraded")["status"] == "False"


def test_failed_step_rolls_back_to_the_old_version_and_a_deleted_job_retries(admin: KubeApi, namespace: str) -> None:
    start_on_15(admin, namespace, "rb")
    # A Job that can only fail holds the check step's name (simulated Pods always succeed); labelled
    # as the operator labels its Jobs, so that deleting it wakes the operator as it would for real.
    admin.create(_failing_job(namespace, "rb-upgrade17-1-check", "rb"))
    wait_for(lambda: _job_failed(admin, namespace, "rb-upgrade17-1-check"), timeout=90, what="the Job to fail")
    admin.merge_patch("SampleDB", namespace, "rb", {"spec": {"postgres": {"version": 17}}})
    wait_for(lambda: upgrade_status(admin, namespace, "rb").get("phase") == "Failed", timeout=180, what="rollback")
    failed = wait_for(
        lambda: (db := get_db(admin, namespace, "rb"))["status"].get("readyInstances") == 1 and db,
        what="the old version to serve again",
    )
    assert failed["status"]["phase"] == "Degraded"
    degraded = condition(failed, "Degraded")
    assert degraded["reason"] == "UpgradeFailed"
    assert "rolled back to 15 with its data" in degraded["message"]
    assert "delete Job rb-upgrade17-1-check to retry" in degraded["message"]
    assert failed["status"]["version"] == 15
    assert statefulset_image(admin, namespace, "rb") == DEFAULT_IMAGES[15]
    assert admin.get("Job", namespace, "rb-upgrade17-1-rollback") is not None
    assert admin.get("Job", namespace, "rb-upgrade17-1-run") is None  # stopped before touching the data
    reasons = [e["reason"] for e in events_for(admin, namespace, "rb")]
    assert "UpgradeRollingBack" in reasons and "UpgradeFailed" in reasons

    admin.delete("Job", namespace, "rb-upgrade17-1-check", propagation="Background")
    wait_for(lambda: upgrade_status(admin, namespace, "rb").get("phase") == "Succeeded", timeout=180, what="retry")
    retried = wait_ready(admin, namespace, "rb")
    assert retried["status"]["version"] == 17 and retried["status"]["upgrade"]["attempt"] == 2
    assert condition(retried, "Degraded")["status"] == "False"
    assert [j for j in upgrade_jobs(admin, namespace) if "-2-" in j] == sorted(f"rb-upgrade17-2-{s}" for s in STEPS)

"""On-demand backups (SampleDBBackup) on the real API server: one Job each, outcome in status.

Pods are simulated here (kwok): a backup Job "succeeds" without running its script, and its Pod
leaves no termination message. So these tests prove the bookkeeping (the Job, its owner, its
environment, status and events); what a real backup Pod reports (the dump's size and SHA-256,
matching the file on the volume) is asserted on a real node, in tests/node/test_journey.py
(test_backup_reports_what_the_job_measured_and_restores_into_a_new_instance).
"""

from __future__ import annotations

from typing import Any

import pytest

from sampledb_operator.k8s.api import ApiError, KubeApi
from tests.integration.conftest import wait_for
from tests.integration.test_operator import sampledb, wait_ready

pytestmark = pytest.mark.usefixtures("operator")


def backup_object(name: str, namespace: str, instance: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sampledb.io/v1",
        "kind": "SampleDBBackup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"instance": instance, **spec},
    }


def phase(admin: KubeApi, namespace: str, name: str) -> str | None:
    obj = admin.get("SampleDBBackup", namespace, name) or {}
    return (obj.get("status") or {}).get("phase")


def test_backup_runs_one_job_and_on_simulated_pods_reports_the_missing_summary(admin: KubeApi, namespace: str) -> None:
    """Holds for simulated Pods only: a real backup Pod writes its summary, and the status carries bytes and sha256."""
    admin.create(sampledb("src", namespace, {"storage": {"size": "1Gi"}, "deletionPolicy": "Delete"}))
    wait_ready(admin, namespace, "src")
    admin.create(backup_object("nightly-1", namespace, "src", verify=True))
    wait_for(lambda: phase(admin, namespace, "nightly-1") == "Succeeded", timeout=90, what="the backup to succeed")
    job = admin.get("Job", namespace, "nightly-1")
    assert job is not None
    assert job["metadata"]["ownerReferences"][0]["kind"] == "SampleDBBackup"
    env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["VERIFY"] == "true"
    assert env["APP_DATABASE"] == "app"
    assert admin.get("PersistentVolumeClaim", namespace, "src-backups") is not None
    status = admin.get("SampleDBBackup", namespace, "nightly-1")["status"]  # type: ignore[index]
    assert status["job"] == "nightly-1"
    assert "completionTime" in status
    # Simulated Pods only (kwok writes no termination message): the status says so instead of inventing a
    # size. On a real node the summary is there and this message is not (tests/node asserts bytes and sha256).
    assert "left no summary" in status["message"]
    assert "bytes" not in status and "sha256" not in status
    reasons = [e["reason"] for e in admin.list_objects("Event", namespace) if e["regarding"]["name"] == "nightly-1"]
    assert "BackupStarted" in reasons
    assert "BackupSucceeded" in reasons
    assert len(admin.list_objects("Job", namespace, labels={"sampledb.io/backup": "nightly-1"})) == 1


def test_backup_of_a_missing_instance_fails_clearly(admin: KubeApi, namespace: str) -> None:
    admin.create(backup_object("orphan", namespace, "nope"))
    wait_for(lambda: phase(admin, namespace, "orphan") == "Failed", what="the backup to fail")
    status = admin.get("SampleDBBackup", namespace, "orphan")["status"]  # type: ignore[index]
    assert status["message"] == f"spec.instance: SampleDB 'nope' not found in {namespace}"
    assert admin.get("Job", namespace, "orphan") is None


def test_backup_spec_is_immutable(admin: KubeApi, namespace: str) -> None:
    admin.create(backup_object("fixed", namespace, "a"))
    with pytest.raises(ApiError, match="spec is immutable"):
        admin.merge_patch("SampleDBBackup", namespace, "fixed", {"spec": {"instance": "b"}})


def test_physical_backups_are_checked_at_admission_and_need_an_object_store(admin: KubeApi, namespace: str) -> None:
    """What needs no real Pod: the API's rules, and a SampleDB without an object store (the rest: tests/node)."""
    store = {
        "endpoint": "https://s3.example.com",
        "bucket": "pg-archive",
        "credentials": {"secretName": "k"},
        "retention": {},
    }
    with pytest.raises(ApiError) as refused:
        admin.create(sampledb("kept", namespace, {"backup": {"objectStore": store}}))
    assert refused.value.status == 422 and "exactly one of fullBackups or recoveryWindowDays" in refused.value.message
    admin.create(sampledb("plain", namespace, {"storage": {"size": "1Gi"}, "deletionPolicy": "Delete"}))
    admin.create(backup_object("base-1", namespace, "plain", method="Physical", verify=True))
    wait_for(lambda: phase(admin, namespace, "base-1") == "Failed", timeout=60, what="the base backup to fail")
    message = admin.get("SampleDBBackup", namespace, "base-1")["status"]["message"]  # type: ignore[index]
    assert "SampleDB plain has no spec.backup.objectStore" in message, message


def test_recovery_is_checked_at_admission_and_immutable(admin: KubeApi, namespace: str) -> None:
    """spec.recovery's rules, on the API server (what it recovers to: tests/postgres, tests/node)."""
    store = {"endpoint": "https://s3.example.com", "bucket": "pg-archive", "credentials": {"secretName": "k"}}
    source = {"repositoryPath": "/sampledb/team-a/old/uid-old"}
    refused_specs = {
        "needs exactly one of repositoryPath and backup": {"recovery": {**source, "backup": "b"}},
        "spec.recovery reads from spec.backup.objectStore": {"recovery": source},
        "cannot both be set": {"recovery": source, "restore": {"backup": "b"}, "backup": {"objectStore": store}},
        "at most one of time, lsn and name": {
            "recovery": {**source, "target": {"lsn": "0/1", "name": "x"}},
            "backup": {"objectStore": store},
        },
    }
    for words, spec in refused_specs.items():
        with pytest.raises(ApiError) as refused:
            admin.create(sampledb("refused", namespace, spec))
        assert refused.value.status == 422 and words in refused.value.message, refused.value.message
    spec = {
        "recovery": {**source, "target": {"name": "x"}},
        "backup": {"objectStore": store},
        "deletionPolicy": "Delete",
    }
    admin.create(sampledb("recovering", namespace, spec))
    with pytest.raises(ApiError) as refused:
        admin.merge_patch("SampleDB", namespace, "recovering", {"spec": {"recovery": {"target": {"name": "y"}}}})
    assert refused.value.status == 422 and "recovery is immutable" in refused.value.message
    with pytest.raises(ApiError) as refused:
        admin.merge_patch("SampleDB", namespace, "recovering", {"spec": {"recovery": None}})
    assert refused.value.status == 422 and "recovery is immutable" in refused.value.message, "nor removed"

"""Restore decisions: a usable source, or a named reason to wait or fail."""

from __future__ import annotations

from typing import Any

from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.reconcile.restore import plan_restore
from tests.unit.conftest import make_instance

BY_BACKUP = make_instance({"restore": {"backup": "nightly"}})


def backup(phase: str | None, **status: Any) -> dict[str, Any]:
    return {"status": {"phase": phase, **status}} if phase else {}


def test_a_succeeded_backup_gives_claim_and_file() -> None:
    succeeded = backup("Succeeded", location="src-backups:/backups/src/20260101T000000Z-nightly.dump")
    plan = plan_restore(BY_BACKUP, succeeded, None)
    assert plan.source == ("src-backups", "src/20260101T000000Z-nightly.dump")
    assert plan.problem is None


def test_direct_claim_and_file() -> None:
    direct = make_instance({"restore": {"persistentVolumeClaim": "old", "file": "a/b.dump"}})
    plan = plan_restore(direct, None, {"metadata": {"name": "old"}})
    assert plan.source == ("old", "a/b.dump")
    missing = plan_restore(direct, None, None)
    assert missing.wait
    assert missing.problem is not None
    assert (
        missing.problem.message == "spec.restore.persistentVolumeClaim (old): PersistentVolumeClaim not found in team-a"
    )


def test_unusable_sources_are_named() -> None:
    missing = plan_restore(BY_BACKUP, None, None)
    assert missing.problem is not None
    assert missing.problem.message == "spec.restore.backup (nightly): SampleDBBackup not found in team-a"
    running = plan_restore(BY_BACKUP, backup("Running"), None)
    assert running.wait
    assert running.problem is not None
    assert running.problem.reason == "RestoreSourceNotReady"
    failed = plan_restore(BY_BACKUP, backup("Failed", message="does not restore"), None)
    assert failed.problem is not None
    assert "failed (does not restore); name another backup" in failed.problem.message
    assert not failed.wait
    no_location = plan_restore(BY_BACKUP, backup("Succeeded"), None)
    assert no_location.problem is not None
    assert no_location.problem.reason == "RestoreSourceIncomplete"


def test_init_job_mounts_the_source_read_only() -> None:
    job = init_job(make_instance(), ("src-backups", "src/x.dump"))
    pod = job["spec"]["template"]["spec"]
    assert {"name": "restore", "persistentVolumeClaim": {"claimName": "src-backups", "readOnly": True}} in pod[
        "volumes"
    ]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["RESTORE_FILE"] == "/restore/src/x.dump"
    assert "RESTORE_FILE" not in {
        e["name"] for e in init_job(make_instance())["spec"]["template"]["spec"]["containers"][0]["env"]
    }

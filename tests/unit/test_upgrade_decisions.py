"""The major-upgrade state machine: every step from status and observations, with no I/O."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from sampledb_operator.jobs.upgrade import Step, job_name
from sampledb_operator.reconcile.upgrade import Observed, UpgradePlan, plan_upgrade, watched_backup, watched_job
from sampledb_operator.resources.instance import Workload
from sampledb_operator.resources.statefulset import statefulset
from tests.unit.conftest import make_instance
from tests.unit.test_archiving import STORE

INSTANCE = make_instance({"postgres": {"version": 17}})
OLD_IMAGE, NEW_IMAGE = "docker.io/library/postgres:15.14", "docker.io/library/postgres:17.6"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
RUNNING_15 = {"version": 15, "image": OLD_IMAGE, "initialization": {"completed": True}}
WITH_STORE = make_instance({"postgres": {"version": 17}, "backup": {"objectStore": STORE}})


def sts(image: str = OLD_IMAGE, *, replicas: int = 1, ready: int = 1, pods: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": 4},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"image": image}]}}},
        "status": {
            "observedGeneration": 4,
            "replicas": pods,
            "readyReplicas": ready,
            "currentRevision": "r",
            "updateRevision": "r",
        },
    }


def job(condition: str | None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded"}] if condition else []
    return {"metadata": {"name": "j"}, "status": {"conditions": conditions}}


def step(status: dict[str, Any], statefulset_: dict[str, Any] | None, **observed: Any) -> UpgradePlan:
    instance = observed.pop("instance", INSTANCE)
    plan = plan_upgrade(instance, Observed(status, statefulset_, now=observed.pop("now", NOW), **observed))
    assert plan is not None
    return plan


def in_phase(plan: UpgradePlan) -> dict[str, Any]:
    """The SampleDB status after the plan was recorded."""
    return {**RUNNING_15, "upgrade": plan.status}


def test_no_upgrade_when_the_running_version_is_the_spec_or_unknown() -> None:
    assert plan_upgrade(INSTANCE, Observed({**RUNNING_15, "version": 17}, sts(NEW_IMAGE))) is None
    assert plan_upgrade(INSTANCE, Observed({}, None)) is None  # a new instance: nothing ran yet


def test_a_raised_version_starts_with_the_backup_and_keeps_the_old_image() -> None:
    plan = step(RUNNING_15, sts())
    assert plan.status["phase"] == "BackingUp"
    assert (plan.status["fromVersion"], plan.status["toVersion"]) == (15, 17)
    assert (plan.status["fromImage"], plan.status["toImage"]) == (OLD_IMAGE, NEW_IMAGE)
    assert plan.status["backup"] == "db1-backups:/backups/db1/upgrade-15-to-17-1.sql"
    assert plan.workload == Workload(15, OLD_IMAGE, 1)
    assert plan.create == []  # the Job follows once the status naming the upgrade is stored
    assert plan.event is not None and plan.event[1] == "UpgradeStarted"
    assert plan.progress is not None and "15 -> 17" in plan.progress


def test_an_instance_that_is_not_ready_waits_on_its_old_image() -> None:
    plan = step(RUNNING_15, sts(ready=0))
    assert plan.status == {} and plan.workload == Workload(15, OLD_IMAGE, 1) and plan.progress is None
    blocked = step(RUNNING_15, sts(), blocked=True)  # e.g. a bad parameter: fix that first
    assert blocked.status == {} and blocked.workload.image == OLD_IMAGE


def test_the_happy_path_runs_each_job_once_and_ends_on_the_new_version() -> None:
    status = in_phase(step(RUNNING_15, sts()))
    names = []
    # BackingUp: backup volume + Job on the old image, with the data volume left alone.
    plan = step(status, sts())
    pvc, backup = plan.create
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["metadata"]["name"] == "db1-backups"
    assert backup["metadata"]["name"] == job_name(INSTANCE, 17, 1, Step.BACKUP) == "db1-upgrade17-1-backup"
    assert backup["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE
    assert "data" not in {v["name"] for v in backup["spec"]["template"]["spec"]["volumes"]}
    status = in_phase(plan)
    assert watched_job(INSTANCE, status) == "db1-upgrade17-1-backup"
    assert step(status, sts(), job=job(None)).create == []  # running: wait
    for expected_phase in ("Checking", "Upgrading"):
        plan = step(status, sts(), job=job("Complete"))
        assert plan.status["phase"] == expected_phase
        status = in_phase(plan)
        names.append(watched_job(INSTANCE, status))
    assert names == ["db1-upgrade17-1-check", "db1-upgrade17-1-run"]
    # Upgrading: the Pod goes first; only then the run Job gets the data volume.
    plan = step(status, sts())
    assert plan.workload == Workload(15, OLD_IMAGE, 0) and plan.create == []
    plan = step(status, sts(replicas=0, ready=0, pods=0))
    (run,) = plan.create
    pod = run["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == NEW_IMAGE
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-db1-0"}} in pod["volumes"]
    status = in_phase(plan)
    # Switching: the new image, until its Pod is ready; then verification, then done.
    plan = step(status, sts(replicas=0, ready=0, pods=0), job=job("Complete"))
    assert plan.status["phase"] == "Switching" and plan.workload == Workload(17, NEW_IMAGE, 1)
    status = in_phase(plan)
    assert step(status, sts(OLD_IMAGE, ready=1)).status["phase"] == "Switching"  # not our Pod yet
    plan = step(status, sts(NEW_IMAGE))
    assert plan.status["phase"] == "Verifying"
    status = in_phase(plan)
    (verify,) = step(status, sts(NEW_IMAGE)).create
    assert verify["metadata"]["name"] == "db1-upgrade17-1-verify"
    plan = step(status, sts(NEW_IMAGE), job=job("Complete"))
    assert plan.status["phase"] == "Succeeded" and plan.workload == Workload(17, NEW_IMAGE, 1)
    assert plan.event is not None and plan.event[1] == "UpgradeSucceeded" and plan.progress is None
    # Once status.version says 17, nothing concerns the instance any more.
    assert plan_upgrade(INSTANCE, Observed({**in_phase(plan), "version": 17}, sts(NEW_IMAGE))) is None


def test_a_failed_step_rolls_back_then_reports_and_a_deleted_job_retries() -> None:
    started = in_phase(step(RUNNING_15, sts()))
    upgrading = {**started, "upgrade": {**started["upgrade"], "phase": "Upgrading"}}
    summary = {"error": "restoring into PostgreSQL 17 failed: ERROR: extension foo is not available"}
    plan = step(upgrading, sts(replicas=0, ready=0, pods=0), job=job("Failed"), summary=summary)
    assert plan.status["phase"] == "RollingBack"
    assert plan.status["failedJob"] == "db1-upgrade17-1-run"
    assert "extension foo is not available" in plan.status["message"]
    assert plan.event is not None and plan.event[0] == "Warning"
    rolling = in_phase(plan)
    (rollback,) = step(rolling, sts(replicas=0, ready=0, pods=0)).create
    assert rollback["metadata"]["name"] == "db1-upgrade17-1-rollback"
    assert rollback["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE
    plan = step(rolling, sts(replicas=0, ready=0, pods=0), job=job("Complete"))
    assert plan.status["phase"] == "Failed" and plan.workload == Workload(15, OLD_IMAGE, 1)
    assert plan.problem is not None and plan.problem.reason == "UpgradeFailed"
    assert "rolled back to 15 with its data" in plan.problem.message
    assert "delete Job db1-upgrade17-1-run to retry" in plan.problem.message
    failed = in_phase(plan)
    assert watched_job(INSTANCE, failed) == "db1-upgrade17-1-run"
    kept = step(failed, sts(), job=job("Failed"))  # the failed Job is still there: stay rolled back
    assert kept.status["phase"] == "Failed" and kept.problem is not None and kept.create == []
    retry = step(failed, sts(), job=None)
    assert retry.status["phase"] == "BackingUp" and retry.status["attempt"] == 2
    assert retry.status["backup"].endswith("upgrade-15-to-17-2.sql")


def test_a_new_version_that_never_gets_ready_is_rolled_back_after_the_timeout() -> None:
    started = in_phase(step(RUNNING_15, sts()))
    switching = {
        **started,
        "upgrade": {**started["upgrade"], "phase": "Switching", "phaseTime": "2026-11-22T12:00:00Z"},
    }
    waiting = step(switching, sts(NEW_IMAGE, ready=0), now=NOW + timedelta(seconds=60))
    assert waiting.status["phase"] == "Switching" and waiting.requeue_after is not None
    late = step(switching, sts(NEW_IMAGE, ready=0), now=NOW + timedelta(seconds=601))
    assert late.status["phase"] == "RollingBack"
    assert "was not ready within 600 s" in late.status["message"]
    assert late.workload == Workload(15, OLD_IMAGE, 0)


def test_the_statefulset_follows_the_workload() -> None:
    pinned = dataclasses.replace(INSTANCE, workload=Workload(15, OLD_IMAGE, 0))
    built = statefulset(pinned)
    assert built["spec"]["replicas"] == 0
    assert built["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE
    assert statefulset(INSTANCE)["spec"]["template"]["spec"]["containers"][0]["image"] == NEW_IMAGE


def record(phase: str | None, **status: Any) -> dict[str, Any]:
    """The pre-upgrade SampleDBBackup as the caches hold it."""
    return {"metadata": {"name": "db1-upgrade17-1"}, "status": {"phase": phase, **status} if phase else {}}


def test_auto_is_copy_with_an_object_store_and_logical_without_or_when_asked() -> None:
    assert step(RUNNING_15, sts()).status["method"] == "Logical"
    assert step(RUNNING_15, sts(), instance=WITH_STORE).status["method"] == "Copy"
    logical = make_instance(
        {"postgres": {"version": 17, "upgrade": {"method": "Logical"}}, "backup": {"objectStore": STORE}}
    )
    assert step(RUNNING_15, sts(), instance=logical).status["method"] == "Logical"


def test_copy_takes_an_online_base_backup_then_runs_pg_upgrade_with_the_old_binaries() -> None:
    plan = step(RUNNING_15, sts(), instance=WITH_STORE)
    assert plan.status["backup"] == "SampleDBBackup/db1-upgrade17-1" and plan.create == []
    status = in_phase(plan)
    assert watched_job(WITH_STORE, status) is None and watched_backup(WITH_STORE, status) == "db1-upgrade17-1"
    # Another physical backup runs: pgBackRest would refuse a second one, so wait for it.
    waiting = step(status, sts(), instance=WITH_STORE, backups_busy=True)
    assert waiting.create == [] and waiting.requeue_after is not None
    (created,) = step(status, sts(), instance=WITH_STORE).create
    assert created["kind"] == "SampleDBBackup" and created["metadata"]["name"] == "db1-upgrade17-1"
    assert created["spec"]["method"] == "Physical" and "ownerReferences" not in created["metadata"]
    assert created["metadata"]["labels"]["sampledb.io/upgrade-to"] == "17"
    # Writes go on while it runs: the database keeps its Pod on the old image.
    running = step(status, sts(), instance=WITH_STORE, backup=record("Running", message="12%"))
    assert running.workload == Workload(15, OLD_IMAGE, 1) and running.create == [] and "12%" in str(running.progress)
    plan = step(status, sts(), instance=WITH_STORE, backup=record("Succeeded", backupLabel="20261122-120000F"))
    assert plan.status["phase"] == "Checking" and "20261122-120000F" in plan.status["backup"]
    status = in_phase(plan)
    pvc, check = step(status, sts(), instance=WITH_STORE).create
    assert pvc["metadata"]["name"] == "db1-backups", "every step's Job mounts it: the first one creates it"
    pod = check["spec"]["template"]["spec"]
    env = {e["name"] for e in pod["containers"][0]["env"]}
    assert {"PGHOST", "PASSWORD_FILE"} <= env, "it dumps the live schema as the superuser"
    assert [c["image"] for c in pod["initContainers"]] == [OLD_IMAGE] and pod["containers"][0]["image"] == NEW_IMAGE
    assert "pg_upgrade" in pod["containers"][0]["command"][-1]
    status = in_phase(step(status, sts(), instance=WITH_STORE, job=job("Complete")))
    (run,) = step(status, sts(replicas=0, ready=0, pods=0), instance=WITH_STORE).create
    assert run["metadata"]["name"] == "db1-upgrade17-1-run"
    assert "pg_upgrade --copy" in run["spec"]["template"]["spec"]["containers"][0]["command"][-1]
    assert run["spec"]["template"]["spec"]["initContainers"][0]["image"] == OLD_IMAGE


def test_a_failed_base_backup_changes_nothing_and_its_deletion_retries() -> None:
    status = in_phase(step(RUNNING_15, sts(), instance=WITH_STORE))
    plan = step(status, sts(), instance=WITH_STORE, backup=record("Failed", message="bucket not found"))
    assert plan.status["phase"] == "Failed" and plan.workload == Workload(15, OLD_IMAGE, 1)
    assert plan.problem is not None and "bucket not found" in plan.problem.message
    assert "delete SampleDBBackup db1-upgrade17-1 to retry" in plan.problem.message
    failed = in_phase(plan)
    assert watched_backup(WITH_STORE, failed) == "db1-upgrade17-1"
    assert step(failed, sts(), instance=WITH_STORE, backup=record("Failed")).status["phase"] == "Failed"
    retry = step(failed, sts(), instance=WITH_STORE)
    assert retry.status["phase"] == "BackingUp" and retry.status["attempt"] == 2 and retry.status["method"] == "Copy"


def rolled_back_after(instance: Any, failed_step: Step) -> dict[str, Any]:
    """The status once a Copy attempt's `failed_step` failed (and, after the run step, the rollback completed)."""
    started = in_phase(step(RUNNING_15, sts(), instance=instance))
    summary = {"error": "unrecognized parameter pg_attver"}
    if failed_step is Step.CHECK:  # writes went on and nothing changed: no rollback, no downtime
        at = {**started, "upgrade": {**started["upgrade"], "phase": "Checking"}}
        plan = step(at, sts(), instance=instance, job=job("Failed"), summary=summary)
        assert plan.workload == Workload(15, OLD_IMAGE, 1) and plan.create == []
        assert plan.problem is not None and "stopped before any downtime" in plan.problem.message
        failed = in_phase(plan)
    else:
        at = {**started, "upgrade": {**started["upgrade"], "phase": "Upgrading"}}
        down = sts(replicas=0, ready=0, pods=0)
        rolling = in_phase(step(at, down, instance=instance, job=job("Failed"), summary=summary))
        assert rolling["upgrade"]["phase"] == "RollingBack"
        failed = in_phase(step(rolling, down, instance=instance, job=job("Complete")))
    assert failed["upgrade"]["phase"] == "Failed"
    return failed


def test_auto_falls_back_to_logical_when_pg_upgrade_refuses_and_an_explicit_copy_does_not() -> None:
    for failed_step in (Step.CHECK, Step.RUN):
        failed = rolled_back_after(WITH_STORE, failed_step)
        waiting = step(failed, sts(ready=0), instance=WITH_STORE, job=job("Failed"))  # the old Pod not back yet
        assert waiting.status["phase"] == "Failed" and waiting.workload == Workload(15, OLD_IMAGE, 1)
        plan = step(failed, sts(), instance=WITH_STORE, job=job("Failed"))
        assert plan.status["phase"] == "BackingUp" and plan.status["attempt"] == 2
        assert plan.status["method"] == "Logical" and plan.status["backup"].endswith("upgrade-15-to-17-2.sql")
        assert "pg_attver" in plan.status["message"] and plan.event is not None and "dump and restore" in plan.event[2]
    explicit = make_instance(
        {"postgres": {"version": 17, "upgrade": {"method": "Copy"}}, "backup": {"objectStore": STORE}}
    )
    failed = rolled_back_after(explicit, Step.RUN)
    kept = step(failed, sts(), instance=explicit, job=job("Failed"))
    assert kept.status["phase"] == "Failed" and kept.problem is not None and "pg_attver" in kept.problem.message

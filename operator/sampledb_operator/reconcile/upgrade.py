"""The major-upgrade state machine: decide the next step from `status.upgrade` and what is observed.

A raised `spec.postgres.version` (downgrades are refused at admission) on an initialised instance
starts an upgrade, recorded in `status.upgrade` before anything else happens, so an operator that
restarts at any point resumes from the status and finds each step's Job again by its name:

    BackingUp   backup Job on the old image: writes stopped, pg_dumpall, row counts
    Checking    check Job on the new image: right major, intact dump
    Upgrading   StatefulSet scaled to zero, then the run Job: new cluster, restore, compare, swap
    Switching   StatefulSet on the new image, until its Pod is ready (or the timeout fails it)
    Verifying   verify Job: the live server runs the new major with every table of the dump
    Succeeded   status.version is the new major

Any failure goes to RollingBack (StatefulSet at zero, rollback Job on the old image) and then
Failed: the old version runs again with its data, and the Degraded condition says which step
failed and why. Deleting the failed Job (named in `status.upgrade.failedJob`) retries the upgrade
as a new attempt with Jobs of their own.

The method (`spec.postgres.upgrade.method`, resolved into `status.upgrade.method` when an attempt
starts: Auto is Copy with an object store, else Logical) changes two steps. Copy's BackingUp is a
physical base backup, the SampleDBBackup `<name>-upgrade<to>-<attempt>`, created once no other
physical backup of the instance runs, while writes go on; its failure ends the attempt (Failed,
nothing was touched; deleting that SampleDBBackup retries). Copy's check Job, still with writes
going on, proves the new image can run pg_upgrade and rehearses the schema on the new major; its
failure also ends the attempt without a rollback (nothing was touched). Copy's run Job runs
pg_upgrade with the old major's binaries (`jobs/upgrade.py`). When Auto chose Copy and its check
or run step failed (pg_upgrade refused the clusters: the old one is untouched and runs again),
the next attempt starts at once with the Logical method.

This module decides only: `reconcile/decide.py` calls it and `act/` carries out its plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sampledb_operator.api.backup import BackupPhase
from sampledb_operator.api.common import UpgradeMethod, UpgradePhase
from sampledb_operator.jobs import upgrade as jobs
from sampledb_operator.jobs.backup import BACKUP_MOUNT, backup_pvc
from sampledb_operator.jobs.upgrade import UPGRADE_LABEL, Step
from sampledb_operator.reconcile.schedule import physical_record
from sampledb_operator.reconcile.status import (
    JobState,
    Problem,
    initialized,
    job_failure_message,
    job_state,
    ready_replicas,
    rolled_out,
)
from sampledb_operator.resources.instance import Instance, Workload

Phase = UpgradePhase
STEP = {
    Phase.BACKING_UP: Step.BACKUP,
    Phase.CHECKING: Step.CHECK,
    Phase.UPGRADING: Step.RUN,
    Phase.VERIFYING: Step.VERIFY,
    Phase.ROLLING_BACK: Step.ROLLBACK,
}
NEXT = {
    Phase.BACKING_UP: Phase.CHECKING,
    Phase.CHECKING: Phase.UPGRADING,
    Phase.UPGRADING: Phase.SWITCHING,
    Phase.SWITCHING: Phase.VERIFYING,
    Phase.VERIFYING: Phase.SUCCEEDED,
    Phase.ROLLING_BACK: Phase.FAILED,
}
DESCRIPTION = {
    Phase.BACKING_UP: "taking the pre-upgrade backup",
    Phase.CHECKING: "checking the new image and the backup",
    Phase.UPGRADING: "moving the data into a new cluster (the database is down)",
    Phase.SWITCHING: "starting the new version",
    Phase.VERIFYING: "verifying the new version",
    Phase.ROLLING_BACK: "rolling back to the old version",
}
# Steps during which the Pod runs the new image; the others (and Failed) run the old one.
ON_NEW_IMAGE = {Phase.SWITCHING, Phase.VERIFYING}
# Steps whose Job needs the data volume, so the StatefulSet is at zero.
OFFLINE = {Phase.UPGRADING, Phase.ROLLING_BACK}
IN_PROGRESS = set(STEP) | {Phase.SWITCHING}
RECHECK_SECONDS = 15.0


@dataclass(frozen=True)
class Observed:
    """What the decision needs besides the instance: its status, the StatefulSet, the step's Job."""

    status: dict[str, Any]
    statefulset: dict[str, Any] | None
    job: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # what the Job's script left in its log
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    blocked: bool = False  # other problems (bad configuration...): no upgrade starts until fixed
    backup: dict[str, Any] | None = None  # method Copy: the pre-upgrade SampleDBBackup (watched_backup)
    backups_busy: bool = False  # another physical backup of the instance is Pending or Running


@dataclass(frozen=True)
class UpgradePlan:
    """The decision: the status to record, what the StatefulSet runs, a Job to create, what to say."""

    status: dict[str, Any]
    workload: Workload
    create: list[dict[str, Any]] = field(default_factory=list)
    progress: str | None = None  # while in progress: the phase is Upgrading with this message
    problem: Problem | None = None  # after a rollback: Degraded with this reason
    event: tuple[str, str, str] | None = None  # (type, reason, note) when the step changed
    requeue_after: float | None = None


def current(status: dict[str, Any]) -> dict[str, Any]:
    """`status.upgrade`, or an empty dict."""
    upgrade: dict[str, Any] = status.get("upgrade") or {}
    return upgrade


def concerned(instance: Instance, status: dict[str, Any]) -> bool:
    """Whether an upgrade is under way, failed, or called for (the reconciler observes more then)."""
    phase = current(status).get("phase")
    return phase in IN_PROGRESS or phase == Phase.FAILED or _behind(instance, status)


def method(upgrade: dict[str, Any]) -> UpgradeMethod:
    """The attempt's method (an upgrade recorded before methods existed was logical)."""
    return UpgradeMethod(upgrade.get("method") or UpgradeMethod.LOGICAL)


def _physical_backup(upgrade: dict[str, Any], phase: Phase | None) -> bool:
    """Copy's BackingUp: a SampleDBBackup, not a Job."""
    return phase is Phase.BACKING_UP and method(upgrade) is UpgradeMethod.COPY


def watched_job(instance: Instance, status: dict[str, Any]) -> str | None:
    """The Job to observe: the current step's, or after a failure the failed one (deleting it retries)."""
    upgrade = current(status)
    phase = Phase(upgrade["phase"]) if upgrade else None
    if phase is Phase.FAILED:
        failed: str | None = upgrade.get("failedJob")
        return failed
    step = STEP.get(phase) if phase and not _physical_backup(upgrade, phase) else None
    return jobs.job_name(instance, upgrade["toVersion"], upgrade["attempt"], step) if step else None


def watched_backup(instance: Instance, status: dict[str, Any]) -> str | None:
    """The SampleDBBackup to observe: Copy's pre-upgrade backup, or after its failure that one (deleting it retries)."""
    upgrade = current(status)
    phase = Phase(upgrade["phase"]) if upgrade else None
    if phase is Phase.FAILED:
        failed: str | None = upgrade.get("failedBackup")
        return failed
    return backup_name(instance, upgrade["toVersion"], upgrade["attempt"]) if _physical_backup(upgrade, phase) else None


def backup_name(instance: Instance, to_version: int, attempt: int) -> str:
    """The pre-upgrade SampleDBBackup of an attempt of method Copy."""
    return f"{instance.name}-upgrade{to_version}-{attempt}"


def plan_upgrade(instance: Instance, observed: Observed) -> UpgradePlan | None:
    """None when no upgrade concerns this instance; otherwise what to do now."""
    upgrade = current(observed.status)
    phase = Phase(upgrade["phase"]) if upgrade else None
    if phase in IN_PROGRESS:
        return _advance(instance, upgrade, observed)
    if not _behind(instance, observed.status):
        return _failed(upgrade) if phase is Phase.FAILED else None
    healthy = initialized(observed.status) and ready_replicas(observed.statefulset) > 0 and not observed.blocked
    if phase is Phase.FAILED:
        return _after_failure(instance, upgrade, observed, healthy=healthy)
    if healthy:
        return _start(instance, observed, attempt=1)
    # Behind but not ready to start: keep running the recorded version, never the new image on old data.
    return UpgradePlan(status=upgrade, workload=_running(instance, observed.status))


def _after_failure(instance: Instance, upgrade: dict[str, Any], observed: Observed, *, healthy: bool) -> UpgradePlan:
    """Failed and still behind: Auto's fallback to Logical, a retry, or the failure reported."""
    attempt = upgrade["attempt"] + 1
    if _falls_back(instance, upgrade):  # once the old version serves again
        if not healthy:
            return UpgradePlan(status=upgrade, workload=_running(instance, observed.status))
        return _start(instance, observed, attempt=attempt, fallback=upgrade.get("message"))
    # Retry once the failed Job (or backup) is deleted, or when the target image was changed (a fix).
    retry = (
        (upgrade.get("failedJob") and observed.job is None)
        or (upgrade.get("failedBackup") and observed.backup is None)
        or instance.desired_image != upgrade["toImage"]
    )
    return _start(instance, observed, attempt=attempt) if retry and healthy else _failed(upgrade)


def _behind(instance: Instance, status: dict[str, Any]) -> bool:
    version = status.get("version")
    return version is not None and int(version) < instance.spec.postgres.version


def _running(instance: Instance, status: dict[str, Any]) -> Workload:
    version = int(status["version"])
    return Workload(version, status.get("image") or instance.settings.images[version])


def _falls_back(instance: Instance, upgrade: dict[str, Any]) -> bool:
    """Auto chose Copy and pg_upgrade's steps failed (the old cluster untouched): Logical next."""
    failed = upgrade.get("failedJob") or ""
    return (
        instance.spec.postgres.upgrade.method is UpgradeMethod.AUTO
        and method(upgrade) is UpgradeMethod.COPY
        and failed.endswith((f"-{Step.CHECK.value}", f"-{Step.RUN.value}"))
    )


def _resolve(instance: Instance, *, fallback: bool) -> UpgradeMethod:
    chosen = instance.spec.postgres.upgrade.method
    if chosen is not UpgradeMethod.AUTO:
        return chosen
    copy = instance.spec.backup.objectStore is not None and not fallback
    return UpgradeMethod.COPY if copy else UpgradeMethod.LOGICAL


def _start(instance: Instance, observed: Observed, *, attempt: int, fallback: str | None = None) -> UpgradePlan:
    old = _running(instance, observed.status)
    to = instance.spec.postgres.version
    now = _stamp(observed.now)
    how = _resolve(instance, fallback=fallback is not None)
    if how is UpgradeMethod.COPY:
        backup = f"SampleDBBackup/{backup_name(instance, to, attempt)}"
    else:
        backup = f"{instance.backup_pvc}:{BACKUP_MOUNT}/{jobs.backup_file(instance, old.version, to, attempt)}"
    upgrade = {
        "phase": Phase.BACKING_UP.value,
        "method": how.value,
        "fromVersion": old.version,
        "toVersion": to,
        "fromImage": old.image,
        "toImage": instance.desired_image,
        "attempt": attempt,
        "backup": backup,
        "startTime": now,
        "phaseTime": now,
    }
    note = (
        f"upgrading PostgreSQL {old.version} -> {to} (attempt {attempt}, {how.value}): {DESCRIPTION[Phase.BACKING_UP]}"
    )
    if fallback is not None:
        upgrade["message"] = f"pg_upgrade could not upgrade ({fallback}); upgrading by dump and restore instead"
        note = f"{note}; {upgrade['message']}"
    # The Job comes on the next pass, once the status naming it is stored.
    return UpgradePlan(
        status=upgrade, workload=old, progress=note, event=("Normal", "UpgradeStarted", note), requeue_after=1
    )


def _workload(upgrade: dict[str, Any], phase: Phase) -> Workload:
    if phase in ON_NEW_IMAGE or phase is Phase.SUCCEEDED:
        return Workload(upgrade["toVersion"], upgrade["toImage"])
    return Workload(upgrade["fromVersion"], upgrade["fromImage"], replicas=0 if phase in OFFLINE else 1)


def _advance(instance: Instance, upgrade: dict[str, Any], observed: Observed) -> UpgradePlan:
    phase = Phase(upgrade["phase"])
    workload = _workload(upgrade, phase)
    progress = f"upgrading PostgreSQL {upgrade['fromVersion']} -> {upgrade['toVersion']}: {DESCRIPTION[phase]}"
    if phase is Phase.SWITCHING:
        return _switching(instance, upgrade, observed, workload, progress)
    if _physical_backup(upgrade, phase):
        return _base_backup(instance, upgrade, observed, workload, progress)
    step = STEP[phase]
    name = jobs.job_name(instance, upgrade["toVersion"], upgrade["attempt"], step)
    state = job_state(observed.job)
    if state is None:
        if phase in OFFLINE and not _scaled_down(observed.statefulset):
            return UpgradePlan(status=upgrade, workload=workload, progress=f"{progress}; stopping the database Pod")
        return UpgradePlan(
            status={**upgrade, "job": name},
            workload=workload,
            create=_step_objects(instance, upgrade, step),
            progress=f"{progress} (Job {name})",
        )
    if state is JobState.RUNNING:
        return UpgradePlan(status=upgrade, workload=workload, progress=f"{progress} (Job {name})")
    if state is JobState.COMPLETE:
        return _moved(instance, upgrade, NEXT[phase], observed)
    reason = observed.summary.get("error") or job_failure_message(observed.job or {})
    if phase is Phase.ROLLING_BACK:
        message = (
            f"{upgrade.get('message', 'the upgrade failed')}; the rollback failed too ({reason}): the old cluster "
            f"is in pgdata-{upgrade['fromVersion']} on the data volume and the dump in {upgrade.get('backup')}"
        )
        return _moved(instance, {**upgrade, "message": message}, Phase.FAILED, observed)
    failed = {**upgrade, "failedJob": name, "message": f"step {step.value} (Job {name}) failed: {reason}"}
    return _moved(instance, failed, Phase.FAILED if _check_failed(failed) else Phase.ROLLING_BACK, observed)


def _base_backup(
    instance: Instance, upgrade: dict[str, Any], observed: Observed, workload: Workload, progress: str
) -> UpgradePlan:
    """Copy's BackingUp: the SampleDBBackup (physical, online), created once no other physical backup runs."""
    name = backup_name(instance, upgrade["toVersion"], upgrade["attempt"])
    record = observed.backup
    if record is None:
        if observed.backups_busy:
            note = f"{progress}: waiting for the running physical backup to end"
            return UpgradePlan(status=upgrade, workload=workload, progress=note, requeue_after=RECHECK_SECONDS)
        create = physical_record(instance, name, {UPGRADE_LABEL: str(upgrade["toVersion"])})
        return UpgradePlan(status=upgrade, workload=workload, create=[create], progress=f"{progress} ({name})")
    backup_status = record.get("status") or {}
    state = backup_status.get("phase")
    if state == BackupPhase.SUCCEEDED.value:
        label = backup_status.get("backupLabel")
        return _moved(instance, {**upgrade, "backup": f"SampleDBBackup/{name} ({label})"}, Phase.CHECKING, observed)
    if state == BackupPhase.FAILED.value:
        message = (
            f"the pre-upgrade base backup {name} failed ({backup_status.get('message')}); nothing was changed. "
            f"Fix the object store (spec.backup.objectStore), then delete SampleDBBackup {name} to retry"
        )
        return _moved(instance, {**upgrade, "failedBackup": name, "message": message}, Phase.FAILED, observed)
    detail = backup_status.get("message") or state or "pending"
    return UpgradePlan(
        status=upgrade, workload=workload, progress=f"{progress} ({name}: {detail})", requeue_after=RECHECK_SECONDS
    )


def _switching(
    instance: Instance, upgrade: dict[str, Any], observed: Observed, workload: Workload, progress: str
) -> UpgradePlan:
    sts = observed.statefulset
    on_new = sts is not None and sts["spec"]["template"]["spec"]["containers"][0]["image"] == workload.image
    if sts is not None and on_new and ready_replicas(sts) > 0 and rolled_out(sts):
        return _moved(instance, upgrade, Phase.VERIFYING, observed)
    waited = (observed.now - _parse(upgrade["phaseTime"])).total_seconds()
    timeout = instance.settings.upgrade_ready_timeout_seconds
    if waited > timeout:
        message = f"PostgreSQL {upgrade['toVersion']} ({upgrade['toImage']}) was not ready within {timeout} s"
        return _moved(instance, {**upgrade, "message": message}, Phase.ROLLING_BACK, observed)
    return UpgradePlan(
        status=upgrade, workload=workload, progress=progress, requeue_after=min(RECHECK_SECONDS, timeout - waited + 1)
    )


def _moved(instance: Instance, upgrade: dict[str, Any], phase: Phase, observed: Observed) -> UpgradePlan:
    now = _stamp(observed.now)
    moved = {**upgrade, "phase": phase.value, "phaseTime": now}
    versions = f"PostgreSQL {upgrade['fromVersion']} -> {upgrade['toVersion']}"
    if phase is Phase.SUCCEEDED:
        moved["completionTime"] = now
        note = f"upgraded {versions}; the pre-upgrade backup is {upgrade.get('backup')}"
        return UpgradePlan(status=moved, workload=_workload(moved, phase), event=("Normal", "UpgradeSucceeded", note))
    if phase is Phase.FAILED:
        moved["completionTime"] = now
        failed = _failed(moved)
        note = failed.problem.message if failed.problem else ""
        return UpgradePlan(moved, failed.workload, problem=failed.problem, event=("Warning", "UpgradeFailed", note))
    event_type = "Warning" if phase is Phase.ROLLING_BACK else "Normal"
    note = f"{versions}: {DESCRIPTION[phase]}" + (f" ({upgrade['message']})" if phase is Phase.ROLLING_BACK else "")
    return UpgradePlan(
        status=moved,
        workload=_workload(moved, phase),
        progress=f"upgrading {note}",
        event=(event_type, f"Upgrade{phase.value}", note),
        requeue_after=1,
    )


def _failed(upgrade: dict[str, Any]) -> UpgradePlan:
    to, old, why = upgrade["toVersion"], upgrade["fromVersion"], upgrade.get("message", "")
    if upgrade.get("failedBackup"):  # the message says how to retry
        message = f"upgrade to PostgreSQL {to} stopped before any downtime, {old} serving as before: {why}"
    else:
        retry = f"delete Job {upgrade['failedJob']} to retry" if upgrade.get("failedJob") else "see the Jobs' logs"
        done = "stopped before any downtime, " if _check_failed(upgrade) else "failed and was rolled back to "
        message = f"upgrade to PostgreSQL {to} {done}{old} with its data: {why}; fix the cause, then {retry}"
    return UpgradePlan(
        status=upgrade, workload=Workload(old, upgrade["fromImage"]), problem=Problem("UpgradeFailed", message)
    )


def _check_failed(upgrade: dict[str, Any]) -> bool:
    """Copy's check failed: it ran with writes going on and changed nothing, so nothing is rolled back."""
    return method(upgrade) is UpgradeMethod.COPY and (upgrade.get("failedJob") or "").endswith(f"-{Step.CHECK.value}")


def _step_objects(instance: Instance, upgrade: dict[str, Any], step: Step) -> list[dict[str, Any]]:
    how = method(upgrade)
    job = jobs.upgrade_job(
        instance,
        step,
        from_version=upgrade["fromVersion"],
        to_version=upgrade["toVersion"],
        attempt=upgrade["attempt"],
        images=(upgrade["fromImage"], upgrade["toImage"]),
        method=how,
    )
    # Every step's Job mounts the backup volume: the first one creates it (a 409 is fine).
    first = Step.CHECK if how is UpgradeMethod.COPY else Step.BACKUP
    return [backup_pvc(instance), job] if step is first else [job]


def _scaled_down(sts: dict[str, Any] | None) -> bool:
    """No database Pod left: the data volume is free for the step's Job."""
    if sts is None:
        return True
    status = sts.get("status") or {}
    return (
        sts["spec"].get("replicas") == 0
        and int(status.get("replicas") or 0) == 0
        and int(status.get("observedGeneration") or 0) >= int(sts["metadata"].get("generation") or 0)
    )


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)

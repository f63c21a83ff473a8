"""Drive one SampleDBBackup: a single backup Job, its outcome copied into the status.

A physical backup (`method: Physical`) runs on the primary instead: `reconcile/base_backup.py`.
Steps of a logical one:
1. a backup that already Succeeded or Failed is final: nothing more is done;
2. the SampleDB must exist (else Failed, naming it); its backup volume is created if missing;
3. the Job, named after the SampleDBBackup and owned by it, is created once (an operator restart
   finds it again by name, so no backup runs twice);
4. while it runs the phase is Running; when it ends, the summary the script wrote to the
   termination log (file, bytes, SHA-256, verified, or the error) becomes the status, with an event.
It reads from the watch caches (`Observed`), never from the API server, and writes its own writes
through to them, so a pass that follows a write sees it (no second event for one outcome).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import ValidationError

from sampledb_operator.api import GROUP, backup
from sampledb_operator.jobs.backup import BACKUP_MOUNT, backup_job, backup_pvc
from sampledb_operator.k8s.api import ApiError, KubeApi
from sampledb_operator.reconcile import base_backup
from sampledb_operator.reconcile.outcome import Outcome
from sampledb_operator.reconcile.status import JobState, job_failure_message, job_state, pod_ready, termination_summary
from sampledb_operator.resources import archive
from sampledb_operator.resources.instance import Instance
from sampledb_operator.settings import Settings

BACKUP_LABEL = f"{GROUP}/backup"
FINAL = {backup.BackupPhase.SUCCEEDED, backup.BackupPhase.FAILED}
logger = logging.getLogger(__name__)


class Observed(Protocol):
    """What a backup pass reads (the watch caches), and where it writes its own writes through."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...  # noqa: D102

    def job_pods(self, namespace: str, instance: str, job: str) -> list[dict[str, Any]]: ...  # noqa: D102

    def remember(self, kind: str, obj: dict[str, Any]) -> None: ...  # noqa: D102


def outcome_status(instance: Instance, job: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The status of a finished backup, from its Job and the script's summary (pure)."""
    job_status = job.get("status") or {}
    status: dict[str, Any] = {"job": job["metadata"]["name"], "startTime": job_status.get("startTime")}
    if job_state(job) is JobState.COMPLETE:
        status.update(phase=backup.BackupPhase.SUCCEEDED.value, completionTime=job_status.get("completionTime"))
        if "file" in summary:
            status.update(
                location=f"{instance.backup_pvc}:{BACKUP_MOUNT}/{summary['file']}",
                bytes=summary.get("bytes"),
                sha256=summary.get("sha256"),
                verified=summary.get("verified"),
            )
        else:
            status["message"] = "the Job succeeded but left no summary (is the termination log readable?)"
    else:
        status.update(phase=backup.BackupPhase.FAILED.value, message=summary.get("error") or job_failure_message(job))
    return {k: v for k, v in status.items() if v is not None}


class BackupReconciler:
    """Runs SampleDBBackups: observes through the caches, writes through a `KubeApi`."""

    def __init__(self, api: KubeApi, observed: Observed, settings: Settings, *, clock: Callable[[], str]) -> None:
        self.api = api
        self.observed = observed
        self.settings = settings
        self.clock = clock

    def reconcile(self, namespace: str, name: str) -> Outcome:
        """Advance one backup as far as it can go now."""
        obj = self.observed.get("SampleDBBackup", namespace, name)
        if obj is None:
            return Outcome()
        status = obj.get("status") or {}
        if status.get("phase") in FINAL:
            return Outcome(phase=status["phase"])
        spec = obj.get("spec") or {}
        db = self.observed.get("SampleDB", namespace, spec.get("instance", ""))
        if db is None:
            return self._finish(
                obj,
                {
                    "phase": backup.BackupPhase.FAILED.value,
                    "message": f"spec.instance: SampleDB {spec.get('instance')!r} not found in {namespace}",
                },
            )
        try:
            instance = Instance.from_object(db, self.settings)
        except ValidationError as err:
            return self._finish(
                obj,
                {
                    "phase": backup.BackupPhase.FAILED.value,
                    "message": f"SampleDB {db['metadata']['name']} has an invalid spec: {err.errors()[0]['msg']}",
                },
            )
        if spec.get("method") == backup.BackupMethod.PHYSICAL:
            return self._physical(obj, instance)
        job = self.observed.get("Job", namespace, name) or self._start(obj, instance, verify=_verify(obj))
        if job_state(job) is JobState.RUNNING:
            running = {
                "phase": backup.BackupPhase.RUNNING.value,
                "job": name,
                "startTime": (job.get("status") or {}).get("startTime") or self.clock(),
            }
            if status.get("phase") != backup.BackupPhase.RUNNING:
                self._write(obj, running)
            return Outcome(phase=backup.BackupPhase.RUNNING.value)
        pods = self.observed.job_pods(namespace, instance.name, name)
        return self._finish(obj, outcome_status(instance, job, termination_summary(pods)))

    def _physical(self, obj: dict[str, Any], instance: Instance) -> Outcome:
        """A base backup (`reconcile/base_backup.py`, where its states are)."""
        status, uid = obj.get("status") or {}, obj["metadata"]["uid"]
        if not instance.archives:
            message = (
                f"spec.method Physical: SampleDB {instance.name} has no spec.backup.objectStore to take "
                "base backups to; set it, or use method Logical"
            )
            return self._finish(obj, {"phase": backup.BackupPhase.FAILED.value, "message": message})
        pod = status.get("pod")
        if pod is None:
            return self._start_physical(obj, instance, status)
        if self.observed.get("Pod", instance.namespace, pod) is None:
            message = f"interrupted: Pod {pod}, which ran the base backup, is gone; create a new SampleDBBackup"
            return self._finish(obj, {"phase": backup.BackupPhase.FAILED.value, "message": message})
        try:
            answer = self.api.exec(
                instance.namespace, pod, archive.BACKUP_CONTAINER, base_backup.command("backup-status", uid), timeout=30
            )
        except ApiError as err:
            logger.info("%s/%s: base backup status not read (%s): polling again", instance.namespace, uid, err)
            return Outcome(phase=backup.BackupPhase.RUNNING.value, requeue_after=base_backup.POLL_SECONDS)
        progress = base_backup.parse(answer)
        final = base_backup.outcome(instance, uid, pod, progress, verified=_verify(obj))
        if final is not None:
            return self._finish(obj, final)
        if progress.detail and progress.detail != status.get("message"):
            self._write(obj, {"message": progress.detail})
        return Outcome(phase=backup.BackupPhase.RUNNING.value, requeue_after=base_backup.POLL_SECONDS)

    def _start_physical(self, obj: dict[str, Any], instance: Instance, status: dict[str, Any]) -> Outcome:
        pod, uid = instance.serving_primary, obj["metadata"]["uid"]
        found = self.observed.get("Pod", instance.namespace, pod)
        problem = None if found is not None and pod_ready(found) else f"waiting for the primary's Pod {pod} to be ready"
        if problem is None:
            try:
                self.api.exec(
                    instance.namespace,
                    pod,
                    archive.BACKUP_CONTAINER,
                    base_backup.command("backup-start", uid, verify=_verify(obj)),
                    timeout=30,
                )
            except ApiError as err:
                if archive.NO_PGBACKREST_MESSAGE in str(err):
                    message = f"the image {instance.image} has no pgbackrest: base backups need it"
                    return self._finish(obj, {"phase": backup.BackupPhase.FAILED.value, "message": message})
                problem = f"could not start the base backup on Pod {pod} (retrying): {err}"
        if problem is not None:
            if status.get("message") != problem:
                self._write(obj, {"phase": backup.BackupPhase.PENDING.value, "message": problem})
            return Outcome(phase=backup.BackupPhase.PENDING.value, requeue_after=base_backup.POLL_SECONDS)
        self._write(
            obj,
            {"phase": backup.BackupPhase.RUNNING.value, "pod": pod, "startTime": self.clock(), "message": None},
        )
        self._started(obj, f"base backup of {instance.name} started on Pod {pod}")
        return Outcome(phase=backup.BackupPhase.RUNNING.value, requeue_after=base_backup.POLL_SECONDS)

    def _start(self, obj: dict[str, Any], instance: Instance, *, verify: bool) -> dict[str, Any]:
        name = obj["metadata"]["name"]
        job = self._owned_job(obj, instance, verify=verify)
        for manifest in (backup_pvc(instance), job):
            try:
                self.observed.remember(manifest["kind"], self.api.create(manifest))
            except ApiError as err:
                if not err.conflict:
                    raise
        self._started(obj, f"Job {name} is backing up {instance.name}")
        return self.observed.get("Job", instance.namespace, name) or job

    def _started(self, obj: dict[str, Any], note: str) -> None:
        self.api.emit_event(obj, type_="Normal", reason="BackupStarted", note=note, action="Backup")

    @staticmethod
    def _owned_job(obj: dict[str, Any], instance: Instance, *, verify: bool) -> dict[str, Any]:
        """The backup Job, owned by the SampleDBBackup (deleting the record removes the Job)."""
        meta = obj["metadata"]
        manifest = backup_job(instance, name=meta["name"], label=meta["name"], verify=verify)
        manifest["metadata"]["labels"][BACKUP_LABEL] = meta["name"]
        manifest["metadata"]["ownerReferences"] = [
            {
                "apiVersion": obj["apiVersion"],
                "kind": backup.KIND,
                "name": meta["name"],
                "uid": meta["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        return manifest

    def _finish(self, obj: dict[str, Any], status: dict[str, Any]) -> Outcome:
        self._write(obj, status)
        failed = status["phase"] == backup.BackupPhase.FAILED
        note = status.get("message") if failed else f"backup written to {status.get('location', 'the backup volume')}"
        self.api.emit_event(
            obj,
            type_="Warning" if failed else "Normal",
            reason=f"Backup{status['phase']}",
            note=str(note),
            action="Backup",
        )
        return Outcome(phase=status["phase"])

    def _write(self, obj: dict[str, Any], status: dict[str, Any]) -> None:
        meta = obj["metadata"]
        written = self.api.merge_patch(
            "SampleDBBackup", meta["namespace"], meta["name"], {"status": status}, status=True
        )
        self.observed.remember("SampleDBBackup", written)


def _verify(obj: dict[str, Any]) -> bool:
    """The SampleDBBackup asks for its backup to be restored and checked."""
    return bool((obj.get("spec") or {}).get("verify"))

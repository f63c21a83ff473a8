"""Where a new instance's initial data comes from, decided from what is observed (no I/O).

`spec.restore` names a SampleDBBackup (which must have succeeded: its status says which claim and
file hold the dump) or a claim and file directly. Until the source is usable the instance is not
created at all: an empty database where the user asked for their data would be the wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sampledb_operator.api.backup import BackupMethod, BackupPhase
from sampledb_operator.jobs.backup import BACKUP_MOUNT
from sampledb_operator.reconcile.status import Problem
from sampledb_operator.resources.instance import Instance

RECHECK_SECONDS = 15.0


@dataclass(frozen=True)
class RestorePlan:
    """The (claim, file) to restore, or why not yet; `wait` means the source may still become usable."""

    source: tuple[str, str] | None = None
    problem: Problem | None = None
    wait: bool = False


def unfinished(field: str, status: dict[str, Any], operation: str) -> tuple[Problem, bool] | None:
    """A SampleDBBackup (named by `field`) that failed or has not succeeded yet: why, and whether to wait for it.

    The reasons are `<operation>SourceFailed` and `<operation>SourceNotReady` (spec.restore, spec.recovery).
    """
    phase = status.get("phase")
    if phase == BackupPhase.FAILED:
        message = f"{field} failed ({status.get('message', 'no reason given')}); name another backup"
        return Problem(f"{operation}SourceFailed", message), False
    if phase != BackupPhase.SUCCEEDED:
        message = f"{field}: waiting for the backup to succeed (phase {phase or BackupPhase.PENDING.value})"
        return Problem(f"{operation}SourceNotReady", message), True
    return None


def plan_restore(instance: Instance, backup: dict[str, Any] | None, claim: dict[str, Any] | None) -> RestorePlan:
    """Resolve spec.restore (which must be set) against the SampleDBBackup or claim it names."""
    restore = instance.spec.restore
    assert restore is not None
    if restore.persistentVolumeClaim and restore.file:
        if claim is None:
            field = f"spec.restore.persistentVolumeClaim ({restore.persistentVolumeClaim})"
            message = f"{field}: PersistentVolumeClaim not found in {instance.namespace}"
            return RestorePlan(problem=Problem("RestoreSourceMissing", message), wait=True)
        return RestorePlan(source=(restore.persistentVolumeClaim, restore.file))
    field = f"spec.restore.backup ({restore.backup})"
    if backup is None:
        return RestorePlan(
            problem=Problem("RestoreSourceMissing", f"{field}: SampleDBBackup not found in {instance.namespace}")
        )
    if (backup.get("spec") or {}).get("method") == BackupMethod.PHYSICAL:
        message = (
            f"{field} is a physical base backup, which spec.restore cannot load (it restores logical backups); "
            "name a backup of method Logical"
        )
        return RestorePlan(problem=Problem("RestoreSourcePhysical", message))
    status = backup.get("status") or {}
    unusable = unfinished(field, status, "Restore")
    if unusable is not None:
        return RestorePlan(problem=unusable[0], wait=unusable[1])
    backup_claim, _, path = status.get("location", "").partition(":")
    if not backup_claim or not path.startswith(f"{BACKUP_MOUNT}/"):
        return RestorePlan(problem=Problem("RestoreSourceIncomplete", f"{field} succeeded but records no location"))
    return RestorePlan(source=(backup_claim, path.removeprefix(f"{BACKUP_MOUNT}/")))

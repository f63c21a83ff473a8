"""Scheduled physical base backups (`spec.backup.objectStore.schedule`): which records to create and prune.

The operator does not run scheduled base backups itself: at each time of the cron schedule it
creates a SampleDBBackup (method Physical), which the backup flow runs like one made by hand
(`reconcile/base_backup.py`). So a scheduled backup has the same status, events and verification,
and the records are what `spec.recovery.backup` names. Pure: the caches' SampleDBBackups of the
instance and the clock in, the writes out.

Rules (checked each pass; the pass is requeued for the next time of the schedule):
- Records: SampleDBBackups labelled `sampledb.io/scheduled-for=<YYYYMMDDHHMM>` (the time in UTC,
  also in the name `<sampledb>-<YYYYMMDDHHMM>`, so a second create of one time is a conflict, never
  a duplicate). They are not owned by the SampleDB: like the backups, they outlive it, for a recovery.
- Due: the latest time of the schedule at or before now, when it is later than every record's
  (none yet: the first is due at once). Only the latest: times missed while the operator was down
  or the database busy give one backup, not a burst.
- Created only when the database is Ready and no physical backup of it (scheduled or not) is
  Pending or Running: pgBackRest takes one at a time and would fail the second on its lock.
- Pruned (deleted; a record's deletion touches nothing in the store): records that describe a
  backup retention has expired, i.e. final records older than the newest succeeded one whose label
  is older than that one's `oldestBackupLabel` (the oldest backup left after it); failed records
  older than the newest success, and beyond the newest FAILED_KEPT. Backups made by hand are never
  pruned.
- A schedule croniter cannot read (the CRD's pattern only checks the shape): a problem naming the
  field, and nothing created; the rest of the instance is reconciled as usual.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter

from sampledb_operator.api import GROUP
from sampledb_operator.api.backup import KIND as BACKUP_KIND
from sampledb_operator.api.backup import VERSION as BACKUP_VERSION
from sampledb_operator.api.backup import BackupMethod, BackupPhase
from sampledb_operator.reconcile.children import Action, Verb, create
from sampledb_operator.reconcile.status import Problem
from sampledb_operator.resources.instance import INSTANCE_LABEL, MANAGED_BY, Instance

SCHEDULED_LABEL = f"{GROUP}/scheduled-for"
FIELD = "spec.backup.objectStore.schedule"
FAILED_KEPT = 3
FINAL = {BackupPhase.SUCCEEDED.value, BackupPhase.FAILED.value}
Object = dict[str, Any]


@dataclass(frozen=True)
class SchedulePlan:
    """The records to create or delete, a problem with the schedule, and when to look again."""

    actions: tuple[Action, ...] = ()
    problem: Problem | None = None
    requeue_after: float | None = None


def stamp(when: datetime) -> str:
    """A time of the schedule as the label and the name carry it (UTC, to the minute)."""
    return when.strftime("%Y%m%d%H%M")


def scheduled_for(backup: Object) -> str | None:
    """The time a record was made for; None for a backup made by hand."""
    value: str | None = (backup["metadata"].get("labels") or {}).get(SCHEDULED_LABEL)
    return value


def plan_schedule(instance: Instance, backups: Sequence[Object], *, ready: bool, now: datetime) -> SchedulePlan | None:
    """None when the instance has no schedule of base backups."""
    store = instance.spec.backup.objectStore
    if store is None or store.schedule is None:
        return None
    if not croniter.is_valid(store.schedule):
        message = f"{FIELD}: {store.schedule!r} is not a cron expression (minute hour day month weekday)"
        return SchedulePlan(problem=Problem("InvalidSchedule", message))
    mine = _physical(instance.name, backups)
    records = sorted((b for b in mine if scheduled_for(b)), key=lambda b: str(scheduled_for(b)))
    actions = [Action(Verb.DELETE, BACKUP_KIND, b["metadata"]["name"], "BackupExpired", {}) for b in _pruned(records)]
    due = stamp(croniter(store.schedule, now + timedelta(microseconds=1)).get_prev(datetime))
    if ready and not busy(instance.name, backups) and (not records or due > str(scheduled_for(records[-1]))):
        record = physical_record(instance, f"{instance.name}-{due}", {SCHEDULED_LABEL: due})
        actions.append(create(record, "BackupScheduled"))
    following = croniter(store.schedule, now).get_next(datetime)
    return SchedulePlan(tuple(actions), requeue_after=max(1.0, (following - now).total_seconds()))


def last_completed(instance: str, backups: Sequence[Object]) -> float | None:
    """When the newest succeeded physical backup of `instance` ended (Unix time; for the metric)."""
    ends = [
        datetime.fromisoformat(str(b["status"]["completionTime"])).timestamp()
        for b in _physical(instance, backups)
        if (b.get("status") or {}).get("phase") == BackupPhase.SUCCEEDED.value and b["status"].get("completionTime")
    ]
    return max(ends, default=None)


def busy(instance: str, backups: Sequence[Object]) -> bool:
    """A physical backup of `instance` is Pending or Running: pgBackRest would refuse a second one."""
    return any((b.get("status") or {}).get("phase") not in FINAL for b in _physical(instance, backups))


def _physical(instance: str, backups: Sequence[Object]) -> list[Object]:
    """The physical backups of `instance` (a snapshot also holds backups other SampleDBs recover from)."""
    wanted = {"instance": instance, "method": BackupMethod.PHYSICAL.value}
    return [b for b in backups if {k: (b.get("spec") or {}).get(k) for k in wanted} == wanted]


def _pruned(records: list[Object]) -> list[Object]:
    """The final records to delete (`records` oldest first): see the module's rules."""
    phase = {id(r): (r.get("status") or {}).get("phase") for r in records}
    succeeded = [r for r in records if phase[id(r)] == BackupPhase.SUCCEEDED.value]
    failed = [r for r in records if phase[id(r)] == BackupPhase.FAILED.value]
    newest = succeeded[-1] if succeeded else None
    pruned = {id(r) for r in failed[:-FAILED_KEPT]}
    if newest is not None:
        pruned |= {id(r) for r in failed if str(scheduled_for(r)) < str(scheduled_for(newest))}
        oldest = (newest.get("status") or {}).get("oldestBackupLabel")
        pruned |= {id(r) for r in succeeded[:-1] if oldest and (r["status"].get("backupLabel") or "") < oldest}
    return [r for r in records if id(r) in pruned]


def physical_record(instance: Instance, name: str, labels: dict[str, str]) -> Object:
    """A SampleDBBackup the operator makes (of a time of the schedule, or before an upgrade), not owned."""
    labels = {INSTANCE_LABEL: instance.name, "app.kubernetes.io/managed-by": MANAGED_BY, **labels}
    return {
        "apiVersion": f"{GROUP}/{BACKUP_VERSION}",
        "kind": BACKUP_KIND,
        "metadata": {"name": name, "namespace": instance.namespace, "labels": labels},
        "spec": {
            "instance": instance.name,
            "method": BackupMethod.PHYSICAL.value,
            "verify": instance.spec.backup.verify,
        },
    }

"""spec.recovery, decided from what is observed (no I/O): its source, its failure, status.recovery.

States of a recovering SampleDB (the start script's steps are in `resources/recovery.py`):

- **resolving**: spec.recovery comes with spec.restore or without an object store (admission
  refuses both for v1 writes), or names a SampleDBBackup that is missing, not Physical, not yet
  succeeded or failed, in another bucket, or that ends after the target: nothing is created (an
  empty database where the user asked for their data would be the wrong one), the instance is
  Degraded with the reason, and a backup still running is waited for;
- **recovering**: the source is resolved (a repository path is one already): the ConfigMap carries
  pgBackRest's restore options and the primary's start script restores and recovers;
- **failed**: the primary's start ended with the reason and the repository's window (its
  termination message): `RecoveryFailed` while it waits to start again (the kubelet retries it:
  a store that was away heals; a target out of reach needs the SampleDB re-created);
- **recovered**: the server serves on its new timeline; the primary's answer to RECOVERY_SQL
  (read with the archiver's) fills status.recovery with the point PostgreSQL reached; only then is
  the init Job created (its deadline would not wait for a long recovery), and once the instance is
  initialised the options leave the ConfigMap (a volume lost later is never restored from the
  source again).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sampledb_operator.api.backup import BackupMethod
from sampledb_operator.api.v1 import RECOVERY_EXCLUSIVE_MESSAGE, RECOVERY_STORE_MESSAGE
from sampledb_operator.reconcile.restore import unfinished
from sampledb_operator.reconcile.status import Problem
from sampledb_operator.resources import archive, recovery
from sampledb_operator.resources.instance import Instance, RecoverySource

RECHECK_SECONDS = 15.0
TAG = "recovered"
RECOVERY_SQL = f"select '{TAG}', pg_read_file('{recovery.RECOVERED}', 0, 2000, true)"
FAILURE_PREFIX = "sampledb: spec.recovery: "


@dataclass(frozen=True)
class RecoveryPlan:
    """The resolved source, or why not (yet); `wait` means the source may still become usable."""

    source: RecoverySource | None = None
    problem: Problem | None = None
    wait: bool = False


def lsn_number(text: str) -> int:
    """An LSN as PostgreSQL writes it (`0/3000088`) as a number, to compare two."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def _ends_after_target(instance: Instance, status: dict[str, Any]) -> str | None:
    """Why the backup cannot reach spec.recovery.target: it ends after it (None: it can)."""
    spec = instance.spec.recovery
    target = spec.target if spec else None
    stop_time, stop_lsn = status.get("completionTime"), status.get("stopLSN")
    if target is None:
        return None
    if target.time and stop_time and datetime.fromisoformat(target.time) < datetime.fromisoformat(stop_time):
        return f"it ended at {stop_time}, after spec.recovery.target.time {target.time}"
    if target.lsn and stop_lsn and lsn_number(target.lsn) < lsn_number(stop_lsn):
        return f"it ended at LSN {stop_lsn}, after spec.recovery.target.lsn {target.lsn}"
    return None


def plan_recovery(instance: Instance, backup: dict[str, Any] | None) -> RecoveryPlan:
    """Resolve spec.recovery (which must be set) against the SampleDBBackup it may name."""
    spec = instance.spec.recovery
    assert spec is not None
    if instance.spec.restore is not None:
        return RecoveryPlan(problem=Problem("RecoverySourceConflict", RECOVERY_EXCLUSIVE_MESSAGE))
    if instance.spec.backup.objectStore is None:
        return RecoveryPlan(problem=Problem("RecoveryWithoutObjectStore", RECOVERY_STORE_MESSAGE))
    if spec.repositoryPath is not None:
        return RecoveryPlan(source=RecoverySource(spec.repositoryPath))
    field = f"spec.recovery.backup ({spec.backup})"
    if backup is None:
        message = f"{field}: SampleDBBackup not found in {instance.namespace}"
        return RecoveryPlan(problem=Problem("RecoverySourceMissing", message), wait=True)
    if (backup.get("spec") or {}).get("method") != BackupMethod.PHYSICAL:
        message = (
            f"{field} is a logical backup, which spec.recovery cannot use: name a Physical one, or use spec.restore"
        )
        return RecoveryPlan(problem=Problem("RecoverySourceLogical", message))
    status = backup.get("status") or {}
    unusable = unfinished(field, status, "Recovery")
    if unusable is not None:
        return RecoveryPlan(problem=unusable[0], wait=unusable[1])
    prefix = f"s3://{instance.spec.backup.objectStore.bucket}/"
    location, label = status.get("location") or "", status.get("backupLabel")
    path, _, tail = location.removeprefix(prefix).rpartition(f"/backup/{archive.STANZA}/")
    if not location.startswith(prefix) or not path or not label or tail != label:
        message = (
            f"{field} is stored at {location or '(no location)'}, not in spec.backup.objectStore's bucket: "
            "point spec.backup.objectStore at the store that holds it"
        )
        return RecoveryPlan(problem=Problem("RecoverySourceElsewhere", message))
    late = _ends_after_target(instance, status)
    if late:
        message = f"{field} cannot recover to the target: {late}; name an older backup, or a repositoryPath"
        return RecoveryPlan(problem=Problem("RecoveryTargetBeforeBackup", message))
    return RecoveryPlan(source=RecoverySource(f"/{path}", label))


def failure(instance: Instance, pods: list[dict[str, Any]]) -> Problem | None:
    """`RecoveryFailed` with the reason the primary's start script left (its termination message).

    From the container's state (it stopped) or its last state while it waits to start again (a
    crash loop); not while it runs again, for the start is retried: a cause that went away (a store
    that was unreachable) heals by itself.
    """
    for pod in pods:
        if pod["metadata"]["name"] != instance.primary:
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            retrying = "running" in (container.get("state") or {})
            for state in ("state",) if retrying else ("state", "lastState"):
                message = ((container.get(state) or {}).get("terminated") or {}).get("message") or ""
                if message.startswith(FAILURE_PREFIX):
                    why = message.removeprefix(FAILURE_PREFIX).strip()
                    return Problem(
                        "RecoveryFailed",
                        f"spec.recovery: {why}; the start is retried, but a target out of reach stays so: "
                        "re-create the SampleDB with another target",
                    )
    return None


def problem(
    plan: RecoveryPlan | None, instance: Instance, pods: list[dict[str, Any]], recovered: dict[str, Any] | None
) -> Problem | None:
    """Why recovery cannot go on: its source, or its failed start (history once the server serves recovered)."""
    if plan is None or plan.problem is not None:
        return plan.problem if plan else None
    return None if done(recovered) else failure(instance, pods)


def done(recovery_status: dict[str, Any] | None) -> bool:
    """status.recovery says where recovery stopped: the server serves on its new timeline."""
    return bool((recovery_status or {}).get("reached"))


def parse(answer: str | None) -> tuple[int, str, str] | None:
    """(timeline, LSN, PostgreSQL's stop reason) from the primary's answer to RECOVERY_SQL; None before."""
    for line in (answer or "").splitlines():
        tag, _, content = line.partition("|")
        fields = content.split("\t")
        if tag == TAG and len(fields) == 3 and fields[0].isdigit():
            return int(fields[0]), fields[1], fields[2].strip()
    return None


def status(instance: Instance, answer: str | None, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """`status.recovery`: what was asked, and (once the primary says so) the point reached; kept once known."""
    spec = instance.spec.recovery
    if spec is None:
        return previous
    kept = dict(previous or {})
    source = instance.recovery_source
    if source is not None:
        kept.update(repositoryPath=source.repository_path, backupLabel=source.label)
    if "repositoryPath" not in kept:
        return None  # not resolved yet
    kept.update(backup=spec.backup, target=recovery.describe(spec))
    point = parse(answer)
    if point is not None:
        kept.update(timeline=point[0], lsn=point[1], reached=point[2])
    return {k: v for k, v in kept.items() if v is not None}

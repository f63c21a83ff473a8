"""Physical base backups (SampleDBBackup `method: Physical`): pgBackRest, on the primary, to the object store.

pgBackRest copies the data directory itself, so it runs in the primary's Pod, in its own
container (`resources/archive.py`: BACKUP_CONTAINER and BACKUP_COMMANDS); the operator starts it
and follows it through exec, and the backup's record in the repository (found by its annotation,
the SampleDBBackup's UID) becomes the status.

States (status.phase; status.pod says where it runs):
- Pending: not started. The SampleDB must archive (else Failed, naming spec.backup.objectStore);
  once its primary's Pod is ready, `backup-start` runs there -> Running (pod recorded, an event).
  An exec that fails (the Pod still rolls out without the container, say) stays Pending, retried.
- Running: every POLL_SECONDS `backup-status` on the recorded Pod (with spec.verify the run
  includes the restore and check of `resources/archive.py` VERIFY; a backup that fails it is
  expired from the repository and reported failed):
  `running` -> Running (the last line of progress in status.message);
  `succeeded` -> Succeeded, with the label, LSNs, WAL segments, sizes and duration from pgBackRest;
  `failed` -> Failed, with pgBackRest's error;
  `lost` / `unknown` (the container or the Pod restarted), or the Pod gone -> Failed: interrupted.
  An exec that fails is retried at the next poll (the backup itself goes on).
- Succeeded / Failed: final (`reconcile/backup.py`).
One backup of a SampleDB at a time: a second one started meanwhile fails on pgBackRest's lock,
with its message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sampledb_operator.resources import archive
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.paths import CONFIG_DIR

POLL_SECONDS = 10.0
RUNNING, SUCCEEDED, FAILED, LOST, UNKNOWN = "running", "succeeded", "failed", "lost", "unknown"


def command(verb: str, backup_id: str, *, verify: bool = False) -> list[str]:
    """`backup-start [verify]`, `backup-status`: the exec into BACKUP_CONTAINER (no secret in it)."""
    return ["sh", f"{CONFIG_DIR}/{archive.SCRIPT_FILE}", verb, backup_id, *(["verify"] if verify else [])]


@dataclass(frozen=True)
class Progress:
    """What `backup-status` said: its first line (the state), and the rest."""

    state: str
    detail: str


def parse(output: str) -> Progress:
    """The answer of `backup-status`."""
    state, _, detail = output.strip().partition("\n")
    return Progress(state.strip(), detail.strip())


def _rfc3339(epoch: Any) -> str | None:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if epoch is not None else None


def find(info: Any, backup_id: str) -> dict[str, Any] | None:
    """The backup annotated with `backup_id` in pgBackRest's `info --output=json` (None: not there)."""
    for stanza in info if isinstance(info, list) else []:
        for record in stanza.get("backup") or []:
            if (record.get("annotation") or {}).get(archive.ANNOTATION) == backup_id:
                return dict(record)
    return None


def oldest_label(info: Any) -> str | None:
    """The label of the oldest backup in the repository (labels start with the backup's time: they sort)."""
    stanzas = info if isinstance(info, list) else []
    labels = [str(r["label"]) for s in stanzas for r in s.get("backup") or [] if r.get("label")]
    return min(labels, default=None)


def succeeded_status(instance: Instance, backup_id: str, info_json: str, *, verified: bool = False) -> dict[str, Any]:
    """The status of a finished base backup, from the repository's record of it (pure).

    `verified`: it was started with `verify`, so its success includes the check's.
    """
    try:
        info = json.loads(info_json)
    except ValueError:
        info = None
    record = find(info, backup_id)
    if record is None:
        return {
            "phase": "Failed",
            "message": f"pgBackRest finished, but its repository lists no backup annotated {backup_id}",
        }
    times, lsn, wal = record.get("timestamp") or {}, record.get("lsn") or {}, record.get("archive") or {}
    size = record.get("info") or {}
    store = instance.spec.backup.objectStore
    bucket = store.bucket if store else ""
    status = {
        "phase": "Succeeded",
        "backupLabel": record.get("label"),
        "startLSN": lsn.get("start"),
        "stopLSN": lsn.get("stop"),
        "startWAL": wal.get("start"),
        "stopWAL": wal.get("stop"),
        "bytes": size.get("size"),
        "repositoryBytes": (size.get("repository") or {}).get("size"),
        "startTime": _rfc3339(times.get("start")),
        "completionTime": _rfc3339(times.get("stop")),
        "location": f"s3://{bucket}{archive.repository_path(instance)}/backup/{archive.STANZA}/{record.get('label')}",
        "message": None,
        "oldestBackupLabel": oldest_label(info),
        **({"verified": True} if verified else {}),
    }
    if times.get("start") is not None and times.get("stop") is not None:
        status["durationSeconds"] = int(times["stop"]) - int(times["start"])
    if record.get("error"):
        status["message"] = "pgBackRest found page checksum errors in the data it copied: see its log on the Pod"
    return status


def outcome(
    instance: Instance, backup_id: str, pod: str, progress: Progress, *, verified: bool = False
) -> dict[str, Any] | None:
    """The status `backup-status` calls for; None while it runs (then only the progress line changes)."""
    if progress.state == SUCCEEDED:
        return succeeded_status(instance, backup_id, progress.detail, verified=verified)
    if progress.state == FAILED:
        return {"phase": "Failed", "message": f"pgBackRest: {progress.detail or 'failed (no message)'}"}
    if progress.state in (LOST, UNKNOWN):
        return {
            "phase": "Failed",
            "message": f"interrupted: Pod {pod} restarted during the base backup; create a new SampleDBBackup",
        }
    return None

"""The `ContinuousArchiving` condition and `status.archive`, from the primary's pg_stat_archiver.

The archiver runs in the server (`resources/archive.py`), so only the primary knows how archiving
goes. Its `pg_stat_archiver` row, its `archive_mode` (off when the image lacks pgbackrest), the
segments waiting (`.ready` files) and pgBackRest's last error are read in the same exec, and at
the same period, as the replication lag (`reconcile/replication.py`): one exec a period for a
database with standbys or an object store. PostgreSQL retries a failed segment for ever and
never says so to a client, so a failure must be visible here: the condition turns False, naming
the segment and pgBackRest's own message (a wrong key, a missing bucket, an unreachable store).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sampledb_operator.reconcile.conditions import Value
from sampledb_operator.resources import archive
from sampledb_operator.resources.instance import Instance

TAG = "archiver"
_UTC = """ at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')"""
ARCHIVE_SQL = (
    f"select '{TAG}', current_setting('archive_mode'),"  # noqa: S608 - constants only
    " coalesce(last_failed_time >= last_archived_time, last_failed_time is not null),"
    f" coalesce(last_archived_wal, ''), coalesce(to_char(last_archived_time{_UTC}, ''),"
    f" coalesce(last_failed_wal, ''), coalesce(to_char(last_failed_time{_UTC}, ''),"
    " (select count(*) from pg_ls_archive_statusdir() where name like '%.ready'),"
    f" pg_read_file('{archive.RUN_DIR}/{archive.NO_PGBACKREST_FILE}', 0, 1, true) is not null,"
    f" translate(coalesce(pg_read_file('{archive.LAST_ERROR}', 0, 1000, true), ''), E'\\n|', '  ')"
    " from pg_stat_archiver where not pg_is_in_recovery()"
)


@dataclass(frozen=True)
class Archiver:
    """The primary's answer to ARCHIVE_SQL."""

    mode: str
    failing: bool  # the last attempt failed: the last failure is no older than the last success
    archived_wal: str
    archived_time: str
    failed_wal: str
    failed_time: str
    pending: int
    no_tool: bool  # the start script found no pgbackrest (and so left archive_mode off)
    error: str

    @property
    def broken(self) -> bool:
        """Not archiving while it should: failing, or off (no tool, or not yet restarted with it on)."""
        return self.failing or self.mode == "off"


def parse(answer: str | None) -> Archiver | None:
    """The archiver line of the primary's answer; None without one (no answer, or not a primary)."""
    for line in (answer or "").splitlines():
        fields = line.split("|")
        if len(fields) == 10 and fields[0] == TAG and fields[7].isdigit():
            mode, failing, archived_wal, archived_time, failed_wal, failed_time, pending, no_tool, error = fields[1:]
            return Archiver(
                mode, failing == "t", archived_wal, archived_time, failed_wal, failed_time, int(pending),
                no_tool == "t", error.strip(),
            )  # fmt: skip
    return None


def status(instance: Instance, answer: str | None, previous: dict[str, Any] | None) -> dict[str, Any] | None:
    """`status.archive`: None without an object store.

    A value the primary does not report is the last one reported: while it does not answer, and
    after a failover (the new primary's pg_stat_archiver starts empty) until it archives.
    """
    if not instance.archives:
        return None
    kept = {**(previous or {}), "repositoryPath": archive.repository_path(instance)}
    found = parse(answer)
    if found is None:
        return kept
    read = {
        "lastArchivedWAL": found.archived_wal,
        "lastArchivedTime": found.archived_time,
        "lastFailedWAL": found.failed_wal,
        "lastFailedTime": found.failed_time,
    }
    return {**kept, **{k: v for k, v in read.items() if v}, "pendingSegments": found.pending}


def condition(instance: Instance, answer: str | None) -> Value | None:
    """`ContinuousArchiving`; None when there is nothing new to say (no object store, or no answer).

    Its message changes only with what it says (not with each segment archived: those are in
    status.archive), so a busy database does not rewrite it at every read.
    """
    found = parse(answer) if instance.archives else None
    if found is None:
        return None
    if found.no_tool:
        return Value(
            "False",
            "ArchiverMissing",
            f"spec.backup.objectStore is set but the image {instance.image} has no pgbackrest, so the server "
            "runs without archiving: use an image with pgbackrest (README, Operand images) or unset the field",
        )
    if found.mode == "off":
        return Value("Unknown", "ServerNotRestarted", "the server has not restarted with archiving on yet")
    if found.failing:
        why = found.error or "see the database Pod's log"
        return Value(
            "False",
            "ArchiveFailing",
            f"archiving WAL segment {found.failed_wal} fails (the server keeps it and the ones after it, and "
            f"retries): {why}",
        )
    if not found.archived_wal:
        return Value("Unknown", "NoSegmentYet", "no WAL segment has been archived yet")
    return Value("True", "Archiving", f"WAL is archived to {archive.repository_path(instance)}; see status.archive")

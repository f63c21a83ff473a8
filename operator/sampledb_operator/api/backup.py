"""`sampledb.io/v1` SampleDBBackup: one on-demand backup of a SampleDB, and its outcome.

The spec is immutable (a backup is a record of something that happened). A logical backup is a
dump file on the instance's backup volume; a physical one is a pgBackRest base backup in the
SampleDB's object-store repository. Deleting the object deletes neither.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from sampledb_operator.api.common import DNS_LABEL_PATTERN, ApiModel, cel, k8s_extra

KIND = "SampleDBBackup"
PLURAL = "sampledbbackups"
SINGULAR = "sampledbbackup"
SHORT_NAMES = ["sdbb"]
VERSION = "v1"


class BackupPhase(StrEnum):
    """Where the backup is in its life."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class BackupMethod(StrEnum):
    """How the backup is taken."""

    LOGICAL = "Logical"
    PHYSICAL = "Physical"


class SampleDBBackupSpec(ApiModel):
    """What to back up."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel("self == oldSelf", "spec is immutable: create a new SampleDBBackup"),
                ]
            }
        )
    }

    instance: str = Field(
        description="Name of the SampleDB, in the same namespace, to back up.", pattern=DNS_LABEL_PATTERN, max_length=63
    )
    method: BackupMethod = Field(
        BackupMethod.LOGICAL,
        description=(
            "Logical: a pg_dump of the application database on the backup volume. Physical: an online base "
            "backup of the whole cluster to spec.backup.objectStore (pgBackRest, from the primary), the "
            "starting point of a point-in-time recovery."
        ),
    )
    verify: bool = Field(
        False,
        description=(
            "Prove the backup restores. Logical: the dump is restored into a scratch database. Physical: the base "
            "backup is restored (to its consistency point) into a scratch folder of the primary's Pod (its /tmp "
            "needs room for the database), started, and every database checked with pg_amcheck; a backup that "
            "fails is expired from the repository and the SampleDBBackup fails."
        ),
    )


class SampleDBBackupStatus(ApiModel):
    """The outcome, written by the operator."""

    phase: BackupPhase | None = Field(None, description="Pending, Running, Succeeded or Failed.")
    job: str | None = Field(None, description="The backup Job.")
    startTime: str | None = Field(None, description="When the backup started (RFC 3339).")
    completionTime: str | None = Field(None, description="When it finished (RFC 3339).")
    location: str | None = Field(None, description="PersistentVolumeClaim and file of the dump: <pvc>:<path>.")
    bytes: int | None = Field(None, description="Size of the dump in bytes.", ge=0)
    sha256: str | None = Field(None, description="SHA-256 of the dump file.")
    verified: bool | None = Field(
        None, description="True when the backup was restored and checked successfully (spec.verify)."
    )
    message: str | None = Field(None, description="Why the backup failed, or other detail.")
    pod: str | None = Field(None, description="Physical: the primary's Pod the base backup is taken on.")
    backupLabel: str | None = Field(None, description="Physical: pgBackRest's label of the base backup.")
    startLSN: str | None = Field(None, description="Physical: the WAL position the backup starts at.")
    stopLSN: str | None = Field(
        None, description="Physical: the WAL position it is consistent at (the earliest point it recovers to)."
    )
    startWAL: str | None = Field(None, description="Physical: the first WAL segment the backup needs.")
    stopWAL: str | None = Field(None, description="Physical: the last WAL segment the backup needs.")
    repositoryBytes: int | None = Field(
        None, description="Physical: what the backup takes in the object store (compressed).", ge=0
    )
    durationSeconds: int | None = Field(None, description="Physical: how long the backup took.", ge=0)
    oldestBackupLabel: str | None = Field(
        None,
        description=(
            "Physical: the oldest base backup still in the repository once this one finished and retention ran "
            "(records of older ones describe backups that are gone)."
        ),
    )


class SampleDBBackup(ApiModel):
    """SampleDBBackup takes one logical backup of a SampleDB and records where it is."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    spec: SampleDBBackupSpec = Field(description="What to back up.")
    status: SampleDBBackupStatus = Field(
        default_factory=SampleDBBackupStatus, description="The outcome, set by the operator."
    )

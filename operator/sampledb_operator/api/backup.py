"""`sampledb.io/v1` SampleDBBackup: one on-demand backup of a SampleDB, and its outcome.

The spec is immutable (a backup is a record of something that happened); deleting the object
does not delete the dump file, which stays on the instance's backup volume.
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


class SampleDBBackupSpec(ApiModel):
    """What to back up."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{"x-kubernetes-validations": [cel("self == oldSelf", "spec is immutable: create a new SampleDBBackup")]}
        )
    }

    instance: str = Field(
        description="Name of the SampleDB, in the same namespace, to back up.", pattern=DNS_LABEL_PATTERN, max_length=63
    )
    verify: bool = Field(False, description="Restore the dump into a scratch database to prove it restores.")


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
        None, description="True when the dump was restored successfully into a scratch database."
    )
    message: str | None = Field(None, description="Why the backup failed, or other detail.")


class SampleDBBackup(ApiModel):
    """SampleDBBackup takes one logical backup of a SampleDB and records where it is."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    spec: SampleDBBackupSpec = Field(description="What to back up.")
    status: SampleDBBackupStatus = Field(
        default_factory=SampleDBBackupStatus, description="The outcome, set by the operator."
    )

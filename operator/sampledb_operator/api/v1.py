"""`sampledb.io/v1`: the structured, stored version of the SampleDB API.

Every field carries a description (shown by `kubectl explain`), and every rule that can be
checked at admission is expressed here, next to the field, as a schema constraint or a CEL rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from sampledb_operator.api.common import (
    BUCKET_PATTERN,
    CRON_PATTERN,
    DATABASE_MESSAGE,
    DATABASE_RULE,
    DEFAULT_MAJOR_VERSION,
    DNS_LABEL_PATTERN,
    KMS_KEY_PATTERN,
    MAX_INSTANCES,
    OBJECT_STORE_ENDPOINT_PATTERN,
    ROLE_MESSAGE,
    ROLE_RULE,
    SECRET_KEY_PATTERN,
    SQL_IDENTIFIER_PATTERN,
    UPGRADE_METHOD_DESCRIPTION,
    ApiModel,
    DeletionPolicy,
    MajorVersion,
    PostgresParameters,
    Quantity,
    SampleDBStatus,
    UpgradeMethod,
    UriStyle,
    cel,
    grows_only,
    k8s_extra,
    reserved_name_problem,
    storage_class_immutable,
)

VERSION = "v1"


class UpgradeSpec(ApiModel):
    """How major upgrades (a raised postgres.version) are carried out."""

    method: UpgradeMethod = Field(UpgradeMethod.AUTO, description=UPGRADE_METHOD_DESCRIPTION)


class PostgresSpec(ApiModel):
    """The PostgreSQL server: version, image and configuration."""

    version: MajorVersion = DEFAULT_MAJOR_VERSION
    image: str | None = Field(
        None,
        description=(
            "Container image to run instead of the operator's default for the major version. It must "
            "have initdb, postgres, pg_isready, psql, pg_dump, pg_dumpall, pg_restore and pg_basebackup on PATH; its "
            "entrypoint is not used. Changing only the tag (a minor version) rolls the StatefulSet; "
            "a new major version runs the major-upgrade procedure with the image as its target."
        ),
        min_length=1,
        max_length=512,
    )
    parameters: PostgresParameters = Field(
        default_factory=dict,
        description=(
            'postgresql.conf settings, e.g. {max_connections: "200"}. Parameters the operator '
            "manages itself (listen_addresses, port, data_directory, ...) or that could run code "
            "(archive_command, shared_preload_libraries, ...) are refused with a Degraded condition."
        ),
    )
    upgrade: UpgradeSpec = Field(default_factory=UpgradeSpec, description="How major upgrades are carried out.")


class StorageSpec(ApiModel):
    """The data volume of the database."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{"x-kubernetes-validations": [storage_class_immutable("storageClassName", "storage.storageClassName")]}
        )
    }

    size: Quantity = Field(
        "10Gi",
        description=(
            "Size of the data volume, e.g. 10Gi. It may grow (if the storage class allows expansion) but never shrink."
        ),
        json_schema_extra=k8s_extra(
            **{
                "x-kubernetes-validations": [
                    grows_only("storage.size"),
                    cel("isQuantity(self)", "storage.size must be a quantity such as 10Gi"),
                ]
            }
        ),
    )
    storageClassName: str | None = Field(
        None,
        description="StorageClass of the data volume; the cluster default when unset. Immutable.",
        min_length=1,
        max_length=253,
    )


def _no_parent(field: str) -> Callable[[str | None], str | None]:
    """The model's copy of a CEL rule refusing '..' (a v1beta1 write is checked by the model only)."""

    def check(value: str | None) -> str | None:
        if value is not None and ".." in value:
            raise ValueError(f"{field} must not contain '..'")
        return value

    return check


class SecretKeySelector(ApiModel):
    """One key of a Secret in the SampleDB's namespace."""

    name: str = Field(description="The Secret's name.", pattern=DNS_LABEL_PATTERN, max_length=253)
    key: str = Field(description="The key within the Secret.", pattern=SECRET_KEY_PATTERN, max_length=253)


class ObjectStoreCredentials(ApiModel):
    """The S3 access key pair, read from a Secret (never shown in the Pod spec, a log or an event)."""

    secretName: str = Field(
        description="A Secret in this namespace holding the access key ID and the secret access key.",
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
    )
    accessKeyIdKey: str = Field(
        "accessKeyId", description="The Secret's key holding the access key ID.", pattern=SECRET_KEY_PATTERN
    )
    secretAccessKeyKey: str = Field(
        "secretAccessKey", description="The Secret's key holding the secret access key.", pattern=SECRET_KEY_PATTERN
    )


RETENTION_MESSAGE = "objectStore.retention needs exactly one of fullBackups or recoveryWindowDays"


class ObjectStoreRetention(ApiModel):
    """Which physical base backups to keep (pgBackRest expires the rest, and the WAL only they needed).

    Applied after each base backup. By count, or as a recovery window: a full backup older than
    the window is removed only when a newer one is itself at least that old, so a point anywhere in
    the window stays recoverable.
    """

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel("has(self.fullBackups) != has(self.recoveryWindowDays)", RETENTION_MESSAGE)
                ]
            }
        )
    }

    fullBackups: int | None = Field(None, description="Keep this many full base backups.", ge=1, le=9999)
    recoveryWindowDays: int | None = Field(
        None, description="Keep what recovery to any point of the last N days needs.", ge=1, le=9999
    )

    @model_validator(mode="after")
    def _one_rule(self) -> ObjectStoreRetention:
        """The model's copy of the CEL rule (a v1beta1 write is checked by the model only)."""
        if (self.fullBackups is None) == (self.recoveryWindowDays is None):
            raise ValueError(RETENTION_MESSAGE)
        return self


class ObjectStoreSpec(ApiModel):
    """An S3-compatible object store that receives the write-ahead log continuously (pgBackRest)."""

    endpoint: str = Field(
        description=(
            "https://host[:port] of the S3 API. TLS only; the host must be a DNS name its certificate names "
            "(pgBackRest does not match IP addresses against certificates)."
        ),
        pattern=OBJECT_STORE_ENDPOINT_PATTERN,
        max_length=260,
    )
    bucket: str = Field(description="The bucket, which must exist.", pattern=BUCKET_PATTERN)
    path: Annotated[str, AfterValidator(_no_parent("objectStore.path"))] = Field(
        "/sampledb",
        description=(
            "Prefix in the bucket. Each SampleDB archives under <path>/<namespace>/<name>/<uid> (its own "
            "repository: a re-created SampleDB never writes into its predecessor's), shown in status.archive."
        ),
        pattern=r"^/[A-Za-z0-9._/-]*$",
        max_length=512,
        json_schema_extra=k8s_extra(
            **{"x-kubernetes-validations": [cel("!self.contains('..')", "objectStore.path must not contain '..'")]}
        ),
    )
    region: str = Field("us-east-1", description="The S3 region.", pattern=r"^[a-z0-9-]+$", max_length=64)
    uriStyle: UriStyle = Field(
        UriStyle.PATH, description="Path (https://host/bucket/key) or Host (https://bucket.host/key) requests."
    )
    credentials: ObjectStoreCredentials = Field(description="The access key pair.")
    caBundle: SecretKeySelector | None = Field(
        None, description="A Secret key holding the PEM CA bundle that signs the endpoint; system CAs when unset."
    )
    kmsKeyId: str | None = Field(
        None,
        description="Server-side encryption: the store's KMS key ID (aws:kms) for every object written.",
        pattern=KMS_KEY_PATTERN,
        max_length=2048,
    )
    retention: ObjectStoreRetention | None = Field(
        None,
        description=(
            "Which physical base backups (SampleDBBackup method Physical) to keep; all of them, and every "
            "segment of WAL, when unset."
        ),
    )
    schedule: str | None = Field(
        None,
        description=(
            'Cron schedule (UTC) of physical base backups, e.g. "0 2 * * *": the operator creates a SampleDBBackup '
            "(method Physical, verify as spec.backup.verify) named <sampledb>-<YYYYMMDDHHMM> at each time, the "
            "first as soon as the database is Ready, one at a time (a time missed while busy or not Ready is "
            "taken once, late), and deletes its own records of base backups that retention removed from the "
            "store. Unset: none scheduled (SampleDBBackups made by hand still run)."
        ),
        pattern=CRON_PATTERN,
        max_length=128,
    )


class BackupSpec(ApiModel):
    """Scheduled logical backups of the database, and continuous archiving of its WAL."""

    schedule: str | None = Field(
        None,
        description='Cron schedule of automatic backups, e.g. "0 3 * * *"; no scheduled backups when unset.',
        pattern=CRON_PATTERN,
        max_length=128,
    )
    retention: int = Field(7, description="How many scheduled backups to keep.", ge=1, le=1000)
    verify: bool = Field(
        False,
        description=(
            "Restore every scheduled backup right after taking it (a logical one into a scratch database, a "
            "physical one as SampleDBBackup spec.verify says); a backup that does not restore fails and is "
            "removed instead of being kept."
        ),
    )
    objectStore: ObjectStoreSpec | None = Field(
        None,
        description=(
            "Archive the write-ahead log continuously to this object store (from the primary, with "
            "archive_timeout 30s unless spec.postgres.parameters says otherwise). Needs pgbackrest in the "
            "image: without it the server runs without archiving and the ContinuousArchiving condition says so."
        ),
    )


class ResourceRequirements(ApiModel):
    """CPU and memory for the database container (the shape of core/v1 ResourceRequirements)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}. Defaults to 100m CPU and 256Mi memory.",
        max_length=8,
    )
    limits: dict[str, Quantity] = Field(
        default_factory=dict,
        description="Maximum resources, e.g. {memory: 2Gi}. Defaults to 1Gi memory and no CPU limit.",
        max_length=8,
    )


def _not_reserved(field: str) -> Callable[[str], str]:
    """A pydantic check refusing what the field's CEL rule refuses (objects admitted before the rule)."""

    def check(value: str) -> str:
        problem = reserved_name_problem(field, value)
        if problem:
            raise ValueError(problem)
        return value

    return check


class DatabaseSpec(ApiModel):
    """The application database and its owner role, created by the initial-configuration Job."""

    name: Annotated[str, AfterValidator(_not_reserved("name"))] = Field(
        "app",
        description="Name of the application database; not postgres, template0 or template1.",
        pattern=SQL_IDENTIFIER_PATTERN,
        json_schema_extra=k8s_extra(**{"x-kubernetes-validations": [cel(DATABASE_RULE, DATABASE_MESSAGE)]}),
    )
    owner: Annotated[str, AfterValidator(_not_reserved("owner"))] = Field(
        "app",
        description=(
            "Name of the role that owns the application database; not the superuser (postgres), a pg_* role, "
            "public, none, current_user, current_role or session_user."
        ),
        pattern=SQL_IDENTIFIER_PATTERN,
        json_schema_extra=k8s_extra(**{"x-kubernetes-validations": [cel(ROLE_RULE, ROLE_MESSAGE)]}),
    )


class CredentialsSpec(ApiModel):
    """Where the connection credentials come from."""

    secretName: str | None = Field(
        None,
        description=(
            "An existing Secret with keys `username`, `password` and `superuser-password`, used as is and "
            "never modified. When unset the operator generates `<name>-credentials`."
        ),
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
    )


class MigrationsSpec(ApiModel):
    """Schema migrations the operator applies to the application database."""

    configMap: str = Field(
        description=(
            "ConfigMap whose keys are SQL files (e.g. 001_init.sql, 002_orders.sql), applied in name order, each "
            "once and in its own transaction, as the database owner. Changing an applied file is refused: add a "
            "new one."
        ),
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
    )


RESTORE_IMMUTABLE = "restore is immutable: it only applies when the instance is created"


def _inside_the_volume(file: str | None) -> str | None:
    """The model's copy of restore.file's CEL rule (a v1beta1 write is checked by the model only)."""
    if file is not None and ".." in file:
        raise ValueError("restore.file must stay inside the volume (no '..')")
    return file


class RestoreSpec(ApiModel):
    """Where a new instance takes its initial data from (instead of an empty database)."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel(
                        "has(self.backup) != (has(self.persistentVolumeClaim) && has(self.file))",
                        "restore needs either backup, or persistentVolumeClaim and file (not both)",
                    ),
                    cel("self == oldSelf", RESTORE_IMMUTABLE),
                ]
            }
        )
    }

    backup: str | None = Field(
        None,
        description="A SampleDBBackup in this namespace, which must have succeeded.",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
    )
    persistentVolumeClaim: str | None = Field(
        None,
        description="A claim in this namespace holding a pg_dump custom-format file.",
        pattern=DNS_LABEL_PATTERN,
        max_length=253,
    )
    file: Annotated[str | None, AfterValidator(_inside_the_volume)] = Field(
        None,
        description="Path of the dump inside persistentVolumeClaim, e.g. db1/20260101T000000Z-nightly.dump.",
        pattern=r"^[^/.]",
        max_length=1024,
        json_schema_extra=k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel("!self.contains('..')", "restore.file must stay inside the volume (no '..')")
                ]
            }
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> RestoreSpec:
        """The model's copy of the CEL rule on the object (a v1beta1 write is checked by the model only)."""
        if (self.backup is not None) == (self.persistentVolumeClaim is not None and self.file is not None):
            raise ValueError("restore needs either backup, or persistentVolumeClaim and file (not both)")
        return self


RECOVERY_IMMUTABLE = "recovery is immutable: it only applies when the instance is created"
RECOVERY_SOURCE_MESSAGE = "recovery needs exactly one of repositoryPath and backup"
RECOVERY_TARGET_MESSAGE = "recovery.target takes at most one of time, lsn and name (none: the latest point)"
# Refused at admission for v1 writes (CEL on SampleDBSpec). The model has no copy of these two: a
# v1beta1 write carries spec.recovery only in the reserved annotation, and the operator refuses
# such an object with a condition before it creates anything (`reconcile/recovery.py`).
RECOVERY_EXCLUSIVE_MESSAGE = "spec.recovery and spec.restore cannot both be set: a new database has one source"
UPGRADE_STORE_MESSAGE = (
    "postgres.upgrade.method Copy takes its pre-upgrade base backup to spec.backup.objectStore: set one, "
    "or use Logical or Auto"
)
RECOVERY_STORE_MESSAGE = (
    "spec.recovery reads from spec.backup.objectStore: set it to the store that holds the repository"
)
# RFC 3339 with an explicit offset: a time without one would be read in the server's zone.
TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})$"
LSN_PATTERN = r"^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"


def _a_time(value: str | None) -> str | None:
    """The model's check that recovery.target.time is a real instant (the pattern allows month 13)."""
    if value is not None:
        datetime.fromisoformat(value)
    return value


class RecoveryTarget(ApiModel):
    """The point to recover to: the first of these PostgreSQL reaches ends the recovery."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel(
                        "(has(self.time) ? 1 : 0) + (has(self.lsn) ? 1 : 0) + (has(self.name) ? 1 : 0) <= 1",
                        RECOVERY_TARGET_MESSAGE,
                    )
                ]
            }
        )
    }

    time: Annotated[str | None, AfterValidator(_a_time)] = Field(
        None,
        description=(
            "Every transaction committed before this instant (RFC 3339 with an offset, e.g. 2026-11-28T10:15:00Z), "
            "and none after it."
        ),
        pattern=TIME_PATTERN,
        max_length=40,
    )
    lsn: str | None = Field(
        None,
        description="Up to this WAL position (pg_current_wal_lsn() as the source showed it), e.g. 0/5000060.",
        pattern=LSN_PATTERN,
    )
    name: str | None = Field(
        None,
        description=(
            "Up to the restore point of this name (pg_create_restore_point on the source). With repositoryPath the "
            "newest base backup is restored: for a point older than it, name an older backup in spec.recovery.backup."
        ),
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        max_length=63,
    )

    @model_validator(mode="after")
    def _one_target(self) -> RecoveryTarget:
        """The model's copy of the CEL rule."""
        if sum(v is not None for v in (self.time, self.lsn, self.name)) > 1:
            raise ValueError(RECOVERY_TARGET_MESSAGE)
        return self


class RecoverySpec(ApiModel):
    """Bootstrap from physical backups and archived WAL in the object store, to a point in time."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel("has(self.repositoryPath) != has(self.backup)", RECOVERY_SOURCE_MESSAGE),
                    cel("self == oldSelf", RECOVERY_IMMUTABLE),
                ]
            }
        )
    }

    repositoryPath: Annotated[str | None, AfterValidator(_no_parent("recovery.repositoryPath"))] = Field(
        None,
        description=(
            "The source's repository in spec.backup.objectStore's bucket, as its status.archive.repositoryPath "
            "shows it (it stays readable after the source SampleDB is deleted). The newest base backup that ends "
            "before the target is restored."
        ),
        pattern=r"^/[A-Za-z0-9._/-]*$",
        max_length=600,
        json_schema_extra=k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel("!self.contains('..')", "recovery.repositoryPath must not contain '..'")
                ]
            }
        ),
    )
    backup: str | None = Field(
        None,
        description="A SampleDBBackup of method Physical in this namespace, which must have succeeded: its base "
        "backup is restored, then WAL up to the target.",
        pattern=DNS_LABEL_PATTERN,
        max_length=63,
    )
    target: RecoveryTarget | None = Field(None, description="Where to stop; unset: the latest point the archive holds.")

    @model_validator(mode="after")
    def _one_source(self) -> RecoverySpec:
        """The model's copy of the CEL rule (a v1beta1 write is checked by the model only)."""
        if (self.repositoryPath is None) == (self.backup is None):
            raise ValueError(RECOVERY_SOURCE_MESSAGE)
        return self


# Refused at admission for v1 writes. The model has no copy of this rule: a v1beta1 client, which
# cannot say spec.replication, may lower spec.instances under it, and that write must still convert
# (losslessly); the operator then waits for every standby there is (`Instance.synchronous`).
SYNCHRONOUS_MESSAGE = (
    "spec.replication.synchronous must be less than spec.instances: a commit cannot wait for more "
    "standbys than there are; lower it (0: asynchronous) or add instances"
)


class ReplicationSpec(ApiModel):
    """How commits reach the standbys."""

    synchronous: int = Field(
        0,
        description=(
            "Standbys that must have a commit on disk before it is acknowledged (synchronous_standby_names "
            "'ANY n'). 0 (the default): asynchronous, a failover may lose the last commits. With n >= 1 a "
            "failover loses no acknowledged commit, and commits wait while fewer than n standbys are connected."
        ),
        ge=0,
        le=MAX_INSTANCES - 1,
    )


class SampleDBSpec(ApiModel):
    """The desired state of one PostgreSQL instance."""

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel(
                        "!has(self.replication) || !has(self.replication.synchronous) || "
                        "self.replication.synchronous < (has(self.instances) ? self.instances : 1)",
                        SYNCHRONOUS_MESSAGE,
                        field_path=".replication.synchronous",
                    ),
                    cel(
                        "!has(self.recovery) || !has(self.restore)", RECOVERY_EXCLUSIVE_MESSAGE, field_path=".recovery"
                    ),
                    cel(
                        "!has(self.postgres) || !has(self.postgres.upgrade) || !has(self.postgres.upgrade.method) || "
                        "self.postgres.upgrade.method != 'Copy' || (has(self.backup) && has(self.backup.objectStore))",
                        UPGRADE_STORE_MESSAGE,
                        field_path=".postgres.upgrade.method",
                    ),
                    cel(
                        "!has(self.recovery) || (has(self.backup) && has(self.backup.objectStore))",
                        RECOVERY_STORE_MESSAGE,
                        field_path=".recovery",
                    ),
                    # Not added nor removed later: removed, a primary restarted mid-recovery would
                    # start on half-recovered data (the object's own rule sees only a change).
                    cel("has(self.recovery) == has(oldSelf.recovery)", RECOVERY_IMMUTABLE, field_path=".recovery"),
                ]
            }
        )
    }

    postgres: PostgresSpec = Field(default_factory=PostgresSpec, description="The PostgreSQL server.")
    instances: int = Field(
        1,
        description=(
            "PostgreSQL servers: one primary and instances - 1 hot standbys in streaming replication, "
            "each with its own volume. Scaling down removes standbys (and their volumes), never the primary."
        ),
        ge=1,
        le=MAX_INSTANCES,
    )
    replication: ReplicationSpec = Field(
        default_factory=ReplicationSpec, description="Replication to the standbys (with instances > 1)."
    )
    storage: StorageSpec = Field(default_factory=StorageSpec, description="The data volume.")
    backup: BackupSpec = Field(default_factory=BackupSpec, description="Scheduled backups.")
    resources: ResourceRequirements = Field(
        default_factory=ResourceRequirements, description="CPU and memory of the database container."
    )
    database: DatabaseSpec = Field(default_factory=DatabaseSpec, description="The application database.")
    credentials: CredentialsSpec = Field(default_factory=CredentialsSpec, description="Connection credentials.")
    migrations: MigrationsSpec | None = Field(None, description="Schema migrations to apply; none when unset.")
    restore: RestoreSpec | None = Field(
        None, description="Bootstrap the database from a backup instead of empty; applies at creation only."
    )
    recovery: RecoverySpec | None = Field(
        None,
        description=(
            "Bootstrap from the object store to a point in time (physical base backup plus archived WAL) instead "
            "of empty; applies at creation only. status.recovery says which point was reached."
        ),
    )
    deletionPolicy: DeletionPolicy = Field(
        DeletionPolicy.SNAPSHOT,
        description=(
            "On deletion: Snapshot takes a final backup to a retained volume and then removes the "
            "workload and its volumes; Retain removes the workload but keeps the volumes; Delete removes "
            "everything."
        ),
    )

    @model_validator(mode="after")
    def _copy_has_a_store(self) -> SampleDBSpec:
        """The model's copy of the CEL rule: a v1beta1 write says the method, but not the store."""
        if self.postgres.upgrade.method is UpgradeMethod.COPY and self.backup.objectStore is None:
            raise ValueError(UPGRADE_STORE_MESSAGE)
        return self


class SampleDB(ApiModel):
    """SampleDB runs one PostgreSQL database instance with its credentials, services and backups."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    spec: SampleDBSpec = Field(default_factory=SampleDBSpec, description="Desired state of the database.")
    status: SampleDBStatus = Field(default_factory=SampleDBStatus, description="Observed state, set by the operator.")

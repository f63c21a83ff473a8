"""Types shared by every API version: constrained scalars, conditions and the status block.

The status is identical in `v1beta1` and `v1` so that conversion never has to translate it:
an object read in either version reports the same state.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SupportedMajor = Literal[15, 16, 17, 18]
DEFAULT_MAJOR_VERSION: SupportedMajor = 17
# One primary and up to eight standbys: PostgreSQL's default max_wal_senders (10) leaves room for
# every standby plus a base backup.
MAX_INSTANCES = 9

# A Kubernetes resource quantity such as `10Gi` or `500M`: the same pattern the API server uses.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# Five-field cron, or one of the @-macros understood by the CronJob controller.
CRON_PATTERN = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SQL_IDENTIFIER_PATTERN = r"^[a-z_][a-z0-9_]{0,62}$"
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"  # noqa: S105 - what the API server accepts as a Secret's key
# https, a DNS name (pgBackRest matches only DNS names against a certificate), an optional port.
_PORT = r"([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"  # 1-65535
OBJECT_STORE_ENDPOINT_PATTERN = rf"^https://[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?(:{_PORT})?/?$"
# A KMS key ID, ARN or alias: one line of pgbackrest.conf, so no newline, '[' or space can get in.
KMS_KEY_PATTERN = r"^[A-Za-z0-9:/_.+=@-]+$"
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"  # S3's bucket naming rules

# Names an application role must not take. The operator's Jobs log in as the superuser `postgres`
# with the superuser password: an owner of that name would get the application's password (the
# initial-configuration Job runs ALTER ROLE ... PASSWORD), so the application Secret would carry
# superuser rights and every superuser Job would fail. PostgreSQL reserves `pg_*` for its own
# roles and refuses `public`, `none` and the CURRENT_/SESSION_ keywords as role names.
SUPERUSER = "postgres"
RESERVED_ROLES = (SUPERUSER, "public", "none", "current_user", "current_role", "session_user")
RESERVED_ROLE_PREFIX = "pg_"
# The databases every cluster has: the operator's maintenance database and the two templates.
RESERVED_DATABASES = ("postgres", "template0", "template1")


def _cel_list(names: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{n}'" for n in names) + "]"


ROLE_RULE = f"!(self in {_cel_list(RESERVED_ROLES)}) && !self.startsWith('{RESERVED_ROLE_PREFIX}')"
ROLE_MESSAGE = (
    f"database.owner must not be a reserved role name ({', '.join(RESERVED_ROLES)} or {RESERVED_ROLE_PREFIX}*): "
    "the superuser and PostgreSQL's own roles cannot own the application database; choose another name, e.g. app"
)
DATABASE_RULE = f"!(self in {_cel_list(RESERVED_DATABASES)})"
DATABASE_MESSAGE = (
    f"database.name must not be one of PostgreSQL's own databases ({', '.join(RESERVED_DATABASES)}); "
    "choose another name, e.g. app"
)


def reserved_name_problem(field: str, value: str) -> str | None:
    """Why `value` cannot be `database.<field>` (None when it can): the model's copy of the CEL rules."""
    if field == "owner" and (value in RESERVED_ROLES or value.startswith(RESERVED_ROLE_PREFIX)):
        return ROLE_MESSAGE
    if field == "name" and value in RESERVED_DATABASES:
        return DATABASE_MESSAGE
    return None


def cel(rule: str, message: str, *, reason: str | None = None, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; the message names the field and the fix."""
    entry = {"rule": rule, "message": message}
    if reason:
        entry["reason"] = reason
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def grows_only(field: str) -> dict[str, str]:
    """A quantity that may grow but never shrink (a volume); `field` as the user writes it."""
    return cel(
        "quantity(self).compareTo(quantity(oldSelf)) >= 0",
        f"{field} may grow but not shrink: set it to the current size or larger",
        reason="FieldValueForbidden",
    )


def storage_class_immutable(name: str, field: str) -> dict[str, str]:
    """On the object holding the optional `name`: it can be neither set, changed nor removed later."""
    return cel(
        f"has(self.{name}) == has(oldSelf.{name}) && (!has(self.{name}) || self.{name} == oldSelf.{name})",
        f"{field} is immutable: create a new SampleDB (e.g. restored from a backup) to move to another storage class",
        reason="FieldValueForbidden",
        field_path=f".{name}",
    )


def k8s_extra(**extra: Any) -> dict[str, Any]:
    """Schema keywords passed through verbatim to the CRD (x-kubernetes-*, maxProperties...)."""
    return extra


MajorVersion = Annotated[
    SupportedMajor,
    Field(
        description=(
            "PostgreSQL major version. Upgrades are allowed (they run the major-upgrade procedure); "
            "downgrades are rejected."
        ),
        json_schema_extra=k8s_extra(
            **{
                "x-kubernetes-validations": [
                    cel(
                        "self >= oldSelf",
                        "major version downgrades are not supported: set the version back to the current one or higher",
                        reason="FieldValueForbidden",
                    )
                ]
            },
        ),
    ),
]

Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]


# postgresql.conf settings. PostgreSQL's names are identifiers (at most 63 bytes); bounding names
# and values keeps every message that repeats them (conditions, events) within the API's limits.
MAX_PARAMETERS = 200


def _parameter_names_fit(parameters: dict[str, str]) -> dict[str, str]:
    """The model's copy of the schema's maxProperties and CEL rule (a v1beta1 write is checked by the model only)."""
    if len(parameters) > MAX_PARAMETERS:
        raise ValueError(f"at most {MAX_PARAMETERS} parameters")
    long = sorted(name for name in parameters if len(name) > 63)
    if long:
        raise ValueError(f"parameter names are at most 63 characters (PostgreSQL's limit): fix {', '.join(long)}")
    return parameters


PostgresParameters = Annotated[
    dict[str, Annotated[str, Field(max_length=4096)]],
    AfterValidator(_parameter_names_fit),
    Field(
        json_schema_extra=k8s_extra(
            maxProperties=MAX_PARAMETERS,
            **{
                "x-kubernetes-validations": [
                    cel(
                        "self.all(name, name.size() <= 63)",
                        "parameter names are at most 63 characters (PostgreSQL's limit): fix the name",
                        reason="FieldValueInvalid",
                    )
                ]
            },
        ),
    ),
]


class ApiModel(BaseModel):
    """Base of every API model: camelCase field names as in Kubernetes, unknown fields rejected."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class DeletionPolicy(StrEnum):
    """What happens to the data when a SampleDB is deleted."""

    SNAPSHOT = "Snapshot"
    RETAIN = "Retain"
    DELETE = "Delete"


class Phase(StrEnum):
    """The coarse lifecycle state shown in `kubectl get sampledbs`."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    INITIALIZING = "Initializing"
    READY = "Ready"
    DEGRADED = "Degraded"
    DELETING = "Deleting"
    UPGRADING = "Upgrading"


class MigrationPhase(StrEnum):
    """Where the migrations of the current ConfigMap content are."""

    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class StoragePhase(StrEnum):
    """Where the growth of the data volumes is (`reconcile/storage.py` has the steps)."""

    EXPANDING = "Expanding"
    RECREATING_STATEFULSET = "RecreatingStatefulSet"
    WAITING_FOR_FILE_SYSTEM = "WaitingForFileSystem"
    RESIZED = "Resized"
    EXPANSION_UNSUPPORTED = "ExpansionUnsupported"


class UriStyle(StrEnum):
    """How requests name the bucket: in the path (most S3-compatible stores) or in the host name (AWS)."""

    PATH = "Path"
    HOST = "Host"


class FailoverState(StrEnum):
    """A failover under way (stopping the old primary; then the target chosen, not yet promoted) or done."""

    FENCING = "Fencing"
    PROMOTING = "Promoting"
    COMPLETED = "Completed"


class UpgradeMethod(StrEnum):
    """How a major upgrade moves the data (`spec.postgres.upgrade.method`)."""

    AUTO = "Auto"
    COPY = "Copy"
    LOGICAL = "Logical"


UPGRADE_METHOD_DESCRIPTION = (
    "How a major upgrade moves the data. Copy: pg_upgrade --copy after an online base backup to "
    "spec.backup.objectStore (writes continue during the backup; the database is down while the files "
    "are copied, about the time to copy the data once; the old cluster stays untouched for the way back). "
    "Logical: writes stop, pg_dumpall, restore into a new cluster (down for the whole restore; "
    "every index rebuilt). Auto (the default): Copy when spec.backup.objectStore is set, else Logical; "
    "when pg_upgrade refuses the clusters (the old one untouched), the next attempt is Logical by itself."
)


class UpgradePhase(StrEnum):
    """The steps of a major-version upgrade, in order; RollingBack and Failed after any failure."""

    BACKING_UP = "BackingUp"
    CHECKING = "Checking"
    UPGRADING = "Upgrading"
    SWITCHING = "Switching"
    VERIFYING = "Verifying"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    FAILED = "Failed"


class Condition(ApiModel):
    """A standard Kubernetes condition (the shape of metav1.Condition)."""

    type: str = Field(description="Condition type: Ready, Progressing or Degraded.", max_length=316)
    status: str = Field(description="True, False or Unknown.", json_schema_extra={"enum": ["True", "False", "Unknown"]})
    reason: str = Field(description="A CamelCase word saying why the condition has this status.", max_length=1024)
    message: str = Field(
        "", description="A human-readable explanation, naming the field and the fix.", max_length=32768
    )
    lastTransitionTime: str = Field(description="When the status last changed (RFC 3339).")
    observedGeneration: int = Field(0, description="The metadata.generation this condition was computed from.", ge=0)


class InitializationStatus(ApiModel):
    """Tracks the one-off initial-configuration Job (application database and role)."""

    job: str = Field("", description="Name of the initial-configuration Job.")
    completed: bool = Field(False, description="True once the Job has succeeded; it is never run again.")
    completionTime: str | None = Field(None, description="When the Job succeeded (RFC 3339).")


class MigrationStatus(ApiModel):
    """The last migration run."""

    configMap: str | None = Field(None, description="The ConfigMap the migrations came from.")
    job: str | None = Field(None, description="The migration Job for the current ConfigMap content.")
    phase: MigrationPhase | None = Field(
        None, description="Pending (waiting for the database or the ConfigMap), Running, Succeeded or Failed."
    )
    lastApplied: str | None = Field(None, description="The newest migration recorded in the database.")
    failed: str | None = Field(None, description="The migration file that failed (rolled back).")
    error: str | None = Field(None, description="PostgreSQL's error message for the failed file.")


class StorageStatus(ApiModel):
    """The data volumes: how large they are asked to be, what they hold now, and any growth under way."""

    size: str | None = Field(None, description="spec.storage.size as last acted upon.")
    capacity: str | None = Field(
        None, description="The smallest capacity among the data volumes, as their claims report it."
    )
    phase: StoragePhase | None = Field(
        None,
        description=(
            "Expanding (claims asked to grow; the storage provider works), RecreatingStatefulSet (the "
            "StatefulSet takes the new size; its Pod keeps running), WaitingForFileSystem (the file system grows "
            "while the Pod runs), Resized, or ExpansionUnsupported (the StorageClass forbids growth)."
        ),
    )


class UpgradeStatus(ApiModel):
    """The current (or last) major-version upgrade: a state machine the operator resumes after a restart."""

    phase: UpgradePhase = Field(description="The step the upgrade is in.")
    fromVersion: int = Field(description="The major version upgraded from.", ge=0)
    toVersion: int = Field(description="The major version upgraded to.", ge=0)
    fromImage: str = Field(description="The image of the old version (the one rolled back to on failure).")
    toImage: str = Field(description="The image of the new version.")
    attempt: int = Field(1, description="Counts tries of this upgrade; each has its own Jobs.", ge=1)
    job: str | None = Field(None, description="The Job of the current (or last) step.")
    failedJob: str | None = Field(None, description="The Job that failed: delete it to retry the upgrade.")
    failedBackup: str | None = Field(
        None, description="The pre-upgrade SampleDBBackup that failed (method Copy): delete it to retry the upgrade."
    )
    method: UpgradeMethod | None = Field(
        None, description="How this attempt moves the data: Copy or Logical (Auto resolved when it started)."
    )
    backup: str | None = Field(
        None,
        description=(
            "The pre-upgrade backup: <claim>:<path of the pg_dumpall file> (Logical), or "
            "SampleDBBackup/<name> (Copy: a physical base backup in the object store)."
        ),
    )
    message: str | None = Field(
        None, description="Why the upgrade failed and what was restored, or why this attempt fell back to Logical."
    )
    startTime: str | None = Field(None, description="When the upgrade started (RFC 3339).")
    phaseTime: str | None = Field(None, description="When the current step started (RFC 3339).")
    completionTime: str | None = Field(None, description="When the upgrade succeeded or was rolled back (RFC 3339).")


class FailoverStatus(ApiModel):
    """The current (or last) change of primary, failover or switchover: written before it is acted on."""

    state: FailoverState = Field(
        description="Fencing while the lost primary is stopped, Promoting once a standby is chosen, "
        "Completed once it serves."
    )
    fromPod: str = Field(description="The primary that was lost.")
    toPod: str | None = Field(None, description="The standby chosen to be promoted: the most advanced one.")
    reason: str = Field(description="How the primary was found lost, or why it was switched over.")
    switchover: bool | None = Field(
        None, description="A planned switchover (the old primary shut down cleanly first: no commit lost)."
    )
    position: str | None = Field(None, description="The WAL position the chosen standby had received.")
    startTime: str = Field(description="When the failover was decided (RFC 3339).")
    completionTime: str | None = Field(None, description="When the new primary was promoted (RFC 3339).")


class ServerStatus(ApiModel):
    """One database Pod as the operator last saw it (with standbys only)."""

    name: str = Field(description="The Pod's name.")
    role: str = Field(description="Primary or Replica.")
    ready: bool = Field(description="The Pod is ready: its server accepts connections.")
    replication: str | None = Field(
        None,
        description="A replica's state in the primary's pg_stat_replication (streaming, catchup...), "
        "or NotStreaming when the primary lists it not.",
    )
    synchronous: str | None = Field(None, description="A replica's sync_state there: async, potential, sync, quorum.")
    lagBytes: int | None = Field(
        None, description="WAL the primary has written and the replica not yet replayed, in bytes.", ge=0
    )


class ArchiveStatus(ApiModel):
    """Continuous WAL archiving as the primary's pg_stat_archiver last said (with spec.backup.objectStore)."""

    repositoryPath: str = Field(description="Where in the bucket this SampleDB's WAL and base backups go.")
    lastArchivedWAL: str | None = Field(None, description="The last WAL segment archived.")
    lastArchivedTime: str | None = Field(None, description="When it was archived (RFC 3339).")
    lastFailedWAL: str | None = Field(None, description="The last WAL segment whose archiving failed.")
    lastFailedTime: str | None = Field(None, description="When that failed (RFC 3339).")
    pendingSegments: int | None = Field(None, description="WAL segments complete and not yet archived.", ge=0)


class RecoveryStatus(ApiModel):
    """Where a SampleDB bootstrapped with spec.recovery came from, and the point PostgreSQL reached."""

    repositoryPath: str = Field(description="The repository recovered from.")
    backup: str | None = Field(None, description="The SampleDBBackup recovered from (spec.recovery.backup).")
    backupLabel: str | None = Field(
        None, description="The base backup pgBackRest restored (with spec.recovery.backup)."
    )
    target: str = Field(description="What was asked: latest, or time, lsn or name with its value.")
    reached: str | None = Field(
        None,
        description=(
            "Where recovery stopped, in PostgreSQL's words (from the new timeline's history file): e.g. "
            "'before transaction 1021 at 2026-11-28 10:15:00.2+00', 'at restore point \"x\"', "
            "'no recovery target specified' (the end of the archive)."
        ),
    )
    lsn: str | None = Field(None, description="The WAL position where the new timeline begins.")
    timeline: int | None = Field(None, description="The timeline the recovered database writes on.", ge=1)


class SampleDBStatus(ApiModel):
    """The observed state of a SampleDB, written only by the operator."""

    phase: Phase | None = Field(None, description="Coarse lifecycle state.")
    observedGeneration: int | None = Field(None, description="The metadata.generation last acted upon.", ge=0)
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Progressing and Degraded conditions with reasons.",
        json_schema_extra=k8s_extra(**{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}),
    )
    version: int | None = Field(None, description="The PostgreSQL major version currently running.")
    image: str | None = Field(None, description="The PostgreSQL image currently running.")
    endpoint: str | None = Field(None, description="host:port of the client Service to connect to.")
    secretName: str | None = Field(None, description="The Secret holding the connection credentials.")
    readyInstances: int | None = Field(None, description="How many database Pods are ready.", ge=0)
    currentPrimary: str | None = Field(
        None, description="The database Pod that is the primary: the read-write Service points at it."
    )
    initialization: InitializationStatus | None = Field(None, description="The initial-configuration Job.")
    migrations: MigrationStatus | None = Field(None, description="Schema migrations, when spec.migrations is set.")
    upgrade: UpgradeStatus | None = Field(None, description="The current or last major-version upgrade.")
    storage: StorageStatus | None = Field(None, description="The data volumes and their growth.")
    failover: FailoverStatus | None = Field(None, description="The current or last failover or switchover.")
    archive: ArchiveStatus | None = Field(None, description="Continuous WAL archiving to the object store.")
    recovery: RecoveryStatus | None = Field(None, description="With spec.recovery: the point recovered to.")
    servers: list[ServerStatus] | None = Field(
        None,
        description="With standbys: each database Pod's role, readiness and replication lag "
        "(read from the primary at most every 30 s).",
        json_schema_extra=k8s_extra(**{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}),
    )

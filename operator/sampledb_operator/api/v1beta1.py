"""`sampledb.io/v1beta1`: the older flat shape of the SampleDB API, still served but deprecated.

Every field has a home in `v1`, so a `v1beta1` object converts to `v1` without loss; the fields
`v1` added are kept across a round trip by the conversion webhook (see `conversion/`).
"""

from __future__ import annotations

from pydantic import Field

from sampledb_operator.api.common import (
    CRON_PATTERN,
    DEFAULT_MAJOR_VERSION,
    MAX_INSTANCES,
    UPGRADE_METHOD_DESCRIPTION,
    ApiModel,
    DeletionPolicy,
    MajorVersion,
    PostgresParameters,
    Quantity,
    SampleDBStatus,
    UpgradeMethod,
    cel,
    grows_only,
    k8s_extra,
    storage_class_immutable,
)

VERSION = "v1beta1"
DEPRECATION_WARNING = "sampledb.io/v1beta1 SampleDB is deprecated; use sampledb.io/v1"


class SampleDBSpec(ApiModel):
    """The desired state of one PostgreSQL instance (flat v1beta1 shape).

    The rules on changes that `v1` holds for these fields hold here too: the API server checks an
    update against the schema of the version it was sent in, so without them a `v1beta1` update
    could shrink the volume or change its class.
    """

    model_config = ApiModel.model_config | {
        "json_schema_extra": k8s_extra(
            **{"x-kubernetes-validations": [storage_class_immutable("storageClassName", "storageClassName")]}
        )
    }

    version: MajorVersion = DEFAULT_MAJOR_VERSION
    image: str | None = Field(
        None, description="Container image overriding the default for the version.", min_length=1, max_length=512
    )
    parameters: PostgresParameters = Field(default_factory=dict, description="postgresql.conf settings.")
    upgradeMethod: UpgradeMethod = Field(UpgradeMethod.AUTO, description=UPGRADE_METHOD_DESCRIPTION)
    instances: int = Field(
        1, description="PostgreSQL servers: one primary, the rest hot standbys.", ge=1, le=MAX_INSTANCES
    )
    storageSize: Quantity = Field(
        "10Gi",
        description="Size of the data volume; may grow, never shrink.",
        json_schema_extra=k8s_extra(
            **{
                "x-kubernetes-validations": [
                    grows_only("storageSize"),
                    cel("isQuantity(self)", "storageSize must be a quantity such as 10Gi"),
                ]
            }
        ),
    )
    storageClassName: str | None = Field(
        None, description="StorageClass of the data volume. Immutable.", min_length=1, max_length=253
    )
    backupSchedule: str | None = Field(
        None, description="Cron schedule of automatic backups.", pattern=CRON_PATTERN, max_length=128
    )
    backupRetention: int = Field(7, description="How many scheduled backups to keep.", ge=1, le=1000)
    deletionPolicy: DeletionPolicy = Field(DeletionPolicy.SNAPSHOT, description="Snapshot, Retain or Delete.")


class SampleDB(ApiModel):
    """SampleDB (v1beta1, deprecated) runs one PostgreSQL database instance."""

    model_config = ApiModel.model_config | {"extra": "ignore"}

    spec: SampleDBSpec = Field(default_factory=SampleDBSpec, description="Desired state of the database.")
    status: SampleDBStatus = Field(default_factory=SampleDBStatus, description="Observed state, set by the operator.")

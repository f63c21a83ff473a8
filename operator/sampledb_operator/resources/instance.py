"""`Instance`: one SampleDB as the builders see it, with every derived name in one place.

Child names are derived here and nowhere else, so that builders, the reconciler and the Job
logic can never disagree on what an object is called (deterministic names are what keep an
operator restart from creating duplicates).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sampledb_operator.api import GROUP, KIND, STORAGE_VERSION
from sampledb_operator.api.v1 import SampleDBSpec
from sampledb_operator.settings import Settings

APP_NAME = "sampledb"
MANAGED_BY = "sampledb-operator"
INSTANCE_LABEL = f"{GROUP}/instance"
COMPONENT_LABEL = "app.kubernetes.io/component"
ROLE_LABEL = f"{GROUP}/role"  # on database Pods while spec.instances > 1; the read-only Service selects by it
POSTGRES_PORT = 5432
# On a SampleDB: the standby to make the primary (a planned switchover); removed once it is.
SWITCHOVER_ANNOTATION = f"{GROUP}/switchover-to"


class Role(StrEnum):
    """What a database Pod is, as its role label says."""

    PRIMARY = "primary"
    REPLICA = "replica"


@dataclass(frozen=True)
class Workload:
    """What the StatefulSet runs when it must differ from the spec: during and after a major upgrade."""

    version: int
    image: str
    replicas: int = 1


@dataclass(frozen=True)
class RecoverySource:
    """spec.recovery resolved: the repository to restore from, and the base backup when one is named."""

    repository_path: str
    label: str | None = None


@dataclass(frozen=True)
class Instance:
    """A SampleDB (v1 spec) with its identity and the operator settings builders depend on."""

    name: str
    namespace: str
    uid: str
    generation: int
    spec: SampleDBSpec
    settings: Settings
    # Set by the upgrade state machine; None runs what the spec says.
    workload: Workload | None = None
    # status.currentPrimary: the Pod the read-write Service points at (None: not chosen yet).
    current_primary: str | None = None
    # status.failover.toPod while a failover is under way: the children follow it before it is promoted.
    target_primary: str | None = None
    # A failover stopping the lost primary before it elects a standby: the ConfigMap names no primary.
    fencing: bool = False
    # spec.recovery resolved (`reconcile/recovery.py`), until the instance is initialised; None otherwise.
    recovery_source: RecoverySource | None = None

    @classmethod
    def from_object(cls, obj: dict[str, Any], settings: Settings) -> Instance:
        """Parse a v1 SampleDB as returned by the API server (raises pydantic.ValidationError)."""
        meta = obj["metadata"]
        status = obj.get("status") or {}
        failover = status.get("failover") or {}
        return cls(
            name=meta["name"],
            namespace=meta["namespace"],
            uid=meta["uid"],
            generation=int(meta.get("generation", 1)),
            spec=SampleDBSpec.model_validate(obj.get("spec") or {}),
            settings=settings,
            current_primary=status.get("currentPrimary"),
            target_primary=failover.get("toPod") if failover.get("state") == "Promoting" else None,
            fencing=failover.get("state") == "Fencing",
        )

    # -- names -------------------------------------------------------------------------------
    @property
    def credentials_secret(self) -> str:
        """The Secret with credentials: the user's own, or the one the operator generates."""
        return self.spec.credentials.secretName or f"{self.name}-credentials"

    @property
    def generates_secret(self) -> bool:
        """False when the user supplied the Secret: then the operator never writes it."""
        return self.spec.credentials.secretName is None

    @property
    def archives(self) -> bool:
        """The primary archives its WAL to an object store (`spec.backup.objectStore`)."""
        return self.spec.backup.objectStore is not None

    @property
    def config_map(self) -> str:  # noqa: D102
        return f"{self.name}-config"

    @property
    def headless_service(self) -> str:  # noqa: D102
        return f"{self.name}-hl"

    @property
    def client_service(self) -> str:  # noqa: D102
        return self.name

    @property
    def statefulset(self) -> str:  # noqa: D102
        return self.name

    @property
    def pdb(self) -> str:  # noqa: D102
        return self.name

    @property
    def standbys_pdb(self) -> str:  # noqa: D102
        return f"{self.name}-standbys"

    @property
    def init_job(self) -> str:
        """One initial-configuration Job per instance, whatever happens to the operator."""
        return f"{self.name}-init"

    @property
    def snapshot_job(self) -> str:  # noqa: D102
        return f"{self.name}-final-snapshot"

    @property
    def snapshot_pvc(self) -> str:
        """The retained volume that holds the final snapshot after the instance is gone."""
        return f"{self.name}-final-snapshot"

    @property
    def backup_pvc(self) -> str:
        """The volume that holds this instance's logical backups."""
        return f"{self.name}-backups"

    @property
    def backup_cronjob(self) -> str:  # noqa: D102
        return f"{self.name}-backup"

    @property
    def data_volume(self) -> str:  # noqa: D102
        return "data"

    @property
    def read_only_service(self) -> str:
        """The standbys only: reads that may lag the primary by the replication delay."""
        return f"{self.name}-ro"

    @property
    def any_service(self) -> str:
        """Every ready server, primary included: reads that tolerate lag, spread over all."""
        return f"{self.name}-r"

    def pod(self, ordinal: int) -> str:
        """The name the StatefulSet controller gives its Pod `ordinal`."""
        return f"{self.statefulset}-{ordinal}"

    def data_pvc(self, ordinal: int) -> str:
        """The claim the StatefulSet controller makes for Pod `ordinal` from the volumeClaimTemplate."""
        return f"{self.data_volume}-{self.statefulset}-{ordinal}"

    @property
    def synchronous(self) -> int:
        """Standbys each commit waits for: spec.replication.synchronous, at most the standbys there are."""
        return min(self.spec.replication.synchronous, self.spec.instances - 1)

    @property
    def has_standbys(self) -> bool:
        """More than one server: role labels, the standbys' Services and their budget exist only then."""
        return self.spec.instances > 1

    @property
    def primary(self) -> str:
        """The primary's Pod: the failover's target while one is under way, else status.currentPrimary (Pod 0 first).

        Everything that follows the primary (the ConfigMap's `primary`, the read-write Service, the
        role labels, the budgets) moves to a failover's target before it is promoted, so that the
        lost primary, should it start again, finds itself named a standby.
        """
        return self.target_primary or self.serving_primary

    @property
    def serving_primary(self) -> str:
        """The primary as status.currentPrimary records it: Pod 0 until a failover promotes another."""
        return self.current_primary or self.pod(0)

    @property
    def primary_ordinal(self) -> int:
        """The primary's ordinal in the StatefulSet."""
        return self.ordinal(self.primary)

    def ordinal(self, pod: str) -> int:
        """A Pod's ordinal in the StatefulSet (0 for a name it did not make)."""
        prefix, _, ordinal = pod.rpartition("-")
        return int(ordinal) if prefix == self.statefulset and ordinal.isdigit() else 0

    @property
    def data_pvcs(self) -> list[str]:
        """The data claims of the servers spec.instances asks for."""
        return [self.data_pvc(i) for i in range(self.spec.instances)]

    @property
    def primary_pvc(self) -> str:
        """The primary's data claim: what the upgrade steps work on."""
        return f"{self.data_volume}-{self.primary}"

    @property
    def primary_host(self) -> str:
        """The read-write Service's DNS name: always the primary, whichever Pod that is."""
        return f"{self.client_service}.{self.namespace}.svc"

    @property
    def endpoint(self) -> str:  # noqa: D102
        return f"{self.primary_host}:{POSTGRES_PORT}"

    @property
    def desired_image(self) -> str:
        """The image the spec asks for: the user's override, or the default for the major version."""
        return self.spec.postgres.image or self.settings.images[self.spec.postgres.version]

    @property
    def image(self) -> str:
        """The image the StatefulSet runs now (the desired one unless an upgrade pins another)."""
        return self.workload.image if self.workload else self.desired_image

    @property
    def version(self) -> int:
        """The major version the StatefulSet runs now."""
        return self.workload.version if self.workload else self.spec.postgres.version

    @property
    def replicas(self) -> int:
        """Database Pods: spec.instances, and never fewer than reach the primary.

        The StatefulSet removes the highest ordinals: after a failover to Pod k, a scale-down below
        k + 1 would remove the primary, so the Pods up to it stay. An upgrade step runs 0 (the
        volume to itself) or the primary (with the standbys below it, which wait for it).
        """
        reach = self.primary_ordinal + 1
        if self.workload:
            return 0 if self.workload.replicas == 0 else reach
        return max(self.spec.instances, reach)

    @property
    def job_image(self) -> str:  # noqa: D102
        return self.settings.job_image or self.image

    # -- metadata ----------------------------------------------------------------------------
    def selector_labels(self) -> dict[str, str]:
        """Labels that select this instance's database Pods (immutable once the StatefulSet exists)."""
        return {"app.kubernetes.io/name": APP_NAME, INSTANCE_LABEL: self.name}

    def labels(self, component: str) -> dict[str, str]:
        """Labels on every child, so `kubectl get all -l sampledb.io/instance=<name>` finds them."""
        return {
            **self.selector_labels(),
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            COMPONENT_LABEL: component,
        }

    def owner_reference(self) -> dict[str, Any]:
        """Makes the SampleDB the controller of a child, so garbage collection cleans it up."""
        return {
            "apiVersion": f"{GROUP}/{STORAGE_VERSION}",
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def metadata(self, name: str, component: str, *, owned: bool = True) -> dict[str, Any]:
        """Standard metadata of a child object."""
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": self.labels(component)}
        if owned:
            meta["ownerReferences"] = [self.owner_reference()]
        return meta

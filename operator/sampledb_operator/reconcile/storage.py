"""Growing the data volumes when `spec.storage.size` grows (shrinking is refused at admission).

Kubernetes never grows the claims a StatefulSet made from its `volumeClaimTemplates`, and the
templates themselves are immutable. So the operator does it, one step per reconcile, each step
decided afresh from what is observed (a restart resumes where it stopped):

1. Check: the StorageClass of every claim to grow must allow expansion. If one does not:
   `ExpansionUnsupported`, Degraded with the class named and the fix; nothing is changed, the
   database keeps serving on its current volumes, other changes still roll out.
2. Expand (`Expanding`): ask each data claim for the new size; the storage provider grows the
   volume (claim condition `Resizing`).
3. Re-create the StatefulSet (`RecreatingStatefulSet`), so that claims made later (a replica
   added, a claim deleted by hand) get the new size too: delete it with the orphan cascade (its
   Pod keeps running, the database keeps serving) and create it again from the same template. The
   new StatefulSet adopts the Pod, whose revision it computes identically, so the Pod is not
   restarted.
4. Wait for the file system (`WaitingForFileSystem`, claim condition `FileSystemResizePending`):
   the kubelet grows it while the Pod runs.
5. `Resized`: every claim reports the new capacity.

Each phase change is an event; `status.storage` carries the phase, the size acted upon and the
smallest capacity reported; the Progressing condition says `Resizing` with what it waits for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from sampledb_operator.api.common import StoragePhase
from sampledb_operator.reconcile import children
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.status import Problem
from sampledb_operator.resources.instance import Instance

RECHECK_SECONDS = 3.0
FILE_SYSTEM_PENDING = "FileSystemResizePending"
STATEFULSET = next(c for c in children.CHILDREN if c.kind == "StatefulSet")


@dataclass(frozen=True)
class StoragePlan:
    """What growing the volumes needs now."""

    status: dict[str, Any]
    actions: tuple[Action, ...] = ()
    progress: str | None = None  # what a growth under way waits for, for the Progressing condition
    problem: Problem | None = None
    event: tuple[str, str, str] | None = field(default=None)  # (type, reason, note) on a phase change
    requeue_after: float | None = None


def _size(value: str | None) -> Decimal:
    return Decimal(parse_quantity(value)) if value else Decimal(0)  # type: ignore[no-untyped-call]


def requested(claim: Mapping[str, Any]) -> str | None:
    """The size a claim asks for."""
    value: str | None = ((claim.get("spec") or {}).get("resources") or {}).get("requests", {}).get("storage")
    return value


def capacity(claim: Mapping[str, Any]) -> str | None:
    """The size the storage provider reports for a claim's volume (None while unbound)."""
    value: str | None = ((claim.get("status") or {}).get("capacity") or {}).get("storage")
    return value


def to_grow(instance: Instance, claims: Mapping[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """The existing data claims that ask for less than spec.storage.size."""
    want = _size(instance.spec.storage.size)
    return [c for c in claims.values() if c is not None and _size(requested(c)) < want]


def storage_class(claim: Mapping[str, Any]) -> str | None:
    """The StorageClass a claim was provisioned from (the default class is recorded at creation)."""
    name: str | None = (claim.get("spec") or {}).get("storageClassName")
    return name


def _template_size(sts: Mapping[str, Any]) -> str | None:
    templates = (sts.get("spec") or {}).get("volumeClaimTemplates") or [{}]
    return requested(templates[0])


def _file_system_pending(claim: Mapping[str, Any]) -> bool:
    conditions = (claim.get("status") or {}).get("conditions") or []
    return any(c.get("type") == FILE_SYSTEM_PENDING and c.get("status") == "True" for c in conditions)


def plan_storage(
    instance: Instance,
    sts: dict[str, Any] | None,
    claims: Mapping[str, dict[str, Any] | None],
    classes: Mapping[str, dict[str, Any] | None],
    previous: Mapping[str, Any],
    *,
    hold_statefulset: bool,
) -> StoragePlan:
    """Decide the next step of a growth (see the module docstring); `classes` by name, for claims to grow."""
    size = instance.spec.storage.size
    existing = {name: c for name, c in claims.items() if c is not None}
    capacities = [capacity(c) for c in existing.values()]
    smallest = min((c for c in capacities if c), key=_size, default=None) if all(capacities) else None
    status = {"size": size, "capacity": smallest}
    growing = to_grow(instance, claims)
    refused = [c for c in growing if not (classes.get(storage_class(c) or "") or {}).get("allowVolumeExpansion")]
    if refused:
        return _unsupported(instance, status, refused)
    if growing:
        grow = {"spec": {"resources": {"requests": {"storage": size}}}}
        actions = tuple(
            Action(Verb.PATCH, "PersistentVolumeClaim", c["metadata"]["name"], "VolumeTooSmall", grow) for c in growing
        )
        names = ", ".join(c["metadata"]["name"] for c in growing)
        note = f"growing PVC {names} to {size} (spec.storage.size)"
        return _step(status, previous, StoragePhase.EXPANDING, note, actions=actions)
    if sts is not None and not hold_statefulset and _size(_template_size(sts)) < _size(size):
        created = children.plan_child(STATEFULSET, instance, None)
        assert created is not None
        recreate = Action(Verb.RECREATE, "StatefulSet", instance.statefulset, "VolumeTemplateTooSmall", created.body)
        note = (
            f"re-creating StatefulSet {instance.statefulset} with volumes of {size} (orphan cascade: its Pod keeps "
            "running and is adopted, not restarted)"
        )
        return _step(status, previous, StoragePhase.RECREATING_STATEFULSET, note, actions=(recreate,))
    # A claim not bound yet has no capacity: it is being provisioned (at the new size), not grown.
    behind = [c for c in existing.values() if capacity(c) and _size(capacity(c)) < _size(size)]
    if behind:
        name = behind[0]["metadata"]["name"]
        if any(_file_system_pending(c) for c in behind):
            note = f"waiting for the file system of PVC {name} to grow to {size} (the kubelet does it; the Pod runs)"
            return _step(status, previous, StoragePhase.WAITING_FOR_FILE_SYSTEM, note)
        note = f"waiting for the storage provider to grow PVC {name} to {size} (now {capacity(behind[0])})"
        return _step(status, previous, StoragePhase.EXPANDING, note)
    if previous.get("phase") is None:
        return StoragePlan(status=status)
    event = None
    if previous.get("phase") != StoragePhase.RESIZED:
        event = ("Normal", "VolumeExpanded", f"the data volumes now hold {smallest} (spec.storage.size {size})")
    return StoragePlan(status={**status, "phase": StoragePhase.RESIZED.value}, event=event)


def _step(
    status: dict[str, Any],
    previous: Mapping[str, Any],
    phase: StoragePhase,
    note: str,
    *,
    actions: tuple[Action, ...] = (),
) -> StoragePlan:
    """A growth under way: the phase in the status, an event when it is new, another look soon."""
    event = ("Normal", phase.value, note) if previous.get("phase") != phase or actions else None
    return StoragePlan(
        status={**status, "phase": phase.value},
        actions=actions,
        progress=note,
        event=event,
        requeue_after=RECHECK_SECONDS,
    )


def _unsupported(instance: Instance, status: dict[str, Any], refused: list[dict[str, Any]]) -> StoragePlan:
    claim = refused[0]
    cls = storage_class(claim)
    where = f"StorageClass {cls}" if cls else "no StorageClass (the claim names none and there is no default)"
    message = (
        f"spec.storage.size: cannot grow PVC {claim['metadata']['name']} from {requested(claim)} to "
        f"{instance.spec.storage.size}: {where} does not allow volume expansion. Set allowVolumeExpansion: true "
        "on the StorageClass (a cluster administrator's change; the operator then grows the volume); until then "
        "the database keeps serving on its current volume"
    )
    phase = {**status, "phase": StoragePhase.EXPANSION_UNSUPPORTED.value}
    return StoragePlan(status=phase, problem=Problem("StorageExpansionUnsupported", message), requeue_after=60.0)

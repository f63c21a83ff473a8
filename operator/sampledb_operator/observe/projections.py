"""Projections: the part of each object the watch caches keep, with the same dict paths as the object.

A cache holds, for every object it watches, only the fields some reader reads, at the paths the
API server puts them, so the pure decision functions run unchanged on cached objects and memory
follows what the operator owns, not the size of the objects (managedFields, Pod specs, the
last-applied annotation, a user's SQL files are never kept). Pure: no I/O, no kopf, no client.

Every kind keeps its identity, for the caches themselves (indexes by label and name, the
write-through tombstone's uid) and for the readers below: `apiVersion`, `kind`, `metadata.{name,
namespace, uid, generation, deletionTimestamp, finalizers, labels}` (labels whole: the caches index
by `sampledb.io/instance`, `Snapshot` sorts Pods by `job-name` and `app.kubernetes.io/component`,
and lists select Pods by the instance's five labels). The resourceVersion is kept by the SampleDB
only (its finalizer's guarded patch tests it): on a child it would make every event a change, while
an event that changes nothing kept must cost no reconcile pass (the informer reads resourceVersions
off the events themselves).
Besides that, a kind keeps exactly this (D = the annotation `sampledb.io/desired-hash`):

kind                   kept paths                                 read by (file:function)
SampleDB               spec (whole)                               instance.py:Instance.from_object (the model validates
                                                                  it whole: a bad field must still be refused),
                                                                  deletion.py:readable_policy
                       status (whole)                             status.py:compute_status (compares its result to it);
                                                                  upgrade.py:concerned, watched_job, plan_upgrade
                                                                  (upgrade, version, image, initialization),
                                                                  plan_storage (storage), conditions.py:merge
                       metadata generation, uid, finalizers,      Instance.from_object, Reconciler.reconcile,
                       resourceVersion, deletionTimestamp         _ensure_finalizer, decide.py:_finalizer, emit_event
                       annotations[sampledb.io/switchover-to]     failover.py:switchover_request
SampleDBBackup         spec (whole: instance, method, verify)     backup.py:BackupReconciler.reconcile
                       status.phase, .location, .message          restore.py:plan_restore, BackupReconciler.reconcile
                       status.pod                                 backup.py:BackupReconciler._physical
                       status.backupLabel, .stopLSN,              recovery.py:plan_recovery (a physical backup as
                         .completionTime                            spec.recovery's source; phase, location too)
                       apiVersion, metadata.uid                   backup.py:BackupReconciler._owned_job
                       status.oldestBackupLabel                   schedule.py:plan_schedule (which records to prune;
                                                                    phase, backupLabel, completionTime too)
StatefulSet            D                                          children.py:plan_child
                       spec.replicas                              plan_child (drift_paths), upgrade.py:_scaled_down,
                                                                  replicas.py:removed_standby_claims
                       spec.podManagementPolicy                   plan_child (replace_paths: re-created)
                       spec.template.metadata.annotations         config_check.py:running_hash
                         [sampledb.io/config-hash]
                       spec.template.spec.containers[*].image     status.py:_running_image, upgrade.py:_switching
                       spec.volumeClaimTemplates[*].spec          storage.py:_template_size
                         .resources.requests.storage
                       status.readyReplicas                       status.py:ready_replicas
                       status.observedGeneration,                 status.py:rolled_out; upgrade.py:_scaled_down
                         metadata.generation                        (observedGeneration, generation, status.replicas)
                       status.currentRevision, .updateRevision    status.py:rolled_out
                       status.replicas                            upgrade.py:_scaled_down,
                                                                  replicas.py:removed_standby_claims
Job                    status.conditions[type Complete|Failed]    status.py:job_state (type, status),
                         .type, .status, .reason, .message          status.py:job_failure_message (reason, message)
                       status.completionTime                      status.py:_initialization, backup.py:outcome_status
                       status.startTime                           backup.py:outcome_status, BackupReconciler.reconcile
Pod                    metadata.creationTimestamp                 status.py:termination_summary (newest Pod first),
                                                                  failover.py:plan_failover (fence a Pod older than
                                                                  the failover)
                       status.containerStatuses[with a            termination_summary (the script's JSON summary: Pods
                         terminated message].state.terminated       of backup, config-check, migration, upgrade Jobs)
                         .message, .lastState.terminated.message,   recovery.py:failure (a recovering primary's start
                         .state.running                             script, which may have restarted since)
                       status.conditions[type Ready].type,        status.py:pod_ready (database Pods),
                                                                  failover.py:lost, BackupReconciler._physical
                         .status
                       metadata.name, labels[sampledb.io/role],   replicas.py:role_labels, removed_standby_claims
                         deletionTimestamp                          (identity: kept for every kind)
                       spec.nodeName                              failover.py:cordoned (a drain of the primary's node)
Service, PDB, CronJob  D                                          children.py:plan_child (a CronJob no longer called
                                                                  for is pruned: existence)
ConfigMap              D                                          children.py:plan_child (the instance's own ConfigMap)
                       sampledb.io/content-digest (a key of the   migrations.py:job_name, by content_digest (the Job
                         projection only: SHA-256 of data, which    name carries the digest of a migrations ConfigMap)
                         is not kept)
Secret                 data: key names only, every value ""       children.py:user_secret_problem (required keys),
                                                                  children.py:plan_secret (existence)
PersistentVolumeClaim  D                                          children.py:plan_child (the backup claim)
                       spec.storageClassName                      storage.py:storage_class
                       spec.resources.requests.storage            storage.py:requested (to_grow)
                       status.capacity.storage                    storage.py:capacity
                       status.conditions[type                     storage.py:_file_system_pending
                         FileSystemResizePending].type, .status
                       (existence)                                restore.py:plan_restore, deletion.py:_snapshot_done
StorageClass           allowVolumeExpansion                       storage.py:plan_storage
Node                   spec.unschedulable                         failover.py:cordoned (switch over before a drain)

Not kept, because nothing reads them (add them with their first reader): Job `status.{succeeded,
failed, active}` and conditions' `lastTransitionTime`, Pod terminated `exitCode` and `reason`,
`ownerReferences`, other annotations (which may hold a Secret's values: the last-applied
configuration).

The rule: a new reader of a field must add it here; test_projections fails otherwise (it runs every
reader on full objects and on their projections and requires the same answers; it also removes
each kept path in turn and requires some answer to change, so nothing unread is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgspec

from sampledb_operator.reconcile.children import HASH_ANNOTATION
from sampledb_operator.reconcile.migrations import CONTENT_DIGEST_KEY, content_digest
from sampledb_operator.reconcile.status import JobState
from sampledb_operator.resources.instance import SWITCHOVER_ANNOTATION
from sampledb_operator.resources.statefulset import CONFIG_HASH_ANNOTATION

Object = dict[str, Any]
# storage.FILE_SYSTEM_PENDING (storage.py imports the kubernetes client; this module must not).
FILE_SYSTEM_PENDING = "FileSystemResizePending"


@dataclass(frozen=True)
class Each:
    """Every item of a list that `where` accepts (all when None), each projected by `keep`."""

    keep: Keep
    where: Callable[[Any], bool] | None = None


@dataclass(frozen=True)
class Derived:
    """A key of the projection only, computed from the object it is in (e.g. a digest of dropped data).

    `reads`: the keys of that object the computation reads (decoded for it, see `READERS`).
    """

    compute: Callable[[Object], Any]
    reads: tuple[str, ...]


@dataclass(frozen=True)
class KeyNames:
    """A map kept with its keys only, every value replaced by "" (a Secret's data)."""


# What to keep of a value: True (all of it), a map of keys to keep (each with what to keep of
# its value), Each (the items of a list), Derived, KeyNames.
Keep: TypeAlias = "bool | Mapping[str, Keep] | Each | Derived | KeyNames"
KEY_NAMES = KeyNames()


def _typed(condition_type: str | tuple[str, ...]) -> Callable[[Any], bool]:
    types = (condition_type,) if isinstance(condition_type, str) else condition_type
    return lambda item: isinstance(item, dict) and item.get("type") in types


def _terminated_message(container: Any) -> bool:
    if not isinstance(container, dict):
        return False
    for state in ("state", "lastState"):
        terminated = (container.get(state) or {}).get("terminated") or {}
        if isinstance(terminated, dict) and terminated.get("message"):
            return True
    return False


IDENTITY: Mapping[str, Keep] = {
    "name": True,
    "namespace": True,
    "uid": True,
    "generation": True,
    "deletionTimestamp": True,
    "finalizers": True,
    "labels": True,
}


def _kind(*, metadata: Mapping[str, Keep] | None = None, hashed: bool = False, **rest: Keep) -> Mapping[str, Keep]:
    """apiVersion, kind, the identity metadata (+ `metadata`; the desired-hash when `hashed`), `rest`."""
    meta: dict[str, Keep] = {**IDENTITY, **(metadata or {})}
    if hashed:
        meta["annotations"] = {HASH_ANNOTATION: True}
    return {"apiVersion": True, "kind": True, "metadata": meta, **rest}


KEPT: dict[str, Mapping[str, Keep]] = {
    "SampleDB": _kind(
        metadata={"resourceVersion": True, "annotations": {SWITCHOVER_ANNOTATION: True}}, spec=True, status=True
    ),
    "SampleDBBackup": _kind(
        spec=True,
        status={
            "phase": True,
            "location": True,
            "message": True,
            "pod": True,
            "backupLabel": True,
            "stopLSN": True,
            "completionTime": True,
            "oldestBackupLabel": True,
        },
    ),
    "StatefulSet": _kind(
        hashed=True,
        spec={
            "replicas": True,
            "podManagementPolicy": True,
            "template": {
                "metadata": {"annotations": {CONFIG_HASH_ANNOTATION: True}},
                "spec": {"containers": Each({"image": True})},
            },
            "volumeClaimTemplates": Each({"spec": {"resources": {"requests": {"storage": True}}}}),
        },
        status={
            "replicas": True,
            "readyReplicas": True,
            "observedGeneration": True,
            "currentRevision": True,
            "updateRevision": True,
        },
    ),
    "Job": _kind(
        status={
            "conditions": Each(
                {"type": True, "status": True, "reason": True, "message": True},
                where=_typed((JobState.COMPLETE.value, JobState.FAILED.value)),
            ),
            "startTime": True,
            "completionTime": True,
        },
    ),
    "Pod": _kind(
        metadata={"creationTimestamp": True},
        spec={"nodeName": True},
        status={
            "conditions": Each({"type": True, "status": True}, where=_typed("Ready")),
            "containerStatuses": Each(
                {
                    "state": {"terminated": {"message": True}, "running": True},
                    "lastState": {"terminated": {"message": True}},
                },
                where=_terminated_message,
            ),
        },
    ),
    "Service": _kind(hashed=True),
    "PodDisruptionBudget": _kind(hashed=True),
    "CronJob": _kind(hashed=True),
    "ConfigMap": {
        **_kind(hashed=True),
        CONTENT_DIGEST_KEY: Derived(content_digest, reads=(CONTENT_DIGEST_KEY, "data")),
    },
    "Secret": _kind(data=KEY_NAMES),
    "PersistentVolumeClaim": _kind(
        hashed=True,
        spec={"storageClassName": True, "resources": {"requests": {"storage": True}}},
        status={
            "capacity": {"storage": True},
            "conditions": Each({"type": True, "status": True}, where=_typed(FILE_SYSTEM_PENDING)),
        },
    ),
    "StorageClass": _kind(allowVolumeExpansion=True),
    "Node": _kind(spec={"unschedulable": True}),
}


def _copy(value: Any) -> Any:
    """A copy of decoded JSON (dicts, lists, scalars): several times faster than copy.deepcopy."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def keep(value: Any, what: Keep) -> Any:
    """What `what` keeps of `value`: present paths only (an absent key stays absent), copied."""
    if isinstance(what, KeyNames):
        return dict.fromkeys(value, "") if isinstance(value, dict) else _copy(value)
    if isinstance(what, Each):
        if not isinstance(value, list):
            return _copy(value)
        return [keep(item, what.keep) for item in value if what.where is None or what.where(item)]
    if isinstance(what, Mapping):
        if not isinstance(value, dict):
            return _copy(value)  # e.g. an explicit null: the readers' `or {}` sees the same
        kept: Object = {}
        for key, sub in what.items():
            if isinstance(sub, Derived):
                kept[key] = sub.compute(value)
            elif key in value:
                kept[key] = keep(value[key], sub)
        return kept
    return _copy(value) if what else None


def projector(what: Mapping[str, Keep]) -> Callable[[Object], Object]:
    """The projection that keeps `what` of an object."""

    def project_one(obj: Object) -> Object:
        kept: Object = keep(obj, what)
        return kept

    return project_one


PROJECTIONS: dict[str, Callable[[Object], Object]] = {kind: projector(what) for kind, what in KEPT.items()}


# Decoding only what a projection keeps: each kind's JSON is decoded into msgspec types generated
# from its `KEPT` tree, so the decoder skips, in one pass and without making Python objects, every
# key no projection keeps. A Pod or a StatefulSet event is mostly managedFields, a spec and a status
# the cache drops (issue #15, the test objects of test_projections on a quiet machine, decoded and
# projected: a 22 KB StatefulSet 61 -> 33 µs, an 11 KB Pod 43 -> 28 µs, a Job 27 -> 12 µs).
def _decoded_type(what: Keep, name: str) -> Any:
    """The type that decodes a value as far as `keep(..., what)` reads it (`Any`: whole)."""
    if isinstance(what, Each) and what.where is None:
        return list[_decoded_type(what.keep, name + "Item")]  # type: ignore[misc]
    if not isinstance(what, Mapping):
        return Any  # kept whole; a list filtered by its items (`where` reads them whole); KeyNames
    wanted: dict[str, Keep] = {key: sub for key, sub in what.items() if not isinstance(sub, Derived)}
    for sub in what.values():
        if isinstance(sub, Derived):
            wanted.update(dict.fromkeys(sub.reads, True))  # whole: the computation may read anything in them
    fields = [
        (f"f{i}", _decoded_type(sub, f"{name}_{i}") | None, msgspec.UNSET) for i, sub in enumerate(wanted.values())
    ]
    rename = {f"f{i}": key for i, key in enumerate(wanted)}
    return msgspec.defstruct(name, fields, rename=rename, omit_defaults=True)


# What the caches read of an event's or a listing's object: the projection, and the resourceVersion
# (the informer resumes its watch from it; only the SampleDB's projection keeps it).
READ: dict[str, Mapping[str, Keep]] = {
    kind: {**what, "metadata": {**what["metadata"], "resourceVersion": True}}  # type: ignore[dict-item]
    for kind, what in KEPT.items()
}
_ANY = msgspec.json.Decoder()


def _reader(decoder: msgspec.json.Decoder[Any]) -> Callable[[bytes | msgspec.Raw], Object]:
    def read(raw: bytes | msgspec.Raw) -> Object:
        try:
            obj: Object = msgspec.to_builtins(decoder.decode(raw))
        except msgspec.ValidationError:
            obj = _ANY.decode(raw)
        return obj

    return read


# Per kind, the decoder of an object that reads what its projection and the informer need, and no
# more. A value of another shape than the API's (e.g. a string where an object belongs) fails the
# typed decode: the object is then decoded whole, and `keep` reads it as it reads any object.
READERS: dict[str, Callable[[bytes | msgspec.Raw], Object]] = {
    kind: _reader(msgspec.json.Decoder(_decoded_type(what, kind))) for kind, what in READ.items()
}


def project(kind: str, obj: Object) -> Object:
    """The projection of `obj`, an object of `kind` as the API server sends it (or a projection: idempotent)."""
    try:
        projection = PROJECTIONS[kind]
    except KeyError:
        raise ValueError(f"no projection for kind {kind!r}: add it to observe/projections.py") from None
    return projection(obj)

"""The finalizer's state machine: what happens to the data when a SampleDB is deleted.

Steps, by `spec.deletionPolicy`:
- Snapshot (default): 1. create the snapshot volume and Job (see `jobs/snapshot.py`);
  2. wait for the Job; if it failed, stop here with a Degraded condition and a Warning event
  (deleting the failed Job retries it; switching the policy to Retain lets deletion go on);
  3. delete the StatefulSet and the data volumes; 4. remove the finalizer.
- Retain: delete the StatefulSet, keep the data volumes, remove the finalizer.
- Delete: delete the StatefulSet and the data volumes, remove the finalizer.
When the spec cannot be read (it fails the operator's model: written before a schema change), the
finalizer must not hold the object forever: `readable_policy` keeps a `Delete` or `Retain` that can
still be read, and otherwise falls back to Retain (the data volumes are kept; a snapshot would need
the spec it cannot read); a Warning event says which policy was used and why.
When the whole namespace is being deleted, Kubernetes itself deletes the Pods and the volumes and
refuses new objects in it: no snapshot can be taken, holding the SampleDB would only hold the
namespace, so deletion goes on with a warning (logged; events cannot be created there either).
Owned children (Services, ConfigMap, Secret, PDB, Jobs) go with the SampleDB through garbage
collection once the finalizer is gone. Every step is decided from the snapshot alone (no I/O), so
a restart resumes it. "No data to snapshot" is decided from the claims cache: a data claim made
in the last moments before the deletion (watch latency) holds no data yet.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.api.common import DeletionPolicy, Phase
from sampledb_operator.jobs.snapshot import snapshot_job, snapshot_pvc
from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile import conditions
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.conditions import DEGRADED, PROGRESSING, Value, bounded
from sampledb_operator.reconcile.plan import Event, Plan
from sampledb_operator.reconcile.replicas import data_claims
from sampledb_operator.reconcile.status import JobState, Problem, job_failure_message, job_state
from sampledb_operator.resources.instance import Instance
from sampledb_operator.settings import Settings

FINALIZER = "sampledb.io/finalizer"
SNAPSHOT_SKIPPED = (
    "namespace {namespace} is being deleted: Kubernetes removes its volumes and allows no new objects in it, "
    "so no final snapshot can be taken; back up before deleting a namespace"
)
UNREADABLE_SPEC = "the spec cannot be read ({problem}); deleting with deletionPolicy {policy}{why}"
DELETING = Phase.DELETING.value


def readable_policy(spec: Any) -> tuple[DeletionPolicy, str]:
    """The policy to delete an unreadable spec with, and why (for the event).

    An explicit Delete or Retain is honoured; Snapshot, or no readable policy, becomes Retain: the
    final snapshot runs a Job built from the spec, and keeping the volumes loses nothing.
    """
    raw = spec.get("deletionPolicy") if isinstance(spec, dict) else None
    if raw in (DeletionPolicy.DELETE.value, DeletionPolicy.RETAIN.value):
        return DeletionPolicy(raw), " as the spec says"
    return DeletionPolicy.RETAIN, (
        ": the data volumes are kept (a final snapshot needs the spec); delete them by hand once they are not needed"
    )


def plan_unreadable(obj: dict[str, Any], problem: Problem, snap: Snapshot, settings: Settings, *, now: str) -> Plan:
    """Deletion must never hang on a spec the model refuses: go on with the policy it can read."""
    policy, why = readable_policy(obj.get("spec"))
    instance = Instance.from_object({**obj, "spec": {"deletionPolicy": policy.value}}, settings)
    plan = plan_deletion(instance, obj, snap, now=now)
    if FINALIZER not in (obj["metadata"].get("finalizers") or []):
        return plan
    note = UNREADABLE_SPEC.format(problem=bounded(problem.message), policy=policy.value, why=why)
    return Plan(
        writes=plan.writes,
        status=plan.status,
        events=(Event("Warning", "DeletingUnreadableSpec", note, "Delete"), *plan.events),
        phase=plan.phase,
        waiting=plan.waiting,
    )


def plan_deletion(instance: Instance, obj: dict[str, Any], snap: Snapshot, *, now: str) -> Plan:
    """Advance deletion as far as it can go now (see the module docstring)."""
    if FINALIZER not in (obj["metadata"].get("finalizers") or []):
        return Plan(phase=DELETING)
    events: tuple[Event, ...] = ()
    if instance.spec.deletionPolicy is DeletionPolicy.SNAPSHOT:
        if snap.namespace_terminating:
            note = SNAPSHOT_SKIPPED.format(namespace=instance.namespace)
            events = (_event("Warning", "FinalSnapshotSkipped", note),)
        else:
            waiting = _plan_snapshot(instance, obj, snap, now)
            if isinstance(waiting, Plan):
                return waiting
            events = waiting
    deleted = _event("Normal", "Deleted", f"removed with deletionPolicy {instance.spec.deletionPolicy.value}")
    return Plan(writes=_remove(instance, obj, snap), events=(*events, deleted), phase=DELETING)


def _plan_snapshot(instance: Instance, obj: dict[str, Any], snap: Snapshot, now: str) -> Plan | tuple[Event, ...]:
    """A plan that waits for the final snapshot, or the events of a snapshot that is done."""
    job = snap.get("Job", instance.snapshot_job)
    state = job_state(job)
    if state is JobState.COMPLETE:
        return ()
    if state is None:
        if not any(snap.get("PersistentVolumeClaim", pvc) for pvc in instance.data_pvcs):
            return (_event("Normal", "NoDataToSnapshot", "the instance never had a data volume; nothing to snapshot"),)
        message = f"Job {instance.snapshot_job} is writing the final snapshot to PVC {instance.snapshot_pvc}"
        writes = tuple(
            Action(Verb.CREATE, body["kind"], body["metadata"]["name"], "FinalSnapshot", body)
            for body in (snapshot_pvc(instance), snapshot_job(instance))
        )
        status = _status(instance, obj, PROGRESSING, Value("True", "TakingFinalSnapshot", message), now)
        started = _event("Normal", "TakingFinalSnapshot", f"final snapshot Job {instance.snapshot_job} started")
        return Plan(writes=writes, status=status, events=(started,), phase=DELETING, waiting="FinalSnapshot")
    if state is JobState.FAILED and job is not None:
        message = (
            f"final snapshot Job {instance.snapshot_job} failed ({job_failure_message(job)}); the data is kept. "
            "Delete the Job to retry, or set spec.deletionPolicy to Retain to delete without a snapshot"
        )
        status = _status(instance, obj, DEGRADED, Value("True", "FinalSnapshotFailed", message), now)
        failed = (_event("Warning", "FinalSnapshotFailed", message),) if status else ()
        return Plan(status=status, events=failed, phase=DELETING, waiting="FinalSnapshot")
    return Plan(phase=DELETING, waiting="FinalSnapshot")


def _remove(instance: Instance, obj: dict[str, Any], snap: Snapshot) -> tuple[Action, ...]:
    """Delete the workload (and the data volumes unless retained), then remove the finalizer."""
    writes = [Action(Verb.DELETE, "StatefulSet", instance.statefulset, "Deleting", {})]
    if instance.spec.deletionPolicy is not DeletionPolicy.RETAIN:
        seen = data_claims(instance, snap.names("PersistentVolumeClaim"))  # standbys scaled away too
        claims = sorted({*instance.data_pvcs, *seen})
        writes += [Action(Verb.DELETE, "PersistentVolumeClaim", pvc, "Deleting", {}) for pvc in claims]
    finalizers = obj["metadata"].get("finalizers")
    remaining = [f for f in finalizers or [] if f != FINALIZER]
    ops = [
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
    ]
    writes.append(Action(Verb.GUARDED, "SampleDB", instance.name, "FinalizerRemoved", {"ops": ops}))
    return tuple(writes)


def _status(instance: Instance, obj: dict[str, Any], ctype: str, value: Value, now: str) -> dict[str, Any] | None:
    """Phase Deleting and one condition; None when that is already the status."""
    previous = obj.get("status") or {}
    merged = conditions.merge(previous.get("conditions"), {ctype: value}, generation=instance.generation, now=now)
    status = {"phase": DELETING, "conditions": merged}
    return None if {k: previous.get(k) for k in status} == status else status


def _event(type_: str, reason: str, note: str) -> Event:
    return Event(type_, reason, note, "Delete")

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
collection once the finalizer is gone. Every step is idempotent, so a restart resumes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sampledb_operator.api.common import DeletionPolicy, Phase
from sampledb_operator.jobs.snapshot import snapshot_job, snapshot_pvc
from sampledb_operator.k8s.api import ApiError, KubeApi
from sampledb_operator.reconcile import conditions
from sampledb_operator.reconcile.conditions import DEGRADED, PROGRESSING, Value
from sampledb_operator.reconcile.outcome import Outcome
from sampledb_operator.reconcile.status import JobState, job_failure_message, job_state
from sampledb_operator.resources.instance import Instance

logger = logging.getLogger(__name__)
SNAPSHOT_SKIPPED = (
    "namespace {namespace} is being deleted: Kubernetes removes its volumes and allows no new objects in it, "
    "so no final snapshot can be taken; back up before deleting a namespace"
)


UNREADABLE_SPEC = "the spec cannot be read ({problem}); deleting with deletionPolicy {policy}{why}"


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


class DeletionFlow:
    """One pass of the deletion state machine for one SampleDB."""

    def __init__(
        self, api: KubeApi, instance: Instance, obj: dict[str, Any], *, clock: Callable[[], str], finalizer: str
    ) -> None:
        self.api = api
        self.instance = instance
        self.obj = obj
        self.clock = clock
        self.finalizer = finalizer

    def run(self) -> Outcome:
        """Advance deletion as far as it can go now."""
        if self.finalizer not in (self.obj["metadata"].get("finalizers") or []):
            return Outcome(phase=Phase.DELETING.value)
        if self.instance.spec.deletionPolicy is DeletionPolicy.SNAPSHOT and not self._snapshot_done():
            return Outcome(phase=Phase.DELETING.value, actions=["wait FinalSnapshot"])
        self._remove_workload()
        self._remove_finalizer()
        self._event("Normal", "Deleted", f"removed with deletionPolicy {self.instance.spec.deletionPolicy.value}")
        return Outcome(phase=Phase.DELETING.value, actions=["remove Finalizer"])

    # -- steps -------------------------------------------------------------------------------
    def _snapshot_done(self) -> bool:
        """True once the final snapshot has succeeded (or there was never any data to snapshot)."""
        ns, inst = self.instance.namespace, self.instance
        job = self.api.get("Job", ns, inst.snapshot_job)
        state = job_state(job)
        if state is JobState.COMPLETE:
            return True
        if state is None:
            if not any(self.api.get("PersistentVolumeClaim", ns, pvc) for pvc in inst.data_pvcs):
                self._event("Normal", "NoDataToSnapshot", "the instance never had a data volume; nothing to snapshot")
                return True
            try:
                self._create_ignoring_conflict(snapshot_pvc(inst))
                self._create_ignoring_conflict(snapshot_job(inst))
            except ApiError as err:
                if not err.namespace_terminating:
                    raise
                self._event("Warning", "FinalSnapshotSkipped", SNAPSHOT_SKIPPED.format(namespace=inst.namespace))
                return True
            message = f"Job {inst.snapshot_job} is writing the final snapshot to PVC {inst.snapshot_pvc}"
            self._set_status(PROGRESSING, Value("True", "TakingFinalSnapshot", message))
            self._event("Normal", "TakingFinalSnapshot", f"final snapshot Job {inst.snapshot_job} started")
            return False
        if state is JobState.FAILED and job is not None:
            message = (
                f"final snapshot Job {inst.snapshot_job} failed ({job_failure_message(job)}); the data is kept. "
                "Delete the Job to retry, or set spec.deletionPolicy to Retain to delete without a snapshot"
            )
            if self._set_status(DEGRADED, Value("True", "FinalSnapshotFailed", message)):
                self._event("Warning", "FinalSnapshotFailed", message)
        return False

    def _remove_workload(self) -> None:
        inst = self.instance
        self.api.delete("StatefulSet", inst.namespace, inst.statefulset)
        if inst.spec.deletionPolicy is not DeletionPolicy.RETAIN:
            for pvc in inst.data_pvcs:
                self.api.delete("PersistentVolumeClaim", inst.namespace, pvc)

    def _remove_finalizer(self) -> None:
        meta = self.obj["metadata"]
        remaining = [f for f in meta.get("finalizers") or [] if f != self.finalizer]
        ops = [
            {"op": "test", "path": "/metadata/finalizers", "value": meta.get("finalizers")},
            {"op": "replace", "path": "/metadata/finalizers", "value": remaining},
        ]
        self.api.json_patch("SampleDB", meta["namespace"], meta["name"], ops)

    # -- helpers -----------------------------------------------------------------------------
    def _create_ignoring_conflict(self, manifest: dict[str, Any]) -> None:
        try:
            self.api.create(manifest)
        except ApiError as err:
            if not err.conflict:
                raise

    def _set_status(self, ctype: str, value: Value) -> bool:
        """Set phase Deleting and one condition; False when that was already the status."""
        previous = self.obj.get("status") or {}
        merged = conditions.merge(
            previous.get("conditions"), {ctype: value}, generation=self.instance.generation, now=self.clock()
        )
        status = {"phase": Phase.DELETING.value, "conditions": merged}
        if {k: previous.get(k) for k in status} == status:
            return False
        self.api.merge_patch("SampleDB", self.instance.namespace, self.instance.name, {"status": status}, status=True)
        return True

    def _event(self, type_: str, reason: str, note: str) -> None:
        logger.info("%s/%s: %s: %s", self.instance.namespace, self.instance.name, reason, note)
        self.api.emit_event(self.obj, type_=type_, reason=reason, note=note, action="Delete")

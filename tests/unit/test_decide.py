"""`decide`: snapshots in, plans out; no API double anywhere.

A new SampleDB, the same one converged, a deleted one with each path of the final snapshot, a spec
the model refuses, and a refusal learned from the API server. The last test checks that the
decision cannot do I/O: its import closure holds neither kopf, nor our API module, nor threads.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile.children import Verb
from sampledb_operator.reconcile.decide import FINALIZER, decide
from sampledb_operator.reconcile.plan import Plan
from sampledb_operator.reconcile.status import Problem
from sampledb_operator.settings import Settings

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SETTINGS = Settings()


def sampledb(spec: dict[str, Any] | None = None, **meta: Any) -> dict[str, Any]:
    metadata = {"name": "db1", "namespace": "team-a", "uid": "u1", "generation": 1, "resourceVersion": "7", **meta}
    return {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": metadata, "spec": spec or {}}


def plan_of(snap: Snapshot) -> Plan:
    return decide(snap, now=NOW, settings=SETTINGS)


def writes(plan: Plan) -> list[tuple[str, str, str]]:
    return [(w.verb.value, w.kind, w.reason) for w in plan.writes]


def converged() -> Snapshot:
    """What the cluster holds once the first plan's objects exist and the database is ready."""
    first = plan_of(Snapshot(sampledb(finalizers=[FINALIZER])))
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for write in first.writes:
        body = write.fill(lambda: "pw") if write.fill else write.body
        objects[(write.kind, write.name)] = body
    sts = objects[("StatefulSet", "db1")]
    sts["metadata"]["generation"] = 1
    sts["status"] = {"readyReplicas": 1, "observedGeneration": 1, "currentRevision": "r1", "updateRevision": "r1"}
    objects[("Job", "db1-init")]["status"] = {
        "conditions": [{"type": "Complete", "status": "True"}],
        "completionTime": "2026-11-27T11:00:00Z",
    }
    snap = Snapshot(sampledb(finalizers=[FINALIZER]), objects)
    status = plan_of(snap).status
    assert status is not None
    return dataclasses.replace(snap, sampledb={**snap.sampledb, "status": status})


def test_a_new_sampledb_gets_its_finalizer_children_and_init_job_in_order() -> None:
    plan = plan_of(Snapshot(sampledb()))
    assert writes(plan) == [
        ("GuardedPatch", "SampleDB", "FinalizerMissing"),
        ("Create", "Secret", "SecretMissing"),
        ("Create", "ConfigMap", "ConfigMapMissing"),
        ("Create", "Service", "ServiceMissing"),
        ("Create", "Service", "ServiceMissing"),
        ("Create", "StatefulSet", "StatefulSetMissing"),
        ("Create", "PodDisruptionBudget", "PodDisruptionBudgetMissing"),
        ("Create", "Job", "InitJobMissing"),
    ]
    guard = plan.writes[0].body["ops"][0]
    assert guard == {"op": "test", "path": "/metadata/resourceVersion", "value": "7"}
    assert plan.status is not None and plan.phase == "Provisioning"
    assert [e.reason for e in plan.events] == ["PodNotReady"]
    assert "pw" not in repr(plan)


def test_a_converged_sampledb_needs_no_write_no_status_and_no_event() -> None:
    plan = plan_of(converged())
    assert (plan.writes, plan.status, plan.events, plan.phase) == ((), None, (), "Ready")
    assert plan.requeue_after is None  # woken by events only


def test_a_child_changed_by_hand_is_put_back_and_only_it() -> None:
    snap = converged()
    sts = snap.objects[("StatefulSet", "db1")]
    drifted = {**sts, "spec": {**sts["spec"], "replicas": 0}}
    plan = plan_of(dataclasses.replace(snap, objects={**snap.objects, ("StatefulSet", "db1"): drifted}))
    assert writes(plan) == [("Patch", "StatefulSet", "StatefulSetDrifted")]


def test_a_refusal_learned_from_the_api_server_degrades_the_instance() -> None:
    problem = Problem("StatefulSetRejected", "the API server rejected StatefulSet db1: no")
    plan = plan_of(dataclasses.replace(converged(), rejected=(problem,)))
    assert plan.phase == "Degraded" and plan.status is not None
    assert [e.reason for e in plan.events] == ["StatefulSetRejected"]


def test_an_unusable_spec_is_reported_and_nothing_else_is_touched() -> None:
    plan = plan_of(Snapshot(sampledb({"postgres": {"version": 3}})))
    assert plan.writes == () and plan.phase == "Degraded" and plan.status is not None
    assert [e.reason for e in plan.events] == ["InvalidSpec"]
    assert "spec.postgres.version" in plan.events[0].note


def deleting(policy: str = "Snapshot", **objects: dict[str, Any]) -> Snapshot:
    obj = sampledb({"deletionPolicy": policy}, finalizers=[FINALIZER], deletionTimestamp="2026-11-27T11:59:00Z")
    return Snapshot(obj, {tuple(k.split("/")): v for k, v in objects.items()})  # type: ignore[misc]


CLAIM = {"metadata": {"name": "data-db1-0"}}


def test_deletion_takes_the_final_snapshot_first() -> None:
    plan = plan_of(deleting(**{"PersistentVolumeClaim/data-db1-0": CLAIM}))
    assert [(w.verb.value, w.kind) for w in plan.writes] == [("Create", "PersistentVolumeClaim"), ("Create", "Job")]
    assert plan.waiting == "FinalSnapshot" and plan.status is not None
    assert [e.reason for e in plan.events] == ["TakingFinalSnapshot"]


def test_deletion_goes_on_once_the_snapshot_is_done() -> None:
    done = {
        "metadata": {"name": "db1-final-snapshot"},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    plan = plan_of(deleting(**{"PersistentVolumeClaim/data-db1-0": CLAIM, "Job/db1-final-snapshot": done}))
    assert [(w.verb, w.kind) for w in plan.writes] == [
        (Verb.DELETE, "StatefulSet"),
        (Verb.DELETE, "PersistentVolumeClaim"),
        (Verb.GUARDED, "SampleDB"),
    ]
    assert plan.writes[-1].body["ops"][1]["value"] == []
    assert [e.reason for e in plan.events] == ["Deleted"]


def test_a_failed_snapshot_holds_the_data_and_says_so_once() -> None:
    failed = {
        "metadata": {"name": "db1-final-snapshot"},
        "status": {"conditions": [{"type": "Failed", "status": "True", "message": "disk full"}]},
    }
    snap = deleting(**{"PersistentVolumeClaim/data-db1-0": CLAIM, "Job/db1-final-snapshot": failed})
    plan = plan_of(snap)
    assert plan.writes == () and plan.status is not None and [e.reason for e in plan.events] == ["FinalSnapshotFailed"]
    again = plan_of(dataclasses.replace(snap, sampledb={**snap.sampledb, "status": plan.status}))
    assert again.status is None and again.events == ()


def test_nothing_to_snapshot_or_a_terminating_namespace_deletes_without_a_snapshot() -> None:
    empty = plan_of(deleting())
    assert [e.reason for e in empty.events] == ["NoDataToSnapshot", "Deleted"]
    terminating = plan_of(
        dataclasses.replace(deleting(**{"PersistentVolumeClaim/data-db1-0": CLAIM}), namespace_terminating=True)
    )
    assert [e.reason for e in terminating.events] == ["FinalSnapshotSkipped", "Deleted"]
    assert terminating.writes[-1].kind == "SampleDB"


def test_retain_keeps_the_data_volumes() -> None:
    plan = plan_of(deleting("Retain", **{"PersistentVolumeClaim/data-db1-0": CLAIM}))
    assert [w.kind for w in plan.writes] == ["StatefulSet", "SampleDB"]


def test_the_decision_cannot_reach_the_api_or_kopf() -> None:
    # kubernetes.client itself comes in with kubernetes.utils' quantity parser (storage sizes);
    # what must not come in is anything that sends a request or keeps state between passes.
    code = (
        "import sys, sampledb_operator.reconcile.decide as d;"
        "bad = ('kopf', 'sampledb_operator.k8s', 'sampledb_operator.act', 'sampledb_operator.observe.cache',"
        " 'sampledb_operator.observe.informer', 'sampledb_operator.handlers');"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(bad))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

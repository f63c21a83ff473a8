"""Standbys in the decision: role labels, Services, readiness by the primary, volumes of removed standbys."""

from __future__ import annotations

import dataclasses
from typing import Any

from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile import replicas
from sampledb_operator.reconcile.children import Verb
from sampledb_operator.reconcile.decide import FINALIZER
from sampledb_operator.resources.instance import COMPONENT_LABEL, ROLE_LABEL
from tests.unit.conftest import make_instance
from tests.unit.test_decide import plan_of, sampledb, writes


def pod(name: str, *, ready: bool = True, role: str | None = None, deleting: bool = False) -> dict[str, Any]:
    labels = {COMPONENT_LABEL: "database", **({ROLE_LABEL: role} if role else {})}
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T11:00:00Z"
    return {"metadata": meta, "status": {"conditions": [{"type": "Ready", "status": str(ready)}]}}


def sts(replicas_: int, *, ready: int, counted: int | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "db1", "generation": 1},
        "spec": {"replicas": replicas_},
        "status": {
            "replicas": replicas_ if counted is None else counted,
            "readyReplicas": ready,
            "observedGeneration": 1,
            "currentRevision": "r1",
            "updateRevision": "r1",
        },
    }


def test_every_database_pod_gets_its_role_once_and_only_with_standbys() -> None:
    three = make_instance({"instances": 3})
    pods = [pod("db1-0"), pod("db1-1", role="primary"), pod("db1-2", role="replica"), pod("db1-3", deleting=True)]
    actions = replicas.role_labels(three, pods)
    assert [(a.verb, a.kind, a.name, a.body) for a in actions] == [
        (Verb.PATCH, "Pod", "db1-0", {"metadata": {"labels": {ROLE_LABEL: "primary"}}}),
        (Verb.PATCH, "Pod", "db1-1", {"metadata": {"labels": {ROLE_LABEL: "replica"}}}),
    ]
    moved = dataclasses.replace(three, current_primary="db1-2")
    assert [(a.name, a.reason) for a in replicas.role_labels(moved, pods)] == [
        ("db1-0", "RoleReplica"),
        ("db1-1", "RoleReplica"),
        ("db1-2", "RolePrimary"),
    ]
    assert replicas.role_labels(make_instance(), [pod("db1-0")]) == []


def test_a_removed_standbys_claim_goes_once_its_pod_is_gone_and_counted_out() -> None:
    one = make_instance({"instances": 1})
    claims = ["data-db1-0", "data-db1-1", "data-db1-2", "data-db1-extra", "backups", "data-db10-1"]
    # The StatefulSet has not scaled down yet: nothing goes.
    assert replicas.removed_standby_claims(one, sts(3, ready=3), [pod("db1-0")], claims) == []
    # Scaled in the spec, but Pod 2 is still there (terminating): only claim 1 goes.
    gone = replicas.removed_standby_claims(one, sts(1, ready=1, counted=1), [pod("db1-0"), pod("db1-2")], claims)
    assert [(a.verb, a.name, a.reason) for a in gone] == [(Verb.DELETE, "data-db1-1", "StandbyRemoved")]
    # Scaled back up before the claims went: they are kept for the standbys.
    three = make_instance({"instances": 3})
    assert replicas.removed_standby_claims(three, sts(1, ready=1), [pod("db1-0")], claims) == []
    # An upgrade step holds the StatefulSet at zero: the primary's claim is never a standby's.
    names = [a.name for a in replicas.removed_standby_claims(one, sts(0, ready=0), [], claims)]
    assert names == ["data-db1-1", "data-db1-2"]
    moved = dataclasses.replace(one, current_primary="db1-2")
    assert [a.name for a in replicas.removed_standby_claims(moved, sts(0, ready=0), [], claims)] == ["data-db1-1"]
    # While the primary moves from Pod 2 to Pod 0 (a scale-down's switchover), Pod 2's data stays.
    moving = dataclasses.replace(one, current_primary="db1-2", target_primary="db1-0")
    assert [a.name for a in replicas.removed_standby_claims(moving, sts(1, ready=1), [], claims)] == ["data-db1-1"]
    assert replicas.removed_standby_claims(one, None, [], claims) == []


def test_with_standbys_ready_means_the_primary_is_ready_and_the_services_follow() -> None:
    spec = {"instances": 2}
    first = plan_of(Snapshot(sampledb(spec, finalizers=[FINALIZER])))
    created = [w.name for w in first.writes if w.verb is Verb.CREATE and w.kind == "Service"]
    assert created == ["db1-hl", "db1", "db1-ro", "db1-r"]
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for write in first.writes:
        objects[(write.kind, write.name)] = write.fill(lambda: "pw") if write.fill else write.body
    built = objects[("StatefulSet", "db1")]
    objects[("StatefulSet", "db1")] = {
        **built,
        "metadata": {**built["metadata"], "generation": 1},
        "status": sts(2, ready=1)["status"],
    }
    objects[("Job", "db1-init")]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    standby_only = Snapshot(
        sampledb(spec, finalizers=[FINALIZER]), objects, pods=(pod("db1-0", ready=False), pod("db1-1"))
    )
    plan = plan_of(standby_only)
    assert plan.status is not None and plan.status["currentPrimary"] == "db1-0"
    assert plan.phase == "Provisioning", "a ready standby must not make the instance Ready"
    assert ("Patch", "Pod", "RolePrimary") in writes(plan) and ("Patch", "Pod", "RoleReplica") in writes(plan)
    serving = dataclasses.replace(
        standby_only, pods=(pod("db1-0", role="primary"), pod("db1-1", ready=False, role="replica"))
    )
    plan = plan_of(serving)
    assert plan.phase == "Ready" and not [w for w in plan.writes if w.kind == "Pod"]
    assert plan.status is not None
    ready = next(c for c in plan.status["conditions"] if c["type"] == "Progressing")
    assert ready["reason"] == "StandbysNotReady" and "1 of 2 servers ready" in ready["message"]

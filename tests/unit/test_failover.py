"""Failover decisions: who is lost, who is elected, fencing before promotion, resumption from the status."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile import failover
from sampledb_operator.reconcile.children import CHILDREN, Verb, plan_child
from sampledb_operator.reconcile.decide import FINALIZER
from sampledb_operator.resources.config import PRIMARY_FILE, parameter_problems, postgresql_conf
from sampledb_operator.resources.instance import Instance, Workload
from sampledb_operator.resources.services import POD_NAME_LABEL
from tests.unit.conftest import make_instance
from tests.unit.test_decide import converged, plan_of, sampledb
from tests.unit.test_replicas import pod, sts

NOW = "2026-11-27T12:00:00Z"
STARTED = "2026-11-27T11:59:58Z"
THREE = make_instance({"instances": 3})


def born(name: str, created: str, **kw: Any) -> dict[str, Any]:
    made = pod(name, **kw)
    made["metadata"]["creationTimestamp"] = created
    return made


def promoting(instance: Instance, target: str = "db1-2") -> tuple[Instance, dict[str, Any]]:
    """The instance and status.failover once the decision to promote `target` is recorded."""
    record = {"state": "Promoting", "fromPod": "db1-0", "toPod": target, "reason": "lost", "startTime": STARTED}
    return dataclasses.replace(instance, current_primary="db1-0", target_primary=target), record


def plan(instance: Instance, record: dict[str, Any] | None, pods: list[dict[str, Any]], probed: Any = None,
         eligible: bool = True) -> failover.FailoverPlan | None:  # fmt: skip
    return failover.plan_failover(instance, record, pods, probed, now=NOW, eligible=eligible)


def test_positions_are_compared_as_byte_positions() -> None:
    assert failover.lsn("0/3000148") == 0x3000148
    assert failover.lsn("1/0") > failover.lsn("0/FFFFFFFF")
    assert failover.parse_position("t|0/5000000|0/4000000") == failover.Position(0x5000000, 0x4000000)
    # A standby that never streamed (received NULL) counts what it replayed.
    assert failover.parse_position("t||0/4000000") == failover.Position(0x4000000, 0x4000000)
    assert failover.parse_position("f|0/5000000|0/5000000") is None, "a primary is no candidate"
    assert failover.parse_position(None) is None
    assert failover.parse_position("garbage") is None
    assert failover.parse_position("t|zz|0/1") is None, "an answer that is no position is no candidate"
    assert failover.format_lsn(failover.lsn("16/B374D848")) == "16/B374D848"


def test_a_serving_primary_or_an_ineligible_instance_means_no_failover() -> None:
    pods = [pod("db1-0"), pod("db1-1"), pod("db1-2")]
    assert plan(THREE, None, pods) is None
    lost = [pod("db1-0", ready=False), pod("db1-1")]
    assert plan(THREE, None, lost, eligible=False) is None, "no failover during an upgrade or before initialisation"
    assert plan(make_instance({"instances": 1}), None, [pod("db1-0", ready=False)]) is None


def fencing(why: str) -> tuple[Instance, dict[str, Any]]:
    """The instance and status.failover once the loss of db1-0 is recorded (Fencing)."""
    record = {
        "state": "Fencing",
        "fromPod": "db1-0",
        "reason": f"the primary db1-0 was lost: {why}",
        "startTime": STARTED,
    }
    return dataclasses.replace(THREE, current_primary="db1-0", fencing=True), record


@pytest.mark.parametrize(
    ("primary", "why"),
    [
        (None, "its Pod is gone"),
        (born("db1-0", "2026-11-27T10:00:00Z", ready=False), "its Pod is not ready"),
        (born("db1-0", "2026-11-27T10:00:00Z", deleting=True), "its Pod is being deleted"),
    ],
)
def test_a_lost_primary_is_recorded_fenced_then_the_most_advanced_ready_standby_elected(
    primary: dict[str, Any] | None, why: str
) -> None:
    standbys = [pod("db1-1"), pod("db1-2"), pod("db1-3", ready=False)]
    pods = [p for p in [primary, *standbys] if p]
    first = plan(THREE, None, pods)
    assert first is not None and not first.actions and not first.probes, "nothing acted on before the record"
    assert first.failover == {
        "state": "Fencing",
        "fromPod": "db1-0",
        "reason": f"the primary db1-0 was lost: {why}",
        "startTime": NOW,
    }
    assert first.event is not None and first.event[:2] == ("Warning", "FailoverStarted")
    instance, record = fencing(why)
    assert postgresql_conf(instance) == postgresql_conf(THREE), "fencing changes no server configuration"
    # The old primary is stopped (deleted with a one-second grace) before any standby is probed.
    stop = plan(instance, record, pods)
    if primary is None:
        assert stop is not None and stop.probes, "gone already: probe at once"
    elif primary["metadata"].get("deletionTimestamp"):
        assert stop is not None and not stop.actions and not stop.probes and stop.requeue_after
    else:
        assert stop is not None and not stop.probes
        assert [(a.verb, a.name, a.body) for a in stop.actions] == [(Verb.DELETE, "db1-0", {"gracePeriodSeconds": 1})]
    # Stopped (gone, or made again after the record: it waits as a standby, not ready): probe the ready standbys.
    for after in ([], [born("db1-0", "2026-11-27T12:00:00Z", ready=False)]):
        probing = plan(instance, record, [*after, *standbys])
        assert probing is not None and not probing.actions
        assert [(p.verb, p.name, p.body["command"][-1]) for p in probing.probes] == [
            (Verb.EXEC, "db1-1", failover.POSITION_SQL),
            (Verb.EXEC, "db1-2", failover.POSITION_SQL),
        ]
    answers = {"db1-1": "t|0/5000000|0/5000000", "db1-2": "t|0/6000000|0/4000000"}
    elected = plan(instance, record, standbys, answers)
    assert elected is not None and not elected.probes and not elected.actions
    assert elected.failover == {**record, "state": "Promoting", "toPod": "db1-2", "position": "0/6000000"}
    assert elected.event is not None and elected.event[:2] == ("Normal", "StandbyElected")
    # Equal positions: the lowest ordinal; a standby that did not answer is no candidate.
    tie = plan(instance, record, standbys, {"db1-1": "t|0/5000000|0/5000000", "db1-2": "t|0/5000000|0/5000000"})
    assert tie is not None and tie.failover is not None and tie.failover["toPod"] == "db1-1"
    one = plan(instance, record, standbys, {"db1-1": None, "db1-2": "t|0/1000000|0/1000000"})
    assert one is not None and one.failover is not None and one.failover["toPod"] == "db1-2"
    none = plan(instance, record, standbys, {"db1-1": None, "db1-2": None})
    assert none is not None and none.failover is None and "none of the ready standbys" in (none.progress or "")


def test_no_ready_standby_means_waiting_with_the_reason() -> None:
    waiting = plan(THREE, None, [pod("db1-0", ready=False), pod("db1-1", ready=False)])
    assert waiting is not None and not waiting.probes and waiting.failover is None
    assert "no standby is ready to replace it" in (waiting.progress or "")


def test_the_old_primary_is_fenced_before_the_target_is_promoted() -> None:
    instance, record = promoting(THREE)
    target = pod("db1-2")
    # Still there, made before the decision (it may have read the old ConfigMap): deleted, nothing promoted.
    fence = plan(instance, record, [born("db1-0", "2026-11-27T10:00:00Z", ready=False), target])
    assert fence is not None and fence.promoted is None and fence.failover is None
    assert [(a.verb, a.kind, a.name, a.body) for a in fence.actions] == [
        (Verb.DELETE, "Pod", "db1-0", {"gracePeriodSeconds": 1})
    ]
    # Stopping: wait for the kubelet to confirm.
    stopping = plan(instance, record, [born("db1-0", "2026-11-27T10:00:00Z", deleting=True), target])
    assert stopping is not None and not stopping.actions and stopping.requeue_after
    # Gone, or made again after the decision (it reads the new ConfigMap): promote.
    for pods in ([target], [born("db1-0", "2026-11-27T12:00:00Z", ready=False), target]):
        done = plan(instance, record, pods)
        assert done is not None and done.promoted == "db1-2"
        assert [(a.verb, a.name, a.body["command"][-1], a.body["expect"]) for a in done.actions] == [
            (Verb.EXEC, "db1-2", failover.PROMOTE_SQL, "t")
        ]
        assert done.failover == {**record, "state": "Completed", "completionTime": NOW}
        assert done.event is not None and done.event[:2] == ("Normal", "FailedOver")


def test_a_target_lost_before_its_promotion_is_replaced_by_another_standby() -> None:
    instance, record = promoting(THREE)
    pods = [pod("db1-1"), pod("db1-2", ready=False)]
    again = plan(instance, record, pods)
    assert again is not None and [p.name for p in again.probes] == ["db1-1"]
    chosen = plan(instance, record, pods, {"db1-1": "t|0/1000000|0/1000000"})
    assert chosen is not None and chosen.failover is not None
    assert chosen.failover["toPod"] == "db1-1" and chosen.failover["fromPod"] == "db1-0"
    assert chosen.failover["startTime"] == STARTED, "the failover started when the primary was lost"


def converged_pair(**status: Any) -> Snapshot:
    """Two servers, initialised, the StatefulSet's objects as the first plan made them."""
    spec = {"instances": 2}
    first = plan_of(Snapshot(sampledb(spec, finalizers=[FINALIZER])))
    objects: dict[tuple[str, str], dict[str, Any]] = {}
    for write in first.writes:
        objects[(write.kind, write.name)] = write.fill(lambda: "pw") if write.fill else write.body
    built = objects[("StatefulSet", "db1")]
    objects[("StatefulSet", "db1")] = {**built, "metadata": {**built["metadata"], "generation": 1},
                                      "status": sts(2, ready=1)["status"]}  # fmt: skip
    objects[("Job", "db1-init")]["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    obj = sampledb(spec, finalizers=[FINALIZER])
    obj["status"] = {"initialization": {"completed": True}, "currentPrimary": "db1-0", **status}
    return Snapshot(obj, objects, pods=(pod("db1-1", role="replica"),))


def test_the_decision_is_recorded_first_then_the_children_follow_the_target_then_it_is_promoted() -> None:
    lost = plan_of(converged_pair())
    assert [w for w in lost.writes if w.kind != "Pod"] == [], "nothing acted on before the loss is recorded"
    assert lost.status is not None and lost.status["failover"]["state"] == "Fencing"
    ready = next(c for c in lost.status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "FailingOver"
    assert [e.reason for e in lost.events] == ["FailingOver", "FailoverStarted"]

    fencing = converged_pair(failover=lost.status["failover"])
    probing = plan_of(fencing)
    assert [p.name for p in probing.probes] == ["db1-1"] and not probing.writes and probing.status is None
    decided = plan_of(dataclasses.replace(fencing, probed={"db1-1": "t|0/3000000|0/3000000"}))
    patched = {(w.kind, w.name): w.body for w in decided.writes if w.verb is Verb.PATCH}
    assert patched[("ConfigMap", "db1-config")]["data"][PRIMARY_FILE] == "", "no server starts as the primary now"
    assert decided.status is not None and decided.status["currentPrimary"] == "db1-0"
    assert decided.status["failover"]["toPod"] == "db1-1"
    assert "StandbyElected" in [e.reason for e in decided.events]

    resumed = converged_pair(failover=decided.status["failover"])
    switching = plan_of(resumed)
    patched = {(w.kind, w.name): w.body for w in switching.writes if w.verb is Verb.PATCH}
    assert patched[("ConfigMap", "db1-config")]["data"][PRIMARY_FILE] == "db1-1"
    for kind, path in (("Service", ("spec", "selector")), ("PodDisruptionBudget", ("spec", "selector", "matchLabels"))):
        selector = patched[(kind, "db1")][path[0]][path[1]]
        selector = selector[path[2]] if len(path) > 2 else selector
        assert selector[POD_NAME_LABEL] == "db1-1", f"the {kind} follows the target"
    assert [(w.verb, w.name) for w in switching.writes if w.kind == "Pod"][-1] == (Verb.EXEC, "db1-1")
    assert switching.status is not None and switching.status["currentPrimary"] == "db1-1"
    assert switching.status["failover"]["state"] == "Completed"
    assert "FailedOver" in [e.reason for e in switching.events]


def test_the_statefulset_never_drops_the_primary_and_starts_its_pods_in_parallel() -> None:
    moved = dataclasses.replace(make_instance({"instances": 1}), current_primary="db1-2")
    assert moved.replicas == 3, "a scale-down below the primary keeps the Pods up to it"
    assert dataclasses.replace(moved, workload=Workload(17, "pg:17", replicas=1)).replicas == 3
    assert dataclasses.replace(moved, workload=Workload(17, "pg:17", replicas=0)).replicas == 0
    assert make_instance({"instances": 2}).replicas == 2
    # A StatefulSet made before failover existed (OrderedReady, immutable) is re-created, Pods kept.
    child = next(c for c in CHILDREN if c.kind == "StatefulSet")
    instance = make_instance({"instances": 2})
    desired = child.build(instance)
    assert desired is not None and desired["spec"]["podManagementPolicy"] == "Parallel"
    old = {**desired, "spec": {**desired["spec"], "podManagementPolicy": "OrderedReady"}}
    action = plan_child(child, instance, old)
    assert action is not None and (action.verb, action.reason) == (Verb.RECREATE, "StatefulSetImmutable")
    assert action.body["spec"]["podManagementPolicy"] == "Parallel"


def test_a_switchover_asked_for_a_ready_standby_is_recorded_then_runs_with_a_clean_stop() -> None:
    pods = [born("db1-0", "2026-11-27T10:00:00Z"), pod("db1-1"), pod("db1-2", ready=False)]
    started = failover.plan_failover(THREE, None, pods, None, now=NOW, eligible=True, requested="db1-1")
    assert started is not None and not started.actions and not started.probes
    assert started.failover is not None and started.failover["switchover"] is True
    assert (started.failover["fromPod"], started.failover["toPod"]) == ("db1-0", "db1-1")
    assert started.event is not None and started.event[:2] == ("Normal", "SwitchoverStarted")
    assert started.reason == "SwitchingOver"
    # Under way: the old primary is stopped with time for its fast shutdown, then the target promoted.
    instance = dataclasses.replace(THREE, target_primary="db1-1")
    record = {**started.failover, "startTime": STARTED}
    stop = failover.plan_failover(instance, record, pods, None, now=NOW, eligible=True, requested="db1-1")
    assert stop is not None and [(a.verb, a.name, a.body) for a in stop.actions] == [
        (Verb.DELETE, "db1-0", {"gracePeriodSeconds": failover.SWITCHOVER_GRACE_SECONDS})
    ]
    done = failover.plan_failover(instance, record, pods[1:], None, now=NOW, eligible=True, requested="db1-1")
    assert done is not None and done.promoted == "db1-1" and done.event is not None and done.event[1] == "SwitchedOver"
    # Once it is the primary, the request is removed, only if it still names it.
    served = dataclasses.replace(THREE, current_primary="db1-1")
    removal = failover.plan_failover(served, None, pods, None, now=NOW, eligible=True, requested="db1-1")
    assert removal is not None and [(a.verb, a.kind, a.body["ops"][0]["value"]) for a in removal.actions] == [
        (Verb.GUARDED, "SampleDB", "db1-1")
    ]
    assert removal.actions[0].body["ops"][1] == {
        "op": "remove",
        "path": "/metadata/annotations/sampledb.io~1switchover-to",
    }


@pytest.mark.parametrize("target", ["db1-2", "db1-7", "db1-0-x"])
def test_a_switchover_to_no_ready_standby_is_refused_with_a_warning_and_the_request_removed(target: str) -> None:
    pods = [pod("db1-0"), pod("db1-1"), pod("db1-2", ready=False)]
    refused = failover.plan_failover(THREE, None, pods, None, now=NOW, eligible=True, requested=target)
    assert refused is not None and refused.failover is None
    assert refused.event is not None and refused.event[:2] == ("Warning", "SwitchoverRefused")
    assert f"{target} is not a ready standby of db1 (ready standbys: db1-1)" in refused.event[2]
    assert [a.verb for a in refused.actions] == [Verb.GUARDED]


def test_a_scale_down_that_leaves_out_the_primary_first_switches_over_to_a_kept_pod() -> None:
    one = dataclasses.replace(make_instance({"instances": 1}), current_primary="db1-1")
    assert one.replicas == 2
    waiting = failover.plan_failover(one, None, [pod("db1-0", ready=False), pod("db1-1")], None, now=NOW, eligible=True)
    assert waiting is None, "the kept Pod is not ready yet"
    moving = failover.plan_failover(one, None, [pod("db1-0"), pod("db1-1")], None, now=NOW, eligible=True)
    assert moving is not None and moving.failover is not None
    assert (
        moving.failover["toPod"] == "db1-0"
        and "spec.instances 1 leaves out the primary db1-1" in moving.failover["reason"]
    )
    # Once Pod 0 is the primary, the StatefulSet may scale to one.
    assert dataclasses.replace(one, current_primary="db1-0").replicas == 1


def test_synchronous_replication_waits_for_a_quorum_of_any_pod_name_and_never_more_standbys_than_exist() -> None:
    pods = ", ".join(f'"db1-{i}"' for i in range(9))
    two = make_instance({"instances": 3, "replication": {"synchronous": 2}})
    assert two.synchronous == 2
    assert f"synchronous_standby_names = 'ANY 2 ({pods})'" in postgresql_conf(two)
    assert "synchronous_standby_names" not in postgresql_conf(make_instance({"instances": 3}))
    # Only a v1beta1 write can lower instances under it (v1 refuses it at admission): every standby there is.
    lowered = make_instance({"instances": 2, "replication": {"synchronous": 3}})
    assert lowered.synchronous == 1 and "'ANY 1 (" in postgresql_conf(lowered)
    alone = make_instance({"instances": 1, "replication": {"synchronous": 1}})
    assert alone.synchronous == 0 and "synchronous_standby_names" not in postgresql_conf(alone)
    assert [p.name for p in parameter_problems({"synchronous_standby_names": "*"})] == ["synchronous_standby_names"]


def merged(target: Any, patch: Any) -> Any:
    """RFC 7386: what the API server stores after a merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merged(result.get(key), value)
    return result


def test_a_new_failover_record_replaces_the_last_one_whole_so_the_status_settles() -> None:
    """A switchover's record had `switchover` and `completionTime`: a later failover's must not keep them."""
    switched = {
        "state": "Completed",
        "fromPod": "db1-1",
        "toPod": "db1-0",
        "reason": "asked",
        "switchover": True,
        "position": "0/1",
        "startTime": STARTED,
        "completionTime": STARTED,
    }
    snap = converged_pair(failover=switched)
    lost = plan_of(snap)
    assert lost.status is not None
    stored = merged(snap.sampledb["status"], lost.status)
    assert stored["failover"] == {"state": "Fencing", "fromPod": "db1-0", "reason": stored["failover"]["reason"],
                                  "startTime": NOW}  # fmt: skip


def test_a_field_the_status_no_longer_has_is_removed_and_the_next_pass_writes_nothing() -> None:
    """Scaled to one server: status.servers goes (a merge patch without a null would keep it forever)."""
    snap = converged()
    before = {**snap.sampledb["status"], "servers": [{"name": "db1-0", "ready": True, "role": "Primary"}]}
    scaled = dataclasses.replace(snap, sampledb={**snap.sampledb, "status": before})
    patch = plan_of(scaled).status
    assert patch is not None and patch["servers"] is None
    stored = merged(before, patch)
    assert plan_of(dataclasses.replace(snap, sampledb={**snap.sampledb, "status": stored})).status is None


def test_a_cordoned_primary_node_switches_over_to_a_ready_standby_on_another_node() -> None:
    """`kubectl drain` cordons, then retries the primary's refused eviction: the primary moves first."""
    pods = [pod("db1-0"), pod("db1-1"), pod("db1-2")]
    on = {"db1-0": "node-a", "db1-1": "node-a", "db1-2": "node-b"}
    for p in pods:
        p["spec"] = {"nodeName": on[p["metadata"]["name"]]}
    nodes = {"node-a": {"spec": {"unschedulable": True}}, "node-b": {"spec": {}}}
    drained = failover.cordoned(pods, nodes.get)
    assert drained == {"db1-0": "node-a", "db1-1": "node-a"}
    moving = failover.plan_failover(THREE, None, pods, None, now=NOW, eligible=True, drained=drained)
    assert moving is not None and moving.failover is not None and moving.switchover
    assert (moving.failover["fromPod"], moving.failover["toPod"]) == ("db1-0", "db1-2"), "not onto the cordoned node"
    assert "the primary's node node-a is cordoned" in moving.failover["reason"]
    # Every standby on a cordoned node (or not ready): the primary stays, and its budget holds the drain.
    stuck = {**drained, "db1-2": "node-b"}
    assert failover.plan_failover(THREE, None, pods, None, now=NOW, eligible=True, drained=stuck) is None
    assert failover.plan_failover(THREE, None, pods, None, now=NOW, eligible=True, drained={"db1-1": "node-a"}) is None

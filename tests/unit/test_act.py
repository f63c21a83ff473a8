"""The executor and one pass: writes in order, the API server's refusals, read-your-writes.

`FakeApi` answers like the API server for the verbs the executor uses and records every call;
`FakeCache` serves one snapshot and records what the executor wrote through.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from sampledb_operator.act.executor import Executor
from sampledb_operator.act.reconciler import Reconciler
from sampledb_operator.k8s.api import ApiError, Decode, KubeApi
from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.decide import FINALIZER
from sampledb_operator.settings import Settings


class FakeApi:
    def __init__(self, fail: dict[tuple[str, str], ApiError] | None = None) -> None:
        self.calls: list[tuple[str, str, str]] = []
        self.bodies: list[dict[str, Any]] = []
        self.events: list[str] = []
        self.fail = fail or {}
        self.outputs: dict[str, str] = {}

    def _answer(self, verb: str, kind: str, name: str, body: Any = None) -> dict[str, Any]:
        self.calls.append((verb, kind, name))
        for failing in ((verb, name), (verb, f"{kind}/{name}")):
            if failing in self.fail:
                raise self.fail[failing]
        if isinstance(body, dict):
            self.bodies.append(body)
        return {"kind": kind, "metadata": {"name": name, "namespace": "team-a", "resourceVersion": "9"}}

    # Answers go through the caller's `decode`, as the API server's JSON does.
    def create(self, body: dict[str, Any], *, decode: Decode) -> dict[str, Any]:
        return decode(json.dumps(self._answer("create", body["kind"], body["metadata"]["name"], body)).encode())

    def merge_patch(
        self, kind: str, ns: str, name: str, body: dict[str, Any], *, status: bool = False, decode: Decode
    ) -> dict[str, Any]:
        return decode(json.dumps(self._answer("status" if status else "patch", kind, name, body)).encode())

    def json_patch(self, kind: str, ns: str, name: str, ops: list[dict[str, Any]], *, decode: Decode) -> dict[str, Any]:
        return decode(json.dumps(self._answer("guarded", kind, name)).encode())

    def delete(
        self, kind: str, ns: str, name: str, *, propagation: str = "Background", grace_seconds: int | None = None
    ) -> dict[str, Any]:
        grace = "" if grace_seconds is None else f":grace={grace_seconds}"
        answer = self._answer(f"delete:{propagation}{grace}", kind, name)
        if grace_seconds:  # the Pod stops within its grace period: still there, being deleted
            answer["metadata"]["deletionTimestamp"] = "2026-11-27T12:00:00Z"
            return answer
        return {"kind": "Status", "metadata": {}, "status": "Success"}

    def exec(self, ns: str, pod: str, container: str, command: list[str]) -> str:
        self._answer("exec", "Pod", pod)
        return self.outputs.get(pod, "")

    def wait_deleted(self, kind: str, ns: str, name: str) -> bool:
        self.calls.append(("wait", kind, name))
        return True

    def emit_event(self, regarding: dict[str, Any], *, type_: str, reason: str, note: str, action: str) -> None:
        self.events.append(reason)


class FakeCache:
    def __init__(self, snap: Snapshot | None) -> None:
        self.snap = snap
        self.remembered: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    def snapshot(self, namespace: str, name: str) -> Snapshot | None:
        return self.snap

    def remember(self, kind: str, obj: dict[str, Any]) -> None:
        self.remembered.append((kind, obj["metadata"]["name"]))

    def forget_deleted(self, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((kind, name))

    def holds(self, kind: str, namespace: str, name: str) -> bool:
        return name != "not-ours"


def error(status: int, message: str = "no") -> ApiError:
    return ApiError(status, "X", "/", message)


def action(verb: Verb, kind: str, name: str) -> Action:
    body = {"kind": kind, "metadata": {"name": name}}
    return Action(verb, kind, name, "Test", {"ops": []} if verb is Verb.GUARDED else body)


def executor(api: FakeApi, cache: FakeCache | None = None) -> Executor:
    return Executor(cast(KubeApi, api), cache or FakeCache(None), password=lambda: "pw")


def test_writes_go_in_order_and_through_to_the_cache() -> None:
    api, cache = FakeApi(), FakeCache(None)
    writes = [
        action(Verb.GUARDED, "SampleDB", "db1"),
        action(Verb.CREATE, "Service", "s"),
        action(Verb.PATCH, "ConfigMap", "c"),
        action(Verb.DELETE, "CronJob", "j"),
    ]
    report = executor(api, cache).write("team-a", writes)
    assert [c[0] for c in api.calls] == ["guarded", "create", "patch", "delete:Background"]
    assert cache.remembered == [("SampleDB", "db1"), ("Service", "s"), ("ConfigMap", "c")]
    assert cache.deleted == [("CronJob", "j")]
    assert not report.learned and not report.stale


def test_a_command_in_a_pod_must_print_what_the_plan_expects_and_a_probe_never_raises() -> None:
    api = FakeApi({("exec", "db1-2"): error(500, "psql exited with 2")})
    api.outputs = {"db1-0": "t\n", "db1-1": "f\n"}
    promote = {"container": "postgres", "command": ["psql"], "expect": "t"}
    fence = Action(Verb.DELETE, "Pod", "db1-9", "FenceLostPrimary", {"gracePeriodSeconds": 1})
    cache = FakeCache(None)
    executor(api, cache).write("team-a", [fence, Action(Verb.EXEC, "Pod", "db1-0", "PromoteStandby", promote)])
    assert api.calls == [("delete:Background:grace=1", "Pod", "db1-9"), ("exec", "Pod", "db1-0")]
    assert cache.remembered == [("Pod", "db1-9")] and cache.deleted == [], "a Pod stopping is seen stopping"
    with pytest.raises(ApiError, match="PromoteStandby answered 'f', expected 't'"):
        executor(api).write("team-a", [Action(Verb.EXEC, "Pod", "db1-1", "PromoteStandby", promote)])
    probe = {"container": "postgres", "command": ["psql"]}
    probes = [Action(Verb.EXEC, "Pod", name, "ProbeStandby", probe) for name in ("db1-1", "db1-2")]
    assert executor(api).probe("team-a", probes) == {"db1-1": "f\n", "db1-2": None}


def test_an_existing_object_is_fine_and_a_refused_one_becomes_a_problem() -> None:
    api = FakeApi({("create", "a"): error(409), ("create", "b"): error(422, "bad field")})
    report = executor(api).write("team-a", [action(Verb.CREATE, "Job", n) for n in "abc"])
    assert [c[2] for c in api.calls] == ["a", "b", "c"]
    assert [(p.reason, p.message) for p in report.rejected] == [
        ("JobRejected", "the API server rejected Job b: bad field")
    ]


def test_an_existing_object_the_caches_do_not_hold_is_not_ours_and_is_named() -> None:
    api = FakeApi({("create", "not-ours"): error(409)})
    report = executor(api, FakeCache(None)).write("team-a", [action(Verb.CREATE, "Job", "not-ours")])
    assert [p.reason for p in report.rejected] == ["JobConflict"]
    assert "Job not-ours exists but was not made by the operator" in report.rejected[0].message


def test_a_stale_guarded_patch_stops_the_pass() -> None:
    api = FakeApi({("guarded", "db1"): error(422)})
    report = executor(api).write("team-a", [action(Verb.GUARDED, "SampleDB", "db1"), action(Verb.CREATE, "Job", "a")])
    assert report.stale and [c[2] for c in api.calls] == ["db1"]


def test_a_terminating_namespace_is_learned_only_while_deleting_and_other_errors_raise() -> None:
    terminating = error(403, "namespace team-a is being terminated")
    assert (
        executor(FakeApi({("create", "a"): terminating}))
        .write("team-a", [action(Verb.CREATE, "Job", "a")], deleting=True)
        .terminating
    )
    with pytest.raises(ApiError):
        executor(FakeApi({("create", "a"): terminating})).write("team-a", [action(Verb.CREATE, "Job", "a")])
    with pytest.raises(ApiError):
        executor(FakeApi({("patch", "a"): error(500)})).write("team-a", [action(Verb.PATCH, "Job", "a")])


def test_a_patch_of_an_object_gone_since_observed_is_skipped_and_the_pass_goes_on() -> None:
    api, cache = FakeApi({("patch", "db1-1"): error(404)}), FakeCache(None)
    report = executor(api, cache).write("team-a", [action(Verb.PATCH, "Pod", "db1-1"), action(Verb.CREATE, "Job", "a")])
    assert [c[2] for c in api.calls] == ["db1-1", "a"]
    assert cache.remembered == [("Job", "a")] and not report.rejected and not report.stale


def test_a_generated_secret_is_filled_by_the_executor_only() -> None:
    api = FakeApi()
    filled = Action(
        Verb.CREATE,
        "Secret",
        "s",
        "SecretMissing",
        {},
        fill=lambda pw: {"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": pw()}},
    )
    executor(api).write("team-a", [filled])
    assert api.bodies == [{"kind": "Secret", "metadata": {"name": "s"}, "stringData": {"password": "pw"}}]


def test_recreate_deletes_as_orphan_waits_and_creates() -> None:
    api = FakeApi()
    executor(api).write("team-a", [action(Verb.RECREATE, "StatefulSet", "db1")])
    assert api.calls == [
        ("delete:Orphan", "StatefulSet", "db1"),
        ("wait", "StatefulSet", "db1"),
        ("create", "StatefulSet", "db1"),
    ]


def sampledb(**meta: Any) -> dict[str, Any]:
    metadata = {"name": "db1", "namespace": "team-a", "uid": "u1", "generation": 1, "resourceVersion": "7", **meta}
    return {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": metadata, "spec": {}}


def reconciler(api: FakeApi, snap: Snapshot | None) -> Reconciler:
    clock = lambda: datetime(2026, 11, 27, tzinfo=UTC)  # noqa: E731
    return Reconciler(cast(KubeApi, api), FakeCache(snap), Settings(), clock=clock, password=lambda: "pw")


def test_a_pass_writes_then_its_status_then_its_events_and_looks_again() -> None:
    api = FakeApi()
    outcome = reconciler(api, Snapshot(sampledb(finalizers=[FINALIZER]))).reconcile("team-a", "db1")
    verbs = [c[0] for c in api.calls]
    assert verbs.index("status") == len(verbs) - 1 and api.events == ["PodNotReady"]
    assert outcome.requeue_after == 0.0 and outcome.phase == "Provisioning"
    assert "Create StatefulSet/db1 (StatefulSetMissing)" in outcome.actions


def test_a_refused_child_is_decided_again_into_the_status_without_a_second_attempt() -> None:
    api = FakeApi({("create", "StatefulSet/db1"): error(422, "bad template")})
    outcome = reconciler(api, Snapshot(sampledb(finalizers=[FINALIZER]))).reconcile("team-a", "db1")
    assert api.calls.count(("create", "StatefulSet", "db1")) == 1
    assert outcome.phase == "Degraded" and api.events == ["StatefulSetRejected"]


def test_a_gone_sampledb_is_nothing_to_do() -> None:
    api = FakeApi()
    assert reconciler(api, None).reconcile("team-a", "db1").actions == [] and api.calls == []

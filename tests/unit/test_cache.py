"""`ClusterCache` over a scripted API: what a snapshot holds, and which SampleDB each change wakes.

The user's objects a SampleDB names (its migrations ConfigMap, its credentials Secret) carry no
label of ours: a change to one must still reach the SampleDB (`migrations` relies on it: a
ConfigMap edit runs the migrations again without any periodic look), and a change to an object
nobody names must reach none.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any, cast

import pytest

from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.observe.cache import ClusterCache, NotSynced
from sampledb_operator.observe.informer import Key
from sampledb_operator.settings import Settings
from tests.unit.conftest import wait_until

NS = "team-a"
OURS = {"app.kubernetes.io/managed-by": "sampledb-operator"}


def obj(kind: str, name: str, labels: Mapping[str, str] | None = None, **rest: Any) -> dict[str, Any]:
    meta = {"name": name, "namespace": NS, "uid": f"uid-{kind}-{name}", "resourceVersion": "1"}
    return {"kind": kind, "apiVersion": "v1", "metadata": {**meta, "labels": dict(labels or {})}, **rest}


def owned(kind: str, name: str, instance: str) -> dict[str, Any]:
    return obj(kind, name, {**OURS, "sampledb.io/instance": instance})


def sampledb(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return obj("SampleDB", name, spec=spec)


class World:
    """Lists what it holds (honouring label selectors); each kind's watch streams what the test sends."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = objects
        self.streams: dict[str, queue.Queue[dict[str, Any]]] = defaultdict(queue.Queue)
        self.handled: dict[str, int] = defaultdict(int)  # events an informer finished with, by kind
        self.closed = threading.Event()

    def list_page(
        self, kind: str, namespace: str | None, *, labels: Mapping[str, str] | None = None, decode: Any, **_: Any
    ) -> Any:
        items = [
            o
            for o in self.objects
            if o["kind"] == kind and all(o["metadata"]["labels"].get(k) == v for k, v in (labels or {}).items())
        ]
        return decode(json.dumps({"metadata": {"resourceVersion": "1"}, "items": items}).encode())  # as sent

    def watch(self, kind: str, namespace: str | None, *, decode: Any, **_: Any) -> Iterator[dict[str, Any]]:
        while not self.closed.is_set():
            try:
                event = self.streams[kind].get(timeout=0.01)
            except queue.Empty:
                continue
            yield decode(json.dumps(event).encode())
            self.handled[kind] += 1  # the informer asks for the next event once it has handled this one

    def send(self, kind: str, changed: dict[str, Any], event: str = "MODIFIED") -> None:
        meta = changed["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)
        self.streams[kind].put({"type": event, "object": changed})


class Running:
    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.world = World(objects)
        self.triggered: list[Key] = []
        self.settled: list[Key] = []  # the triggers that may wait a moment (also in `triggered`)
        self.forgotten: list[Key] = []
        self.backups: list[Key] = []  # the backup flow's triggers
        self.stop = threading.Event()
        self.cache = ClusterCache(
            cast(KubeApi, self.world),
            Settings(),
            trigger=self.triggered.append,
            trigger_settled=self.settle,
            forget=self.forgotten.append,
            trigger_backup=self.backups.append,
        )

    def settle(self, key: Key) -> None:
        self.settled.append(key)
        self.triggered.append(key)

    def start(self) -> None:
        self.cache.start(self.stop)
        wait_until(lambda: self.cache.synced, 3, "the caches to sync")

    def close(self) -> None:
        self.stop.set()
        self.world.closed.set()

    def woken_by(self, kind: str, changed: dict[str, Any], event: str = "MODIFIED") -> list[Key]:
        """The SampleDBs a change wakes, once its informer has handled it (triggers are made while it does)."""
        self.triggered.clear()
        handled = self.world.handled[kind]
        self.world.send(kind, changed, event)
        wait_until(lambda: self.world.handled[kind] > handled, 3, f"the {kind} event to be handled")
        return list(self.triggered)


def node(name: str, **spec: Any) -> dict[str, Any]:
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name, "labels": {}, "resourceVersion": "1"},
            "spec": spec, "status": {"capacity": {"cpu": "2"}}}  # fmt: skip


@pytest.fixture
def running() -> Iterator[Running]:
    world = [
        sampledb("db1", {"migrations": {"configMap": "schema"}, "credentials": {"secretName": "mine"}}),
        sampledb("db2", {}),
        owned("StatefulSet", "db1", "db1"),
        owned("Job", "db1-init", "db1"),
        {**owned("Pod", "db1-0", "db1"), "spec": {"nodeName": "node-a", "containers": [{"name": "postgres"}]}},
        owned("Job", "db2-init", "db2"),
        obj("ConfigMap", "schema", data={"001.sql": "create table t ();"}),
        obj("ConfigMap", "unrelated", data={"x": "y"}),
        obj("Secret", "mine", data={"username": "YQ==", "password": "c2VjcmV0"}),
        {**obj("StorageClass", "standard", allowVolumeExpansion=True), "metadata": {"name": "standard", "labels": {}}},
        node("node-a"),
        node("node-b"),
    ]
    run = Running(world)
    yield run
    run.close()


def test_nothing_is_taken_as_absent_before_every_kind_is_listed(running: Running) -> None:
    with pytest.raises(NotSynced):
        running.cache.snapshot(NS, "db1")
    running.start()
    assert sorted(wait_until(lambda: len(running.triggered) >= 2 and running.triggered, 3, "the first passes")) == [
        (NS, "db1"),
        (NS, "db2"),
    ]


def test_a_snapshot_holds_what_the_instance_owns_and_names_and_nothing_else(running: Running) -> None:
    running.start()
    snap = running.cache.snapshot(NS, "db1")
    assert snap is not None and running.cache.snapshot(NS, "gone") is None
    assert sorted(snap.objects) == [
        ("ConfigMap", "schema"),
        ("Job", "db1-init"),
        ("Node", "node-a"),
        ("Secret", "mine"),
        ("StatefulSet", "db1"),
        ("StorageClass", "standard"),
    ]
    assert [p["metadata"]["name"] for p in snap.pods] == ["db1-0"]
    assert snap.objects[("Secret", "mine")]["data"] == {"username": "", "password": ""}  # key names only
    assert "data" not in snap.objects[("ConfigMap", "schema")]


def test_each_change_wakes_the_sampledbs_it_concerns(running: Running) -> None:
    running.start()
    assert running.woken_by("ConfigMap", obj("ConfigMap", "schema", data={"002.sql": "select 1;"})) == [(NS, "db1")]
    assert running.woken_by("Secret", obj("Secret", "mine", data={"username": "Yg=="})) == [(NS, "db1")]
    assert running.woken_by("ConfigMap", obj("ConfigMap", "unrelated", data={"x": "z"})) == []
    job = owned("Job", "db2-init", "db2")
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert running.woken_by("Job", job) == [(NS, "db2")]


def test_a_change_of_a_child_may_wait_a_moment_and_a_change_of_the_sampledb_may_not(running: Running) -> None:
    running.start()
    running.settled.clear()
    job = owned("Job", "db2-init", "db2")
    job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert running.woken_by("Job", job) == [(NS, "db2")]
    assert running.woken_by("ConfigMap", obj("ConfigMap", "schema", data={"004.sql": "select 3;"})) == [(NS, "db1")]
    assert running.settled == [(NS, "db2"), (NS, "db1")]
    running.settled.clear()
    assert running.woken_by("SampleDB", sampledb("db2", {"postgres": {"version": 17}})) == [(NS, "db2")]
    assert running.settled == []


def test_a_changed_reference_moves_what_wakes_the_sampledb(running: Running) -> None:
    running.start()
    running.woken_by("SampleDB", sampledb("db1", {"migrations": {"configMap": "unrelated"}}))
    assert running.woken_by("ConfigMap", obj("ConfigMap", "schema", data={"003.sql": "select 2;"})) == []
    assert running.woken_by("ConfigMap", obj("ConfigMap", "unrelated", data={"x": "w"})) == [(NS, "db1")]


def test_a_deleted_sampledb_is_forgotten_and_not_reconciled(running: Running) -> None:
    running.start()
    assert running.woken_by("SampleDB", sampledb("db2", {}), "DELETED") == []
    assert running.forgotten == [(NS, "db2")]


def test_a_cordoned_node_wakes_the_sampledbs_with_a_pod_on_it(running: Running) -> None:
    """A drain starts with a cordon: the primary must move before its eviction is retried."""
    running.start()
    assert running.woken_by("Node", node("node-a", unschedulable=True)) == [(NS, "db1")]
    assert running.woken_by("Node", node("node-b", unschedulable=True)) == []
    snap = running.cache.snapshot(NS, "db1")
    assert snap is not None and snap.objects[("Node", "node-a")]["spec"] == {"unschedulable": True}
    assert "status" not in snap.objects[("Node", "node-a")], "a Node keeps whether it is cordoned, nothing more"


def test_the_backup_a_recovery_names_is_in_its_snapshot_and_wakes_it(running: Running) -> None:
    running.start()
    running.woken_by("SampleDB", sampledb("db3", {"recovery": {"backup": "base"}}))
    base = obj("SampleDBBackup", "base", spec={"instance": "old", "method": "Physical"})
    assert sorted(running.woken_by("SampleDBBackup", base)) == [(NS, "db3"), (NS, "old")]
    snap = running.cache.snapshot(NS, "db3")
    assert snap is not None and ("SampleDBBackup", "base") in snap.objects


def test_every_backup_of_an_instance_is_in_its_snapshot_and_wakes_it_labelled_or_not(running: Running) -> None:
    """The schedule of base backups must see those made by hand: one physical backup at a time."""
    running.start()
    by_hand = obj("SampleDBBackup", "mine", spec={"instance": "db2", "method": "Physical"})
    scheduled = owned("SampleDBBackup", "db2-202611290400", "db2")
    scheduled["spec"] = {"instance": "db2", "method": "Physical"}
    assert running.woken_by("SampleDBBackup", by_hand, "ADDED") == [(NS, "db2")]
    assert running.woken_by("SampleDBBackup", scheduled, "ADDED") == [(NS, "db2")]
    snap = running.cache.snapshot(NS, "db2")
    assert snap is not None and sorted(b["metadata"]["name"] for b in snap.all("SampleDBBackup")) == [
        "db2-202611290400",
        "mine",
    ]
    other = running.cache.snapshot(NS, "db1")
    assert other is not None and other.all("SampleDBBackup") == []


def test_a_backup_the_operator_writes_wakes_its_readers_though_its_watch_event_will_change_nothing(
    running: Running,
) -> None:
    """The schedule creates records the backup flow runs; the backup flow's results prune and schedule."""
    running.start()
    created = owned("SampleDBBackup", "db2-202611290400", "db2")
    created["spec"] = {"instance": "db2", "method": "Physical"}
    running.triggered.clear()
    running.cache.remember("SampleDBBackup", created)
    assert running.backups == [(NS, "db2-202611290400")] and running.settled == [(NS, "db2")]
    running.cache.remember("SampleDBBackup", {**created, "status": {"phase": "Succeeded"}})
    assert running.backups == [(NS, "db2-202611290400")], "not the flow itself for its own status write"
    assert running.settled == [(NS, "db2"), (NS, "db2")]
    running.cache.remember("SampleDBBackup", {**created, "status": {"phase": "Succeeded"}})
    assert running.settled == [(NS, "db2"), (NS, "db2")], "a write that changes nothing wakes no one"
    assert running.woken_by("SampleDBBackup", {**created, "status": {"phase": "Succeeded"}}, "ADDED") == []

"""Each server's role, readiness and lag: read from the primary once a period, reported without flapping."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, cast

from sampledb_operator import metrics
from sampledb_operator.act.reconciler import Reconciler
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.reconcile import replication
from sampledb_operator.reconcile.children import Verb
from sampledb_operator.settings import Settings
from tests.unit.conftest import make_instance
from tests.unit.test_act import FakeApi, FakeCache
from tests.unit.test_decide import plan_of
from tests.unit.test_failover import converged_pair
from tests.unit.test_replicas import pod

THREE = make_instance({"instances": 3})
ANSWER = "db1-1|streaming|async|0\ndb1-2|catchup|quorum|16384\n"


def test_the_primarys_answer_is_read_by_standby_name() -> None:
    assert replication.parse(ANSWER + "db1-3|startup|async|\ngarbage\n|x|y|1\n") == {
        "db1-1": replication.Standby("streaming", "async", 0),
        "db1-2": replication.Standby("catchup", "quorum", 16384),
        "db1-3": replication.Standby("startup", "async", None),
    }
    assert replication.parse("") == {}


def test_the_primary_is_read_only_with_standbys_once_it_is_ready_and_settled() -> None:
    pods = [pod("db1-0"), pod("db1-1")]
    probe = replication.primary_probe(THREE, pods)
    assert probe is not None and (probe.verb, probe.name) == (Verb.EXEC, "db1-0")
    assert probe.body["command"][-1] == replication.LAG_SQL
    assert replication.primary_probe(make_instance({"instances": 1}), pods) is None
    assert replication.primary_probe(THREE, [pod("db1-0", ready=False), pod("db1-1")]) is None
    never = dataclasses.replace(THREE, settings=Settings(replication_probe_seconds=0))
    assert replication.primary_probe(never, pods) is None and replication.period(never) is None, "0: never read"
    failing_over = dataclasses.replace(THREE, current_primary="db1-0", target_primary="db1-1")
    assert replication.primary_probe(failing_over, pods) is None, "no read while the primary changes"


def test_each_server_is_listed_by_ordinal_with_its_role_readiness_and_lag() -> None:
    pods = [pod("db1-2"), pod("db1-0"), pod("db1-1", ready=False), pod("db1-3")]
    assert replication.servers(THREE, pods, ANSWER, None) == [
        {"name": "db1-0", "ready": True, "role": "Primary"},
        {"name": "db1-1", "ready": False, "role": "Replica", "replication": "streaming", "synchronous": "async",
         "lagBytes": 0},
        {"name": "db1-2", "ready": True, "role": "Replica", "replication": "catchup", "synchronous": "quorum",
         "lagBytes": 16384},
        {"name": "db1-3", "ready": True, "role": "Replica", "replication": "NotStreaming"},
    ]  # fmt: skip
    assert replication.servers(make_instance({"instances": 1}), pods[:1], None, None) is None


def test_an_unanswered_read_keeps_what_was_reported_so_the_status_does_not_flap() -> None:
    pods = [pod("db1-0"), pod("db1-1")]
    before = replication.servers(THREE, pods, ANSWER, None)
    assert replication.servers(THREE, pods, None, before) == before
    assert replication.servers(THREE, pods, "", before) == [
        {"name": "db1-0", "ready": True, "role": "Primary"},
        {"name": "db1-1", "ready": True, "role": "Replica", "replication": "NotStreaming"},
    ], "an answer without the standby is news, not a missing answer"


def test_the_status_lists_the_servers_and_is_not_written_again_while_nothing_changed() -> None:
    answer = "db1-1|streaming|async|0"
    snap = dataclasses.replace(converged_pair(), pods=(pod("db1-0"), pod("db1-1", role="replica")), replication=answer)
    first = plan_of(snap)
    assert first.status is not None and first.status["servers"][1]["replication"] == "streaming"
    assert first.requeue_after == 30.0, "the lag is read again a period later (the default setting)"
    obj = {**snap.sampledb, "status": first.status}
    assert plan_of(dataclasses.replace(snap, sampledb=obj)).status is None
    lagging = plan_of(dataclasses.replace(snap, sampledb=obj, replication="db1-1|streaming|async|8192"))
    assert lagging.status is not None and lagging.status["servers"][1]["lagBytes"] == 8192


def metric(gauge: Any, pod_name: str) -> float | None:
    labels = {"namespace": "team-a", "name": "db1", "pod": pod_name}
    return next((s.value for s in gauge.collect()[0].samples if s.labels == labels), None)


def lag_metric(pod_name: str) -> float | None:
    return metric(metrics.REPLICATION_LAG, pod_name)


def streaming_metric(pod_name: str) -> float | None:
    return metric(metrics.REPLICATION_STREAMING, pod_name)


def test_the_reconciler_reads_the_primary_once_a_period_and_exports_the_lag() -> None:
    api, clock = FakeApi(), [100.0]
    api.outputs["db1-0"] = "db1-1|streaming|async|4096"
    snap = dataclasses.replace(converged_pair(), pods=(pod("db1-0"), pod("db1-1", role="replica")))
    cache = FakeCache(snap)
    reconciler = Reconciler(
        cast(KubeApi, api),
        cache,
        Settings(),
        clock=lambda: datetime(2026, 11, 27, tzinfo=UTC),
        password=lambda: "pw",
        monotonic=lambda: clock[0],
    )
    reads = lambda: api.calls.count(("exec", "Pod", "db1-0"))  # noqa: E731
    reconciler.reconcile("team-a", "db1")
    assert reads() == 1 and lag_metric("db1-1") == 4096 and streaming_metric("db1-1") == 1
    clock[0] += 29
    reconciler.reconcile("team-a", "db1")
    assert reads() == 1, "a pass within the period reuses the last answer"
    clock[0] += 1
    api.outputs["db1-0"] = ""
    reconciler.reconcile("team-a", "db1")
    assert reads() == 2 and lag_metric("db1-1") is None, "a standby the primary no longer lists has no lag"
    assert streaming_metric("db1-1") == 0, "and is reported not streaming (an alert can fire on it)"
    cache.snap = None
    reconciler.reconcile("team-a", "db1")
    assert reconciler.replication == {} and streaming_metric("db1-1") is None

"""Scheduled base backups (reconcile/schedule.py): records in, the records to create and prune out."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, cast

from sampledb_operator import metrics
from sampledb_operator.act.reconciler import Reconciler
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.reconcile import schedule
from sampledb_operator.reconcile.children import Verb
from sampledb_operator.reconcile.decide import decide
from sampledb_operator.settings import Settings
from tests.unit.conftest import make_instance
from tests.unit.test_act import FakeApi, FakeCache
from tests.unit.test_archiving import STORE
from tests.unit.test_decide import converged, sampledb

NOW = datetime(2026, 11, 29, 4, 30, 20, tzinfo=UTC)
HOURLY = make_instance({"backup": {"objectStore": {**STORE, "schedule": "0 * * * *"}, "verify": True}})


def record(when: str, phase: str | None, label: str | None = None, oldest: str | None = None) -> dict[str, Any]:
    status = {"phase": phase, "backupLabel": label, "oldestBackupLabel": oldest}
    labels = {"sampledb.io/instance": "db1", schedule.SCHEDULED_LABEL: when}
    return {
        "metadata": {"name": f"db1-{when}", "labels": labels},
        "spec": {"instance": "db1", "method": "Physical"},
        "status": {k: v for k, v in status.items() if v},
    }


def by_hand(name: str, phase: str | None, *, method: str = "Physical", instance: str = "db1") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"instance": instance, "method": method}, "status": {"phase": phase}}


def writes(backups: list[dict[str, Any]], *, ready: bool = True, now: datetime = NOW) -> list[tuple[str, str]]:
    plan = schedule.plan_schedule(HOURLY, backups, ready=ready, now=now)
    assert plan is not None
    return [(a.verb.value, a.name) for a in plan.actions]


def test_the_first_backup_is_taken_as_soon_as_the_database_is_ready_then_one_per_time() -> None:
    assert writes([], ready=False) == []
    plan = schedule.plan_schedule(HOURLY, [], ready=True, now=NOW)
    assert plan is not None and [(a.verb, a.kind, a.name, a.reason) for a in plan.actions] == [
        (Verb.CREATE, "SampleDBBackup", "db1-202611290400", "BackupScheduled")
    ]
    body = plan.actions[0].body
    assert body["spec"] == {"instance": "db1", "method": "Physical", "verify": True}
    assert body["metadata"]["labels"][schedule.SCHEDULED_LABEL] == "202611290400"
    assert "ownerReferences" not in body["metadata"], "a record outlives its SampleDB, for a recovery"
    assert plan.requeue_after == 30 * 60 - 20, "woken at the next time of the schedule"
    done = [record("202611290400", "Succeeded", "20261129-040000F")]
    assert writes(done) == []
    assert writes(done, now=datetime(2026, 11, 29, 5, 0, tzinfo=UTC)) == [("Create", "db1-202611290500")]


def test_times_missed_give_one_late_backup_not_a_burst() -> None:
    old = [record("202611281000", "Succeeded", "20261128-100000F")]
    assert writes(old) == [("Create", "db1-202611290400")]


def test_nothing_starts_while_any_physical_backup_of_the_instance_runs() -> None:
    for busy in (
        record("202611290300", None),  # created, not yet picked up
        record("202611290300", "Running"),
        by_hand("mine", "Pending"),
    ):
        assert writes([busy]) == [], busy
    assert writes([by_hand("dump", "Running", method="Logical")]) == [("Create", "db1-202611290400")]
    assert writes([by_hand("theirs", "Running", instance="db2")]) == [("Create", "db1-202611290400")]


def test_records_of_expired_backups_and_superseded_failures_are_pruned_never_those_made_by_hand() -> None:
    backups = [
        by_hand("mine", "Succeeded"),
        record("202611290000", "Succeeded", "20261129-000000F"),
        record("202611290100", "Failed"),
        record("202611290200", "Succeeded", "20261129-020000F"),
        record("202611290300", "Succeeded", "20261129-030000F", oldest="20261129-020000F"),
        record("202611290400", "Failed"),
    ]
    assert writes(backups) == [("Delete", "db1-202611290000"), ("Delete", "db1-202611290100")]
    unknown = backups[:-2] + backups[-1:]  # the newest success does not say what retention left
    assert writes(unknown) == [("Delete", "db1-202611290100")], "only the superseded failure"


def test_failures_are_kept_for_the_record_but_not_forever() -> None:
    failures = [record(f"2026112900{m:02}", "Failed") for m in range(5)]
    pruned = [("Delete", "db1-202611290000"), ("Delete", "db1-202611290001")]
    assert writes(failures) == [*pruned, ("Create", "db1-202611290400")]


def test_a_schedule_cron_cannot_read_is_a_problem_naming_the_field() -> None:
    bad = make_instance({"backup": {"objectStore": {**STORE, "schedule": "61 * * * *"}}})
    plan = schedule.plan_schedule(bad, [], ready=True, now=NOW)
    assert plan is not None and plan.actions == () and plan.problem is not None
    assert plan.problem.reason == "InvalidSchedule"
    assert "spec.backup.objectStore.schedule: '61 * * * *'" in plan.problem.message
    assert schedule.plan_schedule(make_instance({"backup": {"objectStore": STORE}}), [], ready=True, now=NOW) is None


def test_a_ready_instance_with_a_schedule_creates_its_record_and_a_bad_schedule_blocks_nothing_else() -> None:
    snap = converged()
    status = snap.sampledb["status"]
    assert status["phase"] == "Ready"
    keys = {"data": {"accessKeyId": "", "secretAccessKey": ""}}
    secrets = {("Secret", "s3-keys"): keys, ("Secret", "s3-ca"): {"data": {"ca.pem": ""}}}
    others = []
    for cron, expected in (("0 * * * *", [("Create", "SampleDBBackup")]), ("0 25 * * *", [])):
        spec = {"backup": {"objectStore": {**STORE, "schedule": cron}}}
        obj = {**sampledb(spec, finalizers=snap.sampledb["metadata"]["finalizers"]), "status": status}
        plan = decide(dataclasses.replace(snap, sampledb=obj, objects={**snap.objects, **secrets}), now=NOW,
                      settings=Settings())  # fmt: skip
        assert [(w.verb.value, w.kind) for w in plan.writes if w.kind == "SampleDBBackup"] == expected
        others.append([(w.verb.value, w.kind, w.reason) for w in plan.writes if w.kind != "SampleDBBackup"])
        if not expected:
            assert plan.phase == "Degraded" and plan.status is not None
            assert "spec.backup.objectStore.schedule" in plan.status["conditions"][0]["message"]
    assert others[0] == others[1] != [], "the rest of the spec (here: archiving, checked first) goes on"


def base_backup_metric() -> float | None:
    samples = metrics.BASE_BACKUP_LAST.collect()[0].samples
    return next((s.value for s in samples if s.labels == {"namespace": "team-a", "name": "db1"}), None)


def test_the_newest_succeeded_base_backup_is_exported_and_dropped_with_its_sampledb() -> None:
    done = record("202611290300", "Succeeded", "20261129-030000F")
    done["status"]["completionTime"] = "2026-11-29T03:00:42Z"
    backups = [
        done,
        {**by_hand("later-dump", "Succeeded", method="Logical"), "status": {"phase": "Succeeded",
                                                                            "completionTime": "2026-11-29T04:00:00Z"}},
        {**record("202611290400", "Failed"), "status": {"phase": "Failed", "completionTime": "2026-11-29T04:01:00Z"}},
    ]  # fmt: skip
    cache = FakeCache(None)
    reconciler = Reconciler(cast(KubeApi, FakeApi()), cache, Settings(), clock=lambda: NOW, password=lambda: "pw")
    snap = converged()
    held = {("SampleDBBackup", b["metadata"]["name"]): b for b in backups}
    cache.snap = dataclasses.replace(snap, objects={**snap.objects, **held})
    reconciler.reconcile("team-a", "db1")
    assert base_backup_metric() == datetime(2026, 11, 29, 3, 0, 42, tzinfo=UTC).timestamp()
    cache.snap = None
    reconciler.reconcile("team-a", "db1")
    assert base_backup_metric() is None

"""Physical base backups: the API, the backup container, and the SampleDBBackup's states (through a fake API)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from sampledb_operator.api.backup import SampleDBBackupSpec
from sampledb_operator.api.v1 import SampleDBSpec
from sampledb_operator.conversion.convert import v1_to_v1beta1, v1beta1_to_v1
from sampledb_operator.k8s.api import ApiError
from sampledb_operator.reconcile import base_backup
from sampledb_operator.reconcile.backup import BackupReconciler
from sampledb_operator.reconcile.restore import plan_restore
from sampledb_operator.resources import archive, security, statefulset
from sampledb_operator.settings import Settings
from tests.unit.conftest import make_instance
from tests.unit.test_archiving import STORE, STORE_INSTANCE

NS = "team-a"
RECORD = {
    "annotation": {archive.ANNOTATION: "uid-b1"},
    "label": "20261128-100000F",
    "lsn": {"start": "0/3000028", "stop": "0/3000138"},
    "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000003"},
    "timestamp": {"start": 1795860000, "stop": 1795860042},
    "info": {"size": 23_000_000, "repository": {"size": 3_000_000}},
    "error": False,
}
OTHER = {**RECORD, "annotation": {archive.ANNOTATION: "uid-other"}, "label": "20261127-100000F"}
INFO = json.dumps([{"name": "db", "backup": [OTHER, RECORD]}])


def test_retention_is_by_count_or_by_window_never_both_nor_neither() -> None:
    for retention in ({}, {"fullBackups": 2, "recoveryWindowDays": 7}):
        with pytest.raises(ValidationError, match="exactly one of fullBackups or recoveryWindowDays"):
            SampleDBSpec.model_validate({"backup": {"objectStore": {**STORE, "retention": retention}}})
    by_count = make_instance({"backup": {"objectStore": {**STORE, "retention": {"fullBackups": 2}}}})
    by_window = make_instance({"backup": {"objectStore": {**STORE, "retention": {"recoveryWindowDays": 7}}}})
    assert "repo1-retention-full-type=count\nrepo1-retention-full=2\n" in str(archive.pgbackrest_conf(by_count))
    assert "repo1-retention-full-type=time\nrepo1-retention-full=7\n" in str(archive.pgbackrest_conf(by_window))
    assert "retention" not in str(archive.pgbackrest_conf(STORE_INSTANCE)), "unset: pgBackRest keeps everything"


def test_retention_survives_a_round_trip_through_v1beta1() -> None:
    obj = {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": {"name": "db1"}}
    obj["spec"] = {"backup": {"objectStore": {**STORE, "retention": {"recoveryWindowDays": 7}}}}
    assert v1beta1_to_v1(v1_to_v1beta1(obj)) == obj


def test_the_default_method_stays_logical() -> None:
    assert SampleDBBackupSpec.model_validate({"instance": "db1"}).method == "Logical"


def test_the_backup_container_runs_only_with_an_object_store_beside_the_server_on_its_volumes() -> None:
    assert [c["name"] for c in pod_spec(make_instance())["containers"]] == [statefulset.SERVER_CONTAINER]
    server, sidecar = pod_spec(STORE_INSTANCE)["containers"]
    assert sidecar["name"] == archive.BACKUP_CONTAINER and sidecar["image"] == server["image"]
    assert sidecar["securityContext"] == security.container_security_context()
    shared = {m["mountPath"] for m in sidecar["volumeMounts"]}
    assert shared == {m["mountPath"] for m in server["volumeMounts"]} - {statefulset.CREDENTIALS_DIR}
    assert "env" not in sidecar, "no secret, not even a path to one, in its environment"


def pod_spec(instance: Any) -> dict[str, Any]:
    return statefulset.statefulset(instance)["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def test_the_repositorys_record_becomes_the_status() -> None:
    status = base_backup.succeeded_status(STORE_INSTANCE, "uid-b1", INFO)
    assert status == {
        "phase": "Succeeded",
        "backupLabel": "20261128-100000F",
        "startLSN": "0/3000028",
        "stopLSN": "0/3000138",
        "startWAL": "000000010000000000000003",
        "stopWAL": "000000010000000000000003",
        "bytes": 23_000_000,
        "repositoryBytes": 3_000_000,
        "startTime": "2026-11-28T10:00:00Z",
        "completionTime": "2026-11-28T10:00:42Z",
        "durationSeconds": 42,
        "location": "s3://pg-archive/sampledb/team-a/db1/uid-1/backup/db/20261128-100000F",
        "message": None,
        "oldestBackupLabel": "20261127-100000F",  # OTHER: listed after it, older
    }
    damaged = json.dumps([{"backup": [{**RECORD, "error": True}]}])
    assert "checksum errors" in base_backup.succeeded_status(STORE_INSTANCE, "uid-b1", damaged)["message"]
    for missing in ("[]", "not json", json.dumps([{"backup": [OTHER]}])):
        assert base_backup.succeeded_status(STORE_INSTANCE, "uid-b1", missing)["phase"] == "Failed"


@pytest.mark.parametrize(
    ("answer", "phase", "says"),
    [
        ("running\nP00   INFO: backup start archive = 000000010000000000000003", None, None),
        (f"succeeded\n{INFO}", "Succeeded", None),
        ("failed\nERROR: [082]: WAL segment was not archived", "Failed", "pgBackRest: ERROR: [082]"),
        ("lost\n", "Failed", "interrupted: Pod db1-0 restarted"),
        ("unknown", "Failed", "interrupted: Pod db1-0 restarted"),
    ],
)
def test_each_answer_of_backup_status_is_a_state(answer: str, phase: str | None, says: str | None) -> None:
    found = base_backup.outcome(STORE_INSTANCE, "uid-b1", "db1-0", base_backup.parse(answer))
    assert (found or {}).get("phase") == phase
    if says:
        assert found is not None and found["message"].startswith(says)


# -- the states through a fake API ---------------------------------------------------------------


class FakeApi:
    """The caches (get) and the API (exec, patch, events) of one backup's passes."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]], answer: str | Exception = "") -> None:
        self.objects = objects
        self.answer = answer
        self.execs: list[tuple[str, str, list[str]]] = []
        self.patches: list[dict[str, Any]] = []
        self.events: list[tuple[str, str]] = []

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects.get((kind, name))

    def remember(self, kind: str, obj: dict[str, Any]) -> None:
        pass

    def exec(self, namespace: str, pod: str, container: str, command: list[str], *, timeout: float) -> str:
        self.execs.append((pod, container, command))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def merge_patch(self, kind: str, namespace: str, name: str, patch: dict[str, Any], *, status: bool) -> Any:
        self.patches.append(patch["status"])
        record = self.objects[("SampleDBBackup", name)]
        record["status"] = {k: v for k, v in {**record.get("status", {}), **patch["status"]}.items() if v is not None}
        return record

    def emit_event(self, regarding: Any, *, type_: str, reason: str, note: str, action: str) -> None:
        self.events.append((reason, note))


def world(
    status: dict[str, Any] | None = None, *, store: bool = True, ready: bool | None = True, verify: bool = False
) -> dict[tuple[str, str], dict[str, Any]]:
    spec = {"backup": {"objectStore": STORE}} if store else {}
    sdb = {"metadata": {"name": "db1", "namespace": NS, "uid": "uid-1"}, "spec": spec}
    record = {
        "apiVersion": "sampledb.io/v1",
        "kind": "SampleDBBackup",
        "metadata": {"name": "b1", "namespace": NS, "uid": "uid-b1"},
        "spec": {"instance": "db1", "method": "Physical", **({"verify": True} if verify else {})},
        "status": status or {},
    }
    objects = {("SampleDB", "db1"): sdb, ("SampleDBBackup", "b1"): record}
    if ready is not None:
        flag = "True" if ready else "False"
        objects[("Pod", "db1-0")] = {
            "metadata": {"name": "db1-0"},
            "status": {"conditions": [{"type": "Ready", "status": flag}]},
        }
    return objects


def reconcile(api: FakeApi) -> Any:
    return BackupReconciler(api, api, Settings(), clock=lambda: "2026-11-28T10:00:00Z").reconcile(NS, "b1")  # type: ignore[arg-type]


def test_without_an_object_store_the_backup_fails_naming_the_field() -> None:
    api = FakeApi(world(store=False))
    assert reconcile(api).phase == "Failed" and not api.execs
    assert "has no spec.backup.objectStore" in api.patches[0]["message"]
    assert api.events[0][0] == "BackupFailed"


def test_it_waits_for_the_primary_then_starts_there_once_and_polls() -> None:
    api = FakeApi(world(ready=False))
    outcome = reconcile(api)
    assert outcome.phase == "Pending" and outcome.requeue_after == base_backup.POLL_SECONDS and not api.execs
    assert api.patches == [{"phase": "Pending", "message": "waiting for the primary's Pod db1-0 to be ready"}]
    reconcile(api)
    assert len(api.patches) == 1, "the same wait is not written again"

    api = FakeApi(world(), answer="started")
    assert reconcile(api).phase == "Running"
    assert api.execs == [("db1-0", archive.BACKUP_CONTAINER, base_backup.command("backup-start", "uid-b1"))]
    assert api.patches[-1] == {"phase": "Running", "pod": "db1-0", "startTime": "2026-11-28T10:00:00Z", "message": None}
    assert [r for r, _ in api.events] == ["BackupStarted"]

    api.answer = "running\nP00   INFO: backup start"
    assert reconcile(api).requeue_after == base_backup.POLL_SECONDS
    assert api.execs[-1][2] == base_backup.command("backup-status", "uid-b1")
    assert api.patches[-1] == {"message": "P00   INFO: backup start"}, "progress is shown"
    api.answer = f"succeeded\n{INFO}"
    assert reconcile(api).phase == "Succeeded"
    assert api.objects[("SampleDBBackup", "b1")]["status"]["backupLabel"] == "20261128-100000F"
    assert "message" not in api.objects[("SampleDBBackup", "b1")]["status"], "the progress line is cleared"
    assert [r for r, _ in api.events] == ["BackupStarted", "BackupSucceeded"]
    execs = len(api.execs)
    reconcile(api)
    assert len(api.execs) == execs, "a finished backup is final"


def test_an_image_without_pgbackrest_fails_the_backup_naming_the_image() -> None:
    api = FakeApi(
        world(), answer=ApiError(500, "EXEC", "/exec", f"sh exited with 1: sampledb: {archive.NO_PGBACKREST_MESSAGE}")
    )
    assert reconcile(api).phase == "Failed"
    assert api.patches[-1]["message"] == f"the image {STORE_INSTANCE.image} has no pgbackrest: base backups need it"


def test_an_exec_that_fails_is_retried_and_a_pod_that_went_away_fails_the_backup() -> None:
    unreachable = ApiError(500, "EXEC", "/exec", 'container not found ("pgbackrest")')
    api = FakeApi(world(), answer=unreachable)
    assert reconcile(api).phase == "Pending"
    assert "could not start the base backup on Pod db1-0 (retrying)" in api.patches[-1]["message"]
    running = {"phase": "Running", "pod": "db1-0", "startTime": "2026-11-28T10:00:00Z"}
    api = FakeApi(world(running), answer=unreachable)
    assert reconcile(api).phase == "Running" and not api.patches, "the backup goes on: polled again"
    api = FakeApi(world(running, ready=None))
    assert reconcile(api).phase == "Failed" and not api.execs
    assert api.patches[-1]["message"].startswith("interrupted: Pod db1-0, which ran the base backup, is gone")


def test_a_physical_backup_is_not_a_source_for_spec_restore() -> None:
    instance = make_instance({"restore": {"backup": "b1"}})
    found = {"spec": {"instance": "db1", "method": "Physical"}, "status": {"phase": "Succeeded"}}
    plan = plan_restore(instance, found, None)
    assert plan.problem is not None and plan.problem.reason == "RestoreSourcePhysical"


def test_a_verified_backup_is_started_with_verify_and_says_so_once_it_succeeds() -> None:
    api = FakeApi(world(verify=True), answer="started")
    reconcile(api)
    assert api.execs == [
        ("db1-0", archive.BACKUP_CONTAINER, base_backup.command("backup-start", "uid-b1", verify=True))
    ]
    assert api.execs[0][2][-1] == "verify"
    api.answer = f"succeeded\n{INFO}"
    assert reconcile(api).phase == "Succeeded"
    assert api.objects[("SampleDBBackup", "b1")]["status"]["verified"] is True
    plain = FakeApi(world(), answer=f"succeeded\n{INFO}")
    reconcile(plain)
    assert "verified" not in plain.objects[("SampleDBBackup", "b1")]["status"], "not verified unless asked"

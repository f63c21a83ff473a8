"""Continuous WAL archiving: the API, what the Pod is given, and what the primary's answer becomes."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import ValidationError

from sampledb_operator.api.v1 import SampleDBSpec
from sampledb_operator.conversion.convert import v1_to_v1beta1, v1beta1_to_v1
from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile import archiving, replication
from sampledb_operator.reconcile.conditions import ARCHIVING, Value
from sampledb_operator.reconcile.decide import FINALIZER
from sampledb_operator.resources import archive, config, statefulset
from sampledb_operator.resources.config import parameter_problems
from tests.unit.conftest import make_instance
from tests.unit.test_decide import converged, plan_of, sampledb
from tests.unit.test_replicas import pod

STORE = {
    "endpoint": "https://s3.example.internal:9000",
    "bucket": "pg-archive",
    "credentials": {"secretName": "s3-keys"},
    "caBundle": {"name": "s3-ca", "key": "ca.pem"},
    "kmsKeyId": "key-1",
}
STORE_INSTANCE = make_instance({"backup": {"objectStore": STORE}})
PLAIN = make_instance()
OK = "archiver|on|f|000000010000000000000007|2026-11-28T10:00:00Z|||2|f|"
FAILING = (
    "archiver|on|t|000000010000000000000006|2026-11-28T09:00:00Z|000000010000000000000007|2026-11-28T10:00:00Z|3|f|"
    "ERROR: [103]: unable to find a valid repository:   NoSuchBucket: The specified bucket does not exist"
)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"endpoint": "http://s3.example"}, "endpoint"),
        ({"endpoint": "https://s3.example/some/path"}, "endpoint"),
        ({"bucket": "Upper_Case"}, "bucket"),
        ({"path": "/a/../b"}, "path"),
        ({"credentials": {}}, "secretName"),
        ({"endpoint": "https://s3.example:65536"}, "endpoint"),
        ({"endpoint": "https://s3.example:0"}, "endpoint"),
        ({"kmsKeyId": "key\n[global]\nrepo1-storage-verify-tls=n"}, "kmsKeyId"),
    ],
)
def test_an_object_store_the_tool_cannot_use_is_refused_naming_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        SampleDBSpec.model_validate({"backup": {"objectStore": {**STORE, **change}}})


def test_the_object_store_survives_a_round_trip_through_v1beta1() -> None:
    obj = {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": {"name": "db1"}}
    obj["spec"] = {"backup": {"schedule": "0 3 * * *", "objectStore": STORE}}
    older = v1_to_v1beta1(obj)
    assert "objectStore" not in json.dumps(older["spec"]), "v1beta1 cannot say it: kept in the annotation"
    assert v1beta1_to_v1(older) == obj


def test_the_server_archives_only_with_an_object_store_and_the_user_cannot_turn_it_off() -> None:
    conf = config.postgresql_conf(STORE_INSTANCE)
    assert "archive_mode = 'on'" in conf and "archive_timeout = '30s'" in conf
    assert "archive_command = 'sh /etc/sampledb/config/pgbackrest.sh archive-push %p'" in conf
    assert "archive" not in config.postgresql_conf(PLAIN)
    assert [p.name for p in parameter_problems({"archive_mode": "off", "archive_timeout": "5min"})] == ["archive_mode"]
    tuned = make_instance({"backup": {"objectStore": STORE}, "postgres": {"parameters": {"archive_timeout": "5min"}}})
    assert config.postgresql_conf(tuned).index("archive_timeout = '30s'") < config.postgresql_conf(tuned).index(
        "archive_timeout = '5min'"
    ), "the user's archive_timeout comes last: it wins"
    assert statefulset.config_hash(STORE_INSTANCE) != statefulset.config_hash(PLAIN), (
        "turning it on restarts the server"
    )


def test_pgbackrest_gets_its_own_repository_per_sampledb_and_no_secret() -> None:
    conf = archive.pgbackrest_conf(STORE_INSTANCE)
    assert conf is not None
    for line in [
        "repo1-s3-endpoint=s3.example.internal",
        "repo1-storage-port=9000",
        "repo1-s3-bucket=pg-archive",
        "repo1-s3-uri-style=path",
        "repo1-path=/sampledb/team-a/db1/uid-1",
        "repo1-storage-ca-file=/etc/sampledb/object-store-ca/ca.crt",
        "repo1-s3-kms-key-id=key-1",
        "pg1-path=/var/lib/postgresql/data/pgdata",
    ]:
        assert line in conf.splitlines()
    default_port = make_instance({"backup": {"objectStore": {**STORE, "endpoint": "https://s3.example"}}})
    assert "repo1-storage-port=443" in (archive.pgbackrest_conf(default_port) or "")
    assert archive.pgbackrest_conf(PLAIN) is None and archive.config_files(PLAIN) == {}
    data = config.config_map(STORE_INSTANCE)["data"]
    assert set(data) >= {archive.CONF_FILE, archive.SCRIPT_FILE}
    assert "key-secret" not in data[archive.CONF_FILE], "the keys reach pgBackRest from the mounted Secret"


def test_the_keys_are_files_of_the_users_secret_mounted_read_only() -> None:
    pod_spec = statefulset.statefulset(STORE_INSTANCE)["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    keys = volumes[archive.KEYS_VOLUME]["secret"]
    assert keys["secretName"] == "s3-keys" and keys["defaultMode"] == 0o440
    assert keys["items"] == [
        {"key": "accessKeyId", "path": archive.ACCESS_KEY_FILE},
        {"key": "secretAccessKey", "path": archive.SECRET_KEY_FILE},
    ]
    assert volumes[archive.CA_VOLUME]["secret"]["items"] == [{"key": "ca.pem", "path": archive.CA_FILE}]
    mounts = {m["name"]: m for m in pod_spec["containers"][0]["volumeMounts"]}
    assert mounts[archive.KEYS_VOLUME] == {"name": archive.KEYS_VOLUME, "mountPath": archive.KEYS_DIR, "readOnly": True}
    assert "env" not in json.dumps(keys) and all(
        "secretKeyRef" not in json.dumps(e) for e in pod_spec["containers"][0]["env"]
    )
    plain = statefulset.statefulset(PLAIN)["spec"]["template"]["spec"]
    assert archive.KEYS_VOLUME not in {v["name"] for v in plain["volumes"]}


def test_the_primary_is_read_with_one_server_when_it_archives() -> None:
    probe = replication.primary_probe(STORE_INSTANCE, [pod("db1-0")])
    assert probe is not None and probe.name == "db1-0"
    assert probe.body["command"][-4:] == ["-c", replication.LAG_SQL, "-c", archiving.ARCHIVE_SQL]
    assert replication.primary_probe(PLAIN, [pod("db1-0")]) is None


def test_the_archivers_answer_becomes_the_status_and_the_condition() -> None:
    assert archiving.status(STORE_INSTANCE, OK, None) == {
        "repositoryPath": "/sampledb/team-a/db1/uid-1",
        "lastArchivedWAL": "000000010000000000000007",
        "lastArchivedTime": "2026-11-28T10:00:00Z",
        "pendingSegments": 2,
    }
    assert archiving.condition(STORE_INSTANCE, OK) == Value(
        "True", "Archiving", "WAL is archived to /sampledb/team-a/db1/uid-1; see status.archive"
    )
    later = OK.replace("07|2026-11-28T10:00:00Z", "08|2026-11-28T10:00:30Z")
    assert archiving.condition(STORE_INSTANCE, later) == archiving.condition(STORE_INSTANCE, OK), (
        "a busy database does not rewrite the condition at every segment"
    )
    failing = archiving.condition(STORE_INSTANCE, "db1-1|streaming|async|0\n" + FAILING)
    assert failing is not None and (failing.status, failing.reason) == ("False", "ArchiveFailing")
    assert "000000010000000000000007" in failing.message and "NoSuchBucket" in failing.message
    no_tool = archiving.condition(STORE_INSTANCE, "archiver|off|f|||||0|t|")
    assert no_tool is not None and no_tool.reason == "ArchiverMissing" and STORE_INSTANCE.image in no_tool.message
    rolling = archiving.condition(STORE_INSTANCE, "archiver|off|f|||||0|f|")
    assert rolling is not None and (rolling.status, rolling.reason) == ("Unknown", "ServerNotRestarted")
    none_yet = archiving.condition(STORE_INSTANCE, "archiver|on|f|||||0|f|")
    assert none_yet is not None and (none_yet.status, none_yet.reason) == ("Unknown", "NoSegmentYet")
    assert [archiving.parse(a).broken for a in (OK, FAILING, "archiver|off|f|||||0|f|")] == [False, True, True]  # type: ignore[union-attr]


def test_what_the_primary_does_not_report_is_the_last_value_reported() -> None:
    before = archiving.status(STORE_INSTANCE, OK, None)
    assert archiving.status(STORE_INSTANCE, None, before) == before
    assert archiving.condition(STORE_INSTANCE, None) is None
    assert archiving.condition(PLAIN, OK) is None and archiving.status(PLAIN, OK, before) is None
    new_primary = "archiver|on|f|||||1|f|"  # after a failover: its statistics start empty
    assert archiving.status(STORE_INSTANCE, new_primary, before) == {**(before or {}), "pendingSegments": 1}


def test_a_missing_key_secret_degrades_the_instance_naming_the_field_and_holds_the_pods() -> None:
    snap = Snapshot(sampledb({"backup": {"objectStore": STORE}}, finalizers=[FINALIZER]))
    plan = plan_of(snap)
    assert plan.status is not None
    degraded = {c["type"]: c for c in plan.status["conditions"]}["Degraded"]
    assert degraded["reason"] == "ObjectStoreSecretInvalid"
    assert "spec.backup.objectStore.credentials.secretName (s3-keys): Secret not found" in degraded["message"]
    assert "spec.backup.objectStore.caBundle.name (s3-ca): Secret not found" in degraded["message"]
    assert not any(w.kind == "StatefulSet" for w in plan.writes), "no Pod that could not mount its keys"
    secrets = {("Secret", "s3-keys"): {"metadata": {"name": "s3-keys"}, "data": {"accessKeyId": ""}}}
    secrets[("Secret", "s3-ca")] = {"metadata": {"name": "s3-ca"}, "data": {"ca.pem": ""}}
    lacking = plan_of(dataclasses.replace(snap, objects={**snap.objects, **secrets}))
    assert lacking.status is not None
    assert "lacks the key(s) secretAccessKey" in json.dumps(lacking.status["conditions"])


def test_the_condition_goes_with_the_object_store() -> None:
    snap = converged()
    spec = {"backup": {"objectStore": STORE}}
    secrets = {
        ("Secret", "s3-keys"): {"metadata": {"name": "s3-keys"}, "data": {"accessKeyId": "", "secretAccessKey": ""}},
        ("Secret", "s3-ca"): {"metadata": {"name": "s3-ca"}, "data": {"ca.pem": ""}},
    }
    with_store = dataclasses.replace(
        snap, sampledb={**snap.sampledb, "spec": spec}, objects={**snap.objects, **secrets}, replication=OK
    )
    status = plan_of(with_store).status
    assert status is not None and status["archive"]["lastArchivedWAL"] == "000000010000000000000007"
    assert {c["type"]: c["status"] for c in status["conditions"]}[ARCHIVING] == "True"
    removed = dataclasses.replace(with_store, sampledb={**snap.sampledb, "status": status})
    after = plan_of(removed).status
    assert after is not None and after.get("archive") is None
    assert ARCHIVING not in {c["type"] for c in after["conditions"]}

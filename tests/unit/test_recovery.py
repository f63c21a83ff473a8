"""Point-in-time recovery decided without I/O: restore options, the source, a failure, status.recovery.

What runs on real PostgreSQL (the start script's steps) is in tests/postgres/test_recovery.py and
tests/node/test_archiving.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from pydantic import ValidationError

from sampledb_operator.api.v1 import SampleDBSpec
from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile import recovery
from sampledb_operator.reconcile.decide import FINALIZER
from sampledb_operator.resources import recovery as steps
from sampledb_operator.resources.instance import Instance, RecoverySource
from tests.unit.conftest import make_instance
from tests.unit.test_decide import plan_of, sampledb

STORE = {"endpoint": "https://s3.example.com", "bucket": "pg-archive", "credentials": {"secretName": "s3"}}
REPO = "/sampledb/team-a/src/uid-src"
LOCATION = f"s3://pg-archive{REPO}/backup/db/20261120-100000F"
STORED = {
    "phase": "Succeeded",
    "backupLabel": "20261120-100000F",
    "stopLSN": "0/3000100",
    "completionTime": "2026-11-20T10:05:00Z",
    "location": LOCATION,
}


def recovering(**recovery_spec: Any) -> Instance:
    return make_instance({"backup": {"objectStore": STORE}, "recovery": recovery_spec})


def physical(**status: Any) -> dict[str, Any]:
    return {"spec": {"instance": "src", "method": "Physical"}, "status": status}


def lines(instance: Instance, source: RecoverySource) -> list[str]:
    text = steps.options(dataclasses.replace(instance, recovery_source=source))
    assert text is not None and text.endswith("\n")
    return text.splitlines()


def test_restore_options_name_the_repository_first_and_the_target_as_pgbackrest_parses_it() -> None:
    script = "/etc/sampledb/config/pgbackrest.sh"
    fetch = f'--recovery-option=restore_command=sh {script} --repo1-path={REPO} archive-get %f "%p"'
    at_time = recovering(repositoryPath=REPO, target={"time": "2026-11-28T12:15:00.25+02:00"})
    assert lines(at_time, RecoverySource(REPO)) == [
        f"--repo1-path={REPO}",
        "--type=time",
        "--target=2026-11-28 10:15:00.250000+00",  # in UTC: what pgBackRest's backup choice parses
        "--target-action=promote",
        fetch,
    ]
    at_lsn = recovering(backup="base", target={"lsn": "0/3000abc"})
    assert lines(at_lsn, RecoverySource(REPO, "20261120-100000F"))[1:4] == [
        "--set=20261120-100000F",
        "--type=lsn",
        "--target=0/3000ABC",
    ]
    assert lines(recovering(repositoryPath=REPO, target={"name": "before-x"}), RecoverySource(REPO))[1:3] == [
        "--type=name",
        "--target=before-x",
    ]
    assert lines(recovering(repositoryPath=REPO), RecoverySource(REPO)) == [f"--repo1-path={REPO}", fetch]
    assert steps.options(recovering(repositoryPath=REPO)) is None, "unresolved (or initialised): no options"


def test_the_target_is_described_as_written() -> None:
    assert steps.describe(recovering(repositoryPath=REPO).spec.recovery) == "latest"  # type: ignore[arg-type]
    spec = recovering(repositoryPath=REPO, target={"time": "2026-11-28T10:15:00Z"}).spec.recovery
    assert spec is not None and steps.describe(spec) == "time 2026-11-28T10:15:00Z"


@pytest.mark.parametrize(
    ("recovery_spec", "message"),
    [
        ({"repositoryPath": REPO, "backup": "base"}, "exactly one of repositoryPath and backup"),
        ({}, "exactly one of repositoryPath and backup"),
        ({"backup": "b", "target": {"time": "2026-11-28T10:15:00Z", "name": "x"}}, "at most one of time"),
        ({"backup": "b", "target": {"time": "2026-11-28T10:15:00"}}, "target.time"),  # no offset
        ({"backup": "b", "target": {"time": "2026-13-28T10:15:00Z"}}, "month must be in 1..12"),
        ({"backup": "b", "target": {"name": "a\nb"}}, "target.name"),  # a line of the options file
        ({"repositoryPath": "/a/../b"}, "must not contain '..'"),
    ],
)
def test_the_model_refuses_what_admission_refuses(recovery_spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        SampleDBSpec.model_validate({"backup": {"objectStore": STORE}, "recovery": recovery_spec})


def test_a_repository_path_is_a_source_at_once() -> None:
    plan = recovery.plan_recovery(recovering(repositoryPath=REPO), None)
    assert plan == recovery.RecoveryPlan(source=RecoverySource(REPO))


def test_a_physical_backup_gives_its_repository_and_label_once_it_succeeded() -> None:
    late = recovering(backup="base", target={"time": "2026-11-20T10:06:00Z"})
    assert recovery.plan_recovery(late, physical(**STORED)).source == RecoverySource(REPO, "20261120-100000F")
    missing = recovery.plan_recovery(late, None)
    assert missing.wait and missing.problem and missing.problem.reason == "RecoverySourceMissing"
    running = recovery.plan_recovery(late, physical(phase="Running"))
    assert (
        running.wait
        and running.problem
        and "waiting for the backup to succeed (phase Running)" in running.problem.message
    )


@pytest.mark.parametrize(
    ("target", "backup", "reason", "words"),
    [
        (None, {"spec": {"method": "Logical"}, "status": STORED}, "RecoverySourceLogical", "a logical backup"),
        (None, physical(phase="Failed", message="boom"), "RecoverySourceFailed", "failed (boom)"),
        (
            None,
            physical(**{**STORED, "location": "s3://other/x/backup/db/20261120-100000F"}),
            "RecoverySourceElsewhere",
            "not in spec.backup.objectStore's bucket",
        ),
        (
            {"time": "2026-11-20T10:04:59Z"},
            physical(**STORED),
            "RecoveryTargetBeforeBackup",
            "ended at 2026-11-20T10:05:00Z",
        ),
        ({"lsn": "0/30000FF"}, physical(**STORED), "RecoveryTargetBeforeBackup", "ended at LSN 0/3000100"),
    ],
)
def test_a_backup_that_cannot_be_the_source_is_refused_by_name(
    target: dict[str, str] | None, backup: dict[str, Any], reason: str, words: str
) -> None:
    plan = recovery.plan_recovery(recovering(backup="base", **({"target": target} if target else {})), backup)
    assert plan.source is None and not plan.wait and plan.problem is not None
    assert plan.problem.reason == reason and words in plan.problem.message
    assert "spec.recovery.backup (base)" in plan.problem.message


def test_rules_the_model_leaves_to_admission_are_refused_before_anything_is_made() -> None:
    both = make_instance(
        {"backup": {"objectStore": STORE}, "recovery": {"repositoryPath": REPO}, "restore": {"backup": "x"}}
    )
    assert recovery.plan_recovery(both, None).problem.reason == "RecoverySourceConflict"  # type: ignore[union-attr]
    storeless = make_instance({"recovery": {"repositoryPath": REPO}})
    assert recovery.plan_recovery(storeless, None).problem.reason == "RecoveryWithoutObjectStore"  # type: ignore[union-attr]


def pod(name: str, **states: Any) -> dict[str, Any]:
    statuses = [{"name": "postgres", **{k: {"terminated": {"message": v}} for k, v in states.items()}}]
    return {"metadata": {"name": name}, "status": {"containerStatuses": statuses}}


def test_a_failed_recovery_is_the_primarys_termination_message() -> None:
    inst = recovering(repositoryPath=REPO)
    why = "PostgreSQL stopped recovering: recovery ended before configured recovery target was reached"
    text = f"{recovery.FAILURE_PREFIX}{why}; the repository {REPO} holds ...\n"
    problem = recovery.failure(inst, [pod(inst.primary, lastState=text)])
    assert problem is not None and problem.reason == "RecoveryFailed"
    assert problem.message.startswith(f"spec.recovery: {why}; the repository") and "re-create" in problem.message
    assert recovery.failure(inst, [pod(inst.primary, state=text)]) is not None
    running = pod(inst.primary, lastState=text)
    running["status"]["containerStatuses"][0]["state"] = {"running": {"startedAt": "2026-11-29T01:00:00Z"}}
    assert recovery.failure(inst, [running]) is None, "started again: retrying, not failed"
    assert recovery.failure(inst, [pod(inst.pod(1), lastState=text)]) is None, "a standby's is not the primary's"
    assert recovery.failure(inst, [pod(inst.primary, lastState='{"error": "x"}')]) is None


def test_status_says_what_was_asked_then_the_point_reached_and_keeps_it() -> None:
    inst = dataclasses.replace(recovering(backup="base"), recovery_source=RecoverySource(REPO, "L1"))
    asked = {"repositoryPath": REPO, "backup": "base", "backupLabel": "L1", "target": "latest"}
    assert recovery.status(inst, None, None) == asked
    answer = "archiver|...\nrecovered|2\t0/30003C0\tno recovery target specified\n\n"
    reached = recovery.status(inst, answer, None)
    assert reached == {**asked, "timeline": 2, "lsn": "0/30003C0", "reached": "no recovery target specified"}
    initialised = dataclasses.replace(inst, recovery_source=None)
    assert recovery.status(initialised, "recovered|\n", reached) == reached, "kept once known"
    assert recovery.status(recovering(backup="base"), None, None) is None, "nothing to say before it is resolved"


def test_nothing_is_created_until_the_source_is_usable_and_the_options_go_once_initialised() -> None:
    spec = {"backup": {"objectStore": STORE}, "recovery": {"backup": "base"}}
    keys = {("Secret", "s3"): {"metadata": {"name": "s3"}, "data": {"accessKeyId": "", "secretAccessKey": ""}}}
    running = {("SampleDBBackup", "base"): physical(phase="Running"), **keys}
    plan = plan_of(Snapshot(sampledb(spec, finalizers=[FINALIZER]), running))
    assert not [w for w in plan.writes if w.kind in ("ConfigMap", "StatefulSet", "Job")]
    assert plan.phase == "Degraded" and plan.requeue_after == recovery.RECHECK_SECONDS
    assert plan.status and plan.status["conditions"][0]["reason"] == "RecoverySourceNotReady"
    succeeded = {("SampleDBBackup", "base"): physical(**STORED), **keys}
    ready = Snapshot(sampledb(spec, finalizers=[FINALIZER]), succeeded)
    first = plan_of(ready)
    assert first.status and first.status["recovery"] == {
        "repositoryPath": REPO,
        "backup": "base",
        "backupLabel": "20261120-100000F",
        "target": "latest",
    }, "what was asked, from the first pass"
    config = next(w for w in first.writes if w.kind == "ConfigMap")
    assert config.body["data"][steps.RECOVERY_FILE].startswith(f"--repo1-path={REPO}\n--set=20261120-100000F\n")
    # The server runs: the init Job waits until the primary says where recovery stopped.
    sts = next(w for w in plan_of(ready).writes if w.kind == "StatefulSet").body
    sts["status"] = {"readyReplicas": 1}
    running = {**succeeded, ("StatefulSet", "db1"): sts}
    asked = {"repositoryPath": REPO, "backup": "base", "target": "latest"}
    replaying = Snapshot({**sampledb(spec, finalizers=[FINALIZER]), "status": {"recovery": asked}}, running)
    assert "Job" not in [w.kind for w in plan_of(replaying).writes]
    reached = dataclasses.replace(replaying, replication="recovered|2\t0/3000100\tno recovery target specified\n")
    assert ("Create", "Job", "InitJobMissing") in [(w.verb.value, w.kind, w.reason) for w in plan_of(reached).writes]
    done = {"initialization": {"completed": True}, "recovery": {"repositoryPath": REPO, "target": "latest"}}
    initialised = Snapshot({**sampledb(spec, finalizers=[FINALIZER]), "status": done}, keys)
    config = next(w for w in plan_of(initialised).writes if w.kind == "ConfigMap")
    assert steps.RECOVERY_FILE not in config.body["data"]

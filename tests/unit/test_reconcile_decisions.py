"""Reconcile decisions: what to write and what status to report, from observed state alone."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sampledb_operator.reconcile import children, deletion
from sampledb_operator.reconcile.status import Observation, Problem, compute_status, verdict
from sampledb_operator.resources import statefulset
from sampledb_operator.resources.instance import Instance
from tests.unit.conftest import make_instance

STS_CHILD = next(c for c in children.CHILDREN if c.kind == "StatefulSet")


def as_created(action: children.Action) -> dict[str, Any]:
    """What the API server would hand back after creating the action's body."""
    return copy.deepcopy(action.body)


def test_missing_child_is_created_with_its_fingerprint(instance: Instance) -> None:
    action = children.plan_child(STS_CHILD, instance, None)
    assert action is not None
    assert (action.verb, action.reason) == (children.Verb.CREATE, "StatefulSetMissing")
    assert children.HASH_ANNOTATION in action.body["metadata"]["annotations"]


def test_up_to_date_child_needs_no_write() -> None:
    instance = make_instance({"backup": {"schedule": "@daily"}, "instances": 2})  # every optional child called for
    for child in children.CHILDREN:
        created = children.plan_child(child, instance, None)
        assert created is not None
        assert children.plan_child(child, instance, as_created(created)) is None


def test_changed_spec_patches_only_mutable_fields() -> None:
    created = children.plan_child(STS_CHILD, make_instance(), None)
    assert created is not None
    grown = make_instance({"postgres": {"parameters": {"work_mem": "8MB"}}, "storage": {"size": "20Gi"}})
    action = children.plan_child(STS_CHILD, grown, as_created(created))
    assert action is not None
    assert (action.verb, action.reason) == (children.Verb.PATCH, "StatefulSetOutdated")
    assert "volumeClaimTemplates" not in action.body["spec"]  # immutable in a StatefulSet


def test_statefulset_scaled_by_hand_is_scaled_back(instance: Instance) -> None:
    created = children.plan_child(STS_CHILD, instance, None)
    assert created is not None
    scaled = as_created(created)
    scaled["spec"]["replicas"] = 0  # `kubectl scale --replicas=0`: the fingerprint annotation is unchanged
    action = children.plan_child(STS_CHILD, instance, scaled)
    assert action is not None
    assert (action.verb, action.reason, action.body["spec"]["replicas"]) == (
        children.Verb.PATCH,
        "StatefulSetDrifted",
        1,
    )


def test_service_patch_never_sends_cluster_ip(instance: Instance) -> None:
    headless = next(c for c in children.CHILDREN if c.kind == "Service")
    created = children.plan_child(headless, instance, None)
    assert created is not None
    observed = as_created(created)
    observed["metadata"]["annotations"][children.HASH_ANNOTATION] = "old"
    action = children.plan_child(headless, instance, observed)
    assert action is not None and "clusterIP" not in action.body["spec"]


def test_secret_is_generated_once_and_user_secret_never_written() -> None:
    generated = make_instance()
    action = children.plan_secret(generated, None)
    assert action is not None and action.fill is not None and action.body == {}  # no password in the plan
    assert action.fill(lambda: "pw")["stringData"]["password"] == "pw"
    assert children.plan_secret(generated, {"metadata": {}}) is None
    users = make_instance({"credentials": {"secretName": "mine"}})
    assert children.plan_secret(users, None) is None


def test_user_secret_problems_name_the_field_and_fix() -> None:
    users = make_instance({"credentials": {"secretName": "mine"}})
    missing = children.user_secret_problem(users, None)
    assert missing is not None and missing.startswith("spec.credentials.secretName (mine)") and "create it" in missing
    lacking = children.user_secret_problem(users, {"data": {"username": "YQ=="}})
    assert lacking is not None and "password, superuser-password" in lacking
    full = {"data": {"username": "a", "password": "b", "superuser-password": "c"}}
    assert children.user_secret_problem(users, full) is None


def sts(ready: int, *, rolled: bool = True) -> dict[str, Any]:
    manifest = statefulset.statefulset(make_instance())
    manifest["metadata"]["generation"] = 2
    manifest["status"] = {
        "readyReplicas": ready,
        "observedGeneration": 2,
        "currentRevision": "r1",
        "updateRevision": "r1" if rolled else "r2",
    }
    return manifest


def job(condition: str | None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded"}] if condition else []
    return {
        "metadata": {"name": "db1-init"},
        "status": {"conditions": conditions, "completionTime": "2026-01-01T00:00:00Z"},
    }


def test_verdict_walks_the_lifecycle() -> None:
    assert verdict({}, Observation(None, None)).phase == "Provisioning"
    assert verdict({}, Observation(sts(0), None)).phase == "Provisioning"
    assert verdict({}, Observation(sts(1), job(None))).phase == "Initializing"
    assert verdict({}, Observation(sts(1), job("Complete"))).phase == "Ready"
    rolling = verdict({}, Observation(sts(1, rolled=False), job("Complete")))
    assert (rolling.phase, rolling.progressing[1]) == ("Ready", "RollingUpdate")
    failed = verdict({}, Observation(sts(1), job("Failed")))
    assert (failed.phase, failed.degraded[1]) == ("Degraded", "InitializationFailed")
    assert "delete the Job to retry" in failed.ready[2]


def test_problems_win_and_are_all_reported() -> None:
    problems = (Problem("InvalidParameters", "spec.postgres.parameters.port: managed"), Problem("SecretInvalid", "x"))
    decided = verdict({}, Observation(sts(1), job("Complete"), problems))
    assert decided.phase == "Degraded"
    assert decided.degraded == ("True", "InvalidParameters", "spec.postgres.parameters.port: managed; x")


def test_status_is_stable_when_nothing_changes() -> None:
    inst = make_instance()
    observation = Observation(sts(1), job("Complete"))
    first = compute_status(inst, {}, observation, "2026-01-01T00:00:00Z")
    again = compute_status(inst, first, observation, "2026-01-02T00:00:00Z")
    assert again == first  # so the reconciler writes nothing
    assert first["phase"] == "Ready" and first["initialization"]["completed"] is True
    assert first["version"] == 17 and first["endpoint"] == "db1.team-a.svc:5432"
    assert None not in first.values()


def test_transition_time_moves_only_on_status_change() -> None:
    inst = make_instance()
    provisioning = compute_status(inst, {}, Observation(sts(0), None), "t1")
    ready = compute_status(inst, provisioning, Observation(sts(1), job("Complete")), "t2")
    times = {c["type"]: c["lastTransitionTime"] for c in ready["conditions"]}
    assert times == {"Ready": "t2", "Progressing": "t2", "Degraded": "t1"}


def test_initialization_is_remembered_after_the_job_is_gone() -> None:
    inst = make_instance()
    done = compute_status(inst, {}, Observation(sts(1), job("Complete")), "t1")
    later = compute_status(inst, done, Observation(sts(1), None), "t2")
    assert later["phase"] == "Ready" and later["initialization"] == done["initialization"]


def test_backup_schedule_brings_a_cronjob_and_a_kept_volume() -> None:
    cron_child = next(c for c in children.CHILDREN if c.kind == "CronJob")
    pvc_child = next(c for c in children.CHILDREN if c.kind == "PersistentVolumeClaim")
    scheduled = make_instance({"backup": {"schedule": "0 3 * * *", "retention": 5, "verify": True}})
    created = children.plan_child(cron_child, scheduled, None)
    assert created is not None
    cronjob = created.body
    assert cronjob["spec"]["schedule"] == "0 3 * * *"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    env = {
        e["name"]: e.get("value")
        for e in cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (env["RETAIN"], env["VERIFY"], env["BACKUP_LABEL"]) == ("5", "true", "scheduled")
    # Schedule removed: the CronJob goes, the volume with the backups stays.
    unscheduled = make_instance()
    removal = children.plan_child(cron_child, unscheduled, as_created(created))
    assert removal is not None
    assert (removal.verb, removal.reason) == (children.Verb.DELETE, "CronJobNotNeeded")
    pvc = children.plan_child(pvc_child, scheduled, None)
    assert pvc is not None
    assert children.plan_child(pvc_child, unscheduled, as_created(pvc)) is None
    assert children.plan_child(cron_child, unscheduled, None) is None


@pytest.mark.parametrize(
    ("spec", "policy"),
    [
        ({"deletionPolicy": "Delete", "database": {"owner": "postgres"}}, "Delete"),
        ({"deletionPolicy": "Retain"}, "Retain"),
        ({"deletionPolicy": "Snapshot"}, "Retain"),  # the snapshot Job is built from the unreadable spec
        ({"deletionPolicy": "Shred"}, "Retain"),
        ({}, "Retain"),
        ("not an object", "Retain"),
    ],
)
def test_an_unreadable_spec_is_deleted_with_a_policy_that_loses_nothing_unasked(spec: object, policy: str) -> None:
    chosen, why = deletion.readable_policy(spec)
    assert chosen.value == policy
    assert ("data volumes are kept" in why) == (policy == "Retain" and spec != {"deletionPolicy": "Retain"})

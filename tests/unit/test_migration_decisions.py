"""Migration decisions: one Job per ConfigMap content, started only on a ready database."""

from __future__ import annotations

import json
from typing import Any

from sampledb_operator.reconcile.children import Verb
from sampledb_operator.reconcile.migrations import job_name, plan_migrations
from tests.unit.conftest import make_instance

INSTANCE = make_instance({"migrations": {"configMap": "schema"}})
CM = {"metadata": {"name": "schema"}, "data": {"001_a.sql": "CREATE TABLE a (x int);"}}


def finished_job(condition: str) -> dict[str, Any]:
    return {"metadata": {"name": "db1-migrate-x"}, "status": {"conditions": [{"type": condition, "status": "True"}]}}


def pod_saying(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": {"containerStatuses": [{"state": {"terminated": {"message": json.dumps(summary)}}}]},
    }


def test_job_name_follows_the_content() -> None:
    edited = {**CM, "data": {**CM["data"], "002_b.sql": "CREATE TABLE b (y int);"}}
    assert job_name(INSTANCE, CM) == job_name(INSTANCE, {**CM, "metadata": {"name": "schema", "labels": {"x": "y"}}})
    assert job_name(INSTANCE, CM) != job_name(INSTANCE, edited)
    assert job_name(INSTANCE, CM).startswith("db1-migrate-")
    assert len(job_name(INSTANCE, CM)) <= 63


def test_waits_for_a_ready_database_then_creates_the_job_once() -> None:
    assert plan_migrations(INSTANCE, CM, None, [], database_ready=False).action is None
    plan = plan_migrations(INSTANCE, CM, None, [], database_ready=True)
    assert plan.action is not None
    assert (plan.action.verb, plan.action.kind, plan.action.name) == (Verb.CREATE, "Job", job_name(INSTANCE, CM))
    volumes = plan.action.body["spec"]["template"]["spec"]["volumes"]
    assert {"name": "migrations", "configMap": {"name": "schema"}} in volumes
    running = plan_migrations(INSTANCE, CM, {"metadata": {"name": "j"}, "status": {}}, [], database_ready=True)
    assert running.action is None
    assert running.status["phase"] == "Running"


def test_outcomes_reach_the_status() -> None:
    done = plan_migrations(
        INSTANCE,
        CM,
        finished_job("Complete"),
        [pod_saying({"lastApplied": "001_a", "appliedNow": 1})],
        database_ready=True,
    )
    assert (done.status["phase"], done.status["lastApplied"], done.problem) == ("Succeeded", "001_a", None)
    summary = {"failed": "002_b", "error": 'ERROR:  relation "nowhere" does not exist', "lastApplied": "001_a"}
    failed = plan_migrations(INSTANCE, CM, finished_job("Failed"), [pod_saying(summary)], database_ready=True)
    assert failed.status["phase"] == "Failed"
    assert failed.problem is not None
    assert failed.problem.reason == "MigrationFailed"
    assert (
        'migration 002_b failed and was rolled back: ERROR:  relation "nowhere" does not exist'
        in failed.problem.message
    )


def test_missing_configmap_names_the_field() -> None:
    plan = plan_migrations(INSTANCE, None, None, [], database_ready=True)
    assert plan.problem is not None
    assert plan.problem.message.startswith("spec.migrations.configMap (schema): ConfigMap not found")


def test_migrations_wait_for_events_not_for_a_clock() -> None:
    """An edit of the ConfigMap wakes the instance (tests/unit/test_cache.py): no periodic look, whatever the state."""
    done = [pod_saying({"lastApplied": "001_a"})]
    plans = [
        plan_migrations(INSTANCE, CM, None, [], database_ready=False),
        plan_migrations(INSTANCE, CM, finished_job("Complete"), done, database_ready=True),
        plan_migrations(INSTANCE, None, None, [], database_ready=True),
    ]
    assert all(not hasattr(plan, "requeue_after") for plan in plans)

"""A changed configuration reaches the database only after a server has started with it (no I/O)."""

from __future__ import annotations

import json
from typing import Any

from sampledb_operator.reconcile.config_check import job_name, plan_config_check
from sampledb_operator.resources.statefulset import statefulset
from tests.unit.conftest import make_instance

RUNNING = make_instance({"postgres": {"version": 15, "parameters": {"work_mem": "4MB"}}})
WANTED = make_instance({"postgres": {"version": 15, "parameters": {"transaction_timeout": "5s"}}})


def job(condition: str | None) -> dict[str, Any]:
    conditions = [{"type": condition, "status": "True", "reason": "BackoffLimitExceeded"}] if condition else []
    return {"metadata": {"name": job_name(WANTED)}, "status": {"conditions": conditions}}


def pod_saying(summary: dict[str, Any]) -> dict[str, Any]:
    terminated = {"message": json.dumps(summary)}
    return {
        "metadata": {"creationTimestamp": "t"},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def test_an_unchanged_or_new_configuration_needs_no_check() -> None:
    assert plan_config_check(RUNNING, statefulset(RUNNING), None, []).hold is False
    assert plan_config_check(WANTED, None, None, []).hold is False


def test_a_changed_configuration_is_held_back_until_its_check_passes() -> None:
    sts = statefulset(RUNNING)
    first = plan_config_check(WANTED, sts, None, [])
    assert first.hold and first.action is not None and first.action.name == job_name(WANTED)
    script = first.action.body["spec"]["template"]["spec"]["containers"][0]["command"][2]
    assert "transaction_timeout = '5s'" in script
    assert first.action.body["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "1Gi"
    assert plan_config_check(WANTED, sts, job(None), []).hold is True
    assert plan_config_check(WANTED, sts, job("Complete"), []).hold is False


def test_a_refused_configuration_is_reported_with_the_servers_words() -> None:
    server = "LOG: unrecognized configuration parameter 'transaction_timeout'"
    plan = plan_config_check(WANTED, statefulset(RUNNING), job("Failed"), [pod_saying({"error": server})])
    assert plan.hold and plan.problem is not None and plan.action is None
    assert plan.problem.reason == "ParametersRejected"
    assert server in plan.problem.message and "spec.postgres.parameters" in plan.problem.message
    without_pod = plan_config_check(WANTED, statefulset(RUNNING), job("Failed"), [])
    assert without_pod.problem is not None and "BackoffLimitExceeded" in without_pod.problem.message

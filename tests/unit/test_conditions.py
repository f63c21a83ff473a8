"""One rule for every condition the operator writes: the time moves only with the status, messages are bounded.

The three writers (the reconcile's status, a spec the model refuses, the deletion state machine)
are each driven twice: a long message first, then the same status with another reason and
message. Each must bound the message and keep `lastTransitionTime`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sampledb_operator.reconcile import conditions, deletion
from sampledb_operator.reconcile.conditions import MAX_MESSAGE, Value
from sampledb_operator.reconcile.decide import FINALIZER, plan_invalid
from sampledb_operator.reconcile.status import Observation, Problem, compute_status
from tests.unit.conftest import make_instance

HUGE = "spec.postgres.parameters: " + "x" * 40_000


def sampledb(spec: dict[str, Any]) -> dict[str, Any]:
    meta = {"name": "db1", "namespace": "team-a", "generation": 3, "uid": "u1", "finalizers": [FINALIZER]}
    return {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": meta, "spec": spec}


def via_status(message: str, reason: str, now: str, previous: dict[str, Any]) -> list[dict[str, Any]]:
    problem = Problem(reason, message)
    status = compute_status(make_instance(), previous, Observation(None, None, problems=(problem,)), now)
    previous.clear()
    previous.update(status)
    conds: list[dict[str, Any]] = status["conditions"]
    return conds


def via_invalid_spec(message: str, reason: str, now: str, previous: dict[str, Any]) -> list[dict[str, Any]]:
    obj = sampledb({})
    obj["status"] = dict(previous)
    plan = plan_invalid(obj, Problem(reason, message), now=now)
    assert plan.status is not None and [e.reason for e in plan.events] == [reason]
    previous.update(plan.status)
    conds: list[dict[str, Any]] = plan.status["conditions"]
    return conds


def via_deletion(message: str, reason: str, now: str, previous: dict[str, Any]) -> list[dict[str, Any]]:
    obj = sampledb({})
    obj["status"] = dict(previous)
    status = deletion._status(make_instance(), obj, conditions.DEGRADED, Value("True", reason, message), now)
    previous.update(status or {})
    conds: list[dict[str, Any]] = previous["conditions"]
    return conds


Writer = Callable[[str, str, str, dict[str, Any]], list[dict[str, Any]]]


@pytest.mark.parametrize("write", [via_status, via_invalid_spec, via_deletion], ids=lambda w: w.__name__)
def test_every_writer_bounds_messages_and_moves_the_time_only_with_the_status(write: Writer) -> None:
    status: dict[str, Any] = {}
    first = {c["type"]: c for c in write(HUGE, "InvalidParameters", "t1", status)}
    assert first["Degraded"]["status"] == "True"
    for cond in first.values():
        assert len(cond["message"]) <= MAX_MESSAGE + 40, cond["type"]
        assert cond["lastTransitionTime"] == "t1"
    second = {c["type"]: c for c in write("another problem", "SecretInvalid", "t2", status)}
    assert (second["Degraded"]["reason"], second["Degraded"]["message"]) == ("SecretInvalid", "another problem")
    assert second["Degraded"]["lastTransitionTime"] == "t1"  # still True: the time stays


def test_time_moves_when_the_status_changes_and_unknown_types_are_kept() -> None:
    before = [
        {"type": "Custom", "status": "True", "reason": "X", "message": "", "lastTransitionTime": "t0"},
        *conditions.merge(None, {conditions.READY: Value("False", "PodNotReady")}, generation=1, now="t1"),
    ]
    after = conditions.merge(before, {conditions.READY: Value("True", "DatabaseReady")}, generation=2, now="t2")
    assert [c["type"] for c in after] == ["Ready", "Custom"]
    assert (after[0]["lastTransitionTime"], after[0]["observedGeneration"]) == ("t2", 2)
    assert after[1] == before[0]


def test_an_unchanged_invalid_spec_is_not_written_again() -> None:
    obj = sampledb({})
    problem = Problem("InvalidSpec", "spec.database.owner: reserved")
    first = plan_invalid(obj, problem, now="t1")
    assert first.status is not None and first.events
    obj["status"] = first.status
    again = plan_invalid(obj, problem, now="t2")
    assert again.status is None and again.events == ()

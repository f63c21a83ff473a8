"""From a finished backup Job and its Pod's termination message to the SampleDBBackup status."""

from __future__ import annotations

import json
from typing import Any

from sampledb_operator.reconcile.backup import outcome_status, termination_summary
from tests.unit.conftest import make_instance


def pod(message: str | None, created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    terminated = {"exitCode": 0, **({"message": message} if message is not None else {})}
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"state": {"terminated": terminated}}]},
    }


def job(condition: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "b1"},
        "status": {
            "startTime": "2026-01-01T00:00:00Z",
            "completionTime": "2026-01-01T00:01:00Z",
            "conditions": [
                {"type": condition, "status": "True", "reason": "BackoffLimitExceeded", "message": "too many failures"}
            ],
        },
    }


def test_summary_comes_from_the_newest_pod_with_json() -> None:
    older = pod(json.dumps({"error": "first try failed"}), "2026-01-01T00:00:00Z")
    newer = pod(json.dumps({"file": "db/x.dump", "bytes": 12}), "2026-01-01T00:05:00Z")
    assert termination_summary([older, newer]) == {"file": "db/x.dump", "bytes": 12}
    assert termination_summary([pod("not json"), pod(None)]) == {}


def test_succeeded_backup_records_location_size_and_verification() -> None:
    summary = {"file": "db1/20260101T000000Z-b1.dump", "bytes": 4096, "sha256": "ab" * 32, "verified": True}
    status = outcome_status(make_instance(), job("Complete"), summary)
    assert status == {
        "job": "b1",
        "startTime": "2026-01-01T00:00:00Z",
        "phase": "Succeeded",
        "completionTime": "2026-01-01T00:01:00Z",
        "location": "db1-backups:/backups/db1/20260101T000000Z-b1.dump",
        "bytes": 4096,
        "sha256": "ab" * 32,
        "verified": True,
    }


def test_failed_backup_says_why() -> None:
    assert (
        outcome_status(make_instance(), job("Failed"), {"error": "backup x does not restore"})["message"]
        == "backup x does not restore"
    )
    assert outcome_status(make_instance(), job("Failed"), {})["message"] == "BackoffLimitExceeded: too many failures"

"""The tests' audit reading (`tests/audit_log.py`): an offset taken while the API server was mid-line is safe."""

from __future__ import annotations

import json
from pathlib import Path

from tests.audit_log import audit_entries


def _event(name: str) -> str:
    return json.dumps(
        {
            "stage": "ResponseComplete",
            "verb": "create",
            "user": {"username": "operator"},
            "objectRef": {"resource": "jobs", "namespace": "ns", "name": name},
            "responseStatus": {"code": 201},
            "requestURI": f"/apis/batch/v1/namespaces/ns/jobs/{name}",
            "stageTimestamp": "2026-11-28T03:00:00.000000Z",
        }
    )


def test_an_offset_in_the_middle_of_a_line_counts_from_the_next_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    first = _event("before") + "\n"
    log.write_text(first + _event("after") + "\n" + _event("unfinished"))

    names = [e.name for e in audit_entries(log, len(first) // 2)]

    assert names == ["after"]  # not half of "before", and not the line still being written


def test_an_offset_at_a_line_start_counts_that_line(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    first = _event("before") + "\n"
    log.write_text(first + _event("after") + "\n")

    assert [e.name for e in audit_entries(log, len(first))] == ["after"]
    assert [e.name for e in audit_entries(log)] == ["before", "after"]

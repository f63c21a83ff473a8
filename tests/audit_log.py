"""The API server's audit log as the tests read it: one entry per completed request.

Shared by the integration tests (no write or read on a no-op reconcile) and the fault tests (one
Job per purpose, no write during an outage).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks.audit import audit_lines


@dataclass(frozen=True)
class AuditEntry:
    """One completed request, as the API server recorded it."""

    verb: str
    user: str
    resource: str
    namespace: str | None
    name: str | None
    code: int
    uri: str
    time: datetime  # when the response was sent (stageTimestamp)


def audit_entries(path: Path, offset: int = 0) -> list[AuditEntry]:
    """Every ResponseComplete event of the audit log from byte `offset` on.

    `offset` is the log's size when a test began: the API server may have been mid-line then, so
    only lines beginning at or after it count (`audit_lines`).
    """
    entries = []
    for line in audit_lines(path, offset, path.stat().st_size):
        event = json.loads(line) if line.strip() else {}
        if event.get("stage") != "ResponseComplete":
            continue
        ref = event.get("objectRef") or {}
        entries.append(
            AuditEntry(
                verb=event["verb"],
                user=event["user"]["username"],
                resource=ref.get("resource", ""),
                namespace=ref.get("namespace"),
                name=ref.get("name"),
                code=int((event.get("responseStatus") or {}).get("code", 0)),
                uri=event["requestURI"],
                time=datetime.fromisoformat(event["stageTimestamp"]),
            )
        )
    return entries

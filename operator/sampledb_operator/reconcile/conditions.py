"""Every condition of a SampleDB is built here, with one rule for time and one for length.

- `lastTransitionTime` changes only when a condition's `status` changes (True/False/Unknown), as
  metav1.Condition documents: a new reason or message alone keeps it, so "how long has it been
  not Ready" stays answerable while the message says what is happening now.
- Every message is bounded far below the API's 32 KiB, so a status write never fails on length.

The reconcile (`status.py`), a spec the model refuses (`instance.py`) and the deletion state
machine (`deletion.py`) all go through `merge`, which keeps the conditions it is not asked to
change and returns a list equal to the previous one when nothing changed (so callers write only
on a real change).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
ARCHIVING = "ContinuousArchiving"  # with spec.backup.objectStore (`reconcile/archiving.py`)
ORDER = (READY, PROGRESSING, DEGRADED)
# Far below the API's 32 KiB per condition message: a status write must never fail on its length.
MAX_MESSAGE = 4000


class Value(NamedTuple):
    """What a condition says: its status, a CamelCase reason and a message naming the field and the fix."""

    status: str
    reason: str
    message: str = ""


def bounded(message: str) -> str:
    """`message`, shortened with a note when it is longer than a condition should carry."""
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"


def condition(
    ctype: str, value: Value, before: Mapping[str, Any] | None, *, generation: int, now: str
) -> dict[str, Any]:
    """One condition; its time is `now` only when it is new or its status changed."""
    kept = before is not None and before.get("status") == value.status and before.get("lastTransitionTime")
    return {
        "type": ctype,
        "status": value.status,
        "reason": value.reason,
        "message": bounded(value.message),
        "lastTransitionTime": before["lastTransitionTime"] if kept and before is not None else now,
        "observedGeneration": generation,
    }


def merge(
    previous: list[dict[str, Any]] | None, updates: Mapping[str, Value], *, generation: int, now: str
) -> list[dict[str, Any]]:
    """`previous` with `updates` applied: standard types first in a fixed order, then the others."""
    by_type = {c["type"]: c for c in previous or []}
    for ctype, value in updates.items():
        by_type[ctype] = condition(ctype, value, by_type.get(ctype), generation=generation, now=now)
    ordered = [by_type.pop(t) for t in ORDER if t in by_type]
    return ordered + [by_type[t] for t in sorted(by_type)]

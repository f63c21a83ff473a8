"""`Plan`: what one pass decided, as data. `reconcile.decide` makes it; `act.executor` carries it out.

The writes are children's `Action`s in the order they must be made; the status (a merge patch of
`/status`) comes after them and the events last, so that a status never announces a write that
failed and an event never announces a status that was not written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sampledb_operator.reconcile.children import Action


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event about the SampleDB."""

    type: str
    reason: str
    note: str
    action: str


@dataclass(frozen=True)
class Plan:
    """The writes, the status and the events one pass calls for, and when to look again."""

    writes: tuple[Action, ...] = ()
    status: dict[str, Any] | None = None  # a merge patch of /status (nulls remove keys); None: already right
    events: tuple[Event, ...] = ()
    phase: str | None = None
    # Look again after this many seconds: something waited for sends no event (a timeout).
    requeue_after: float | None = None
    waiting: str | None = None  # what the pass waits for, when it makes no write ("FinalSnapshot")
    # Reads only a Pod can answer (Verb.EXEC), made before the writes; the pass then decides again
    # with their output in `Snapshot.probed`. Only while a failover is being decided.
    probes: tuple[Action, ...] = ()

    def described(self) -> list[str]:
        """The writes as `<verb> <kind>/<name> (<reason>)`, for the log and `Outcome`."""
        return [f"{w.verb} {w.kind}/{w.name} ({w.reason})" for w in self.writes]

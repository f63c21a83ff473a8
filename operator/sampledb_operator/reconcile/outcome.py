"""`Outcome`: what one reconcile pass did, for metrics and logs."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Outcome:
    """The phase reached and the writes made, phrased as `<verb> <kind>/<name> (<reason>)`."""

    phase: str | None = None
    actions: list[str] = field(default_factory=list)
    # Look again after this many seconds: something this object waits for sends no event to it.
    requeue_after: float | None = None
    events: list[str] = field(default_factory=list)  # the reasons of the events it recorded

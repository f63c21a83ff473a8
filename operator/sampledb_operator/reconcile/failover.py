"""Failover and switchover: another server becomes the primary, never leaving two primaries.

A failover promotes the most advanced standby when the primary is lost. A switchover moves a
healthy primary on request (the annotation `sampledb.io/switchover-to: <Pod>`), when
`spec.instances` leaves the primary's Pod out (a scale-down after a failover to a higher Pod: to
the lowest ready Pod kept), or when the primary's node is cordoned (`kubectl drain` cordons, then
evicts, and retries an eviction the primary's budget refuses: to the lowest ready standby on a
node that is not, after which the old primary is a standby its budget lets go). Both run the
same steps; a switchover stops the old primary cleanly (the preStop hook's fast shutdown sends
the standbys every commit), so it loses none.

Pure, like the rest of `reconcile`: the servers' WAL positions come in as `probed` (read by the
act layer with `psql` through `pods/exec`, only while a failover is being decided), and every
write goes out as an `Action`.

Who decides: the operator (its elected leader), from its watch caches. Its decision is written to
`status.failover` before anything is acted on, and each step below is idempotent, so an operator
killed at any point resumes from the status and promotes once.

    Serving --(the primary's Pod is gone, being deleted or not ready; a standby is ready)-->
      Fencing: status.failover {fromPod, reason, startTime}; the ConfigMap names no primary, so
      no server that starts now (the old primary's Pod made again) starts as one;
      --> the old primary's Pod, if it was created before startTime, is deleted with a one-second
          grace; the kubelet removes the object only once its server has stopped;
      --> probe the ready standbys (pg_is_in_recovery, received and replayed WAL positions)
      --> Promoting: {..., toPod: the standby that received most, position}
    Serving --(a switchover asked for, to a ready standby)--> Promoting {..., switchover: true}
      (the annotation is removed once its Pod is the primary; one naming no ready standby is
      removed at once, with a warning event)
    Promoting (the children now follow toPod: `Instance.primary`):
      the ConfigMap names toPod the primary, so the old primary, should it start again, finds
      itself a standby and rewinds (the start script); the read-write Service, role labels and
      budgets move to toPod;
      --> a switchover stops the old primary: its Pod, if created before startTime, is deleted
          with 30 s for the preStop hook's fast shutdown, and nothing is promoted until it is gone;
      --> pg_promote on toPod (a no-op if it is already promoted); with an object store, the
          segments it streamed are first marked for its archiver (`archive.REARCHIVE_STREAMED`)
      --> Completed: status.currentPrimary = toPod, status.failover.completionTime.
    toPod lost before its promotion: elected again among the other ready standbys.

Why a failover fences before it elects: a primary whose server crashed is often restarted in its
Pod by the kubelet within a second, and accepts writes again through the read-write Service (its
Pod keeps its address) until it is stopped. Electing first would promote a standby that may lack
those writes; electing once the old primary can no longer write counts every write it
acknowledged that reached a standby (seen on the real node: 12 commits lost with the election
first, none with the fence first).

Not handled yet (issue #16): a lost node, whose Pods are never confirmed stopped. Its primary
must fence itself (a lease its agent renews; docs/plans/high-availability.md); until then such a
failover waits for the old Pod to go, which a force delete by an administrator allows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sampledb_operator.api.common import FailoverState
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.status import pod_ready
from sampledb_operator.resources import archive
from sampledb_operator.resources.instance import SWITCHOVER_ANNOTATION, Instance
from sampledb_operator.resources.statefulset import SERVER_CONTAINER as CONTAINER
from sampledb_operator.resources.statefulset import server_sql

FENCE_GRACE_SECONDS = 1  # SIGTERM, then SIGKILL a second later: the old primary must stop, not finish politely
SWITCHOVER_GRACE_SECONDS = 30  # the preStop hook's fast shutdown: every commit reaches the standbys first
RECHECK_SECONDS = 1.0
POSITION_SQL = "select pg_is_in_recovery(), pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()"
PROMOTE_SQL = "select case when pg_is_in_recovery() then pg_promote(true, 60) else true end"


@dataclass(frozen=True)
class Position:
    """How far a standby got: the WAL it received (flushed) and replayed, as byte positions."""

    received: int
    replayed: int


@dataclass(frozen=True)
class FailoverPlan:
    """What one pass does to change the primary (or to wait for that)."""

    actions: tuple[Action, ...] = ()
    probes: tuple[Action, ...] = ()  # reads to make, then decide again with their answers
    failover: dict[str, Any] | None = None  # status.failover to write
    promoted: str | None = None  # the Pod now primary: status.currentPrimary
    event: tuple[str, str, str] | None = None
    progress: str | None = None  # what the failover is doing, for the Ready condition
    requeue_after: float | None = None
    switchover: bool = False

    @property
    def reason(self) -> str:
        """The Ready condition's reason while the primary changes."""
        return "SwitchingOver" if self.switchover else "FailingOver"


def switchover_request(obj: dict[str, Any]) -> str | None:
    """The Pod a switchover is asked to (the SampleDB's annotation), or None."""
    return (obj["metadata"].get("annotations") or {}).get(SWITCHOVER_ANNOTATION) or None


def lsn(text: str) -> int:
    """A `pg_lsn` ("16/B374D848") as a byte position."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) + int(low, 16)


def parse_position(answer: str | None) -> Position | None:
    """A standby's answer to POSITION_SQL; None for a server that is not a standby or did not answer."""
    fields = (answer or "").strip().split("|")
    if len(fields) != 3 or fields[0] != "t" or not fields[2]:
        return None
    try:
        replayed = lsn(fields[2])
        return Position(received=max(lsn(fields[1]) if fields[1] else 0, replayed), replayed=replayed)
    except ValueError:
        return None


def cordoned(pods: Sequence[dict[str, Any]], node: Callable[[str], dict[str, Any] | None]) -> dict[str, str]:
    """The Pods whose node is cordoned (`spec.unschedulable`, the start of a drain), with that node's name."""
    found = {}
    for pod in pods:
        name = (pod.get("spec") or {}).get("nodeName")
        if name and ((node(name) or {}).get("spec") or {}).get("unschedulable"):
            found[pod["metadata"]["name"]] = name
    return found


def lost(pod: dict[str, Any] | None) -> str | None:
    """Why the primary's Pod cannot serve (None: it serves)."""
    if pod is None:
        return "its Pod is gone"
    if pod["metadata"].get("deletionTimestamp"):
        return "its Pod is being deleted"
    if not pod_ready(pod):
        return "its Pod is not ready"
    return None


def elect(probed: Mapping[str, str | None], ordinal: Callable[[str], int]) -> tuple[str, Position] | None:
    """The standby that received the most WAL (then replayed the most, then the lowest ordinal)."""
    positions = {pod: p for pod, answer in probed.items() if (p := parse_position(answer)) is not None}
    if not positions:
        return None
    best = max(positions, key=lambda pod: (positions[pod].received, positions[pod].replayed, -ordinal(pod)))
    return best, positions[best]


def format_lsn(position: int) -> str:  # noqa: D103
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


def plan_failover(
    instance: Instance,
    previous: dict[str, Any] | None,
    pods: Sequence[dict[str, Any]],
    probed: Mapping[str, str | None] | None,
    *,
    now: str,
    eligible: bool,
    requested: str | None = None,
    drained: Mapping[str, str] | None = None,
) -> FailoverPlan | None:
    """The step for this pass; None when the primary serves (or a failover may not start).

    `requested` is the Pod a switchover is asked to (`switchover_request`); `drained`, the Pods on
    a cordoned node (`cordoned`).
    """
    by_name = {p["metadata"]["name"]: p for p in pods}
    failover = previous or {}
    if instance.fencing:
        return _fence_then_elect(instance, failover, by_name, probed, now=now)
    if instance.target_primary is None:
        if requested == instance.serving_primary:
            return FailoverPlan(actions=(_served(instance, requested),))
        if not (eligible and instance.replicas > 1):
            return None
        why = lost(by_name.get(instance.serving_primary))
        if why is None:
            return _switchover(instance, by_name, requested, drained or {}, now=now)
        return _lost(instance, by_name, why, now=now)
    switchover = bool(failover.get("switchover"))
    old, target = failover.get("fromPod", instance.serving_primary), instance.target_primary
    if lost(by_name.get(target)) is not None:
        why = f"{failover.get('reason')}; then {target}, chosen to replace it, was lost too"
        return _elect(instance, by_name, probed, lost_pod=old, why=why, now=now, excluded=target, started=failover)
    doing = f"{'switching' if switchover else 'failing'} over to {target}"
    grace = SWITCHOVER_GRACE_SECONDS if switchover else FENCE_GRACE_SECONDS
    stopping = _stop(old, by_name.get(old), failover, doing, grace, switchover=switchover)
    if stopping is not None:
        return stopping
    promote = Action(
        Verb.EXEC,
        "Pod",
        target,
        "PromoteStandby",
        {"container": CONTAINER, "command": archive.promote_command(instance, server_sql(PROMOTE_SQL)), "expect": "t"},
    )
    done = {**failover, "state": FailoverState.COMPLETED.value, "completionTime": now}
    note = f"{target} promoted: it serves writes in place of {old} ({failover.get('reason')})"
    event = ("Normal", "SwitchedOver" if switchover else "FailedOver", note)
    return FailoverPlan(actions=(promote,), failover=done, promoted=target, event=event, switchover=switchover)


def _stop(
    old: str, pod: dict[str, Any] | None, failover: dict[str, Any], doing: str, grace: int, *, switchover: bool = False
) -> FailoverPlan | None:
    """Delete the old primary's Pod (if made before the decision) and wait until it is gone; None once it is."""
    if pod is not None and pod["metadata"].get("deletionTimestamp"):
        progress = f"{doing}: waiting for {old}'s server to stop"
        return FailoverPlan(progress=progress, requeue_after=RECHECK_SECONDS, switchover=switchover)
    if pod is not None and pod["metadata"].get("creationTimestamp", "") <= failover.get("startTime", ""):
        fence = Action(Verb.DELETE, "Pod", old, "StopOldPrimary", {"gracePeriodSeconds": grace})
        return FailoverPlan(actions=(fence,), progress=f"{doing}: stopping {old}", switchover=switchover)
    return None


def _lost(instance: Instance, by_name: Mapping[str, dict[str, Any]], why: str, *, now: str) -> FailoverPlan:
    """Record the failover (Fencing) when a standby is ready to take over; else wait, the old primary kept."""
    old = instance.serving_primary
    if not _candidates(by_name, old):
        return FailoverPlan(progress=f"the primary {old} is lost ({why}) and no standby is ready to replace it")
    reason = f"the primary {old} was lost: {why}"
    record = {"state": FailoverState.FENCING.value, "fromPod": old, "reason": reason, "startTime": now}
    note = f"{reason}; stopping it, then promoting the most advanced ready standby"
    return FailoverPlan(
        failover=record, event=("Warning", "FailoverStarted", note), progress=f"failing over: stopping {old}"
    )


def _candidates(by_name: Mapping[str, dict[str, Any]], *excluded: str | None) -> list[str]:
    return sorted(name for name, pod in by_name.items() if name not in excluded and lost(pod) is None)


def _fence_then_elect(
    instance: Instance,
    failover: dict[str, Any],
    by_name: Mapping[str, dict[str, Any]],
    probed: Mapping[str, str | None] | None,
    *,
    now: str,
) -> FailoverPlan:
    """Fencing: the old primary stopped first, then the standbys probed and the most advanced recorded."""
    old = failover.get("fromPod", instance.serving_primary)
    stopping = _stop(old, by_name.get(old), failover, "failing over", FENCE_GRACE_SECONDS)
    if stopping is not None:
        return stopping
    return _elect(instance, by_name, probed, lost_pod=old, why=failover.get("reason", ""), now=now, started=failover)


def _switchover(
    instance: Instance,
    by_name: Mapping[str, dict[str, Any]],
    requested: str | None,
    drained: Mapping[str, str],
    *,
    now: str,
) -> FailoverPlan | None:
    """A switchover asked for, or needed by a scale-down below the primary or a drain; None when there is none."""
    primary = instance.serving_primary
    kept = [instance.pod(i) for i in range(instance.spec.instances)]
    target: str | None
    if requested is not None:
        target, why = requested, f"a switchover to {requested} was asked for (annotation {SWITCHOVER_ANNOTATION})"
    elif instance.primary_ordinal >= instance.spec.instances:
        target = next((pod for pod in kept if lost(by_name.get(pod)) is None), None)
        why = f"spec.instances {instance.spec.instances} leaves out the primary {primary}"
    elif primary in drained:
        ready = (pod for pod in kept if pod != primary and pod not in drained and lost(by_name.get(pod)) is None)
        target = next(ready, None)
        why = f"the primary's node {drained[primary]} is cordoned (a drain): {primary} moves before it is evicted"
    else:
        return None
    if target is None:
        return None  # the Pods kept by the scale-down are not ready yet
    if lost(by_name.get(target)) is not None:
        standbys = sorted(n for n, p in by_name.items() if n != primary and lost(p) is None) or ["none"]
        note = (
            f"annotation {SWITCHOVER_ANNOTATION}: {target} is not a ready standby of {instance.name} "
            f"(ready standbys: {', '.join(standbys)}); the request is removed"
        )
        return FailoverPlan(actions=(_served(instance, target),), event=("Warning", "SwitchoverRefused", note))
    failover = {
        "state": FailoverState.PROMOTING.value,
        "fromPod": primary,
        "toPod": target,
        "reason": why,
        "switchover": True,
        "startTime": now,
    }
    note = f"{why}: stopping {primary} cleanly, then promoting {target}"
    return FailoverPlan(
        failover=failover,
        event=("Normal", "SwitchoverStarted", note),
        progress=f"switching over to {target}",
        switchover=True,
    )


def _served(instance: Instance, requested: str) -> Action:
    """Remove the switchover annotation, only if it still asks for `requested` (a newer request stays)."""
    path = "/metadata/annotations/" + SWITCHOVER_ANNOTATION.replace("~", "~0").replace("/", "~1")
    ops = [{"op": "test", "path": path, "value": requested}, {"op": "remove", "path": path}]
    return Action(Verb.GUARDED, "SampleDB", instance.name, "SwitchoverRequestDone", {"ops": ops})


def _elect(
    instance: Instance,
    by_name: Mapping[str, dict[str, Any]],
    probed: Mapping[str, str | None] | None,
    *,
    lost_pod: str,
    why: str,
    now: str,
    started: dict[str, Any],
    excluded: str | None = None,
) -> FailoverPlan:
    """Probe the ready standbys, then record the most advanced one as the target."""
    candidates = _candidates(by_name, lost_pod, excluded)
    if not candidates:
        message = f"failing over from {lost_pod} ({why}): no standby is ready to replace it"
        return FailoverPlan(progress=message)  # a standby becoming ready wakes the SampleDB
    if probed is None:
        probes = tuple(
            Action(
                Verb.EXEC, "Pod", name, "ProbeStandby", {"container": CONTAINER, "command": server_sql(POSITION_SQL)}
            )
            for name in candidates
        )
        return FailoverPlan(probes=probes)
    chosen = elect({name: probed.get(name) for name in candidates}, instance.ordinal)
    if chosen is None:
        message = f"failing over from {lost_pod} ({why}): none of the ready standbys {', '.join(candidates)} answered"
        return FailoverPlan(progress=message, requeue_after=RECHECK_SECONDS)
    target, position = chosen
    failover = {
        "state": FailoverState.PROMOTING.value,
        "fromPod": lost_pod,
        "toPod": target,
        "reason": why,
        "position": format_lsn(position.received),
        "startTime": started.get("startTime", now),
    }
    note = f"promoting {target}, the most advanced ready standby (WAL received up to {failover['position']}): {why}"
    return FailoverPlan(
        failover=failover, event=("Normal", "StandbyElected", note), progress=f"failing over to {target}"
    )

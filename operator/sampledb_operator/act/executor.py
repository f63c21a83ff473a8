"""Carry out a `Plan`: its writes in order, then its status, then its events.

The rules of the API server's answers, the same for every write:
- CREATE 409: the object exists. Made by an earlier pass, it is in the caches (written through,
  or listed): nothing to do. Not in the caches, it is not ours (the caches hold what the operator
  labels): a `<Kind>Conflict` problem names it, rather than waiting for an object never watched.
- CREATE/PATCH 422: the server refuses the object; the pass goes on and the refusal becomes a
  `<Kind>Rejected` problem in the status (a second decision, see `act.reconciler`).
- 403 "being terminated" while deleting: no object can be created in the namespace any more;
  reported so that the deletion goes on without a snapshot.
- GUARDED (a JSON patch with `test`): 409/422 means what was observed is stale; the pass stops
  there, without backoff, and the watch event of the change decides again.
- DELETE 404: already gone. PATCH 404 (a Pod relabelled as it goes): gone since observed; its
  watch event decides again.
- EXEC (a command in a Pod: promoting a standby): one that cannot run, exits non-zero or prints
  other than what the plan expects raises, like any other error.
Anything else raises, and the runner retries with backoff.
Each write that succeeds is written through to the caches (`Observer.remember`), so the next
pass sees it even before its watch event arrives: no duplicate create, no repeated patch, and an
object deleted but still there (a Pod stopping within its grace period) is seen stopping, not gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from sampledb_operator.k8s.api import ApiError, KubeApi
from sampledb_operator.observe.projections import READERS
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.plan import Plan
from sampledb_operator.reconcile.status import Problem

logger = logging.getLogger(__name__)


def _read(kind: str) -> Callable[[bytes], dict[str, Any]]:
    """How a write's answer is read: for the caches' write-through, which keeps the projection only."""
    return READERS.get(kind, msgspec.json.decode)  # a kind not cached: whole


WriteKey = tuple[str, str, str]


class Observer(Protocol):
    """What the executor tells the caches about its own writes."""

    def remember(self, kind: str, obj: dict[str, Any]) -> None: ...  # noqa: D102

    def forget_deleted(self, kind: str, namespace: str, name: str) -> None: ...  # noqa: D102

    def holds(self, kind: str, namespace: str, name: str) -> bool: ...  # noqa: D102


@dataclass
class Report:
    """What happened to the writes: refusals to report, facts to decide again with."""

    attempted: set[WriteKey] = field(default_factory=set)
    rejected: list[Problem] = field(default_factory=list)
    terminating: bool = False
    stale: bool = False

    @property
    def learned(self) -> bool:
        """The API server told something the decision did not know."""
        return bool(self.rejected) or self.terminating


def key(action: Action) -> WriteKey:
    """Identifies a write across two decisions of one pass."""
    return (action.verb.value, action.kind, action.name)


class Executor:
    """Applies plans through one `KubeApi`."""

    def __init__(self, api: KubeApi, observer: Observer, *, password: Callable[[], str]) -> None:
        self.api = api
        self.observer = observer
        self.password = password

    def write(self, namespace: str, writes: Sequence[Action], *, deleting: bool = False) -> Report:
        """Make the writes in order; stop at a stale guarded patch."""
        report = Report()
        for action in writes:
            report.attempted.add(key(action))
            logger.info("%s: %s %s/%s (%s)", namespace, action.verb, action.kind, action.name, action.reason)
            try:
                self._one(namespace, action)
            except ApiError as err:
                if not self._refused(namespace, action, err, report, deleting=deleting):
                    raise
                if report.stale:
                    break
        return report

    def conclude(self, sampledb: dict[str, Any], plan: Plan) -> None:
        """Write the status (when it changed), then the events."""
        meta = sampledb["metadata"]
        if plan.status is not None:
            written = self.api.merge_patch(
                "SampleDB",
                meta["namespace"],
                meta["name"],
                {"status": plan.status},
                status=True,
                decode=_read("SampleDB"),
            )
            self.observer.remember("SampleDB", written)
        for event in plan.events:
            self.api.emit_event(sampledb, type_=event.type, reason=event.reason, note=event.note, action=event.action)

    def _one(self, namespace: str, action: Action) -> None:
        if action.verb is Verb.CREATE:
            body = action.fill(self.password) if action.fill else action.body
            self.observer.remember(action.kind, self.api.create(body, decode=_read(action.kind)))
        elif action.verb is Verb.PATCH:
            written = self.api.merge_patch(action.kind, namespace, action.name, action.body, decode=_read(action.kind))
            self.observer.remember(action.kind, written)
        elif action.verb is Verb.GUARDED:
            ops = action.body["ops"]
            written = self.api.json_patch(action.kind, namespace, action.name, ops, decode=_read(action.kind))
            self.observer.remember(action.kind, written)
        elif action.verb is Verb.DELETE:
            answer = self.api.delete(
                action.kind, namespace, action.name, grace_seconds=action.body.get("gracePeriodSeconds")
            )
            if answer and answer.get("kind") == action.kind and answer["metadata"].get("deletionTimestamp"):
                self.observer.remember(action.kind, answer)  # still there: a Pod stopping, a finalizer
            else:
                self.observer.forget_deleted(action.kind, namespace, action.name)
        elif action.verb is Verb.EXEC:
            self._exec(namespace, action)
        else:
            self._recreate(namespace, action)

    def _exec(self, namespace: str, action: Action) -> None:
        """A command in a Pod whose output must be what the plan expects (else an error to retry)."""
        body = action.body
        out = self.api.exec(namespace, action.name, body["container"], body["command"]).strip()
        if "expect" in body and out != body["expect"]:
            message = f"{action.reason} answered {out[:200]!r}, expected {body['expect']!r}"
            raise ApiError(500, "EXEC", f"{namespace}/{action.name}", message)

    def probe(self, namespace: str, probes: Sequence[Action]) -> dict[str, str | None]:
        """Each probe's output by Pod name; None for a Pod that could not answer (its failure is logged)."""
        answers: dict[str, str | None] = {}
        for probe in probes:
            try:
                answers[probe.name] = self.api.exec(
                    namespace, probe.name, probe.body["container"], probe.body["command"]
                )
            except ApiError as err:
                logger.warning("%s: %s on Pod %s failed: %s", namespace, probe.reason, probe.name, err)
                answers[probe.name] = None
        return answers

    def _recreate(self, namespace: str, action: Action) -> None:
        """Orphan-delete, wait until gone, create: if this stops half-way, the next pass creates it.

        The wait reads the object directly: the garbage collector removes the orphan finalizer
        within moments, and this happens once per volume growth, never on a converged pass.
        """
        self.api.delete(action.kind, namespace, action.name, propagation="Orphan")
        if self.api.wait_deleted(action.kind, namespace, action.name):
            self.observer.remember(action.kind, self.api.create(action.body, decode=_read(action.kind)))
        else:
            self.observer.forget_deleted(action.kind, namespace, action.name)

    def _refused(self, namespace: str, action: Action, err: ApiError, report: Report, *, deleting: bool) -> bool:
        """Record a refusal the pass can go on with; False for an error to raise."""
        if action.verb is Verb.CREATE and err.conflict:
            if not self.observer.holds(action.kind, namespace, action.name):
                message = (
                    f"{action.kind} {action.name} exists but was not made by the operator (it lacks the labels "
                    "app.kubernetes.io/managed-by=sampledb-operator and sampledb.io/instance); rename or delete it"
                )
                report.rejected.append(Problem(f"{action.kind}Conflict", message))
            return True
        if action.verb is Verb.GUARDED and err.status in (409, 422):
            logger.info("%s/%s: changed since observed; deciding again", action.kind, action.name)
            report.stale = True
            return True
        if action.verb is Verb.CREATE and deleting and err.namespace_terminating:
            report.terminating = True
            return True
        if action.verb is Verb.PATCH and err.status == 404:
            logger.info("%s/%s: gone since observed; its watch event decides again", action.kind, action.name)
            return True
        if err.status == 422:
            message = f"the API server rejected {action.kind} {action.name}: {err.message}"
            report.rejected.append(Problem(f"{action.kind}Rejected", message))
            return True
        return False

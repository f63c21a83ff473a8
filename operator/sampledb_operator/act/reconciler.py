"""One pass over one SampleDB: observe, decide, act.

1. Observe: a `Snapshot` from the watch caches (no API read).
2. Decide: `reconcile.decide.decide`, pure.
   With standbys or an object store, the primary's `pg_stat_replication` and `pg_stat_archiver`
   are read too (through `pods/exec`, at most once a `replication.period`; a pass in between
   reuses the last answer), for the servers' and the archive's status and their metrics.
   A plan may first ask for probes, reads only a Pod can answer (a standby's WAL position while a
   failover is decided): they are made, and the decision is made again with their answers.
3. Act: the executor makes the writes. When the API server tells something the decision could
   not know (it refuses an object, or the namespace is being deleted), the snapshot gains that
   fact and the decision is made once more; writes already attempted are not repeated, so the
   second decision only adds its status, its events and what the fact calls for (deletion
   without a snapshot).
4. The status, then the events.
A pass that wrote anything asks for another one at once: the next decision starts from the world
those writes made (written through to the caches), as a pass triggered by their watch events did.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import NamedTuple, Protocol

from pydantic import ValidationError

from sampledb_operator import metrics
from sampledb_operator.act.executor import Executor, Observer, key
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile import archiving, schedule
from sampledb_operator.reconcile.decide import decide
from sampledb_operator.reconcile.deletion import DELETING
from sampledb_operator.reconcile.outcome import Outcome
from sampledb_operator.reconcile.plan import Plan
from sampledb_operator.reconcile.replication import period, primary_probe, servers, standby_metrics
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import generate_password
from sampledb_operator.settings import Settings

STALE_RETRY_SECONDS = 1.0
logger = logging.getLogger(__name__)


class Cache(Observer, Protocol):
    """The snapshots a pass observes (None: the SampleDB is gone)."""

    def snapshot(self, namespace: str, name: str) -> Snapshot | None: ...  # noqa: D102


def now_utc() -> datetime:  # noqa: D103
    return datetime.now(UTC)


class Read(NamedTuple):
    """The last read of a primary (`replication.primary_probe`): which Pod, when (monotonic), its answer."""

    pod: str
    at: float
    answer: str | None


class Reconciler:
    """Drives SampleDBs to their desired state: snapshot, decide, act."""

    def __init__(
        self,
        api: KubeApi,
        cache: Cache,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = now_utc,
        password: Callable[[], str] = generate_password,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.cache = cache
        self.settings = settings
        self.clock = clock
        self.monotonic = monotonic
        self.replication: dict[tuple[str, str], Read] = {}
        self.executor = Executor(api, cache, password=password)

    def reconcile(self, namespace: str, name: str) -> Outcome:
        """Converge the named SampleDB; a missing object is nothing to do."""
        snap = self.cache.snapshot(namespace, name)
        if snap is None:
            self._forget_replication((namespace, name))
            metrics.forget_archiving((namespace, name))
            metrics.record_base_backup((namespace, name), None)
            return Outcome()
        metrics.record_base_backup((namespace, name), schedule.last_completed(name, snap.all("SampleDBBackup")))
        snap = self._with_replication(snap)
        rv = snap.sampledb["metadata"].get("resourceVersion")
        logger.debug("%s/%s: observed resourceVersion %s", namespace, name, rv)
        now = self.clock()
        plan = decide(snap, now=now, settings=self.settings)
        if plan.probes:
            snap = dataclasses.replace(snap, probed=self.executor.probe(namespace, plan.probes))
            plan = decide(snap, now=now, settings=self.settings)
        deleting = plan.phase == DELETING
        report = self.executor.write(namespace, plan.writes, deleting=deleting)
        actions = plan.described()
        if report.stale:
            return Outcome(phase=plan.phase, actions=actions, requeue_after=STALE_RETRY_SECONDS)
        if report.learned:
            learned = dataclasses.replace(
                snap, rejected=tuple(report.rejected), namespace_terminating=report.terminating
            )
            plan = decide(learned, now=now, settings=self.settings)
            more = [w for w in plan.writes if key(w) not in report.attempted]
            self.executor.write(namespace, more, deleting=deleting)
            actions += Plan(writes=tuple(more)).described()
        self.executor.conclude(snap.sampledb, plan)
        wrote = bool(plan.writes or plan.status is not None)
        requeue = 0.0 if wrote and not deleting else plan.requeue_after
        if plan.waiting and not plan.writes:
            actions.append(f"wait {plan.waiting}")
        events = [event.reason for event in plan.events]
        return Outcome(phase=plan.phase, actions=actions, requeue_after=requeue, events=events)

    def _with_replication(self, snap: Snapshot) -> Snapshot:
        """The snapshot with the primary's answer (`replication.primary_probe`), read again once it is a period old."""
        key = (snap.namespace, snap.sampledb["metadata"]["name"])
        try:
            instance = Instance.from_object(snap.sampledb, self.settings)
        except ValidationError:
            return snap  # the decision reports the spec
        probe, every = primary_probe(instance, snap.database_pods()), period(instance)
        if not instance.archives:
            metrics.forget_archiving(key)  # kept while the primary does not answer: the alert must not resolve then
        if probe is None or every is None:
            self._forget_replication(key)
            return snap
        last = self.replication.get(key)
        now = self.monotonic()
        if last is None or last.pod != probe.name or now - last.at >= every:
            answer = self.executor.probe(snap.namespace, [probe])[probe.name]
            last = self.replication[key] = Read(probe.name, now, answer)
            if answer is not None:
                listed = servers(instance, snap.database_pods(), answer, None)
                metrics.record_replication(key, standby_metrics(listed))
                _record_archiving(key, archiving.parse(answer))
        return dataclasses.replace(snap, replication=last.answer)

    def _forget_replication(self, key: tuple[str, str]) -> None:
        if self.replication.pop(key, None) is not None:
            metrics.record_replication(key, {})


def _record_archiving(key: tuple[str, str], found: archiving.Archiver | None) -> None:
    if found is not None:
        last = datetime.fromisoformat(found.archived_time).timestamp() if found.archived_time else None
        metrics.record_archiving(key, found.broken, found.pending, last)

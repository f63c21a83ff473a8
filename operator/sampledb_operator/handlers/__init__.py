"""kopf handlers, kept thin: start the watch caches and the runners once this replica leads.

SampleDBs and SampleDBBackups are reconciled from our own watch caches (`observe.cache`): a change
to one, or to anything it owns or names, triggers it from the informers' threads, and each key is
reconciled one pass at a time (`runtime.KeyedRunner`). kopf keeps the process: start-up after
leader election, signals, clean-up; it watches no resource of ours, so it stores nothing on our
objects and costs no request per object.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import kopf

from sampledb_operator import metrics
from sampledb_operator.act.reconciler import Reconciler
from sampledb_operator.k8s.api import KubeApi, load_client
from sampledb_operator.observe.cache import ClusterCache
from sampledb_operator.reconcile.backup import BackupReconciler
from sampledb_operator.reconcile.crds import maintain_crds
from sampledb_operator.reconcile.decide import timestamp
from sampledb_operator.runtime import Key, KeyedRunner, Mailbox
from sampledb_operator.settings import Settings

logger = logging.getLogger(__name__)
# How long a change of a child waits for the changes that come with it (runtime.KeyedRunner): a
# Pod becoming ready, its StatefulSet's counts, a Job's status arrive within about a second, and one
# pass after them decides once and writes one status instead of one per step.
SETTLE_SECONDS = 1.0
_state: dict[str, Any] = {}
_stop = threading.Event()


def _reconcile(key: Key) -> float | None:
    reconciler: Reconciler = _state["reconciler"]
    writes_before = reconciler.api.write_count
    with metrics.RECONCILE_SECONDS.time():
        try:
            outcome = reconciler.reconcile(*key)
        except Exception:
            metrics.RECONCILES.labels("error").inc()
            raise
    metrics.WRITES.inc(reconciler.api.write_count - writes_before)
    metrics.RECONCILES.labels("success").inc()
    metrics.record_phase("/".join(key), outcome.phase)
    for reason in set(outcome.events) & set(metrics.PRIMARY_CHANGE_EVENTS):
        metrics.PRIMARY_CHANGES.labels(reason).inc()
    if outcome.actions:
        logger.info("%s/%s: %s", *key, "; ".join(outcome.actions))
    return outcome.requeue_after


def _runner() -> KeyedRunner:
    runner: KeyedRunner = _state["runner"]
    return runner


def _forget(key: Key) -> None:
    _runner().forget(key)
    metrics.record_phase("/".join(key), None)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    """Our own events and status only: kopf posts nothing and stores nothing on objects."""
    operator_settings = Settings.from_env()
    settings.posting.enabled = False
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # Memory at start-up: list existing objects in pages, and let each object's event worker go as
    # soon as it is idle (our handlers only queue a key), so a restart among thousands of objects
    # never holds every StatefulSet and Job body at once.
    settings.watching.chunk_size = 200
    settings.queueing.idle_timeout = 0.5
    api = KubeApi(load_client())
    mailbox = Mailbox(asyncio.get_running_loop())
    runner = KeyedRunner(_reconcile)

    def trigger(key: Key) -> None:  # from the informers' threads
        mailbox.post(runner.trigger, key)

    def trigger_settled(key: Key) -> None:
        mailbox.post(runner.trigger, key, SETTLE_SECONDS)

    def forget(key: Key) -> None:
        mailbox.post(_forget, key)

    def trigger_backup(key: Key) -> None:
        mailbox.post(backups.trigger, key)

    cache = ClusterCache(
        api,
        operator_settings,
        trigger=trigger,
        trigger_settled=trigger_settled,
        forget=forget,
        trigger_backup=trigger_backup,
    )
    reconciler = Reconciler(api, cache, operator_settings)
    backup_reconciler = BackupReconciler(api, cache, operator_settings, clock=lambda: timestamp(reconciler.clock()))
    backups = KeyedRunner(lambda key: _run_backup(backup_reconciler, key))
    _state.update(reconciler=reconciler, cache=cache, runner=runner)
    threading.Thread(target=maintain_crds, args=(api, operator_settings), name="crds", daemon=True).start()
    cache.start(_stop)


@kopf.on.cleanup()
async def stop_caches(**_: Any) -> None:
    """Stop the informers' threads with the operator."""
    _stop.set()


def _run_backup(backups: BackupReconciler, key: Key) -> float | None:
    with metrics.RECONCILE_SECONDS.time():
        outcome = backups.reconcile(*key)
    logger.debug("%s/%s: backup %s", *key, outcome.phase)
    return outcome.requeue_after

"""kopf handlers, kept thin: they turn watch events into reconcile requests and nothing more.

Raw event handlers (`on.event`) are used on purpose: unlike kopf's change-detecting handlers they
store no state on the object, so an unchanged SampleDB costs no writes, and the reconcile logic
stays in `reconcile/`, level-triggered and testable without kopf.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

import kopf

from sampledb_operator import metrics
from sampledb_operator.api import GROUP, PLURAL, STORAGE_VERSION, backup
from sampledb_operator.k8s.api import KubeApi, load_client
from sampledb_operator.reconcile.backup import BACKUP_LABEL, BackupReconciler
from sampledb_operator.reconcile.crds import maintain_crds
from sampledb_operator.reconcile.instance import Reconciler, utc_now
from sampledb_operator.resources.instance import INSTANCE_LABEL, MANAGED_BY
from sampledb_operator.runtime import Key, KeyedRunner
from sampledb_operator.settings import Settings

logger = logging.getLogger(__name__)
_MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
_state: dict[str, Any] = {}


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
    if outcome.actions:
        logger.info("%s/%s: %s", *key, "; ".join(outcome.actions))
    return outcome.requeue_after


def _runner() -> KeyedRunner:
    runner: KeyedRunner = _state["runner"]
    return runner


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
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
    reconciler = Reconciler(KubeApi(load_client()), operator_settings)
    backups = BackupReconciler(reconciler.api, operator_settings, clock=utc_now)
    _state.update(
        reconciler=reconciler,
        runner=KeyedRunner(_reconcile),
        backups=KeyedRunner(lambda key: _run_backup(backups, key)),
    )
    threading.Thread(target=maintain_crds, args=(reconciler.api, operator_settings), name="crds", daemon=True).start()


@kopf.on.event(GROUP, STORAGE_VERSION, PLURAL)
async def sampledb_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
    """Any change to a SampleDB (or the initial listing) reconciles it."""
    key = (namespace or "", name)
    if type == "DELETED":
        _runner().forget(key)
        metrics.record_phase("/".join(key), None)
        return
    _runner().trigger(key)


async def _owner_event(type: str | None, labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A child changed: reconcile the SampleDB named by its instance label.

    Not for the initial listing (type None): every SampleDB's own listing reconciles it already,
    reading all its children, so a restart costs one pass per instance instead of two or three.
    """
    owner = labels.get(INSTANCE_LABEL)
    if type is not None and owner and namespace:
        _runner().trigger((namespace, owner))


def _run_backup(backups: BackupReconciler, key: Key) -> float | None:
    with metrics.RECONCILE_SECONDS.time():
        outcome = backups.reconcile(*key)
    logger.debug("%s/%s: backup %s", *key, outcome.phase)
    return outcome.requeue_after


@kopf.on.event(GROUP, "v1", backup.PLURAL)
async def backup_event(type: str, namespace: str | None, name: str, **_: Any) -> None:
    """A SampleDBBackup was created or changed."""
    if type != "DELETED" and namespace:
        _backups().trigger((namespace, name))


@kopf.on.event("batch", "v1", "jobs", labels={BACKUP_LABEL: kopf.PRESENT})
async def backup_job_event(labels: Mapping[str, str], namespace: str | None, **_: Any) -> None:
    """A backup Job progressed: advance the SampleDBBackup that owns it."""
    if namespace:
        _backups().trigger((namespace, labels[BACKUP_LABEL]))


def _backups() -> KeyedRunner:
    runner: KeyedRunner = _state["backups"]
    return runner


kopf.on.event("apps", "v1", "statefulsets", labels=_MANAGED)(_owner_event)
kopf.on.event("batch", "v1", "jobs", labels=_MANAGED)(_owner_event)

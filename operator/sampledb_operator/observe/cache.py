"""`ClusterCache`: one informer per kind the reconcile reads, and the snapshots made from them.

Which objects are watched, and why:
- SampleDB, SampleDBBackup, StorageClass, Node: all of them (the last two are cluster-scoped and
  few; a Node keeps only whether it is cordoned, and its change wakes the SampleDBs with a
  database Pod on it).
- StatefulSet, Job, Pod, Service, PodDisruptionBudget, CronJob: only those labelled
  `app.kubernetes.io/managed-by=sampledb-operator` (a server-side label selector): the operator
  made them, so memory follows what it owns, not the cluster's size.
- Secret, ConfigMap, PersistentVolumeClaim: all of them, because a SampleDB may name one of the
  user's (credentials, migrations, restore or recovery source) and a field selector takes one name only. Their
  projections are small (a Secret keeps the names of its keys, never a value; a user's ConfigMap
  a digest of its content); Helm's release Secrets and service-account tokens are filtered out by
  the server.
Every object is indexed by its `sampledb.io/instance` label, a SampleDBBackup by its
`spec.instance` (one made by hand has no label); a SampleDB's references to objects of the user's
are indexed the other way, so a change of either triggers the SampleDB concerned.

Start-up lists one kind at a time (the memory peak of a restart is one kind's page, not all
kinds at once), SampleDBs first. Nothing is triggered until every informer has listed once;
then every SampleDB is triggered once. A snapshot before that raises `NotSynced`: a cache that has
not listed yet is never taken as "absent".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from sampledb_operator.api.backup import BackupPhase
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.observe.informer import Informer, Key
from sampledb_operator.observe.projections import READERS, project
from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile.backup import BACKUP_LABEL
from sampledb_operator.resources.instance import INSTANCE_LABEL, MANAGED_BY
from sampledb_operator.settings import Settings

logger = logging.getLogger(__name__)
MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}
CHILDREN = ("Service", "PodDisruptionBudget", "CronJob", "StatefulSet", "Job")
OWNED = (*CHILDREN, "Pod")
SHARED = ("Secret", "ConfigMap", "PersistentVolumeClaim")
ORDER = ("SampleDB", "SampleDBBackup", "StorageClass", "Node", *SHARED, *OWNED)
CLUSTER_SCOPED = {"StorageClass", "Node"}
# Secrets the operator never reads and that are large or numerous.
SECRET_FIELDS = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token"  # noqa: S105 (types)


FINAL_BACKUP = {BackupPhase.SUCCEEDED.value, BackupPhase.FAILED.value}


class NotSynced(RuntimeError):
    """A snapshot was asked for before every cache had listed its kind once."""


def instance_of(obj: dict[str, Any]) -> str | None:
    """The SampleDB an object belongs to, by the label the operator puts on everything it makes."""
    label: str | None = (obj["metadata"].get("labels") or {}).get(INSTANCE_LABEL)
    return label


def backup_instance(obj: dict[str, Any]) -> str | None:
    """The SampleDB a SampleDBBackup is of."""
    instance = (obj.get("spec") or {}).get("instance")
    return instance if isinstance(instance, str) else None


def index_of(kind: str) -> Callable[[dict[str, Any]], str | None]:
    """How the caches of `kind` are indexed: by the SampleDB each object belongs to."""
    return backup_instance if kind == "SampleDBBackup" else instance_of


def _backup_of(*jobs: dict[str, Any] | None) -> str | None:
    """The SampleDBBackup a backup Job runs for (its label)."""
    for job in jobs:
        label = ((job or {}).get("metadata", {}).get("labels") or {}).get(BACKUP_LABEL)
        if label:
            return str(label)
    return None


def references(sampledb: dict[str, Any]) -> set[tuple[str, str]]:
    """(kind, name) of the objects a SampleDB's spec names (read from the raw spec: no model)."""
    spec = sampledb.get("spec") or {}
    store = (spec.get("backup") or {}).get("objectStore") or {}
    named = [
        ("Secret", (spec.get("credentials") or {}).get("secretName")),
        ("Secret", (store.get("credentials") or {}).get("secretName")),
        ("Secret", (store.get("caBundle") or {}).get("name")),
        ("ConfigMap", (spec.get("migrations") or {}).get("configMap")),
        ("SampleDBBackup", (spec.get("restore") or {}).get("backup")),
        ("SampleDBBackup", (spec.get("recovery") or {}).get("backup")),
        ("PersistentVolumeClaim", (spec.get("restore") or {}).get("persistentVolumeClaim")),
    ]
    return {(kind, name) for kind, name in named if isinstance(name, str) and name}


class ClusterCache:
    """The operator's view of the cluster, kept current by watches; thread-safe."""

    def __init__(
        self,
        api: KubeApi,
        settings: Settings,
        *,
        trigger: Callable[[Key], None],
        trigger_settled: Callable[[Key], None] | None = None,
        forget: Callable[[Key], None] = lambda key: None,
        trigger_backup: Callable[[Key], None] = lambda key: None,
    ) -> None:
        self._trigger = trigger
        # A change of what a SampleDB owns or names wakes it through this one (the runner waits a
        # moment, so a burst of a Pod's or a StatefulSet's status changes is one pass); a change
        # of the SampleDB itself wakes it at once.
        self._trigger_settled = trigger_settled or trigger
        self._forget = forget
        self._trigger_backup = trigger_backup
        self._lock = threading.Lock()
        self._referrers: dict[tuple[str, str, str], set[str]] = {}  # (kind, ns, name) -> SampleDB names
        self._synced = threading.Event()
        scopes: tuple[str | None, ...] = settings.namespaces or (None,)
        self.informers: dict[str, dict[str | None, Informer]] = {
            kind: {scope: self._informer(api, kind, scope) for scope in ((None,) if kind in CLUSTER_SCOPED else scopes)}
            for kind in ORDER
        }

    def _informer(self, api: KubeApi, kind: str, namespace: str | None) -> Informer:
        return Informer(
            api,
            kind,
            namespace=namespace,
            labels=MANAGED if kind in OWNED else None,
            fields=SECRET_FIELDS if kind == "Secret" else None,
            project=lambda obj: project(kind, obj),
            read=READERS[kind],
            index=index_of(kind),
            on_change=lambda key, old, new: self._changed(kind, key, old, new),
        )

    # -- start-up ----------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> threading.Thread:
        """List and watch every kind, one initial listing at a time; then trigger every SampleDB."""
        thread = threading.Thread(target=self._start, args=(stop,), name="cache-start", daemon=True)
        thread.start()
        return thread

    def _start(self, stop: threading.Event) -> None:
        for kind in ORDER:
            for informer in self.informers[kind].values():
                informer.start(stop)
                while not informer.synced.wait(0.5):
                    if stop.is_set():
                        return
        self._synced.set()
        logger.info("caches synced: %s", ", ".join(f"{k} {self.count(k)}" for k in ORDER))
        for informer in self.informers["SampleDB"].values():
            for key in informer.keys():  # noqa: SIM118 (a method of the informer, not a dict)
                self._trigger(key)
        for informer in self.informers["SampleDBBackup"].values():
            for key in informer.keys():  # noqa: SIM118
                backup = informer.get(*key)
                if backup is not None and (backup.get("status") or {}).get("phase") not in FINAL_BACKUP:
                    self._trigger_backup(key)

    @property
    def synced(self) -> bool:
        """Every informer has listed its kind once."""
        return self._synced.is_set()

    def count(self, kind: str) -> int:
        """Objects of a kind held (for logs and metrics)."""
        return sum(len(i) for i in self.informers[kind].values())

    # -- snapshots ---------------------------------------------------------------------------
    def _for(self, kind: str, namespace: str) -> Informer | None:
        by_scope = self.informers[kind]
        # Not `get(None) or ...`: an informer holding nothing is falsy (it has a length).
        return by_scope[None] if None in by_scope else by_scope.get(namespace)

    def snapshot(self, namespace: str, name: str) -> Snapshot | None:
        """Everything one pass over the SampleDB may read; None when the SampleDB is gone."""
        if not self.synced:
            raise NotSynced(f"{namespace}/{name}: caches not synced yet")
        sampledbs = self._for("SampleDB", namespace)
        sampledb = sampledbs.get(namespace, name) if sampledbs else None
        if sampledb is None:
            return None
        objects: dict[tuple[str, str], dict[str, Any]] = {}
        for kind in ("SampleDBBackup", *SHARED, *CHILDREN):  # Pods go to the snapshot's own list
            informer = self._for(kind, namespace)
            for obj in informer.indexed(namespace, name) if informer else ():
                objects[(kind, obj["metadata"]["name"])] = obj
        for kind, ref in references(sampledb):
            informer = self._for(kind, namespace)
            found = informer.get(namespace, ref) if informer else None
            if found is not None:
                objects[(kind, ref)] = found
        classes = self.informers["StorageClass"][None]
        for _, class_name in classes.keys():  # noqa: SIM118
            found = classes.get("", class_name)
            if found is not None:
                objects[("StorageClass", class_name)] = found
        pods = self._for("Pod", namespace)
        held = tuple(pods.indexed(namespace, name)) if pods else ()
        nodes = self.informers["Node"][None]
        for node_name in {str((p.get("spec") or {}).get("nodeName") or "") for p in held} - {""}:
            found = nodes.get("", node_name)
            if found is not None:
                objects[("Node", node_name)] = found
        return Snapshot(sampledb, objects, held)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """One object from the caches (for the backup flow, which reads by name)."""
        informer = self._for(kind, namespace)
        return informer.get(namespace, name) if informer else None

    def job_pods(self, namespace: str, instance: str, job: str) -> list[dict[str, Any]]:
        """The Pods of one of an instance's Jobs."""
        pods = self._for("Pod", namespace)
        found = pods.indexed(namespace, instance) if pods else []
        return [p for p in found if (p["metadata"].get("labels") or {}).get("job-name") == job]

    # -- what the executor wrote -------------------------------------------------------------
    def remember(self, kind: str, obj: dict[str, Any]) -> None:
        """Our own write, as the server answered it: seen by the next pass before its watch event.

        Its watch event then changes nothing, so wakes no one: for a SampleDBBackup (written by the
        schedule and by the backup flow, each read by the other) the wake-ups happen here: its
        SampleDB for any change, the backup flow for a record just created (not for its own status
        writes, which would wake it in a loop).
        """
        meta = obj.get("metadata") or {}
        informer = self._for(kind, meta.get("namespace") or "")
        if informer is None or not meta:
            return
        key = (meta.get("namespace") or "", meta.get("name") or "")
        before = informer.get(*key) if kind == "SampleDBBackup" else None
        informer.remember(obj)
        if kind != "SampleDBBackup" or (after := informer.get(*key)) == before:
            return
        for target in self._concerned(kind, key, before, after):
            self._trigger_settled((key[0], target))
        if before is None:
            self._trigger_backup(key)

    def holds(self, kind: str, namespace: str, name: str) -> bool:
        """Whether the caches hold the object (for a kind not cached: assume so)."""
        informer = self._for(kind, namespace) if kind in self.informers else None
        return informer is None or informer.get(namespace, name) is not None

    def forget_deleted(self, kind: str, namespace: str, name: str) -> None:
        """Our own delete."""
        informer = self._for(kind, namespace)
        if informer is not None:
            informer.forget_deleted(namespace, name)

    # -- triggers ----------------------------------------------------------------------------
    def _changed(self, kind: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        namespace = key[0]
        if kind == "SampleDB":
            self._index_references(key, old, new)
        if not self.synced:
            return  # the initial listing: every SampleDB is triggered once the caches are synced
        wake = self._trigger if kind == "SampleDB" else self._trigger_settled
        for target in self._concerned(kind, key, old, new):
            wake((namespace, target))
        if kind == "Node":
            for pod_key in self.on_node(key[1]):
                wake(pod_key)
        if kind == "SampleDBBackup" and new is not None:
            self._trigger_backup(key)
        elif kind == "Job" and (backup := _backup_of(old, new)):
            self._trigger_backup((namespace, backup))
        if kind == "SampleDB" and new is None:
            self._forget(key)

    def _concerned(self, kind: str, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> set[str]:
        namespace, name = key
        if kind == "SampleDB":
            return {name} if new is not None else set()
        if kind == "Node":
            return set()  # cluster-scoped: `_changed` wakes the SampleDBs with a Pod on it
        owners = {index_of(kind)(o) for o in (old, new) if o is not None} - {None}
        with self._lock:
            owners |= self._referrers.get((kind, namespace, name), set())
        return {o for o in owners if o}

    def _index_references(self, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        namespace, name = key
        before = references(old) if old else set()
        after = references(new) if new else set()
        with self._lock:
            for kind, ref in before - after:
                referrers = self._referrers.get((kind, namespace, ref), set())
                referrers.discard(name)
                if not referrers:
                    self._referrers.pop((kind, namespace, ref), None)
            for kind, ref in after - before:
                self._referrers.setdefault((kind, namespace, ref), set()).add(name)

    def on_node(self, node: str) -> set[Key]:
        """The SampleDBs with a database Pod on `node` (a scan of the Pods held: Nodes rarely change)."""
        found = set()
        for informer in self.informers["Pod"].values():
            for key in informer.keys():  # noqa: SIM118
                pod = informer.get(*key)
                if pod is not None and (pod.get("spec") or {}).get("nodeName") == node and (owner := instance_of(pod)):
                    found.add((key[0], owner))
        return found

    def sampledbs(self) -> Iterable[Key]:
        """Every SampleDB held."""
        for informer in self.informers["SampleDB"].values():
            yield from informer.keys()

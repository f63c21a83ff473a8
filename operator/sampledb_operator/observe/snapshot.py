"""`Snapshot`: everything one pass of one SampleDB may read, taken from the watch caches at once.

Plain data, no I/O: `reconcile.decide` is a function of it (and of the clock), so its unit tests
build snapshots by hand. Objects are the caches' projections (`observe.projections`): the same
dict paths as the API server's objects, with only the fields the decisions read.

What is in it, for the SampleDB `name` in `namespace`:
- the SampleDB itself;
- every object labelled `sampledb.io/instance=<name>` by the operator (its children, its Jobs,
  the claims made from its StatefulSet, the Pods of its StatefulSet and Jobs);
- every SampleDBBackup of it (`spec.instance`: the scheduled ones carry the label, those made by
  hand need not);
- the objects its spec names that are not ours: the credentials Secret, the migrations
  ConfigMap, the restore SampleDBBackup or claim, the recovery SampleDBBackup;
- the StorageClasses (a handful per cluster, read when volumes grow).
Absent from a snapshot means absent from synced caches: a snapshot is never taken before every
cache has listed its kind once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sampledb_operator.reconcile.status import Problem
from sampledb_operator.resources.instance import COMPONENT_LABEL

Object = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """What is known of one SampleDB and its world at the start of a pass."""

    sampledb: Object
    # (kind, name) -> object, in the SampleDB's namespace; StorageClasses under ("StorageClass", name).
    objects: Mapping[tuple[str, str], Object] = field(default_factory=dict)
    pods: tuple[Object, ...] = ()
    # Facts learned by acting in this pass, for a second decision (see `act.reconciler`).
    rejected: tuple[Problem, ...] = ()
    namespace_terminating: bool = False
    # The output of `Plan.probes` by Pod name (None: the Pod did not answer); None: nothing probed.
    probed: Mapping[str, str | None] | None = None
    # The primary's pg_stat_replication (`reconcile.replication`), as last read; None: not read.
    replication: str | None = None

    @property
    def namespace(self) -> str:  # noqa: D102
        namespace: str = self.sampledb["metadata"]["namespace"]
        return namespace

    def get(self, kind: str, name: str | None) -> Object | None:
        """The named object, or None when the caches hold none."""
        return self.objects.get((kind, name)) if name else None

    def names(self, kind: str) -> list[str]:
        """The names of every object of `kind` the snapshot holds."""
        return [name for (k, name) in self.objects if k == kind]

    def all(self, kind: str) -> list[Object]:
        """Every object of `kind` the snapshot holds."""
        return [obj for (k, _), obj in self.objects.items() if k == kind]

    def job_pods(self, job: str) -> list[Object]:
        """The Pods the Job controller made for a Job (label `job-name`)."""
        return [p for p in self.pods if (p["metadata"].get("labels") or {}).get("job-name") == job]

    def database_pods(self) -> list[Object]:
        """The Pods of the instance's StatefulSet."""
        return [p for p in self.pods if (p["metadata"].get("labels") or {}).get(COMPONENT_LABEL) == "database"]

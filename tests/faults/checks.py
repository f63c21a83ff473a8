"""What the fault tests assert after the dust settles: convergence, one Job per purpose, no leaks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sampledb_localcluster import OPERATOR_USER
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.reconcile.backup import BACKUP_LABEL
from sampledb_operator.resources.instance import COMPONENT_LABEL, INSTANCE_LABEL, MANAGED_BY
from tests.audit_log import AuditEntry

MANAGED = {"app.kubernetes.io/managed-by": MANAGED_BY}


def sampledb(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    """A small SampleDB; deletionPolicy Delete unless given, so clean-up never waits for a snapshot."""
    return {
        "apiVersion": "sampledb.io/v1",
        "kind": "SampleDB",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"storage": {"size": "1Gi"}, "deletionPolicy": "Delete", **spec},
    }


def backup_object(name: str, namespace: str, instance: str, *, verify: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "sampledb.io/v1",
        "kind": "SampleDBBackup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"instance": instance, "verify": verify},
    }


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == ctype), None)


def not_ready(admin: KubeApi, namespace: str, names: list[str]) -> list[str]:
    """The instances that are not (yet) Ready for their current generation, each with its phase."""
    pending = []
    for name in names:
        obj = admin.get("SampleDB", namespace, name)
        if obj is None:
            pending.append(f"{name}: gone")
            continue
        status = obj.get("status") or {}
        ready = condition(obj, "Ready")
        if not (
            status.get("phase") == "Ready"
            and ready is not None
            and ready["status"] == "True"
            and status.get("observedGeneration") == obj["metadata"]["generation"]
            and (status.get("initialization") or {}).get("completed") is True
        ):
            pending.append(f"{name}: {status.get('phase')}")
    return pending


def describe(admin: KubeApi, namespace: str, names: list[str]) -> str:
    """What the cluster holds for instances that did not converge: enough to tell the operator's fault
    from the harness's (a StatefulSet whose Pod is Ready while the status still waits points at the
    operator; a Pod never scheduled or never made Ready points at the scheduler or kwok)."""
    lines = []
    for name in names:
        db = admin.get("SampleDB", namespace, name) or {}
        ready = condition(db, "Ready") or {}
        lines.append(f"{name}: Ready={ready.get('status')} {ready.get('reason')}: {ready.get('message')}")
        sts = admin.get("StatefulSet", namespace, name)
        lines.append(f"  StatefulSet: {(sts or {}).get('status')}")
        for pod in admin.list_objects("Pod", namespace, labels={INSTANCE_LABEL: name}):
            status = pod.get("status") or {}
            states = [(c["type"], c["status"]) for c in status.get("conditions") or []]
            lines.append(
                f"  Pod {pod['metadata']['name']}: node={pod['spec'].get('nodeName')} "
                f"phase={status.get('phase')} conditions={states}"
            )
        claim = admin.get("PersistentVolumeClaim", namespace, f"data-{name}-0") or {}
        lines.append(f"  PVC data-{name}-0: {(claim.get('status') or {}).get('phase')}")
    return "\n".join(lines)


@dataclass(frozen=True)
class JobPurpose:
    """One thing the operator runs a Job for: exactly one Job, of a known name, must exist for it."""

    what: str
    labels: dict[str, str]
    job: str
    owner_uid: str


def init_purpose(db: dict[str, Any]) -> JobPurpose:
    name = db["metadata"]["name"]
    labels = {INSTANCE_LABEL: name, COMPONENT_LABEL: "init"}
    return JobPurpose(f"initial configuration of {name}", labels, f"{name}-init", db["metadata"]["uid"])


def migration_purpose(db: dict[str, Any], job: str) -> JobPurpose:
    name = db["metadata"]["name"]
    labels = {INSTANCE_LABEL: name, COMPONENT_LABEL: "migration"}
    return JobPurpose(f"migrations of {name}", labels, job, db["metadata"]["uid"])


def backup_purpose(backup: dict[str, Any]) -> JobPurpose:
    name = backup["metadata"]["name"]
    return JobPurpose(f"backup {name}", {BACKUP_LABEL: name}, name, backup["metadata"]["uid"])


@dataclass
class JobReport:
    """What the Jobs of a namespace look like next to what was expected."""

    problems: list[str] = field(default_factory=list)
    creates: int = 0  # create requests the operator sent for Jobs in the namespace
    conflicts: int = 0  # of which answered 409 (the Job existed already): harmless
    interrupted: int = 0  # of which never completed (e.g. 504: the client was killed mid-request)


def check_jobs(admin: KubeApi, namespace: str, purposes: list[JobPurpose], audit: list[AuditEntry]) -> JobReport:
    """Exactly the expected Jobs exist, each owned by its owner, and each was created exactly once.

    Two sources: the Jobs listed now (by each purpose's labels, and all Jobs the operator manages
    in the namespace), and the audit log's create requests by the operator's identity, where a
    second create of one name answered 409 is harmless but a second successful one is a second run
    (after the first Job was deleted, say).
    Jobs of scheduled backups (made by a CronJob, labelled like the operator's own) would count as
    strays: the scenarios using this set no schedule.
    """
    report = JobReport()
    expected = {p.job: p for p in purposes}
    for purpose in purposes:
        found = admin.list_objects("Job", namespace, labels=purpose.labels)
        names = sorted(j["metadata"]["name"] for j in found)
        if names != [purpose.job]:
            report.problems.append(f"{purpose.what}: expected exactly Job {purpose.job}, found {names}")
            continue
        owners = [o["uid"] for o in found[0]["metadata"].get("ownerReferences") or []]
        if owners != [purpose.owner_uid]:
            report.problems.append(f"{purpose.what}: Job {purpose.job} is owned by {owners}, not {purpose.owner_uid}")
    managed = {j["metadata"]["name"] for j in admin.list_objects("Job", namespace, labels=MANAGED)}
    strays = sorted(managed - set(expected))
    if strays:
        report.problems.append(f"Jobs nobody asked for: {strays}")
    creates = [
        e
        for e in audit
        if e.user == OPERATOR_USER and e.verb == "create" and e.resource == "jobs" and e.namespace == namespace
    ]
    report.creates = len(creates)
    report.conflicts = sum(1 for e in creates if e.code == 409)
    report.interrupted = sum(1 for e in creates if e.code != 409 and not 200 <= e.code < 300)
    for name, purpose in expected.items():
        problem = created_once(audit, namespace, "jobs", name)
        if problem:
            report.problems.append(f"{purpose.what}: {problem}")
    successes = {e.name for e in creates if 200 <= e.code < 300}
    unexpected = sorted(n or "?" for n in successes - set(expected))
    if unexpected:
        report.problems.append(f"the audit log shows Jobs created for no purpose: {unexpected}")
    return report


def created_once(audit: list[AuditEntry], namespace: str, resource: str, name: str) -> str | None:
    """Why the audit log does not show `name` created exactly once by the operator; None when it does.

    A second create answered 409 is harmless. A create whose client was killed mid-request is
    recorded with another code (504) although the API server may have stored the object all the
    same (the next incarnation then finds it): it counts as the one create when no other succeeded.
    """
    codes = [
        e.code
        for e in audit
        if e.user == OPERATOR_USER
        and e.verb == "create"
        and e.resource == resource
        and e.namespace == namespace
        and e.name == name
    ]
    successes = sum(1 for code in codes if 200 <= code < 300)
    interrupted = sum(1 for code in codes if code != 409 and not 200 <= code < 300)
    if successes > 1:
        return f"{resource} {name} was created {successes} times (audit log)"
    if successes + interrupted == 0:
        return f"the audit log shows no create of {resource} {name} by the operator"
    return None

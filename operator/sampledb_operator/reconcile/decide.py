"""Decide: one pure function from a `Snapshot` (and the clock) to a `Plan`.

Every rule of the product is reached from here, in the order one pass applies them: the spec is
read (a spec the model refuses is reported, not acted on); a deleted SampleDB goes to the
finalizer's state machine (`deletion`); otherwise the finalizer is added and the instance is
converged: credentials, restore or recovery source (`recovery`), major upgrade (`upgrade`),
failover to a standby when the primary is lost (`failover`), configuration check (`config_check`), volume growth
(`storage`), children (`children`), the role labels of the servers and the volumes of removed
standbys (`replicas`), the initialisation Job, schema migrations (`migrations`), scheduled base
backups (`schedule`), then the status (`status`) with its transition event.

No I/O and no kopf: the function sees only its arguments, so its unit tests feed snapshots and
compare plans, and a pass that resumes after a crash runs exactly the code a first pass runs.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from sampledb_operator.api.common import Phase
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.observe.snapshot import Snapshot
from sampledb_operator.reconcile import (
    archiving,
    children,
    conditions,
    config_check,
    deletion,
    failover,
    recovery,
    replicas,
    replication,
    schedule,
    storage,
    upgrade,
)
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.conditions import READY
from sampledb_operator.reconcile.migrations import MigrationPlan, job_name, plan_migrations
from sampledb_operator.reconcile.plan import Event, Plan
from sampledb_operator.reconcile.restore import RECHECK_SECONDS, RestorePlan, plan_restore
from sampledb_operator.reconcile.status import (
    JobState,
    Observation,
    Problem,
    compute_status,
    degraded,
    init_completed,
    initialized,
    job_state,
    merge_patch,
    pod_ready,
    ready_replicas,
    termination_summary,
)
from sampledb_operator.resources import archive
from sampledb_operator.resources.config import parameter_problems
from sampledb_operator.resources.instance import Instance
from sampledb_operator.settings import Settings

FINALIZER = deletion.FINALIZER


def timestamp(now: datetime) -> str:
    """RFC 3339 with second precision, as Kubernetes writes times."""
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_problem(err: ValidationError) -> Problem:
    """A spec the API server accepted but the operator cannot use (e.g. written before a schema change)."""
    details = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
    return Problem("InvalidSpec", f"{details}; fix the field(s) named")


def decide(snap: Snapshot, *, now: datetime, settings: Settings) -> Plan:
    """The plan for one pass over the SampleDB in `snap`."""
    obj = snap.sampledb
    deleting = bool(obj["metadata"].get("deletionTimestamp"))
    try:
        instance = Instance.from_object(obj, settings)
    except ValidationError as err:
        if deleting:
            return deletion.plan_unreadable(obj, spec_problem(err), snap, settings, now=timestamp(now))
        return plan_invalid(obj, spec_problem(err), now=timestamp(now))
    if deleting:
        return deletion.plan_deletion(instance, obj, snap, now=timestamp(now))
    plan = _converge(snap, instance, now)
    finalizer = _finalizer(obj)
    return dataclasses.replace(plan, writes=(finalizer, *plan.writes)) if finalizer else plan


def plan_invalid(obj: dict[str, Any], problem: Problem, *, now: str) -> Plan:
    """A spec the model refuses: Degraded with the fields named, nothing else touched."""
    previous = obj.get("status") or {}
    updates = degraded(problem.reason, problem.message).updates()
    generation = int(obj["metadata"].get("generation", 1))
    merged = conditions.merge(previous.get("conditions"), updates, generation=generation, now=now)
    status = {"phase": Phase.DEGRADED.value, "conditions": merged}
    if {k: previous.get(k) for k in status} == status:
        return Plan(phase=Phase.DEGRADED.value)
    event = Event("Warning", problem.reason, problem.message, "Validate")
    return Plan(status=status, events=(event,), phase=Phase.DEGRADED.value)


def _finalizer(obj: dict[str, Any]) -> Action | None:
    meta = obj["metadata"]
    finalizers = meta.get("finalizers") or []
    if FINALIZER in finalizers:
        return None
    # `test` on resourceVersion makes the patch fail instead of overwriting a concurrent change.
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
        {"op": "add", "path": "/metadata/finalizers", "value": [*finalizers, FINALIZER]},
    ]
    return Action(Verb.GUARDED, "SampleDB", meta["name"], "FinalizerMissing", {"ops": ops})


def _problems(snap: Snapshot, instance: Instance) -> list[Problem]:
    problems = [Problem("InvalidParameters", str(p)) for p in parameter_problems(instance.spec.postgres.parameters)]
    secret_problem = children.user_secret_problem(instance, snap.get("Secret", instance.credentials_secret))
    if secret_problem:
        problems.append(Problem("SecretInvalid", secret_problem))
    for field, name, keys in archive.secret_references(instance):
        store_problem = children.referenced_secret_problem(f"{field} ({name})", snap.get("Secret", name), keys)
        if store_problem:
            problems.append(Problem("ObjectStoreSecretInvalid", store_problem))
    return problems


def _converge(snap: Snapshot, instance: Instance, now: datetime) -> Plan:
    obj = snap.sampledb
    status = obj.get("status") or {}
    problems = _problems(snap, instance)
    restore = _plan_restore(snap, instance, status)
    if restore is not None and restore.problem is not None:
        problems.append(restore.problem)
    recovering = _plan_recovery(snap, instance, status)
    if recovering is not None:
        instance = dataclasses.replace(instance, recovery_source=recovering.source)
    recovered = recovery.status(instance, snap.replication, status.get("recovery"))
    failed = recovery.problem(recovering, instance, snap.database_pods(), recovered)
    problems += [failed] if failed else []
    sts = snap.get("StatefulSet", instance.statefulset)
    plan = _plan_upgrade(snap, instance, sts, now, blocked=bool(problems))
    if plan is not None:
        instance = dataclasses.replace(instance, workload=plan.workload)
    upgrading = plan is not None and plan.progress is not None
    switch = _plan_failover(snap, instance, sts, now, blocked=bool(problems) or upgrading)
    if switch is not None and switch.probes:
        return Plan(probes=switch.probes)
    if switch is not None and switch.promoted:
        instance = dataclasses.replace(instance, current_primary=switch.promoted, target_primary=None)
    check = _plan_config_check(snap, instance, sts, status) if not problems and not upgrading else None
    if check is not None and check.problem is not None:
        problems.append(check.problem)
    # With a bad or unchecked configuration or unusable credentials, the last good children keep serving.
    blocked = {"ConfigMap", "StatefulSet"} if problems or (check and check.hold) else set()
    # Claims are made from the StatefulSet: before it, there is nothing to grow.
    grow = None if upgrading or not sts else _plan_storage(snap, instance, sts, status, hold=bool(blocked))
    if grow is not None and any(a.verb is Verb.RECREATE for a in grow.actions):
        blocked.add("StatefulSet")  # re-created from the latest template below
    actions = [a for a in [children.plan_secret(instance, snap.get("Secret", instance.credentials_secret))] if a]
    if check is not None and check.action is not None:
        actions.append(check.action)
    for child in children.CHILDREN:
        if child.kind not in blocked:
            action = children.plan_child(child, instance, snap.get(child.kind, child.name(instance)))
            if action:
                actions.append(action)
    job = snap.get("Job", instance.init_job)
    if (
        job is None
        and not initialized(status)
        and not problems
        and (sts or any(a.kind == "StatefulSet" for a in actions))
        and (recovering is None or recovery.done(recovered))  # a long recovery would outlast its deadline
    ):
        body = init_job(instance, restore.source if restore else None)
        actions.append(Action(Verb.CREATE, "Job", instance.init_job, "InitJobMissing", body))
    if grow is not None:
        actions += grow.actions
        problems += [grow.problem] if grow.problem else []
    database_pods = snap.database_pods()
    actions += replicas.role_labels(instance, database_pods)
    actions += replicas.removed_standby_claims(instance, sts, database_pods, snap.names("PersistentVolumeClaim"))
    migrations = _plan_migrations(snap, instance, sts, job, status, upgrading=upgrading)
    if migrations is not None and migrations.action is not None:
        actions.append(migrations.action)
    if migrations is not None and migrations.problem is not None:
        problems.append(migrations.problem)
    ready = status.get("phase") == Phase.READY.value and initialized(status)
    backups = schedule.plan_schedule(instance, snap.all("SampleDBBackup"), ready=ready, now=now)
    if backups is not None:
        actions += backups.actions
        problems += [backups.problem] if backups.problem else []
    if switch is not None:
        actions += switch.actions
    if plan is not None:
        actions += [children.create(body, "UpgradeStep") for body in plan.create]
        problems += [plan.problem] if plan.problem else []
    observation = Observation(
        statefulset=sts,
        init_job=job,
        problems=(*problems, *snap.rejected),
        migrations=migrations.status if migrations else None,
        upgrade=plan.status if plan else None,
        upgrading=plan.progress if plan else None,
        storage=grow.status if grow else None,
        resizing=grow.progress if grow else None,
        ready_pods=sum(pod_ready(p) for p in database_pods) if grow and grow.progress else None,
        instances=instance.spec.instances,
        primary_ready=_primary_ready(instance, database_pods),
        failover=switch.failover if switch else None,
        failing_over=(switch.reason, switch.progress) if switch and switch.progress else None,
        servers=replication.servers(instance, database_pods, snap.replication, status.get("servers")),
        archive=archiving.status(instance, snap.replication, status.get("archive")),
        archiving=archiving.condition(instance, snap.replication),
        recovery=recovered,
        recovering=recovering is not None,
    )
    new_status, events = _status(obj, instance, observation, timestamp(now))
    for operation, event in (
        ("Upgrade", plan and plan.event),
        ("Resize", grow and grow.event),
        ("Failover", switch and switch.event),  # switchovers included
    ):
        if event:
            events.append(Event(*event, action=operation))
    requeue = [
        RECHECK_SECONDS if restore is not None and restore.wait else None,
        recovery.RECHECK_SECONDS if recovering is not None and recovering.wait else None,
        plan and plan.requeue_after,
        check and check.requeue_after,
        grow and grow.requeue_after,
        switch and switch.requeue_after,
        backups and backups.requeue_after,
        replication.period(instance),  # to read the lag again
    ]
    return Plan(
        writes=tuple(actions),
        status=new_status,
        events=tuple(events),
        phase=(new_status or status)["phase"],
        requeue_after=min((r for r in requeue if r), default=None),
    )


def _primary_ready(instance: Instance, pods: list[dict[str, Any]]) -> bool | None:
    """With standbys, whether the primary's Pod is ready (a ready standby does not make the instance Ready)."""
    if not instance.has_standbys:
        return None  # the StatefulSet's ready count says it
    return any(p["metadata"]["name"] == instance.primary and pod_ready(p) for p in pods)


def _status(
    obj: dict[str, Any], instance: Instance, observation: Observation, now: str
) -> tuple[dict[str, Any] | None, list[Event]]:
    """The status patch to write (None when unchanged) and the event of a phase transition."""
    previous = obj.get("status") or {}
    status = compute_status(instance, previous, observation, now)
    if status == previous:
        return None, []
    patch = merge_patch(previous, status)
    if previous.get("phase") == status["phase"]:
        return patch, []
    ready = next(c for c in status["conditions"] if c["type"] == READY)
    note = f"phase {previous.get('phase') or 'None'} -> {status['phase']}: {ready['message']}".strip(": ")
    type_ = "Warning" if status["phase"] == Phase.DEGRADED else "Normal"
    return patch, [Event(type_, ready["reason"], note, "Reconcile")]


def _plan_upgrade(
    snap: Snapshot, instance: Instance, sts: dict[str, Any] | None, now: datetime, *, blocked: bool
) -> upgrade.UpgradePlan | None:
    """Only when a major upgrade concerns this instance: its step Job (and that Job's Pods once done) or backup."""
    status = snap.sampledb.get("status") or {}
    if not upgrade.concerned(instance, status):
        return None
    name = upgrade.watched_job(instance, status)
    job = snap.get("Job", name)
    finished = name is not None and job is not None and job_state(job) is not JobState.RUNNING
    pods = snap.job_pods(name) if finished and name else []
    backups = snap.all("SampleDBBackup")
    observed = upgrade.Observed(
        status,
        sts,
        job,
        termination_summary(pods),
        now=now,
        blocked=blocked,
        backup=snap.get("SampleDBBackup", upgrade.watched_backup(instance, status)),
        backups_busy=schedule.busy(instance.name, backups),
    )
    return upgrade.plan_upgrade(instance, observed)


def _plan_failover(
    snap: Snapshot, instance: Instance, sts: dict[str, Any] | None, now: datetime, *, blocked: bool
) -> failover.FailoverPlan | None:
    """A change of primary under way or due; none starts before initialisation, in an upgrade or with a problem."""
    status = snap.sampledb.get("status") or {}
    pods = snap.database_pods()
    return failover.plan_failover(
        instance,
        status.get("failover"),
        pods,
        snap.probed,
        now=timestamp(now),
        eligible=not blocked and initialized(status) and sts is not None,
        requested=failover.switchover_request(snap.sampledb),
        drained=failover.cordoned(pods, lambda node: snap.get("Node", node)),
    )


def _plan_storage(
    snap: Snapshot, instance: Instance, sts: dict[str, Any], status: dict[str, Any], *, hold: bool
) -> storage.StoragePlan:
    claims = {name: snap.get("PersistentVolumeClaim", name) for name in instance.data_pvcs}
    names = {storage.storage_class(c) or "" for c in storage.to_grow(instance, claims)}
    classes = {name: snap.get("StorageClass", name) for name in names if name}
    previous = status.get("storage") or {}
    return storage.plan_storage(instance, sts, claims, classes, previous, hold_statefulset=hold)


def _plan_restore(snap: Snapshot, instance: Instance, status: dict[str, Any]) -> RestorePlan | None:
    """Only for an instance not yet initialised: later, spec.restore has done its work."""
    restore = instance.spec.restore
    if restore is None or initialized(status):
        return None
    backup = snap.get("SampleDBBackup", restore.backup)
    return plan_restore(instance, backup, snap.get("PersistentVolumeClaim", restore.persistentVolumeClaim))


def _plan_recovery(snap: Snapshot, instance: Instance, status: dict[str, Any]) -> recovery.RecoveryPlan | None:
    """Only for an instance not yet initialised: later, spec.recovery has done its work."""
    spec = instance.spec.recovery
    if spec is None or initialized(status):
        return None
    return recovery.plan_recovery(instance, snap.get("SampleDBBackup", spec.backup) if spec.backup else None)


def _plan_config_check(
    snap: Snapshot, instance: Instance, sts: dict[str, Any] | None, status: dict[str, Any]
) -> config_check.ConfigCheckPlan | None:
    if not initialized(status):
        return None
    name = config_check.job_name(instance)
    job = snap.get("Job", name)
    pods = snap.job_pods(name) if job_state(job) is JobState.FAILED else []
    return config_check.plan_config_check(instance, sts, job, pods)


def _plan_migrations(
    snap: Snapshot,
    instance: Instance,
    sts: dict[str, Any] | None,
    init: dict[str, Any] | None,
    status: dict[str, Any],
    *,
    upgrading: bool,
) -> MigrationPlan | None:
    if instance.spec.migrations is None:
        return None
    config_map = snap.get("ConfigMap", instance.spec.migrations.configMap)
    job = snap.get("Job", job_name(instance, config_map)) if config_map else None
    finished = job is not None and job_state(job) is not JobState.RUNNING
    pods = snap.job_pods(job["metadata"]["name"]) if finished and job else []
    ready = init_completed(status, init) and ready_replicas(sts) > 0 and not upgrading
    return plan_migrations(instance, config_map, job, pods, database_ready=ready)

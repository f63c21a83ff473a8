"""Converge one SampleDB: observe its children, make the writes the decisions call for, report.

Level-triggered: every call starts from what the API server holds now, so it does not matter
which event (the SampleDB, a StatefulSet, a Job) or how many caused it. A call that finds
everything in place makes no write at all.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from sampledb_operator.api.common import Phase
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.k8s.api import ApiError, KubeApi
from sampledb_operator.reconcile import children, conditions, config_check, deletion, storage, upgrade
from sampledb_operator.reconcile.conditions import READY, bounded
from sampledb_operator.reconcile.migrations import MigrationPlan, job_name, plan_migrations
from sampledb_operator.reconcile.outcome import Outcome
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
    pod_ready,
    ready_replicas,
    termination_summary,
)
from sampledb_operator.resources.config import parameter_problems
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import generate_password
from sampledb_operator.settings import Settings

FINALIZER = "sampledb.io/finalizer"
logger = logging.getLogger(__name__)


def utc_now() -> str:
    """RFC 3339 timestamp with second precision, as Kubernetes writes them."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_problem(err: ValidationError) -> Problem:
    """A spec the API server accepted but the operator cannot use (e.g. written before a schema change)."""
    details = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
    return Problem("InvalidSpec", f"{details}; fix the field(s) named")


class Reconciler:
    """Drives SampleDBs to their desired state through a `KubeApi`."""

    def __init__(
        self,
        api: KubeApi,
        settings: Settings,
        *,
        clock: Callable[[], str] = utc_now,
        password: Callable[[], str] = generate_password,
    ) -> None:
        self.api = api
        self.settings = settings
        self.clock = clock
        self.password = password

    def reconcile(self, namespace: str, name: str) -> Outcome:
        """Converge the named SampleDB; a missing object is nothing to do."""
        obj = self.api.get("SampleDB", namespace, name)
        if obj is None:
            return Outcome()
        try:
            instance = Instance.from_object(obj, self.settings)
        except ValidationError as err:
            if obj["metadata"].get("deletionTimestamp"):
                return self._delete_unreadable(obj, spec_problem(err))
            return self._report_invalid(obj, spec_problem(err))
        if obj["metadata"].get("deletionTimestamp"):
            return deletion.DeletionFlow(self.api, instance, obj, clock=self.clock, finalizer=FINALIZER).run()
        self._ensure_finalizer(obj)
        return self._converge(obj, instance)

    # -- steps -------------------------------------------------------------------------------
    def _delete_unreadable(self, obj: dict[str, Any], problem: Problem) -> Outcome:
        """Deletion must never hang on a spec the model refuses: go on with the policy it can read."""
        policy, why = deletion.readable_policy(obj.get("spec"))
        if FINALIZER in (obj["metadata"].get("finalizers") or []):
            note = deletion.UNREADABLE_SPEC.format(problem=bounded(problem.message), policy=policy.value, why=why)
            self.api.emit_event(obj, type_="Warning", reason="DeletingUnreadableSpec", note=note, action="Delete")
        instance = Instance.from_object({**obj, "spec": {"deletionPolicy": policy.value}}, self.settings)
        return deletion.DeletionFlow(self.api, instance, obj, clock=self.clock, finalizer=FINALIZER).run()

    def _ensure_finalizer(self, obj: dict[str, Any]) -> None:
        finalizers = obj["metadata"].get("finalizers") or []
        if FINALIZER in finalizers:
            return
        meta = obj["metadata"]
        # `test` on resourceVersion makes the patch fail instead of overwriting a concurrent change.
        ops: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]}
        ]
        ops.append({"op": "add", "path": "/metadata/finalizers", "value": [*finalizers, FINALIZER]})
        updated = self.api.json_patch("SampleDB", meta["namespace"], meta["name"], ops)
        obj["metadata"] = updated["metadata"]

    def _problems(self, instance: Instance, secret: dict[str, Any] | None) -> list[Problem]:
        problems = [Problem("InvalidParameters", str(p)) for p in parameter_problems(instance.spec.postgres.parameters)]
        secret_problem = children.user_secret_problem(instance, secret)
        if secret_problem:
            problems.append(Problem("SecretInvalid", secret_problem))
        return problems

    def _converge(self, obj: dict[str, Any], instance: Instance) -> Outcome:
        ns = instance.namespace
        secret = self.api.get("Secret", ns, instance.credentials_secret)
        problems = self._problems(instance, secret)
        restore = self._plan_restore(obj, instance)
        if restore is not None and restore.problem is not None:
            problems.append(restore.problem)
        observed_sts = self.api.get("StatefulSet", ns, instance.statefulset)
        plan = self._plan_upgrade(obj, instance, observed_sts, blocked=bool(problems))
        if plan is not None:
            instance = dataclasses.replace(instance, workload=plan.workload)
        upgrading = plan is not None and plan.progress is not None
        check = self._plan_config_check(obj, instance, observed_sts) if not problems and not upgrading else None
        if check is not None and check.problem is not None:
            problems.append(check.problem)
        # With a bad or unchecked configuration or unusable credentials, the last good children keep serving.
        blocked = {"ConfigMap", "StatefulSet"} if problems or (check and check.hold) else set()
        # Claims are made from the StatefulSet: before it, there is nothing to grow (nor to read).
        grow = (
            None
            if upgrading or not observed_sts
            else self._plan_storage(obj, instance, observed_sts, hold=bool(blocked))
        )
        if grow is not None and any(a.verb is children.Verb.RECREATE for a in grow.actions):
            blocked.add("StatefulSet")  # re-created from the latest template below
        actions = [a for a in [children.plan_secret(instance, secret, self.password)] if a]
        if check is not None and check.action is not None:
            actions.append(check.action)
        for child in children.CHILDREN:
            is_sts = child.kind == "StatefulSet"
            observed = observed_sts if is_sts else self.api.get(child.kind, ns, child.name(instance))
            if child.kind not in blocked:
                action = children.plan_child(child, instance, observed)
                if action:
                    actions.append(action)
        job = self.api.get("Job", ns, instance.init_job)
        if (
            job is None
            and not initialized(obj.get("status") or {})
            and not problems
            and (observed_sts or any(a.kind == "StatefulSet" for a in actions))
        ):
            body = init_job(instance, restore.source if restore else None)
            actions.append(children.Action(children.Verb.CREATE, "Job", instance.init_job, "InitJobMissing", body))
        if grow is not None:
            actions += grow.actions
            problems += [grow.problem] if grow.problem else []
        migrations = self._plan_migrations(obj, instance, observed_sts, job, upgrading=upgrading)
        if migrations is not None and migrations.action is not None:
            actions.append(migrations.action)
        if migrations is not None and migrations.problem is not None:
            problems.append(migrations.problem)
        if plan is not None:
            actions += [children.create(body, "UpgradeStep") for body in plan.create]
            problems += [plan.problem] if plan.problem else []
        outcome = Outcome(actions=[f"{a.verb} {a.kind}/{a.name} ({a.reason})" for a in actions])
        for action in actions:
            problem = self._apply(instance, action)
            if problem:
                problems.append(problem)
        observation = Observation(
            statefulset=observed_sts,
            init_job=job,
            problems=tuple(problems),
            migrations=migrations.status if migrations else None,
            upgrade=plan.status if plan else None,
            upgrading=plan.progress if plan else None,
            storage=grow.status if grow else None,
            resizing=grow.progress if grow else None,
            ready_pods=self._ready_pods(instance) if grow and grow.progress else None,
        )
        outcome.phase = self._write_status(obj, instance, observation)
        for operation, event in (("Upgrade", plan and plan.event), ("Resize", grow and grow.event)):
            if event:
                type_, reason, note = event
                self.api.emit_event(obj, type_=type_, reason=reason, note=note, action=operation)
        requeue = [
            RECHECK_SECONDS if restore is not None and restore.wait else None,
            plan and plan.requeue_after,
            migrations and migrations.requeue_after,
            check and check.requeue_after,
            grow and grow.requeue_after,
        ]
        outcome.requeue_after = min((r for r in requeue if r), default=None)
        return outcome

    def _plan_upgrade(
        self, obj: dict[str, Any], instance: Instance, sts: dict[str, Any] | None, *, blocked: bool
    ) -> upgrade.UpgradePlan | None:
        """Observe what a major upgrade needs (only when one concerns this instance) and decide."""
        status = obj.get("status") or {}
        if not upgrade.concerned(instance, status):
            return None
        ns = instance.namespace
        job_name = upgrade.watched_job(instance, status)
        job = self.api.get("Job", ns, job_name) if job_name else None
        finished = job is not None and job_state(job) is not JobState.RUNNING
        pods = self.api.list_objects("Pod", ns, labels={"job-name": job_name}) if finished and job_name else []
        observed = upgrade.Observed(status, sts, job, termination_summary(pods), blocked=blocked)
        return upgrade.plan_upgrade(instance, observed)

    def _plan_storage(
        self, obj: dict[str, Any], instance: Instance, sts: dict[str, Any] | None, *, hold: bool
    ) -> storage.StoragePlan:
        """Observe the data claims (and the StorageClass of any to grow) and decide the next step."""
        ns = instance.namespace
        claims = {name: self.api.get("PersistentVolumeClaim", ns, name) for name in instance.data_pvcs}
        names = {storage.storage_class(c) or "" for c in storage.to_grow(instance, claims)}
        classes = {name: self.api.get("StorageClass", None, name) for name in names if name}
        previous = (obj.get("status") or {}).get("storage") or {}
        return storage.plan_storage(instance, sts, claims, classes, previous, hold_statefulset=hold)

    def _ready_pods(self, instance: Instance) -> int:
        """Ready database Pods, counted directly: while its StatefulSet is re-created, it reports none."""
        pods = self.api.list_objects("Pod", instance.namespace, labels=instance.labels("database"))
        return sum(pod_ready(p) for p in pods)

    def _plan_restore(self, obj: dict[str, Any], instance: Instance) -> RestorePlan | None:
        """Only for an instance not yet initialised: later, spec.restore has done its work."""
        restore = instance.spec.restore
        if restore is None or initialized(obj.get("status") or {}):
            return None
        ns = instance.namespace
        backup = self.api.get("SampleDBBackup", ns, restore.backup) if restore.backup else None
        claim = (
            self.api.get("PersistentVolumeClaim", ns, restore.persistentVolumeClaim)
            if restore.persistentVolumeClaim
            else None
        )
        return plan_restore(instance, backup, claim)

    def _plan_config_check(
        self, obj: dict[str, Any], instance: Instance, sts: dict[str, Any] | None
    ) -> config_check.ConfigCheckPlan | None:
        """Observe the check Job of a changed configuration (and its Pods once done) and decide."""
        if not initialized(obj.get("status") or {}):
            return None
        job = self.api.get("Job", instance.namespace, config_check.job_name(instance))
        finished = job is not None and job_state(job) is JobState.FAILED
        labels = {"job-name": config_check.job_name(instance)}
        pods = self.api.list_objects("Pod", instance.namespace, labels=labels) if finished else []
        return config_check.plan_config_check(instance, sts, job, pods)

    def _plan_migrations(
        self,
        obj: dict[str, Any],
        instance: Instance,
        sts: dict[str, Any] | None,
        init: dict[str, Any] | None,
        *,
        upgrading: bool,
    ) -> MigrationPlan | None:
        """Observe what spec.migrations needs (ConfigMap, Job, its Pods) and decide."""
        if instance.spec.migrations is None:
            return None
        ns = instance.namespace
        config_map = self.api.get("ConfigMap", ns, instance.spec.migrations.configMap)
        job = self.api.get("Job", ns, job_name(instance, config_map)) if config_map else None
        finished = job is not None and job_state(job) is not JobState.RUNNING
        pods = (
            self.api.list_objects("Pod", ns, labels={"job-name": job["metadata"]["name"]}) if finished and job else []
        )
        ready = init_completed(obj.get("status") or {}, init) and ready_replicas(sts) > 0 and not upgrading
        return plan_migrations(instance, config_map, job, pods, database_ready=ready)

    def _apply(self, instance: Instance, action: children.Action) -> Problem | None:
        logger.info(
            "%s/%s: %s %s/%s (%s)",
            instance.namespace,
            instance.name,
            action.verb,
            action.kind,
            action.name,
            action.reason,
        )
        try:
            if action.verb is children.Verb.CREATE:
                self.api.create(action.body)
            elif action.verb is children.Verb.DELETE:
                self.api.delete(action.kind, instance.namespace, action.name)
            elif action.verb is children.Verb.RECREATE:
                self._recreate(instance, action)
            else:
                self.api.merge_patch(action.kind, instance.namespace, action.name, action.body)
        except ApiError as err:
            if err.conflict and action.verb is children.Verb.CREATE:
                return None  # created meanwhile (by an earlier run whose watch event is still on its way)
            if err.status == 422:
                return Problem(
                    f"{action.kind}Rejected", f"the API server rejected {action.kind} {action.name}: {err.message}"
                )
            raise
        return None

    def _recreate(self, instance: Instance, action: children.Action) -> None:
        """Orphan-delete, wait until gone, create: if this stops half-way, the next pass creates it."""
        self.api.delete(action.kind, instance.namespace, action.name, propagation="Orphan")
        if self.api.wait_deleted(action.kind, instance.namespace, action.name):
            self.api.create(action.body)

    def _write_status(self, obj: dict[str, Any], instance: Instance, observation: Observation) -> str:
        previous = obj.get("status") or {}
        status = compute_status(instance, previous, observation, self.clock())
        if status != previous:
            self.api.merge_patch("SampleDB", instance.namespace, instance.name, {"status": status}, status=True)
            self._emit_transition(obj, previous, status)
        phase: str = status["phase"]
        return phase

    def _emit_transition(self, obj: dict[str, Any], previous: dict[str, Any], status: dict[str, Any]) -> None:
        if previous.get("phase") == status["phase"]:
            return
        ready = next(c for c in status["conditions"] if c["type"] == READY)
        degraded = status["phase"] == Phase.DEGRADED
        self.api.emit_event(
            obj,
            type_="Warning" if degraded else "Normal",
            reason=ready["reason"],
            note=f"phase {previous.get('phase') or 'None'} -> {status['phase']}: {ready['message']}".strip(": "),
            action="Reconcile",
        )

    def _report_invalid(self, obj: dict[str, Any], problem: Problem) -> Outcome:
        """A spec the model refuses: Degraded with the fields named, nothing else touched."""
        meta = obj["metadata"]
        previous = obj.get("status") or {}
        updates = degraded(problem.reason, problem.message).updates()
        generation = int(meta.get("generation", 1))
        merged = conditions.merge(previous.get("conditions"), updates, generation=generation, now=self.clock())
        status = {"phase": Phase.DEGRADED.value, "conditions": merged}
        if {k: previous.get(k) for k in status} != status:
            self.api.merge_patch("SampleDB", meta["namespace"], meta["name"], {"status": status}, status=True)
            self.api.emit_event(obj, type_="Warning", reason=problem.reason, note=problem.message, action="Validate")
        return Outcome(phase=Phase.DEGRADED.value)

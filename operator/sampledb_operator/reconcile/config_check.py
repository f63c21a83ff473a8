"""Decide whether a changed configuration may reach the database, from what is observed (no I/O).

States, per configuration (its hash names the check Job, so each configuration is checked once):

- **unchanged**: the StatefulSet already runs the desired configuration (or there is none yet, or
  the database was never initialised): nothing to check;
- **checking**: no check Job, or it is running: create it; the ConfigMap and StatefulSet keep the
  configuration that runs (the server keeps serving);
- **accepted**: the Job succeeded: the new configuration is rolled out as usual;
- **rejected**: the Job failed: the instance is Degraded (`ParametersRejected`) with the server's
  own message; the running configuration stays until `spec.postgres.parameters` changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sampledb_operator.jobs.config_check import config_check_job
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.status import JobState, Problem, job_failure_message, job_state, termination_summary
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.statefulset import CONFIG_HASH_ANNOTATION, config_hash, resources

RECHECK_SECONDS = 5.0


@dataclass(frozen=True)
class ConfigCheckPlan:
    """What to create, whether the configuration must be held back, and why."""

    action: Action | None = None
    hold: bool = False
    problem: Problem | None = None
    requeue_after: float | None = None


def job_name(instance: Instance) -> str:
    """`<instance>-config-<digest>` of what the check runs with: the configuration, the image, the resources."""
    content = json.dumps([config_hash(instance), instance.image, resources(instance)], sort_keys=True)
    return f"{instance.name}-config-{hashlib.sha256(content.encode()).hexdigest()[:10]}"


def running_hash(statefulset: dict[str, Any] | None) -> str | None:
    """The configuration hash the StatefulSet's Pods run with."""
    template = ((statefulset or {}).get("spec") or {}).get("template") or {}
    return ((template.get("metadata") or {}).get("annotations") or {}).get(CONFIG_HASH_ANNOTATION)


def plan_config_check(
    instance: Instance, statefulset: dict[str, Any] | None, job: dict[str, Any] | None, pods: list[dict[str, Any]]
) -> ConfigCheckPlan:
    """Decide for the desired configuration of an initialised instance (see the module docstring)."""
    running = running_hash(statefulset)
    if running is None or running == config_hash(instance):
        return ConfigCheckPlan()
    state = job_state(job)
    if state is None:
        body = config_check_job(instance, job_name(instance))
        action = Action(Verb.CREATE, "Job", job_name(instance), "ConfigurationChanged", body)
        return ConfigCheckPlan(action=action, hold=True, requeue_after=RECHECK_SECONDS)
    if state == JobState.RUNNING:
        return ConfigCheckPlan(hold=True, requeue_after=RECHECK_SECONDS)
    if state == JobState.COMPLETE:
        return ConfigCheckPlan()
    assert job is not None
    server = termination_summary(pods).get("error") or job_failure_message(job)
    message = (
        f"spec.postgres.parameters: PostgreSQL {instance.version} refuses to start with them ({server}); "
        "the database keeps running with its previous configuration. Fix or remove the parameter"
    )
    return ConfigCheckPlan(hold=True, problem=Problem("ParametersRejected", message))

"""Decide what the schema migrations of a SampleDB need, from what is observed (no I/O).

One Job per distinct content of the migrations ConfigMap: its name carries a digest of the
content, so an unchanged ConfigMap never runs twice (even across operator restarts) and an
edited one runs once more (the script itself skips what the database already has). The Job only
starts once the database is initialised and ready. A failed file becomes a Degraded condition
naming the file and PostgreSQL's error; the database keeps serving.

The ConfigMap is the user's: the watch caches hold a digest of every ConfigMap's content and wake
the SampleDB that names one when it changes (`observe.cache`), so an edit runs at once, and an
instance whose migrations are done is not looked at again until something changes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sampledb_operator.api.common import MigrationPhase
from sampledb_operator.jobs.migrate import migration_job
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.status import JobState, Problem, job_failure_message, job_state, termination_summary
from sampledb_operator.resources.instance import Instance

# Where a cached ConfigMap (`observe.projections`) carries `content_digest` instead of its data: a
# key the API server never sends (ConfigMaps have no such field), so a full object never has it.
CONTENT_DIGEST_KEY = "sampledb.io/content-digest"


def content_digest(config_map: dict[str, Any]) -> str:
    """SHA-256 (hex) of a ConfigMap's data; a cached projection's own copy when it carries one."""
    carried = config_map.get(CONTENT_DIGEST_KEY)
    if isinstance(carried, str):
        return carried
    content = json.dumps(sorted((config_map.get("data") or {}).items()), separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


def job_name(instance: Instance, config_map: dict[str, Any]) -> str:
    """`<instance>-migrate-<digest of the SQL files>` (the full object or its cached projection)."""
    return f"{instance.name}-migrate-{content_digest(config_map)[:10]}"


@dataclass(frozen=True)
class MigrationPlan:
    """The Job to create (if any), the status block, and a problem to report (if any)."""

    action: Action | None
    status: dict[str, Any]
    problem: Problem | None = None


def plan_migrations(
    instance: Instance,
    config_map: dict[str, Any] | None,
    job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    *,
    database_ready: bool,
) -> MigrationPlan:
    """What to do about spec.migrations (which must be set)."""
    assert instance.spec.migrations is not None
    source = instance.spec.migrations.configMap
    if config_map is None:
        message = f"spec.migrations.configMap ({source}): ConfigMap not found; create it with the SQL files"
        return MigrationPlan(
            None,
            {"configMap": source, "phase": MigrationPhase.PENDING.value},
            Problem("MigrationsConfigMapMissing", message),
        )
    name = job_name(instance, config_map)
    status: dict[str, Any] = {"configMap": source, "job": name}
    if job is None:
        if not database_ready:
            return MigrationPlan(None, {**status, "phase": MigrationPhase.PENDING.value})
        body = migration_job(instance, name=name, config_map=source)
        return MigrationPlan(
            Action(Verb.CREATE, "Job", name, "MigrationsPending", body),
            {**status, "phase": MigrationPhase.RUNNING.value},
        )
    state = job_state(job)
    summary = termination_summary(pods)
    if state is JobState.RUNNING:
        return MigrationPlan(None, {**status, "phase": MigrationPhase.RUNNING.value})
    if state is JobState.COMPLETE:
        return MigrationPlan(
            None, {**status, "phase": MigrationPhase.SUCCEEDED.value, "lastApplied": summary.get("lastApplied")}
        )
    failed, error = summary.get("failed"), summary.get("error") or job_failure_message(job)
    message = (
        f"migration {failed or '?'} failed and was rolled back: {error}; fix it with a new file in "
        f"ConfigMap {source} (the Job reruns when its content changes)"
    )
    failure = {
        **status,
        "phase": MigrationPhase.FAILED.value,
        "failed": failed,
        "error": error,
        "lastApplied": summary.get("lastApplied"),
    }
    return MigrationPlan(None, failure, Problem("MigrationFailed", message))

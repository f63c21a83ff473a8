"""Derive a SampleDB's status (phase and conditions) from what was observed, with no I/O.

The status is a function of the observed children and the problems found, plus the previous
status only to keep `lastTransitionTime` stable: recomputing it from unchanged inputs gives an
identical dict, so the reconciler writes the status only when something really changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sampledb_operator.api.common import Phase
from sampledb_operator.resources.instance import Instance

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
# Far below the API's 32 KiB per condition message: a status write must never fail on its length.
MAX_MESSAGE = 4000


def bounded(message: str) -> str:
    """`message`, shortened with a note when it is longer than a condition should carry."""
    if len(message) <= MAX_MESSAGE:
        return message
    return f"{message[:MAX_MESSAGE]}... ({len(message) - MAX_MESSAGE} more characters)"


class JobState(StrEnum):
    """The outcome of a Job, read from its conditions."""

    RUNNING = "Running"
    COMPLETE = "Complete"
    FAILED = "Failed"


def job_state(job: dict[str, Any] | None) -> JobState | None:
    """Complete, Failed or Running; None when there is no Job."""
    if job is None:
        return None
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in (JobState.COMPLETE, JobState.FAILED):
            return JobState(cond["type"])
    return JobState.RUNNING


def job_failure_message(job: dict[str, Any]) -> str:
    """The Job controller's own explanation of a failure (e.g. BackoffLimitExceeded)."""
    for cond in (job.get("status") or {}).get("conditions") or []:
        if cond.get("type") == JobState.FAILED and cond.get("status") == "True":
            return f"{cond.get('reason', 'Failed')}: {cond.get('message', '')}".strip(": ")
    return "failed"


def termination_summary(pods: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON the backup script wrote to its termination log, from the newest finished Pod."""
    for pod in sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True):
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            message = ((container.get("state") or {}).get("terminated") or {}).get("message")
            if message:
                try:
                    summary = json.loads(message)
                except ValueError:
                    continue
                if isinstance(summary, dict):
                    return summary
    return {}


@dataclass(frozen=True)
class Problem:
    """Something only detectable at reconcile time that keeps the instance from being healthy."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """What the status is computed from."""

    statefulset: dict[str, Any] | None
    init_job: dict[str, Any] | None
    problems: tuple[Problem, ...] = ()
    migrations: dict[str, Any] | None = None
    upgrade: dict[str, Any] | None = None  # status.upgrade as the state machine left it
    upgrading: str | None = None  # set while a major upgrade is under way: what it is doing


@dataclass(frozen=True)
class Verdict:
    """Phase plus the three standard conditions as (status, reason, message)."""

    phase: Phase
    ready: tuple[str, str, str]
    progressing: tuple[str, str, str]
    degraded: tuple[str, str, str]


def ready_replicas(sts: dict[str, Any] | None) -> int:
    """How many database Pods the StatefulSet reports ready (0 when there is none)."""
    return int(((sts or {}).get("status") or {}).get("readyReplicas") or 0)


def rolled_out(sts: dict[str, Any]) -> bool:
    """The StatefulSet controller has seen the latest spec and every Pod runs the latest revision."""
    st = sts.get("status") or {}
    generation_seen = st.get("observedGeneration", 0) >= sts["metadata"].get("generation", 0)
    return bool(generation_seen and st.get("currentRevision") == st.get("updateRevision"))


def initialized(instance_status: dict[str, Any]) -> bool:
    """Whether the status records the initial-configuration Job as done (it never runs again)."""
    return bool((instance_status.get("initialization") or {}).get("completed"))


def init_completed(instance_status: dict[str, Any], init_job: dict[str, Any] | None) -> bool:
    """Initialised before, or the initial-configuration Job has just completed."""
    return initialized(instance_status) or job_state(init_job) is JobState.COMPLETE


def verdict(previous_status: dict[str, Any], observation: Observation) -> Verdict:
    """Decide the phase and conditions; the first matching rule wins, each with a named reason."""
    ok = ("False", "AsExpected", "")
    if observation.problems:
        first = observation.problems[0]
        message = "; ".join(p.message for p in observation.problems)
        return Verdict(
            Phase.DEGRADED,
            ("False", first.reason, message),
            ("False", first.reason, ""),
            ("True", first.reason, message),
        )
    if job_state(observation.init_job) is JobState.FAILED and observation.init_job is not None:
        message = (
            f"initial-configuration Job {observation.init_job['metadata']['name']} failed ("
            f"{job_failure_message(observation.init_job)}); see its Pod logs, then delete the Job to retry"
        )
        return Verdict(
            Phase.DEGRADED, ("False", "InitializationFailed", message), ok, ("True", "InitializationFailed", message)
        )
    if observation.upgrading:
        message = observation.upgrading
        return Verdict(Phase.UPGRADING, ("False", "MajorUpgrade", message), ("True", "MajorUpgrade", message), ok)
    sts = observation.statefulset
    if sts is None or ready_replicas(sts) < 1:
        message = "waiting for the database Pod to become ready"
        return Verdict(Phase.PROVISIONING, ("False", "PodNotReady", message), ("True", "Provisioning", message), ok)
    if not init_completed(previous_status, observation.init_job):
        message = "creating the application database and role"
        return Verdict(Phase.INITIALIZING, ("False", "Initializing", message), ("True", "Initializing", message), ok)
    if not rolled_out(sts):
        message = "rolling the database Pod to a new configuration or image"
        return Verdict(Phase.READY, ("True", "RollingUpdate", message), ("True", "RollingUpdate", message), ok)
    return Verdict(
        Phase.READY, ("True", "DatabaseReady", "the database accepts connections"), ("False", "UpToDate", ""), ok
    )


def _condition(
    ctype: str, value: tuple[str, str, str], previous: dict[str, dict[str, Any]], generation: int, now: str
) -> dict[str, Any]:
    status, reason, message = value
    before = previous.get(ctype)
    changed = before is None or before.get("status") != status
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": bounded(message),
        "lastTransitionTime": now if changed or before is None else before.get("lastTransitionTime") or now,
        "observedGeneration": generation,
    }


def compute_status(
    instance: Instance, previous_status: dict[str, Any], observation: Observation, now: str
) -> dict[str, Any]:
    """The full status to write; equal to `previous_status` when nothing changed."""
    decided = verdict(previous_status, observation)
    previous_conditions = {c["type"]: c for c in previous_status.get("conditions") or []}
    conditions = [
        _condition(ctype, value, previous_conditions, instance.generation, now)
        for ctype, value in ((READY, decided.ready), (PROGRESSING, decided.progressing), (DEGRADED, decided.degraded))
    ]
    status: dict[str, Any] = {
        "phase": decided.phase.value,
        "observedGeneration": instance.generation,
        "conditions": conditions,
        "endpoint": instance.endpoint,
        "secretName": instance.credentials_secret,
        "readyInstances": ready_replicas(observation.statefulset),
        "initialization": _initialization(instance, previous_status, observation),
        "migrations": observation.migrations,
        "upgrade": observation.upgrade or previous_status.get("upgrade"),
    }
    running = _running_image(observation.statefulset)
    if running is not None:
        status["image"] = running
        status["version"] = instance.version if running == instance.image else previous_status.get("version")
    cleaned: dict[str, Any] = _without_nulls(status)
    return cleaned


def _without_nulls(value: Any) -> Any:
    """Drop None values: the API server stores no nulls, so comparing with them would always differ."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def _running_image(sts: dict[str, Any] | None) -> str | None:
    """The image of the ready Pod template; None until a Pod is ready."""
    if sts is None or ready_replicas(sts) < 1:
        return None
    image: str = sts["spec"]["template"]["spec"]["containers"][0]["image"]
    return image


def _initialization(instance: Instance, previous_status: dict[str, Any], observation: Observation) -> dict[str, Any]:
    before = previous_status.get("initialization") or {}
    if before.get("completed"):
        completed: dict[str, Any] = before
        return completed
    job = observation.init_job
    if job_state(job) is JobState.COMPLETE and job is not None:
        return {
            "job": instance.init_job,
            "completed": True,
            "completionTime": (job.get("status") or {}).get("completionTime"),
        }
    return {"job": instance.init_job, "completed": False}

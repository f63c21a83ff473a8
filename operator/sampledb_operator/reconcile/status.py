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
from sampledb_operator.reconcile import conditions
from sampledb_operator.reconcile.conditions import ARCHIVING, DEGRADED, PROGRESSING, READY, Value
from sampledb_operator.resources.instance import Instance


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
    storage: dict[str, Any] | None = None  # status.storage as the growth of the volumes left it
    resizing: str | None = None  # set while the volumes grow: what the growth waits for
    ready_pods: int | None = None  # counted from the Pods while the StatefulSet may be re-created
    instances: int = 1  # spec.instances
    primary_ready: bool | None = None  # with standbys: the primary's Pod is ready (None: one server)
    failover: dict[str, Any] | None = None  # status.failover as the failover left it (None: not looked at)
    failing_over: tuple[str, str] | None = None  # while the primary changes: the reason, and what is done
    servers: list[dict[str, Any]] | None = None  # status.servers (None: one server)
    archive: dict[str, Any] | None = None  # status.archive (None: no object store)
    archiving: Value | None = None  # the ContinuousArchiving condition (None: nothing new to say)
    recovery: dict[str, Any] | None = None  # status.recovery (None: no spec.recovery)
    recovering: bool = False  # spec.recovery applies: the database comes from the object store


@dataclass(frozen=True)
class Verdict:
    """Phase plus the three standard conditions as (status, reason, message)."""

    phase: Phase
    ready: Value
    progressing: Value
    degraded: Value

    def updates(self) -> dict[str, Value]:
        """The three conditions by type, for `conditions.merge`."""
        return {READY: self.ready, PROGRESSING: self.progressing, DEGRADED: self.degraded}


def ready_replicas(sts: dict[str, Any] | None) -> int:
    """How many database Pods the StatefulSet reports ready (0 when there is none)."""
    return int(((sts or {}).get("status") or {}).get("readyReplicas") or 0)


def pod_ready(pod: dict[str, Any]) -> bool:
    """The kubelet reports the Pod Ready (its readiness probe passes)."""
    observed = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in observed)


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


OK = Value("False", "AsExpected")


def degraded(reason: str, message: str) -> Verdict:
    """Not Ready, not Progressing, Degraded: what every problem reports, with its reason."""
    return Verdict(
        Phase.DEGRADED, Value("False", reason, message), Value("False", reason), Value("True", reason, message)
    )


def _moving(phase: Phase, *, ready: bool, reason: str, message: str, progress: str | None = None) -> Verdict:
    """Progressing towards the spec (with its own reason when it differs from Ready's)."""
    ready_value = Value("True" if ready else "False", reason, message)
    return Verdict(phase, ready_value, Value("True", progress or reason, message), OK)


def verdict(previous_status: dict[str, Any], observation: Observation) -> Verdict:
    """Decide the phase and conditions; the first matching rule wins, each with a named reason."""
    if observation.problems:
        return degraded(observation.problems[0].reason, "; ".join(p.message for p in observation.problems))
    init = observation.init_job
    if init is not None and job_state(init) is JobState.FAILED:
        return degraded(
            "InitializationFailed",
            f"initial-configuration Job {init['metadata']['name']} failed ({job_failure_message(init)}); "
            "see its Pod logs, then delete the Job to retry",
        )
    if observation.upgrading:
        return _moving(Phase.UPGRADING, ready=False, reason="MajorUpgrade", message=observation.upgrading)
    if observation.resizing:
        serving = bool(observation.ready_pods)
        phase = Phase.READY if serving else Phase.PROVISIONING
        return _moving(phase, ready=serving, reason="Resizing", message=observation.resizing)
    if observation.failing_over:
        reason, message = observation.failing_over
        return _moving(Phase.PROVISIONING, ready=False, reason=reason, message=message)
    sts = observation.statefulset
    if sts is None or ready_replicas(sts) < 1 or observation.primary_ready is False:
        pod = "the primary's Pod" if observation.primary_ready is False else "the database Pod"
        message = f"waiting for {pod} to become ready"
        return _moving(Phase.PROVISIONING, ready=False, reason="PodNotReady", message=message, progress="Provisioning")
    if not init_completed(previous_status, init):
        message = "creating the application database and role"
        if observation.recovering:
            message = f"recovering from the object store (spec.recovery; see the primary's log), then {message}"
        return _moving(Phase.INITIALIZING, ready=False, reason="Initializing", message=message)
    if not rolled_out(sts):
        message = "rolling the database Pod to a new configuration or image"
        return _moving(Phase.READY, ready=True, reason="RollingUpdate", message=message)
    if ready_replicas(sts) < observation.instances:
        message = f"the primary serves; {ready_replicas(sts)} of {observation.instances} servers ready"
        return _moving(Phase.READY, ready=True, reason="StandbysNotReady", message=message)
    ready = Value("True", "DatabaseReady", "the database accepts connections")
    return Verdict(Phase.READY, ready, Value("False", "UpToDate"), OK)


def compute_status(
    instance: Instance, previous_status: dict[str, Any], observation: Observation, now: str
) -> dict[str, Any]:
    """The full status to write; equal to `previous_status` when nothing changed."""
    decided = verdict(previous_status, observation)
    updates = decided.updates() | ({ARCHIVING: observation.archiving} if observation.archiving else {})
    merged = conditions.merge(previous_status.get("conditions"), updates, generation=instance.generation, now=now)
    if observation.archive is None:  # no object store (any more): no archiving to report on
        merged = [c for c in merged if c["type"] != ARCHIVING]
    status: dict[str, Any] = {
        "phase": decided.phase.value,
        "observedGeneration": instance.generation,
        "conditions": merged,
        "endpoint": instance.endpoint,
        "secretName": instance.credentials_secret,
        "readyInstances": (
            ready_replicas(observation.statefulset) if observation.ready_pods is None else observation.ready_pods
        ),
        "currentPrimary": instance.serving_primary,
        "failover": observation.failover or previous_status.get("failover"),
        "initialization": _initialization(instance, previous_status, observation),
        "migrations": observation.migrations,
        "upgrade": observation.upgrade or previous_status.get("upgrade"),
        "storage": observation.storage or previous_status.get("storage"),  # kept while not looked at
        "servers": observation.servers,
        "archive": observation.archive,
        "recovery": observation.recovery,
    }
    # Until a Pod is ready again, the image and version last seen running stay (not dropped).
    running = _running_image(observation.statefulset)
    status["image"] = running or previous_status.get("image")
    same = running is not None and running == instance.image
    status["version"] = instance.version if same else previous_status.get("version")
    cleaned: dict[str, Any] = _without_nulls(status)
    return cleaned


def merge_patch(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns `before` into `after`: `after`, with a null for every key it dropped.

    A merge patch keeps the keys it does not name, so without the nulls a field the status no
    longer has (a failover record's `position` or `switchover` when the next change of primary
    starts, the servers once the standbys are gone) would stay: the stored status would never
    equal the computed one, and every pass would write it again (seen on the real node: hundreds
    of status writes a second after a switchover that followed a failover).
    """
    patch: dict[str, Any] = {key: None for key in before if key not in after}
    for key, value in after.items():
        old = before.get(key)
        patch[key] = merge_patch(old, value) if isinstance(value, dict) and isinstance(old, dict) else value
    return patch


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

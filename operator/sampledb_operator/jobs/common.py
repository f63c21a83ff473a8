"""The skeleton every operator Job shares."""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources import security
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from sampledb_operator.resources.secret import SUPERUSER_PASSWORD_KEY

JOB_TTL_SECONDS = 7 * 24 * 3600
# Every script starts by waiting for the server (bounded by the Job's activeDeadlineSeconds).
WAIT_FOR_SERVER = 'until pg_isready --quiet; do echo "sampledb: waiting for $PGHOST"; sleep 2; done\n'
# Where a script leaves its one-line JSON summary for the operator (the Pod's termination message).
TERMINATION_LOG = "/dev/termination-log"


def connection_env(instance: Instance, *, user: str, database: str, password_key: str) -> list[dict[str, Any]]:
    """The libpq variables to reach the instance as `user`; the password via secretKeyRef."""
    return [
        {"name": "PGHOST", "value": f"{instance.client_service}.{instance.namespace}.svc"},
        {"name": "PGPORT", "value": str(POSTGRES_PORT)},
        {"name": "PGUSER", "value": user},
        {"name": "PGDATABASE", "value": database},
        {"name": "PGCONNECT_TIMEOUT", "value": "10"},
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": instance.credentials_secret, "key": password_key}},
        },
    ]


def superuser_env(instance: Instance) -> list[dict[str, Any]]:
    """The libpq variables to reach the instance as the superuser."""
    return connection_env(instance, user="postgres", database="postgres", password_key=SUPERUSER_PASSWORD_KEY)


def job(
    instance: Instance,
    *,
    name: str,
    component: str,
    script: str,
    env: list[dict[str, Any]],
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """A Job running `script` with /bin/sh in `image` (by default the instance's job image)."""
    container = {
        "name": component,
        "image": image or instance.job_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script],
        "env": env,
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": security.container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *(mounts or [])],  # noqa: S108
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": instance.metadata(name, component),
        "spec": {
            "backoffLimit": instance.settings.job_backoff_limit,
            "activeDeadlineSeconds": instance.settings.job_deadline_seconds,
            "ttlSecondsAfterFinished": JOB_TTL_SECONDS,
            "template": {
                "metadata": {"labels": instance.labels(component)},
                "spec": {
                    "restartPolicy": "Never",
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "securityContext": security.pod_security_context(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}, *(volumes or [])],
                },
            },
        },
    }

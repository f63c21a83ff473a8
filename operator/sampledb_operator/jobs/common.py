"""The skeleton every operator Job shares."""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources import security
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from sampledb_operator.resources.secret import SUPERUSER_PASSWORD_KEY

JOB_TTL_SECONDS = 7 * 24 * 3600


def superuser_env(instance: Instance) -> list[dict[str, Any]]:
    """Libpq variables to reach the instance as the superuser; the password via secretKeyRef."""
    return [
        {"name": "PGHOST", "value": f"{instance.client_service}.{instance.namespace}.svc"},
        {"name": "PGPORT", "value": str(POSTGRES_PORT)},
        {"name": "PGUSER", "value": "postgres"},
        {"name": "PGDATABASE", "value": "postgres"},
        {"name": "PGCONNECT_TIMEOUT", "value": "10"},
        {
            "name": "PGPASSWORD",
            "valueFrom": {"secretKeyRef": {"name": instance.credentials_secret, "key": SUPERUSER_PASSWORD_KEY}},
        },
    ]


def job(
    instance: Instance,
    *,
    name: str,
    component: str,
    script: str,
    env: list[dict[str, Any]],
    volumes: list[dict[str, Any]] | None = None,
    mounts: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Job running `script` with /bin/sh in the instance's job image."""
    container = {
        "name": component,
        "image": instance.job_image,
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

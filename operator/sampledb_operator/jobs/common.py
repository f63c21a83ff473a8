"""The skeleton every operator Job shares."""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources import security
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from sampledb_operator.resources.paths import (
    TERMINATION_LOG as TERMINATION_LOG,
)  # re-exported: the Jobs import it from here
from sampledb_operator.resources.secret import PASSFILE_FROM_SECRET, SUPERUSER_PASSWORD_KEY
from sampledb_operator.resources.statefulset import CREDENTIALS_DIR

JOB_TTL_SECONDS = 7 * 24 * 3600
# Jobs mount the keys they need of the credentials Secret in CREDENTIALS_DIR, as the StatefulSet does:
# secrets reach a Job as files, never as environment variables that `kubectl describe` lists. The
# scripts turn the file into libpq's password file, in the Pod's private /tmp emptyDir.
PASSFILE = "/tmp/pgpass"  # noqa: S108
# Every script that connects starts with this: the password file, then waiting for the server
# (bounded by the Job's activeDeadlineSeconds).
WAIT_FOR_SERVER = (
    PASSFILE_FROM_SECRET + 'until pg_isready --quiet; do echo "sampledb: waiting for $PGHOST"; sleep 2; done\n'
)


def connection_env(instance: Instance, *, user: str, database: str, password_key: str) -> list[dict[str, Any]]:
    """The libpq variables to reach the instance as `user`; the password from the mounted Secret.

    The Job must mount `password_key` (see `job(credentials=...)`); the script's WAIT_FOR_SERVER turns
    the file into the libpq password file.
    """
    return [
        {"name": "PGHOST", "value": f"{instance.client_service}.{instance.namespace}.svc"},
        {"name": "PGPORT", "value": str(POSTGRES_PORT)},
        {"name": "PGUSER", "value": user},
        {"name": "PGDATABASE", "value": database},
        {"name": "PGCONNECT_TIMEOUT", "value": "10"},
        {"name": "PGPASSFILE", "value": PASSFILE},
        {"name": "PASSWORD_FILE", "value": f"{CREDENTIALS_DIR}/{password_key}"},
    ]


def superuser_env(instance: Instance) -> list[dict[str, Any]]:
    """The libpq variables to reach the instance as the superuser."""
    return connection_env(instance, user="postgres", database="postgres", password_key=SUPERUSER_PASSWORD_KEY)


def credentials_volume(instance: Instance, keys: tuple[str, ...]) -> dict[str, Any]:
    """The Secret volume with only `keys` of the credentials Secret, readable by the Pod's group."""
    return {
        "name": "credentials",
        "secret": {
            "secretName": instance.credentials_secret,
            "items": [{"key": key, "path": key} for key in keys],
            "defaultMode": 0o440,
        },
    }


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
    credentials: tuple[str, ...] = (),
    init: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A Job running `script` with /bin/sh in `image` (by default the instance's job image).

    `credentials`: the keys of the instance's credentials Secret to mount read-only in CREDENTIALS_DIR.
    `init`: a container (`script_container`) to run first, with the same /tmp and security context.
    """
    if credentials:
        volumes = [*(volumes or []), credentials_volume(instance, credentials)]
        mounts = [*(mounts or []), {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}]
    container = script_container(component, image or instance.job_image, script, mounts or [], env)
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
                    **({"initContainers": [init]} if init else {}),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}, *(volumes or [])],
                },
            },
        },
    }


def script_container(
    name: str, image: str, script: str, mounts: list[dict[str, Any]], env: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """A Job's container (its main one, or one that runs before it): `script` with /bin/sh, /tmp writable."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script],
        "env": env or [],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": security.container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],  # noqa: S108
    }

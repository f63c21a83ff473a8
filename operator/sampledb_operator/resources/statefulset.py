"""The StatefulSet that runs the PostgreSQL server.

The container runs our own start script instead of the image's entrypoint (the operand-image
contract: only `initdb`, `postgres`, `pg_isready`, `psql` and `pg_dump` on PATH are assumed).
The superuser password reaches initdb as a file from the Secret volume: never an argument or an
environment variable that `ps` or `kubectl describe` would show.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sampledb_operator.resources import security
from sampledb_operator.resources.config import (
    CONFIG_DIR,
    CONFIG_FILE,
    HBA_FILE,
    SOCKET_DIR,
    pg_hba_conf,
    postgresql_conf,
)
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from sampledb_operator.resources.secret import SUPERUSER_PASSWORD_KEY
from sampledb_operator.resources.volumes import claim_spec

DATA_MOUNT = "/var/lib/postgresql/data"
PGDATA = f"{DATA_MOUNT}/pgdata"  # a subdirectory: a fresh volume's root may hold lost+found
CREDENTIALS_DIR = "/etc/sampledb/credentials"
CONFIG_HASH_ANNOTATION = "sampledb.io/config-hash"
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
DEFAULT_LIMITS = {"memory": "1Gi"}


def initdb_flags(credentials_dir: str) -> str:
    """How every cluster is created, by the Pod's first start and by a major upgrade alike."""
    return (
        f"--username=postgres --pwfile={credentials_dir}/{SUPERUSER_PASSWORD_KEY} "
        "--auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --data-checksums"
    )


def start_script(*, config_dir: str = CONFIG_DIR, credentials_dir: str = CREDENTIALS_DIR) -> str:
    """Initialise the data directory on first start, then exec the server with our configuration."""
    return f"""set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "sampledb: initialising a new database cluster in $PGDATA"
  initdb {initdb_flags(credentials_dir)} -D "$PGDATA"
fi
exec postgres -D "$PGDATA" -c config_file={config_dir}/{CONFIG_FILE} -c hba_file={config_dir}/{HBA_FILE}
"""


def resources(instance: Instance) -> dict[str, dict[str, str]]:
    """The user's requests/limits over safe defaults (a memory limit keeps a runaway query local)."""
    spec = instance.spec.resources
    return {"requests": {**DEFAULT_REQUESTS, **spec.requests}, "limits": {**DEFAULT_LIMITS, **spec.limits}}


def probe_command(socket_dir: str = SOCKET_DIR) -> list[str]:
    """The readiness/liveness check: the server accepts connections on its local socket."""
    return ["pg_isready", "--host", socket_dir, "--port", str(POSTGRES_PORT), "--quiet"]


def _probe(*, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": probe_command()},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _container(instance: Instance) -> dict[str, Any]:
    return {
        "name": "postgres",
        "image": instance.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", start_script()],
        "env": [{"name": "PGDATA", "value": PGDATA}],
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "resources": resources(instance),
        "securityContext": security.container_security_context(),
        # initdb and crash recovery can be slow: the startup probe holds off liveness until then.
        "startupProbe": _probe(period=5, failures=120),
        "readinessProbe": _probe(period=5, failures=3),
        "livenessProbe": _probe(period=10, failures=6),
        "volumeMounts": [
            {"name": instance.data_volume, "mountPath": DATA_MOUNT},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True},
            {"name": "run", "mountPath": SOCKET_DIR},
            {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir private to the Pod
        ],
    }


def config_hash(instance: Instance) -> str:
    """Fingerprint of the server configuration: a change rolls the Pod so the server picks it up."""
    text = postgresql_conf(instance) + pg_hba_conf()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _volume_claim_template(instance: Instance) -> dict[str, Any]:
    return {"metadata": {"name": instance.data_volume, "labels": instance.labels("data")}, "spec": claim_spec(instance)}


def statefulset(instance: Instance) -> dict[str, Any]:
    """One replica (zero while an upgrade step holds the volume), OrderedReady, PVCs kept on deletion."""
    pod_labels = instance.labels("database")
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": instance.metadata(instance.statefulset, "database"),
        "spec": {
            "replicas": instance.replicas,
            "serviceName": instance.headless_service,
            "selector": {"matchLabels": instance.selector_labels()},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {CONFIG_HASH_ANNOTATION: config_hash(instance)}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": security.pod_security_context(),
                    "containers": [_container(instance)],
                    "volumes": [
                        {"name": "config", "configMap": {"name": instance.config_map}},
                        {
                            "name": "credentials",
                            "secret": {
                                "secretName": instance.credentials_secret,
                                "items": [{"key": SUPERUSER_PASSWORD_KEY, "path": SUPERUSER_PASSWORD_KEY}],
                                "defaultMode": 0o440,
                            },
                        },
                        {"name": "run", "emptyDir": {}},
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
            "volumeClaimTemplates": [_volume_claim_template(instance)],
        },
    }

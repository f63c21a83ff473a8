"""The StatefulSet that runs the PostgreSQL server.

The container runs our own start script instead of the image's entrypoint (the operand-image
contract: only `initdb`, `postgres`, `pg_ctl`, `pg_isready`, `psql`, `pg_dump`, `pg_basebackup`,
`pg_controldata` and `pg_rewind` on PATH are assumed).
The superuser password reaches initdb as a file from the Secret volume: never an argument or an
environment variable that `ps` or `kubectl describe` would show.
"""

from __future__ import annotations

import hashlib
from typing import Any

from sampledb_operator.api.common import SUPERUSER
from sampledb_operator.resources import archive, recovery, security
from sampledb_operator.resources.config import (
    CONFIG_DIR,
    CONFIG_FILE,
    HBA_FILE,
    PASSFILE,
    PRIMARY_FILE,
    REPLICATION_USER,
    SOCKET_DIR,
    pg_hba_conf,
    postgresql_conf,
)
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from sampledb_operator.resources.paths import DATA_MOUNT as DATA_MOUNT  # re-exported: imported from here
from sampledb_operator.resources.paths import PGDATA as PGDATA
from sampledb_operator.resources.paths import TERMINATION_LOG
from sampledb_operator.resources.secret import PASSFILE_FROM_SECRET, SUPERUSER_PASSWORD_KEY
from sampledb_operator.resources.volumes import claim_spec

SERVER_CONTAINER = "postgres"  # the server's container: the operator execs into it (failover, lag)
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


def start_script(
    primary_host: str,
    *,
    primary_port: int = POSTGRES_PORT,
    config_dir: str = CONFIG_DIR,
    credentials_dir: str = CREDENTIALS_DIR,
    archive_run_dir: str = archive.RUN_DIR,
    socket_dir: str = SOCKET_DIR,
    port: int = POSTGRES_PORT,
    termination_log: str = TERMINATION_LOG,
) -> str:
    """Prepare the data directory by the server's role, then exec the server with our configuration.

    The Pod the ConfigMap names as primary initialises an empty volume (or, with spec.recovery,
    restores and recovers it from the object store: `resources/recovery.py`), or starts on its
    data (a standby chosen by a failover stays one until the operator promotes it). Every other Pod is a
    standby. When its data cannot simply stream, it first waits until a primary accepts writes
    behind the read-write Service:
    - with no data, it is cloned with pg_basebackup into a side folder, moved into place only when
      whole (a clone cut short starts again);
    - with data of another major version (the primary was upgraded), it is cloned again;
    - with a primary's data (no standby.signal: the primary lost to a failover), it is rewound
      onto the new primary's timeline with pg_rewind, which discards what it wrote after the
      standby took over; if that fails (the WAL it needs is gone, say) it is cloned afresh, which
      discards the same writes, but only when its data is the same database as the primary's
      (same system identifier): a volume holding another database is never erased, and the
      server does not start. Either way two primaries never serve at once.
    The password file a standby connects with ($PGPASSFILE) is written at every start into the
    Pod's private socket folder, from the Secret file ($PASSWORD_FILE).
    With an object store configured and no pgbackrest in the image, the server starts without
    archiving (`resources/archive.py`) rather than keep every segment for a command that cannot run.
    With it, a helper reloads the configuration once the server accepts connections: the
    checkpointer applies archive_timeout only from its first wake after the start (it sleeps
    checkpoint_timeout, 5 min, before that: measured on 15, `benchmarks/bench_archive.py`), so an
    idle-ish primary would keep its first commits unarchived for minutes after every start. The
    helper becomes the server's child when the script execs it, and always exits 0, which the
    postmaster takes for a normal exit (any other code from a child it does not know, for a crash).
    """
    upstream = f"host={primary_host} port={primary_port} user={REPLICATION_USER} dbname=postgres connect_timeout=5"
    server = (
        f'postgres -D "$PGDATA" -c config_file={config_dir}/{CONFIG_FILE} -c hba_file={config_dir}/{HBA_FILE} '
        '-c cluster_name="$HOSTNAME"'
    )
    recover = recovery.start_step(
        config_dir=config_dir,
        script=f"{config_dir}/{archive.SCRIPT_FILE}",
        run_dir=archive_run_dir,
        socket_dir=socket_dir,
        port=port,
        termination_log=termination_log,
        server=f"{server} -c listen_addresses=",
        restoring=f"{socket_dir}/{recovery.RESTORING_FILE}",
    )
    # PID 1 ignores signals it has no handler for: without the trap, a standby waiting for its
    # primary would outlive its Pod's deletion by the whole grace period.
    return f"""set -eu
trap 'exit 143' TERM INT
primary="$(cat {config_dir}/{PRIMARY_FILE})"
rm -f {socket_dir}/{recovery.RESTORING_FILE}
{PASSFILE_FROM_SECRET}if [ "$HOSTNAME" = "$primary" ]; then
{recover}  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "sampledb: initialising a new database cluster in $PGDATA"
    initdb {initdb_flags(credentials_dir)} -D "$PGDATA"
  fi
else
  set -- $(postgres -V)  # "postgres (PostgreSQL) 17.2 ...": the third word
  major="${{3%%.*}}"
  if [ ! -f "$PGDATA/standby.signal" ] || [ "$(cat "$PGDATA/PG_VERSION" 2>/dev/null)" != "$major" ]; then
    waited=0
    until [ "$(psql "{upstream}" -XAtc 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
      [ $((waited % 15)) -eq 0 ] && echo "sampledb: waiting for the primary ${{primary:-(electing)}} to accept writes"
      waited=$((waited + 1))
      sleep 1
    done
  fi
  if [ -s "$PGDATA/PG_VERSION" ] && [ ! -f "$PGDATA/standby.signal" ]; then
    echo "sampledb: $HOSTNAME holds a former primary's data; $primary is the primary: rewinding to its timeline"
    if pg_rewind --target-pgdata="$PGDATA" --source-server="{upstream}" --progress; then
      touch "$PGDATA/standby.signal"
    else
      ours="$(pg_controldata -D "$PGDATA" | sed -n 's/^Database system identifier: *//p')"
      theirs="$(psql "{upstream}" -XAtc 'select system_identifier from pg_control_system()')"
      if [ -z "$ours" ] || [ "$ours" != "$theirs" ]; then
        echo "sampledb: pg_rewind failed, and this volume holds another database (system identifier" \
          "${{ours:-unreadable}}, the primary's $theirs): not starting; delete this Pod's claim to clone it" >&2
        exit 1
      fi
      echo "sampledb: pg_rewind failed on this database's own data: cloning it afresh from $primary"
      rm -rf "$PGDATA"
    fi
  fi
  if [ -s "$PGDATA/PG_VERSION" ] && [ "$(cat "$PGDATA/PG_VERSION")" != "$major" ]; then
    echo "sampledb: this standby's data is PostgreSQL $(cat "$PGDATA/PG_VERSION"), the server $major: cloning again"
    rm -rf "$PGDATA"
  fi
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    echo "sampledb: cloning this standby from the primary $primary"
    rm -rf "$PGDATA.clone"
    pg_basebackup --pgdata="$PGDATA.clone" --host={primary_host} --port={primary_port} \\
      --username={REPLICATION_USER} --no-password --wal-method=stream --checkpoint=fast
    touch "$PGDATA.clone/standby.signal"
    rm -rf "$PGDATA"
    mv "$PGDATA.clone" "$PGDATA"
  fi
fi
set --
rm -f {archive_run_dir}/{archive.NO_PGBACKREST_FILE}
if [ -f {config_dir}/{archive.CONF_FILE} ] && ! command -v pgbackrest >/dev/null; then
  echo "sampledb: spec.backup.objectStore is set but this image has no pgbackrest: WAL is not archived" >&2
  mkdir -p {archive_run_dir} && : > {archive_run_dir}/{archive.NO_PGBACKREST_FILE}
  set -- -c archive_mode=off
elif [ -f {config_dir}/{archive.CONF_FILE} ]; then
  (
    trap '' HUP INT TERM
    tries=0
    until psql -h {socket_dir} -p {port} -U postgres -d postgres -XAtqc 'select pg_reload_conf()'; do
      tries=$((tries + 1)); [ "$tries" -lt 300 ] || break; sleep 1
    done
    exit 0
  ) < /dev/null > /dev/null 2>&1 &
fi
exec {server} "$@"
"""  # noqa: S608 - a shell script: its SQL is a constant


def stop_command() -> list[str]:
    """The preStop hook: a fast shutdown (open sessions are ended, the WAL reaches the standbys).

    The container's main process is the server, which takes SIGTERM as a smart shutdown that waits
    for every client to leave; the kubelet runs this first.
    """
    return ["pg_ctl", "stop", "-D", PGDATA, "--mode=fast", "--wait", "--timeout=50"]


def resources(instance: Instance) -> dict[str, dict[str, str]]:
    """The user's requests/limits over safe defaults (a memory limit keeps a runaway query local)."""
    spec = instance.spec.resources
    return {"requests": {**DEFAULT_REQUESTS, **spec.requests}, "limits": {**DEFAULT_LIMITS, **spec.limits}}


def probe_command(socket_dir: str = SOCKET_DIR) -> list[str]:
    """The readiness/liveness check: the server accepts connections on its local socket."""
    return ["pg_isready", "--host", socket_dir, "--port", str(POSTGRES_PORT), "--quiet"]


def server_sql(*sql: str) -> list[str]:
    """`psql` as the superuser over the server's own socket (trusted), for the operator's execs.

    Each query is its own `-c`: psql prints every one's rows, in order.
    """
    return ["psql", "-h", SOCKET_DIR, "-U", SUPERUSER, "-d", "postgres", "-XAt", *(a for q in sql for a in ("-c", q))]


def _probe(*, period: int, failures: int, restoring: bool) -> dict[str, Any]:
    """pg_isready, or the start script's RESTORING_FILE (`resources/recovery.py`).

    While it restores or recovers, startup and liveness pass (`restoring`: a long restore would
    outlast them), and readiness fails (the server replaying is not the one clients get).
    """
    marker = f"{SOCKET_DIR}/{recovery.RESTORING_FILE}"
    check = " ".join(probe_command())
    command = f"{check} || [ -f {marker} ]" if restoring else f"{check} && [ ! -f {marker} ]"
    return {
        "exec": {"command": ["sh", "-c", command]},
        "periodSeconds": period,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }


def _mounts(instance: Instance, *, credentials: bool) -> list[dict[str, Any]]:
    """The data, its configuration, (the superuser's password,) the private sockets and scratch, the object store's."""
    return [
        {"name": instance.data_volume, "mountPath": DATA_MOUNT},
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        *([{"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}] if credentials else []),
        {"name": "run", "mountPath": SOCKET_DIR},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108 - an emptyDir private to the Pod
        *archive.mounts(instance),
    ]


def _backup_container(instance: Instance) -> list[dict[str, Any]]:
    """With an object store, the container base backups run in (`resources/archive.py`); none otherwise.

    Beside the server, on its volumes: pgBackRest copies the data directory itself.
    """
    if not instance.archives:
        return []
    return [
        {
            "name": archive.BACKUP_CONTAINER,
            "image": instance.image,
            "imagePullPolicy": "IfNotPresent",
            "command": ["/bin/sh", "-c", archive.BACKUP_CONTAINER_COMMAND],
            "resources": archive.BACKUP_CONTAINER_RESOURCES,
            "securityContext": security.container_security_context(),
            "volumeMounts": _mounts(instance, credentials=False),
        }
    ]


def _container(instance: Instance) -> dict[str, Any]:
    return {
        "name": SERVER_CONTAINER,
        "image": instance.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", start_script(instance.primary_host)],
        "env": [
            {"name": "PGDATA", "value": PGDATA},
            {"name": "PASSWORD_FILE", "value": f"{CREDENTIALS_DIR}/{SUPERUSER_PASSWORD_KEY}"},
            {"name": "PGPASSFILE", "value": f"{SOCKET_DIR}/{PASSFILE}"},
        ],
        "ports": [{"name": "postgres", "containerPort": POSTGRES_PORT, "protocol": "TCP"}],
        "resources": resources(instance),
        "securityContext": security.container_security_context(),
        # initdb and crash recovery can be slow: the startup probe holds off liveness until then.
        "startupProbe": _probe(period=5, failures=120, restoring=True),
        "readinessProbe": _probe(period=5, failures=3, restoring=False),
        "livenessProbe": _probe(period=10, failures=6, restoring=True),
        "lifecycle": {"preStop": {"exec": {"command": stop_command()}}},
        "volumeMounts": _mounts(instance, credentials=True),
    }


def config_hash(instance: Instance) -> str:
    """Fingerprint of the server configuration: a change rolls the Pod so the server picks it up."""
    text = postgresql_conf(instance) + pg_hba_conf()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _volume_claim_template(instance: Instance) -> dict[str, Any]:
    return {"metadata": {"name": instance.data_volume, "labels": instance.labels("data")}, "spec": claim_spec(instance)}


def _spread(instance: Instance) -> dict[str, Any]:
    """Servers of one instance on different nodes when the scheduler can: one node lost, one server lost."""
    term = {"labelSelector": {"matchLabels": instance.selector_labels()}, "topologyKey": "kubernetes.io/hostname"}
    return {
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
        }
    }


def statefulset(instance: Instance) -> dict[str, Any]:
    """spec.instances replicas (fewer while an upgrade step holds the volume), Parallel, PVCs kept.

    Parallel, not OrderedReady: after a failover the primary may be any Pod, and the standbys
    below it wait for it (the start script); started in order, a standby waiting for a primary
    not yet created would wait for ever.
    """
    pod_labels = instance.labels("database")
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": instance.metadata(instance.statefulset, "database"),
        "spec": {
            "replicas": instance.replicas,
            "serviceName": instance.headless_service,
            "selector": {"matchLabels": instance.selector_labels()},
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "RollingUpdate"},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
            "template": {
                "metadata": {"labels": pod_labels, "annotations": {CONFIG_HASH_ANNOTATION: config_hash(instance)}},
                "spec": {
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 60,
                    "securityContext": security.pod_security_context(),
                    "affinity": _spread(instance),
                    "containers": [_container(instance), *_backup_container(instance)],
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
                        *archive.volumes(instance),
                    ],
                },
            },
            "volumeClaimTemplates": [_volume_claim_template(instance)],
        },
    }

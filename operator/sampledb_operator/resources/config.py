"""The ConfigMap with `postgresql.conf`, `pg_hba.conf` and the primary's name, and the policy on user parameters.

A parameter is refused when PostgreSQL does not know it (a typo would stop the server from
starting), when the operator manages it itself (changing it would break probes, Services or
volumes), or when it could make the server run arbitrary code or load arbitrary libraries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from sampledb_operator.api.common import MAX_INSTANCES
from sampledb_operator.resources import archive, recovery
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from sampledb_operator.resources.paths import CONFIG_DIR as CONFIG_DIR  # re-exported: imported from here
from sampledb_operator.resources.paths import SOCKET_DIR as SOCKET_DIR

CONFIG_FILE = "postgresql.conf"
HBA_FILE = "pg_hba.conf"
PRIMARY_FILE = "primary"  # the primary's Pod name (empty while a failover fences the old one): who initialises
# Standbys stream as the superuser, whose password every server already has (the credentials
# volume): a dedicated role would need a key that existing and user-supplied Secrets lack.
REPLICATION_USER = "postgres"
PASSFILE = ".pgpass"  # in SOCKET_DIR, the Pod's private emptyDir; written by the start script

MANAGED_PARAMETERS = frozenset(
    {
        "listen_addresses",
        "port",
        "data_directory",
        "config_file",
        "hba_file",
        "ident_file",
        "unix_socket_directories",
        "external_pid_file",
        "password_encryption",
        # Replication: set per server by the start script, or to follow the primary.
        "cluster_name",
        "primary_conninfo",
        "primary_slot_name",
        "synchronous_standby_names",  # spec.replication.synchronous
        # On without an archive_command, the server keeps every WAL segment until its volume is full.
        "archive_mode",  # spec.backup.objectStore
    }
)
DANGEROUS_PARAMETERS = frozenset(
    {
        "archive_command",
        "archive_library",
        "archive_cleanup_command",
        "restore_command",
        "recovery_end_command",
        "shared_preload_libraries",
        "local_preload_libraries",
        "session_preload_libraries",
        "dynamic_library_path",
        "ssl_passphrase_command",
        "log_directory",
        "ssl_cert_file",
        "ssl_key_file",
        "ssl_ca_file",
    }
)
# Extension parameters are namespaced (`pg_stat_statements.max`) and unknown to plain postgres.
_CUSTOM_PARAMETER = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_.]*$")
_MAX_VALUE_LENGTH = 1024


@dataclass(frozen=True)
class ParameterProblem:
    """One refused parameter, phrased for a status condition."""

    name: str
    reason: str

    def __str__(self) -> str:
        return f"spec.postgres.parameters.{self.name}: {self.reason}"


@cache
def known_parameters() -> frozenset[str]:
    """Lower-cased names of every parameter the supported PostgreSQL versions know."""
    text = resources.files(__package__).joinpath("postgres_parameters.tsv").read_text()
    return frozenset(line.split("\t", 1)[0].lower() for line in text.splitlines() if line and not line.startswith("#"))


def parameter_problems(parameters: dict[str, str]) -> list[ParameterProblem]:
    """Every reason to refuse the user's parameters; empty when they are all acceptable."""
    problems = []
    for name, value in sorted(parameters.items()):
        key = name.lower()
        if key in MANAGED_PARAMETERS:
            problems.append(ParameterProblem(name, "is managed by the operator; remove it"))
        elif key in DANGEROUS_PARAMETERS:
            problems.append(ParameterProblem(name, "is not allowed (it could run commands or load code); remove it"))
        elif key not in known_parameters() and not _CUSTOM_PARAMETER.match(key):
            problems.append(ParameterProblem(name, "is not a PostgreSQL parameter; check the spelling"))
        elif any(ch in value for ch in "\n\r\0") or len(value) > _MAX_VALUE_LENGTH:
            problems.append(ParameterProblem(name, f"value must be one line of at most {_MAX_VALUE_LENGTH} characters"))
    return problems


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def postgresql_conf(instance: Instance) -> str:
    """postgresql.conf: the operator's settings first, then the user's (already validated)."""
    lines = [
        "# Managed by the SampleDB operator; edit spec.postgres.parameters instead.",
        "listen_addresses = '*'",
        f"port = {POSTGRES_PORT}",
        f"unix_socket_directories = '{SOCKET_DIR}'",
        "password_encryption = 'scram-sha-256'",
        # A standby streams from the read-write Service, so it follows a new primary by itself; its
        # name there (application_name) is its cluster_name, the Pod's name.
        f"primary_conninfo = 'host={instance.primary_host} port={POSTGRES_PORT} "
        f"user={REPLICATION_USER} passfile={SOCKET_DIR}/{PASSFILE}'",
        # WAL kept for a standby that falls behind or restarts (no slots: a gone standby cannot
        # fill the primary's volume); the user's setting below wins.
        "wal_keep_size = '512MB'",
    ]
    if instance.synchronous:
        lines.append(f"synchronous_standby_names = {_quote(synchronous_standby_names(instance))}")
    lines += archive.postgresql_settings(instance)
    lines += [f"{name} = {_quote(value)}" for name, value in sorted(instance.spec.postgres.parameters.items())]
    return "\n".join(lines) + "\n"


def synchronous_standby_names(instance: Instance) -> str:
    """'ANY n' of every Pod name the StatefulSet may ever make (its most servers).

    A standby reports as its Pod name (cluster_name), and the primary's own name never connects as
    a standby, so the list need not change when the primary moves or the instance scales: no
    restart for either. The election (`reconcile/failover.py`) promotes the standby that received
    most, which holds every commit a quorum acknowledged.
    """
    names = ", ".join(f'"{instance.pod(i)}"' for i in range(MAX_INSTANCES))
    return f"ANY {instance.synchronous} ({names})"


def pg_hba_conf() -> str:
    """Local socket trusted (it is private to the container); everything over TCP needs a password."""
    return (
        "# Managed by the SampleDB operator.\n"
        "local all all trust\n"
        f"host replication {REPLICATION_USER} 0.0.0.0/0 scram-sha-256\n"
        f"host replication {REPLICATION_USER} ::/0 scram-sha-256\n"
        "host all all 0.0.0.0/0 scram-sha-256\n"
        "host all all ::/0 scram-sha-256\n"
    )


def config_map(instance: Instance) -> dict[str, Any]:
    """The ConfigMap mounted at CONFIG_DIR in the database container."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": instance.metadata(instance.config_map, "config"),
        "data": {
            CONFIG_FILE: postgresql_conf(instance),
            HBA_FILE: pg_hba_conf(),
            PRIMARY_FILE: "" if instance.fencing else instance.primary,
            **archive.config_files(instance),
            **recovery.config_files(instance),
        },
    }

"""The user journey on the real node, each step checked in PostgreSQL itself.

Every instance runs the operator's default image for its major (our Debian-built images, loaded
under those names), in a namespace enforcing Pod Security "restricted".
"""

from __future__ import annotations

from typing import Any

import pytest

from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.settings import DEFAULT_IMAGES
from tests.node.conftest import checksum, client_pod, wait_for

ROWS = "select id, payload from journey order by id"


def sampledb(name: str, namespace: str, version: int, **spec: Any) -> dict[str, Any]:
    body = {"postgres": {"version": version}, "storage": {"size": "1Gi"}, "database": {"name": "app", "owner": "app"}}
    return {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": {"name": name, "namespace": namespace},
            "spec": {**body, **spec}}  # fmt: skip


def status(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return (admin.get("SampleDB", namespace, name) or {}).get("status") or {}


def wait_phase(admin: KubeApi, namespace: str, name: str, phase: str = "Ready", timeout: float = 240) -> dict[str, Any]:
    return wait_for(lambda: (s := status(admin, namespace, name)).get("phase") == phase and s,
                    timeout=timeout, what=f"{name} to be {phase}", interval=1)  # fmt: skip


def running(admin: KubeApi, namespace: str, pod: str) -> bool:
    return bool((admin.get("Pod", namespace, pod) or {}).get("status", {}).get("phase") == "Running")


def start_client(admin: KubeApi, namespace: str, instance: str, version: int) -> str:
    pod = client_pod(namespace, instance, DEFAULT_IMAGES[version], database="app")
    admin.create(pod)
    name = str(pod["metadata"]["name"])
    wait_for(lambda: running(admin, namespace, name), timeout=60, what=f"client Pod {name}")
    return name


def app_sql(kubectl: Any, namespace: str, client: str, sql: str) -> str:
    """SQL as the application: the client Pod, the Service's DNS name, the generated Secret's user."""
    out = kubectl("exec", "-n", namespace, client, "--", "psql", "-v", "ON_ERROR_STOP=1", "-XAtc", sql)
    return str(out).strip()


def write_rows(kubectl: Any, namespace: str, client: str, count: int) -> str:
    app_sql(kubectl, namespace, client, "create table if not exists journey (id int primary key, payload text)")
    rows = f"select g, md5(g::text) from generate_series(1, {count}) g"
    app_sql(kubectl, namespace, client, f"insert into journey {rows}")
    return checksum(app_sql(kubectl, namespace, client, ROWS))


@pytest.mark.parametrize("version", [15, 17, 18])
def test_create_connect_and_write(admin: KubeApi, kubectl: Any, psql: Any, namespace: str, version: int) -> None:
    """Start script, probes, init Job through the Service DNS name, an application writing rows."""
    name = f"pg{version}"
    admin.create(sampledb(name, namespace, version))
    ready = wait_phase(admin, namespace, name)
    assert ready["endpoint"] == f"{name}.{namespace}.svc:5432"

    # The server is the major asked for, started by our script with our configuration and checksums.
    assert psql(namespace, name, "show server_version_num")[:2] == str(version)
    assert psql(namespace, name, "show data_checksums") == "on"
    assert psql(namespace, name, "show config_file") == "/etc/sampledb/config/postgresql.conf"
    # The init Job created the application's database and role (it reached the server by DNS).
    assert psql(namespace, name, "select datname from pg_database where datname = 'app'") == "app"
    init = admin.get("Job", namespace, f"{name}-init")
    assert init is not None and (init.get("status") or {}).get("succeeded") == 1

    client = start_client(admin, namespace, name, version)
    written = write_rows(kubectl, namespace, client, 1000)
    assert app_sql(kubectl, namespace, client, "select current_user") == "app"
    assert checksum(psql(namespace, name, ROWS, db="app")) == written

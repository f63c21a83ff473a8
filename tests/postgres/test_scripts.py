"""The operator's shell scripts against real PostgreSQL: start, initial configuration, snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.jobs.snapshot import snapshot_job, snapshot_script
from sampledb_operator.resources import secret
from sampledb_operator.resources.statefulset import CREDENTIALS_DIR
from tests.postgres.conftest import Runtime, Server
from tests.unit.conftest import make_instance

APP_PASSWORD = "app-secret-Pw2"


def job_env(job: dict[str, Any], server: Server, secret_data: dict[str, str]) -> dict[str, str]:
    """The Job container's environment as the kubelet would build it, aimed at the test server.

    The Job's credentials Secret volume becomes a folder of files under the server's root (paths in
    the environment follow it there), and the libpq password file goes next to it.
    """
    pod = job["spec"]["template"]["spec"]
    env_vars = pod["containers"][0]["env"]
    assert not [var["name"] for var in env_vars if "valueFrom" in var], "secrets reach a Job as files only"
    mount = server.root / "job-credentials"
    mount.mkdir(exist_ok=True)
    for volume in pod.get("volumes", []):
        for item in volume.get("secret", {}).get("items", []):
            (mount / item["path"]).write_text(secret_data[item["key"]])
    server.chown(mount)
    env = {var["name"]: var["value"].replace(CREDENTIALS_DIR, str(mount)) for var in env_vars}
    env.update(PGHOST="127.0.0.1", PGPORT=str(server.port))
    if "PGPASSFILE" in env:
        env["PGPASSFILE"] = str(server.root / "pgpass")
    return env


def secret_data(instance: Any, server: Server) -> dict[str, str]:
    data: dict[str, str] = secret.credentials_secret(
        instance, password=APP_PASSWORD, superuser_password=server.superuser_password
    )["stringData"]
    return data


def test_start_script_initialises_and_serves_with_our_configuration(make_server: Any, pg: Runtime) -> None:
    instance = make_instance({"postgres": {"parameters": {"work_mem": "12MB", "log_line_prefix": "it's ours "}}})
    server = make_server(instance, pg)
    assert server.psql("SHOW work_mem") == "12MB"
    assert server.psql("SHOW log_line_prefix") == "it's ours"
    assert server.psql("SHOW password_encryption") == "scram-sha-256"
    assert server.psql("SHOW data_checksums") == "on"
    assert server.psql("SELECT current_setting('server_version_num')::int / 10000") == str(pg.major)


def test_tcp_connections_need_the_password(make_server: Any, pg: Runtime) -> None:
    server = make_server(make_instance(), pg)
    with pytest.raises(RuntimeError, match="password authentication failed"):
        server.psql("SELECT 1", password="wrong")


def test_init_job_creates_role_and_database_idempotently(make_server: Any, pg: Runtime) -> None:
    instance = make_instance({"database": {"name": "shop", "owner": "shopper"}})
    server = make_server(instance, pg)
    job = init_job(instance)
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    env = job_env(job, server, secret_data(instance, server))
    first = server.run_script(script, env)
    assert "application database and role are in place" in first.stdout
    second = server.run_script(script, env)  # a retried Pod changes nothing and does not fail
    assert second.returncode == 0
    assert server.psql("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'") == "shopper"
    assert server.psql("SELECT current_user", user="shopper", password=APP_PASSWORD, database="shop") == "shopper"
    assert APP_PASSWORD not in first.stdout + first.stderr + second.stdout + second.stderr


def test_snapshot_dumps_every_database_restorably(make_server: Any, pg: Runtime, pg_workdir: Path) -> None:
    instance = make_instance({"database": {"name": "shop", "owner": "shopper"}})
    server = make_server(instance, pg, name="source")
    init = init_job(instance)
    server.run_script(
        init["spec"]["template"]["spec"]["containers"][0]["command"][2],
        job_env(init, server, secret_data(instance, server)),
    )
    server.psql(
        "CREATE TABLE orders (id int PRIMARY KEY, item text); "
        "INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 5000) g",
        user="shopper",
        password=APP_PASSWORD,
        database="shop",
    )
    checksum = "SELECT md5(string_agg(id || ':' || item, ',' ORDER BY id)) FROM orders"
    expected = server.psql(checksum, user="shopper", password=APP_PASSWORD, database="shop")

    mount = pg_workdir / "snapshot"
    mount.mkdir()
    server.chown(mount)
    env = job_env(snapshot_job(instance), server, secret_data(instance, server))
    result = server.run_script(snapshot_script(str(mount)), env)
    (folder,) = mount.iterdir()
    assert (folder / "COMPLETE").exists()
    assert {p.name for p in folder.iterdir()} >= {"globals.sql", "shop.dump", "postgres.dump", "COMPLETE"}
    assert server.superuser_password not in result.stdout + result.stderr

    # Restore into a brand-new server: the data is all there.
    target = make_server(make_instance(), pg, name="target")
    restore_env = target.superuser_env()
    target.run_script(f'psql -q -d postgres -f "{folder}/globals.sql" >/dev/null 2>&1 || true', restore_env)
    target.run_script(f'pg_restore --create --dbname=postgres "{folder}/shop.dump"', restore_env)
    assert target.psql(checksum, database="shop") == expected


def test_failing_snapshot_leaves_no_complete_marker(make_server: Any, pg: Runtime, pg_workdir: Path) -> None:
    server = make_server(make_instance(), pg)
    mount = pg_workdir / "snapshot"
    mount.mkdir()
    server.chown(mount)
    env = {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(server.port),
        "PGUSER": "postgres",
        "PGPASSWORD": "not-the-password",
        "PGCONNECT_TIMEOUT": "3",
    }
    # The server is up, so the wait passes; the dump itself is refused (wrong password).
    failed = server.run_script(snapshot_script(str(mount)), env, check=False)
    assert failed.returncode != 0
    assert not list(mount.glob("*/COMPLETE"))

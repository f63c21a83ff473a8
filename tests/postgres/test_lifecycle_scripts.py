"""Backup and schema-migration scripts against real PostgreSQL, as their Jobs run them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from sampledb_operator.jobs.backup import backup_env, backup_script
from sampledb_operator.jobs.common import credentials_volume
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.jobs.migrate import TRACKING_TABLE, migrate_script
from sampledb_operator.resources.secret import SUPERUSER_PASSWORD_KEY
from tests.postgres.conftest import Runtime, Server
from tests.postgres.test_scripts import APP_PASSWORD, job_env, secret_data
from tests.unit.conftest import make_instance

SHOP = {"database": {"name": "shop", "owner": "shopper"}}
CHECKSUM = "SELECT md5(string_agg(id || ':' || item, ',' ORDER BY id)) FROM orders"


def initialised(make_server: Any, pg: Runtime, name: str = "srv") -> tuple[Any, Server]:
    instance = make_instance(SHOP)
    server = make_server(instance, pg, name=name)
    init = init_job(instance)
    server.run_script(
        init["spec"]["template"]["spec"]["containers"][0]["command"][2],
        job_env(init, server, secret_data(instance, server)),
    )
    return instance, server


def load_orders(server: Server, rows: int) -> None:
    """The application's table, filled as its owner."""
    sql = (
        "CREATE TABLE orders (id int PRIMARY KEY, item text);"
        f"INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, {rows}) g"
    )
    server.psql(sql, user="shopper", password=APP_PASSWORD, database="shop")


def env_of(instance: Any, server: Server, entries: list[dict[str, Any]]) -> dict[str, str]:
    """A backup Job's environment and credentials volume around `entries` (the backup_env under test)."""
    volumes = [credentials_volume(instance, (SUPERUSER_PASSWORD_KEY,))]
    fake_job = {"spec": {"template": {"spec": {"containers": [{"env": entries}], "volumes": volumes}}}}
    return job_env(fake_job, server, secret_data(instance, server))


def folder(server: Server, root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    server.chown(path)
    return path


def termination_log(server: Server, root: Path) -> Path:
    log = root / "termination-log"
    log.touch()
    server.chown(log)
    return log


def test_backup_verifies_restores_and_keeps_the_newest(make_server: Any, pg: Runtime, pg_workdir: Path) -> None:
    instance, server = initialised(make_server, pg)
    load_orders(server, 20000)
    expected = server.psql(CHECKSUM, database="shop")
    backups, log = folder(server, pg_workdir, "backups"), termination_log(server, pg_workdir)
    env = env_of(instance, server, backup_env(instance, label="scheduled", verify=True, retain=2))
    for _ in range(3):
        server.run_script(backup_script(mount=str(backups), termination_log=str(log)), env)
        summary = json.loads(log.read_text())
        assert summary["verified"] is True
        assert summary["bytes"] > 1000
        time.sleep(1.1)  # distinct timestamps
    dumps = sorted((backups / instance.name).glob("*.dump"))
    assert len(dumps) == 2  # retention: the newest two scheduled backups
    assert not list((backups / instance.name).glob("*.partial"))
    assert server.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'sampledb_verify_%'") == "0"
    # The newest dump restores into a brand-new server with identical data.
    target = make_server(make_instance(), pg, name="target")
    restore_env = target.superuser_env()
    target.run_script("createdb shop", restore_env)
    target.run_script(f'pg_restore --no-owner --exit-on-error --dbname=shop "{dumps[-1]}"', restore_env)
    assert target.psql(CHECKSUM, database="shop") == expected


def test_backup_that_does_not_restore_is_removed(make_server: Any, pg: Runtime, pg_workdir: Path) -> None:
    instance, server = initialised(make_server, pg)
    server.psql(
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)", user="shopper", password=APP_PASSWORD, database="shop"
    )
    backups, log = folder(server, pg_workdir, "backups"), termination_log(server, pg_workdir)
    env = env_of(instance, server, backup_env(instance, label="manual", verify=True, retain=None))
    # Break restores: pg_restore into a database where a same-named table already exists fails.
    server.psql("CREATE TABLE t (y int)", database="template1")
    result = server.run_script(backup_script(mount=str(backups), termination_log=str(log)), env, check=False)
    server.psql("DROP TABLE t", database="template1")
    assert result.returncode != 0
    assert "does not restore" in json.loads(log.read_text())["error"]
    assert not list((backups / instance.name).glob("*.dump"))


def write_migrations(server: Server, directory: Path, files: dict[str, str]) -> None:
    for name, sql in files.items():
        (directory / name).write_text(sql)
    server.chown(directory)


def run_migrations(instance: Any, server: Server, directory: Path, log: Path) -> tuple[int, dict[str, Any]]:
    from sampledb_operator.jobs.migrate import migration_job

    job = migration_job(instance, name="m", config_map="cm")
    result = server.run_script(
        migrate_script(mount=str(directory), termination_log=str(log)),
        job_env(job, server, secret_data(instance, server)),
        check=False,
    )
    return result.returncode, json.loads(log.read_text())


def test_migrations_apply_in_order_once_and_fail_cleanly(make_server: Any, pg: Runtime, pg_workdir: Path) -> None:
    instance, server = initialised(make_server, pg)
    migrations, log = folder(server, pg_workdir, "migrations"), termination_log(server, pg_workdir)
    write_migrations(
        server,
        migrations,
        {
            "001_customers.sql": "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);",
            "002_orders.sql": (
                "CREATE TABLE orders (id serial PRIMARY KEY, customer int REFERENCES customers);\n"
                "INSERT INTO customers (name) VALUES ('first');"
            ),
        },
    )
    code, summary = run_migrations(instance, server, migrations, log)
    assert (code, summary) == (0, {"lastApplied": "002_orders", "appliedNow": 2})
    shop = {"user": "shopper", "password": APP_PASSWORD, "database": "shop"}
    assert (
        server.psql(f"SELECT string_agg(version, ',' ORDER BY version) FROM {TRACKING_TABLE}", **shop)
        == "001_customers,002_orders"
    )

    code, summary = run_migrations(instance, server, migrations, log)  # the same set again: a no-op
    assert (code, summary) == (0, {"lastApplied": "002_orders", "appliedNow": 0})
    assert server.psql("SELECT count(*) FROM customers", **shop) == "1"

    write_migrations(
        server,
        migrations,
        {"003_bad.sql": "ALTER TABLE orders ADD COLUMN total numeric;\nINSERT INTO nowhere VALUES (1);"},
    )
    code, summary = run_migrations(instance, server, migrations, log)
    assert code != 0
    assert summary["failed"] == "003_bad"
    assert 'relation "nowhere" does not exist' in summary["error"]
    assert summary["lastApplied"] == "002_orders"
    # The failing file was rolled back whole: its first statement left no trace.
    assert (
        server.psql(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'orders' AND column_name = 'total'",
            **shop,
        )
        == "0"
    )

    (migrations / "003_bad.sql").unlink()
    (migrations / "001_customers.sql").write_text("CREATE TABLE customers (id bigserial PRIMARY KEY);")
    code, summary = run_migrations(instance, server, migrations, log)
    assert code != 0
    assert summary == {
        "failed": "001_customers",
        "error": "migration 001_customers was changed after it was applied (checksum differs); add a new file instead",
    }


def test_logical_upgrade_path_keeps_every_row(
    make_server: Any, pg_upgrade_pair: tuple[Runtime, Runtime], pg_workdir: Path
) -> None:
    """The major-upgrade path: our backup on the old major, restored into a new major's server."""
    old_runtime, new_runtime = pg_upgrade_pair
    instance, old = initialised(make_server, old_runtime, name="old")
    load = (
        "CREATE TABLE orders (id int PRIMARY KEY, item text, placed timestamptz DEFAULT now(), total numeric(12,2));"
        "INSERT INTO orders (id, item, total) SELECT g, md5(g::text), g * 1.25 FROM generate_series(1, 50000) g;"
        "CREATE INDEX ON orders (item); CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 1000"
    )
    old.psql(load, user="shopper", password=APP_PASSWORD, database="shop")
    checksum = "SELECT count(*) || ':' || md5(string_agg(id || item || total, ',' ORDER BY id)) FROM orders"
    expected = old.psql(checksum, database="shop")
    backups, log = folder(old, pg_workdir, "backups"), termination_log(old, pg_workdir)
    old.run_script(
        backup_script(mount=str(backups), termination_log=str(log)),
        env_of(instance, old, backup_env(instance, label="pre-upgrade", verify=True, retain=None)),
    )
    dump = pg_workdir / "backups" / json.loads(log.read_text())["file"]

    new = make_server(make_instance(SHOP), new_runtime, name="new")
    assert new.psql("SELECT current_setting('server_version_num')::int / 10000") == str(new_runtime.major)
    env = new.superuser_env()
    new.run_script("psql -q -c 'CREATE ROLE shopper LOGIN' && createdb -O shopper shop", env)
    new.run_script(f'pg_restore --exit-on-error --dbname=shop "{dump}"', env)
    assert new.psql(checksum, database="shop") == expected
    assert new.psql("SELECT count(*) FROM big_orders", database="shop") == old.psql(
        "SELECT count(*) FROM big_orders", database="shop"
    )


def test_init_job_restores_a_backup_once_owned_by_the_app_role(make_server: Any, pg: Runtime, pg_workdir: Path) -> None:
    instance, source = initialised(make_server, pg, name="source")
    load_orders(source, 3000)
    expected = source.psql(CHECKSUM, database="shop")
    backups, log = folder(source, pg_workdir, "backups"), termination_log(source, pg_workdir)
    source.run_script(
        backup_script(mount=str(backups), termination_log=str(log)),
        env_of(instance, source, backup_env(instance, label="b", verify=False, retain=None)),
    )
    dump = json.loads(log.read_text())["file"]

    target = make_server(make_instance(SHOP), pg, name="target")
    job = init_job(make_instance(SHOP), ("src-backups", dump))
    env = job_env(job, target, secret_data(instance, target))
    env["RESTORE_FILE"] = str(backups / dump)  # where the claim is mounted in this test
    script = job["spec"]["template"]["spec"]["containers"][0]["command"][2]
    first = target.run_script(script, env)
    assert "restoring" in first.stdout
    assert target.psql(CHECKSUM, database="shop") == expected
    assert target.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'orders'", database="shop") == "shopper"
    again = target.run_script(script, env)  # a retried Pod: no second restore, no error
    assert "not restoring again" in again.stdout
    assert target.psql("SELECT count(*) FROM orders", database="shop") == "3000"

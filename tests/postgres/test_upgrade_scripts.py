"""The major-upgrade Jobs' scripts on real servers of two majors, in the order the operator runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from sampledb_operator.jobs import upgrade
from sampledb_operator.jobs.upgrade import Step
from sampledb_operator.resources.instance import Instance
from tests.postgres.conftest import Runtime, Server, start_server, stop_server
from tests.postgres.test_lifecycle_scripts import folder, initialised, termination_log
from tests.postgres.test_scripts import APP_PASSWORD

ORDERS = "SELECT count(*) || ':' || md5(string_agg(id || item || total, ',' ORDER BY id)) FROM orders"


class Upgrade:
    """Runs the steps' scripts with the environment their Jobs get, paths moved into the test folder."""

    def __init__(self, instance: Instance, old: Server, workdir: Path, new_runtime: Runtime) -> None:
        self.instance, self.workdir = instance, workdir
        self.majors = (old.runtime.major, new_runtime.major)
        self.root = old.root  # where the server's data and credentials folders are
        self.backups = folder(old, workdir, "backups")
        self.log = termination_log(old, workdir)

    @property
    def dump(self) -> Path:
        return self.backups / self.instance.name / "upgrade-{}-to-{}-1.sql".format(*self.majors)

    def env(self, server: Server | None) -> dict[str, str]:
        entries = upgrade.script_env(
            self.instance,
            from_version=self.majors[0],
            to_version=self.majors[1],
            attempt=1,
            data_dir=str(self.root / "data"),
            credentials_dir=str(self.root / "credentials"),
            backup_mount=str(self.backups),
            termination_log=str(self.log),
        )
        env = {e["name"]: e["value"] for e in entries}
        return {**env, **(server.superuser_env() if server else {})}

    def run(self, step: Step, runtime: Runtime, server: Server | None = None) -> tuple[int, dict[str, Any]]:
        """Run one step as its Job would (exit code, the summary it left in the termination log)."""
        self.log.write_text("")
        runner = Server(runtime, self.root, 0, "", self.workdir)
        # Each image numbers the postgres user its own way; in a cluster every Pod runs as 999.
        for path in [self.backups, self.log, *([self.root / "data"] if step in upgrade.OFFLINE_STEPS else [])]:
            runner.chown(path)
        result = runner.run_script(upgrade.SCRIPTS[step], self.env(server), check=False)
        text = self.log.read_text().strip()
        return result.returncode, (json.loads(text) if text else {"stderr": result.stderr})


def restart(server: Server, runtime: Runtime, instance: Instance, name: str) -> Server:
    """Start `runtime`'s server on the data directory `server` left behind (it must be stopped)."""
    root = server.share / name
    root.mkdir()
    shutil.move(server.root / "data", root / "data")
    return start_server(instance, runtime, root, server.superuser_password, server.share)


def load(server: Server) -> str:
    app = {"user": "shopper", "password": APP_PASSWORD, "database": "shop"}
    server.psql(
        "CREATE TABLE orders (id int PRIMARY KEY, item text, total numeric(12,2));"
        "INSERT INTO orders SELECT g, md5(g::text), g * 1.25 FROM generate_series(1, 30000) g;"
        "CREATE INDEX ON orders (item); CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 1000",
        **app,
    )
    server.psql("CREATE DATABASE reports")
    server.psql(
        "CREATE SCHEMA audit; CREATE TABLE audit.log AS SELECT g AS id FROM generate_series(1, 77) g",
        database="reports",
    )
    return server.psql(ORDERS, database="shop")


def test_logical_upgrade_keeps_every_row_and_rolls_back_cleanly(
    make_server: Any, pg_upgrade_pair: tuple[Runtime, Runtime], pg_workdir: Path
) -> None:
    old_runtime, new_runtime = pg_upgrade_pair
    instance, old = initialised(make_server, old_runtime, name="db")
    expected = load(old)
    big_orders = old.psql("SELECT count(*) FROM big_orders", database="shop")
    steps = Upgrade(instance, old, pg_workdir, new_runtime)

    # 1. The pre-upgrade backup stops writes first, so nothing written later can be lost.
    code, summary = steps.run(Step.BACKUP, old_runtime, old)
    assert code == 0, summary
    assert summary["file"] == f"{instance.name}/upgrade-{old_runtime.major}-to-{new_runtime.major}-1.sql"
    assert summary["tables"] == 2
    assert steps.dump.with_suffix(".counts").read_text().splitlines() == [
        "reports|audit.log|77",
        "shop|public.orders|30000",
    ]
    with pytest.raises(RuntimeError, match="read-only transaction"):
        old.psql("INSERT INTO orders VALUES (0, 'late', 1)", user="shopper", password=APP_PASSWORD, database="shop")

    # 2. The check refuses an image of the wrong major, and accepts the right one.
    code, summary = steps.run(Step.CHECK, old_runtime)
    assert code == 1
    assert summary["error"].startswith(f"the image runs PostgreSQL {old_runtime.major}, not {new_runtime.major}")
    assert steps.run(Step.CHECK, new_runtime) == (0, {"checked": True})

    # 3. The StatefulSet is at zero: the new major restores into a new cluster and swaps directories.
    stop_server(old)
    data = old.root / "data"
    (data / "pgdata.new").mkdir()  # what a Pod killed during the restore leaves behind
    (data / "pgdata.new" / "half-written").write_text("x")
    code, summary = steps.run(Step.RUN, new_runtime)
    assert (code, summary) == (0, {"upgraded": True, "tables": 2}), summary
    assert (data / "pgdata" / "PG_VERSION").read_text().strip() == str(new_runtime.major)
    assert (data / f"pgdata-{old_runtime.major}" / "PG_VERSION").read_text().strip() == str(old_runtime.major)
    assert not (data / "pgdata.new").exists()
    assert steps.run(Step.RUN, new_runtime)[0] == 0  # a retried Pod after the swap: nothing to do

    # 4. The new major serves every row, the application's password and writes; verify agrees.
    new = restart(old, new_runtime, instance, "db-new")
    assert new.psql("SELECT current_setting('server_version_num')::int / 10000") == str(new_runtime.major)
    assert new.psql(ORDERS, database="shop") == expected
    assert (
        new.psql("SELECT count(*) FROM big_orders", user="shopper", password=APP_PASSWORD, database="shop")
        == big_orders
    )
    new.psql("INSERT INTO orders VALUES (0, 'after', 1)", user="shopper", password=APP_PASSWORD, database="shop")
    assert steps.run(Step.VERIFY, new_runtime, new) == (0, {"verified": True, "tables": 2})
    new.psql("DROP TABLE audit.log", database="reports")
    code, summary = steps.run(Step.VERIFY, new_runtime, new)
    assert code == 1 and summary["error"] == "tables missing after the upgrade: reports|audit.log"

    # 5. Rollback: the old major's directory comes back, writable, with every row of before.
    stop_server(new)
    steps.root = new.root
    code, summary = steps.run(Step.ROLLBACK, old_runtime)
    assert (code, summary) == (0, {"rolledBack": True}), summary
    assert (new.root / "data" / "pgdata" / "PG_VERSION").read_text().strip() == str(old_runtime.major)
    back = restart(new, old_runtime, instance, "db-back")
    assert back.psql(ORDERS, database="shop") == expected
    back.psql(
        "INSERT INTO orders VALUES (0, 'writable again', 1)", user="shopper", password=APP_PASSWORD, database="shop"
    )


def test_interrupted_swap_is_finished_and_damaged_backup_stops_the_upgrade(
    make_server: Any, pg_upgrade_pair: tuple[Runtime, Runtime], pg_workdir: Path
) -> None:
    old_runtime, new_runtime = pg_upgrade_pair
    instance, old = initialised(make_server, old_runtime, name="db")
    expected = load(old)
    steps = Upgrade(instance, old, pg_workdir, new_runtime)
    assert steps.run(Step.BACKUP, old_runtime, old)[0] == 0
    stop_server(old)
    data = old.root / "data"
    assert steps.run(Step.RUN, new_runtime)[0] == 0
    # A Pod killed between the two renames: the old cluster moved away, the new one not yet in place.
    (data / "pgdata").rename(data / "pgdata.new")
    (data / f".sampledb-restored-{new_runtime.major}").touch()
    assert steps.run(Step.RUN, new_runtime)[0] == 0
    new = restart(old, new_runtime, instance, "db-new")
    assert new.psql(ORDERS, database="shop") == expected
    stop_server(new)
    # A dump changed after it was written is refused before anything is touched.
    steps.dump.write_text(steps.dump.read_text() + "\n-- tampered\n")
    code, summary = steps.run(Step.CHECK, new_runtime)
    assert code == 1 and "is damaged" in summary["error"]

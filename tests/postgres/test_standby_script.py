"""The start script's standby paths on real PostgreSQL: a clone that streams, a former primary rewound, or refused."""

from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any

import pytest

from sampledb_operator.resources.instance import Instance
from tests.postgres.conftest import Runtime, Server, start_server, stop_server
from tests.unit.conftest import make_instance


def wait_until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def restart_as_former_primary(instance: Instance, pg: Runtime, old: Server, new: Server) -> Server:
    """Start `old`'s stopped volume as Pod 0 once a failover made Pod 1 (`new`) the primary."""
    failed_over = dataclasses.replace(instance, current_primary=instance.pod(1))
    for folder in ("config", "credentials"):
        shutil.rmtree(old.root / folder)
    return start_server(
        failed_over, pg, old.root, old.superuser_password, old.share, upstream=new, hostname=instance.pod(0)
    )


def test_a_standby_is_cloned_from_the_primary_and_streams_under_its_pod_name(make_server: Any, pg: Runtime) -> None:
    instance = make_instance({"instances": 2})
    primary = make_server(instance, pg, name="primary")
    primary.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    standby = make_server(instance, pg, name="standby", upstream=primary)
    identifier = "SELECT system_identifier FROM pg_control_system()"
    assert standby.psql(identifier) == primary.psql(identifier)
    assert standby.psql("SELECT pg_is_in_recovery()") == "t"
    assert standby.psql("SELECT count(*) FROM t") == "100"
    primary.psql("INSERT INTO t SELECT g FROM generate_series(101, 150) g")
    wait_until(lambda: standby.psql("SELECT count(*) FROM t") == "150", "the standby to replay the insert")
    replication = "SELECT application_name, state FROM pg_stat_replication"
    wait_until(lambda: primary.psql(replication) == "db1-1|streaming", "the standby streaming by its Pod name")
    with pytest.raises(RuntimeError, match="read-only transaction"):
        standby.psql("INSERT INTO t VALUES (0)")
    assert primary.superuser_password not in (standby.root / "server.log").read_text()


def test_a_former_primary_is_rewound_onto_the_new_primarys_timeline(make_server: Any, pg: Runtime) -> None:
    """After a failover, the old primary's volume restarts as a standby: its divergent write is gone."""
    instance = make_instance({"instances": 2})
    old = make_server(instance, pg, name="primary")
    old.psql("CREATE TABLE t (id int, at text)")
    old.psql("INSERT INTO t SELECT g, 'before' FROM generate_series(1, 100) g")
    new = make_server(instance, pg, name="standby", upstream=old)
    wait_until(lambda: new.psql("SELECT count(*) FROM t") == "100", "the standby to replay the rows")
    assert new.psql("SELECT pg_promote(true, 30)") == "t"
    new.psql("INSERT INTO t VALUES (101, 'after the failover')")
    old.psql("INSERT INTO t VALUES (-1, 'divergent')")  # the old primary still took a write: lost by design
    stop_server(old)
    back = restart_as_former_primary(instance, pg, old, new)
    try:
        assert "rewinding to its timeline" in (old.root / "server.log").read_text()
        assert back.psql("SELECT pg_is_in_recovery()") == "t"
        assert back.psql("SELECT count(*) FROM t WHERE id = -1") == "0"
        new.psql("INSERT INTO t VALUES (102, 'streamed')")
        wait_until(lambda: back.psql("SELECT count(*) FROM t") == "102", "the rewound standby to stream")
    finally:
        stop_server(back)


def test_a_former_primary_that_cannot_be_rewound_is_cloned_afresh(make_server: Any, pg: Runtime) -> None:
    """Its own database, but pg_rewind refuses it (here: checksums turned off): erased and cloned from the primary."""
    instance = make_instance({"instances": 2})
    old = make_server(instance, pg, name="primary")
    old.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
    new = make_server(instance, pg, name="standby", upstream=old)
    wait_until(lambda: new.psql("SELECT count(*) FROM t") == "100", "the standby to replay the rows")
    assert new.psql("SELECT pg_promote(true, 30)") == "t"
    new.psql("INSERT INTO t VALUES (101)")
    old.psql("INSERT INTO t VALUES (-1)")
    stop_server(old)
    old.run_script('pg_checksums --disable -D "$PGDATA"', {"PGDATA": str(old.root / "data" / "pgdata")})
    back = restart_as_former_primary(instance, pg, old, new)
    try:
        log = (old.root / "server.log").read_text()
        assert "pg_rewind failed on this database's own data: cloning it afresh" in log
        assert back.psql("SELECT pg_is_in_recovery()") == "t"
        assert back.psql("SELECT count(*), count(*) FILTER (WHERE id = -1) FROM t") == "101|0"
    finally:
        stop_server(back)


def test_a_former_primary_holding_another_database_never_starts(make_server: Any, pg: Runtime) -> None:
    """Data pg_rewind cannot rewind because it is another cluster's (another system identifier): kept, no start."""
    instance = make_instance({"instances": 2})
    other = make_server(instance, pg, name="other")
    stale = make_server(instance, pg, name="stale")
    stop_server(stale)
    with pytest.raises(RuntimeError, match="this volume holds another database"):
        restart_as_former_primary(instance, pg, stale, other)
    assert (stale.root / "data" / "pgdata" / "PG_VERSION").exists(), "another database's volume is never erased"

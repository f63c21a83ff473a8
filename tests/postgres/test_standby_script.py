"""The start script's standby paths on real PostgreSQL: a clone that streams, and a refusal to be a second primary."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.postgres.conftest import Runtime, start_server, stop_server
from tests.unit.conftest import make_instance


def wait_until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


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


def test_a_pod_that_is_not_the_primary_never_starts_on_a_primarys_data(make_server: Any, pg: Runtime) -> None:
    instance = make_instance({"instances": 2})
    primary = make_server(instance, pg, name="primary")
    stop_server(primary)
    # The same volume, now in a Pod the ConfigMap does not name as primary (a stale old primary).
    with pytest.raises(RuntimeError, match="holds a primary's data but db1-0 is the primary: not starting"):
        start_server(instance, pg, primary.root, primary.superuser_password, primary.share, upstream=primary)

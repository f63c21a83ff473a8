"""Point-in-time recovery on real PostgreSQL from a real object store, as the start script runs it.

A source server archives and takes a base backup (`pgbackrest.sh backup-run`, as its Pod's backup
container does); rows are written before and after each noted point; a new SampleDB's primary,
given the operator's restore options (`resources/recovery.py`) and an empty volume, must come up
with exactly the rows committed before the point (counted and checksummed), its own Secret's
superuser password, no recovery settings left behind, and the point it reached recorded. A target
the repository cannot reach stops the start with the reason and the repository's window.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from sampledb_operator.resources import archive, recovery
from sampledb_operator.resources.instance import Instance, RecoverySource
from sampledb_operator.settings import Settings
from tests.objectstore import ObjectStore
from tests.postgres.conftest import Runtime, Server, installed_majors, start_server, stop_server
from tests.postgres.test_archive_script import archived, archiving_instance, wait_for
from tests.postgres.test_base_backup import ROWS, backup_status, run

NEW_PASSWORD = "recovered-superuser-Pw2"


def recovering_instance(
    store: ObjectStore,
    source: Instance,
    target: dict[str, str] | None,
    label: str | None = None,
    parameters: dict[str, str] | None = None,
) -> Instance:
    """A new SampleDB (its own repository) recovering from `source`'s repository, resolved as the operator does."""
    store_spec = archiving_instance(store).spec.backup.objectStore
    assert store_spec is not None
    path = archive.repository_path(source)
    spec: dict[str, Any] = {
        "backup": {"objectStore": store_spec.model_dump(mode="json", exclude_none=True)},
        "recovery": {"repositoryPath": path, **({"target": target} if target else {})},
        **({"postgres": {"parameters": parameters}} if parameters else {}),
    }
    new = Instance.from_object(
        {"metadata": {"name": "db2", "namespace": "team-a", "uid": f"uid-{time.monotonic_ns()}"}, "spec": spec},
        Settings(),
    )
    return dataclasses.replace(new, recovery_source=RecoverySource(path, label))


def write(server: Server, rows: int) -> None:
    server.psql("CREATE TABLE IF NOT EXISTS t (id serial, at timestamptz default clock_timestamp())")
    for _ in range(rows):
        server.psql("INSERT INTO t DEFAULT VALUES")


def settle(server: Server) -> None:
    """Close the current segment and wait for it to be archived: what was written is in the repository."""
    segment = server.psql("SELECT pg_walfile_name(pg_switch_wal())")
    wait_for(lambda: archived(server, segment), f"segment {segment} archived")


def recover(source: Server, runtime: Runtime, root: Path, instance: Instance, store: ObjectStore) -> Server:
    """The new primary, started by its start script on an empty volume, once it serves (promoted)."""
    server = start_server(instance, runtime, root, NEW_PASSWORD, source.share, store=store)

    def promoted() -> bool:
        try:
            return server.psql("SELECT pg_is_in_recovery()") == "f"
        except RuntimeError:
            return False

    wait_for(promoted, "the recovered server to serve with the new password", timeout=120)
    return server


def refusal(source: Server, runtime: Runtime, root: Path, instance: Instance, store: ObjectStore) -> str:
    """The termination message of a start that must not recover."""
    with pytest.raises(RuntimeError, match="did not start"):
        start_server(instance, runtime, root, NEW_PASSWORD, source.share, store=store)
    return (root / "termination-log").read_text()


def recovered(server: Server) -> list[str]:
    """RECOVERED as the operator reads it: timeline, LSN, PostgreSQL's stop reason."""
    return server.psql(f"SELECT pg_read_file('{recovery.RECOVERED}')").split("\t")


def test_recovery_to_a_time_holds_exactly_the_rows_before_it_and_to_the_latest_every_row(
    make_server: Any, pg: Runtime, store: ObjectStore, pg_workdir: Path
) -> None:
    source_instance = archiving_instance(store)
    source = make_server(source_instance, pg, store=store)
    write(source, 3)
    run(source, "backup-run", "b-1")
    write(source, 5)
    before = source.psql(ROWS)
    time.sleep(1.1)
    point = source.psql("SELECT to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')")
    time.sleep(1.1)
    write(source, 4)
    everything = source.psql(ROWS)
    settle(source)

    to_time = recover(
        source, pg, pg_workdir / "to-time", recovering_instance(store, source_instance, {"time": point}), store
    )
    try:
        assert to_time.psql(ROWS) == before, "every commit before the point, none after it"
        timeline, _lsn, reached = recovered(to_time)
        # PostgreSQL stops before the first commit after the point, and says when that commit was.
        assert int(timeline) == 2 and reached.startswith("before "), reached
        assert datetime.fromisoformat(reached.removeprefix("before ")) > datetime.fromisoformat(point), reached
        assert (
            to_time.psql(
                "SELECT count(*) FROM pg_file_settings WHERE name LIKE 'recovery_target%' OR name = 'restore_command'"
            )
            == "0"
        )
    finally:
        stop_server(to_time)
    latest = recover(source, pg, pg_workdir / "latest", recovering_instance(store, source_instance, None), store)
    try:
        assert latest.psql(ROWS) == everything, "to the latest point: every archived commit"
        assert recovered(latest)[2] == "no recovery target specified"
    finally:
        stop_server(latest)


def test_recovery_to_an_lsn_or_a_restore_point_and_targets_out_of_reach_refused_with_the_window(
    make_server: Any, store: ObjectStore, pg_workdir: Path
) -> None:
    """On this machine's PostgreSQL only: the targets and refusals do not depend on the major version."""
    runtime = Runtime(installed_majors()[-1])
    source_instance = archiving_instance(store)
    source = make_server(source_instance, runtime, store=store)
    write(source, 2)
    early = source.psql("SELECT to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')")
    time.sleep(1.1)
    run(source, "backup-run", "b-1")
    status = backup_status(source_instance, source, "b-1")
    assert status is not None and status["phase"] == "Succeeded", status
    write(source, 3)
    at_lsn, lsn = source.psql(ROWS), source.psql("SELECT pg_current_wal_lsn()")
    write(source, 2)
    source.psql("SELECT pg_create_restore_point('before-cleanup')")
    at_name = source.psql(ROWS)
    write(source, 2)
    settle(source)

    # Every statement logged: still, the new password set over the socket is in no log line.
    logged = {"log_statement": "all", "log_min_duration_statement": "0"}
    with_label = recovering_instance(store, source_instance, {"lsn": lsn}, status["backupLabel"], logged)
    to_lsn = recover(source, runtime, pg_workdir / "to-lsn", with_label, store)
    try:
        assert to_lsn.psql(ROWS) == at_lsn
        with pytest.raises(RuntimeError, match="password authentication failed"):
            to_lsn.psql("SELECT 1", password=source.superuser_password)
        log = (to_lsn.root / "server.log").read_text()
        assert "statement: select pg_is_in_recovery()" in log and NEW_PASSWORD not in log
    finally:
        stop_server(to_lsn)
    named = recovering_instance(store, source_instance, {"name": "before-cleanup"})
    to_name = recover(source, runtime, pg_workdir / "to-name", named, store)
    try:
        assert to_name.psql(ROWS) == at_name
        assert recovered(to_name)[2] == 'at restore point "before-cleanup"'
    finally:
        stop_server(to_name)

    window = f"the repository {archive.repository_path(source_instance)} holds base backups ending from"
    too_early = pg_workdir / "too-early"
    message = refusal(source, runtime, too_early, recovering_instance(store, source_instance, {"time": early}), store)
    assert "no base backup ends before the target" in message and window in message, message
    assert not (too_early / "data" / "pgdata").exists(), "nothing is left to start on"
    unknown = recovering_instance(store, source_instance, {"name": "no-such-point"})
    message = refusal(source, runtime, pg_workdir / "unknown", unknown, store)
    assert "recovery ended before configured recovery target was reached" in message and window in message, message
    assert store.secret_key not in message

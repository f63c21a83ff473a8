"""Physical base backups on real PostgreSQL to a real object store, and what they restore to.

The backup runs as the Pod's backup container runs it (`pgbackrest.sh backup-run`, here in the
foreground: the detached `backup-start` is exercised on the real node), the operator's own parser
turns `backup-status` into the SampleDBBackup's status, and a restore of the backup into a new
data directory, started by the StatefulSet's start script, must hold exactly the rows committed
before the backup (to its consistency point) or every archived row (to the latest point).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sampledb_operator.reconcile import base_backup
from sampledb_operator.resources import archive
from sampledb_operator.resources.instance import Instance
from sampledb_operator.settings import Settings
from tests.objectstore import BUCKET, ObjectStore
from tests.postgres.conftest import Runtime, Server, installed_majors, start_server, stop_server
from tests.postgres.test_archive_script import archived, archiving_instance, switch_wal, wait_for

ROWS = "SELECT count(*), md5(coalesce(string_agg(id::text || ':' || at::text, ',' ORDER BY id), '')) FROM t"


def run(server: Server, *args: str, check: bool = True) -> str:
    """`pgbackrest.sh ARGS` as the backup container runs it, with this server's files."""
    script = f"sh {server.root}/config/{archive.SCRIPT_FILE} " + " ".join(args)
    done = server.run_script(script, {}, check=False)
    assert done.returncode == 0 or not check, f"{args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def backup_status(
    instance: Instance, server: Server, backup_id: str, *, verified: bool = False
) -> dict[str, Any] | None:
    """The SampleDBBackup status the operator would write for `backup-status` (None: still running)."""
    progress = base_backup.parse(run(server, "backup-status", backup_id))
    return base_backup.outcome(instance, backup_id, "db1-0", progress, verified=verified)


def read_log(server: Server, backup_id: str) -> str:
    """What `backup-run` wrote (its output file in the Pod's private folder)."""
    return server.run_script(f"cat {server.socket_dir}/pgbackrest/backups/{backup_id}.log", {}).stdout


def restored(
    primary: Server, runtime: Runtime, root: Path, store: ObjectStore, *target: str, uid: str = "uid-2"
) -> Server:
    """A new SampleDB's server on a restore of `primary`'s repository (its own repository, by `uid`, to archive to)."""
    data = root / "data" / "pgdata"
    data.mkdir(parents=True, mode=0o700)
    uid, gid = runtime.owner
    for path in (root, root / "data", data):
        os.chown(path, uid, gid)
    run(primary, "restore", f"--pg1-path={data}", *target)
    source = archiving_instance(store).spec.backup.objectStore
    assert source is not None
    spec = {"backup": {"objectStore": source.model_dump(mode="json", exclude_none=True)}}
    new = Instance.from_object(
        {"metadata": {"name": "db2", "namespace": "team-a", "uid": uid}, "spec": spec}, Settings()
    )
    server = start_server(new, runtime, root, primary.superuser_password, primary.share, store=store)
    wait_for(lambda: server.psql("SELECT pg_is_in_recovery()") == "f", "the restored server to promote", timeout=600)
    return server


def test_a_base_backup_records_its_positions_and_restores_to_its_point_and_to_the_latest(
    make_server: Any, pg: Runtime, store: ObjectStore, pg_workdir: Path
) -> None:
    instance = archiving_instance(store)
    primary = make_server(instance, pg, store=store)
    for _ in range(3):
        switch_wal(primary)
    before = primary.psql(ROWS)
    assert run(primary, "backup-status", "b-1").strip() == base_backup.UNKNOWN, "never started here"
    run(primary, "backup-run", "b-1")
    status = backup_status(instance, primary, "b-1")
    assert status is not None and status["phase"] == "Succeeded", status
    assert status["startLSN"] <= status["stopLSN"] and status["startWAL"] <= status["stopWAL"], status
    assert status["bytes"] > 10_000_000 and 0 < status["repositoryBytes"] < status["bytes"], status
    assert status["durationSeconds"] >= 0 and status["completionTime"] >= status["startTime"]
    label = status["backupLabel"]
    assert status["location"] == f"s3://{BUCKET}{archive.repository_path(instance)}/backup/db/{label}"
    assert any(k.startswith(f"backup/db/{label}/") for k in store.objects(archive.repository_path(instance)))
    after = [switch_wal(primary) for _ in range(2)]
    everything = primary.psql(ROWS)
    assert everything != before
    wait_for(lambda: archived(primary, after[-1]), f"segment {after[-1]} archived")

    at_backup = restored(primary, pg, pg_workdir / "at-backup", store, "--type=immediate", "--target-action=promote")
    try:
        assert at_backup.psql(ROWS) == before, "to the backup's consistency point: exactly the rows before it"
    finally:
        stop_server(at_backup)
    latest = restored(primary, pg, pg_workdir / "latest", store)
    try:
        assert latest.psql(ROWS) == everything, "to the latest point: every archived commit"
    finally:
        stop_server(latest)


def test_retention_by_count_expires_older_backups_and_the_wal_only_they_needed(
    make_server: Any, pg: Runtime, store: ObjectStore
) -> None:
    instance = archiving_instance(store, retention={"fullBackups": 1})
    primary = make_server(instance, pg, store=store)
    switch_wal(primary)
    run(primary, "backup-run", "b-1")
    first = backup_status(instance, primary, "b-1")
    switch_wal(primary)
    run(primary, "backup-run", "b-2")
    second = backup_status(instance, primary, "b-2")
    assert first and second and first["phase"] == second["phase"] == "Succeeded", (first, second)
    info = json.loads(run(primary, "info", "--output=json"))
    assert [b["label"] for b in info[0]["backup"]] == [second["backupLabel"]], "only the newest full backup is kept"
    segments = [Path(k).name[:24] for k in store.objects(archive.repository_path(instance)) if k.startswith("archive/")]
    wal = [s for s in segments if len(s) == 24 and s.isalnum()]
    assert wal and min(wal) >= second["startWAL"], f"WAL older than the kept backup is expired: {sorted(wal)[:3]}"
    assert first["startWAL"] < second["startWAL"], "so the first backup's WAL is what went"


def test_a_backup_that_fails_says_why_in_pgbackrests_words(make_server: Any, store: ObjectStore) -> None:
    """On this machine's PostgreSQL only: the message is the script's, and a container's server, archiving
    to a bucket that is not there, takes 30 s to stop."""
    majors = installed_majors()
    assert majors, ".ci/run installs postgresql-15"
    instance = archiving_instance(store, bucket="no-such-bucket")
    primary = make_server(instance, Runtime(majors[-1]), store=store)
    run(primary, "backup-run", "b-1", check=False)
    status = backup_status(instance, primary, "b-1")
    assert status is not None and status["phase"] == "Failed", status
    # The gist: pgBackRest's error line and the store's own code and message (not its XML).
    assert "ERROR: [039]: HTTP request failed with 404" in status["message"], status
    assert "NoSuchBucket: The specified bucket does not exist" in status["message"], status
    assert store.secret_key not in status["message"]


def test_a_verified_backup_is_restored_and_checked_and_a_corrupt_one_is_expired(
    make_server: Any, store: ObjectStore
) -> None:
    """On this machine's PostgreSQL only: the check does not depend on the major version."""
    runtime = Runtime(installed_majors()[-1])
    instance = archiving_instance(store)
    primary = make_server(instance, runtime, store=store)
    primary.psql("CREATE TABLE t (id serial PRIMARY KEY, at timestamptz DEFAULT now())")
    primary.psql("INSERT INTO t (at) SELECT now() FROM generate_series(1, 500)")
    run(primary, "backup-run", "b-1", "verify")
    good = backup_status(instance, primary, "b-1", verified=True)
    assert good is not None and good["phase"] == "Succeeded" and good["verified"] is True, good
    assert f"base backup {good['backupLabel']} verified" in read_log(primary, "b-1")

    # A heap page damaged on disk, after a checkpoint wrote it (the server's clean buffer does not
    # matter: the backup reads the file): the backup copies it, pgBackRest warning of its checksum,
    # and the check finds it in the restored copy.
    heap = primary.root / "data" / "pgdata" / primary.psql("SELECT pg_relation_filepath('t')")
    primary.psql("CHECKPOINT")
    with heap.open("r+b") as file:
        file.seek(4000)
        file.write(b"\xde\xad\xbe\xef" * 8)
    run(primary, "backup-run", "b-2", "verify", check=False)
    bad = backup_status(instance, primary, "b-2", verified=True)
    assert bad is not None and bad["phase"] == "Failed", bad
    log = read_log(primary, "b-2")
    assert "pg_amcheck finds corruption" in log and "invalid page" in log, log[-3000:]
    assert "failed verification" in bad["message"] or "invalid page" in bad["message"], bad
    info = json.loads(run(primary, "info", "--output=json"))
    assert [b["label"] for b in info[0]["backup"]] == [good["backupLabel"]], "b-2 expired, b-1 kept"

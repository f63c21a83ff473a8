"""WAL archiving on real PostgreSQL to a real object store (versitygw, TLS), as the Pod runs it.

The server is started by the StatefulSet's start script with the ConfigMap's postgresql.conf,
pgbackrest.conf and pgbackrest.sh; the operator's own probe (`archiving.ARCHIVE_SQL`) reads the
outcome, so what these tests see is what the ContinuousArchiving condition would say.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import Any

from sampledb_operator.reconcile import archiving
from sampledb_operator.resources import archive, paths
from sampledb_operator.resources.instance import Instance
from tests.objectstore import BUCKET, ObjectStore
from tests.postgres.conftest import Runtime, Server, installed_majors, stop_server
from tests.unit.conftest import make_instance


def archiving_instance(
    store: ObjectStore, instances: int = 1, *, parameters: dict[str, str] | None = None, **changes: Any
) -> Instance:
    spec = {
        "endpoint": store.endpoint,
        "bucket": BUCKET,
        "credentials": {"secretName": "s3"},
        "caBundle": {"name": "s3-ca", "key": "ca.crt"},
        **changes,
    }
    tuned = {"postgres": {"parameters": parameters}} if parameters else {}
    return make_instance({"instances": instances, "backup": {"objectStore": spec}, **tuned})


def answer(server: Server) -> str:
    """The server's answer to the operator's probe, with the Pod's paths moved to this server's."""
    return server.psql(archiving.ARCHIVE_SQL.replace(paths.SOCKET_DIR, str(server.socket_dir)))


def archiver(server: Server) -> archiving.Archiver:
    found = archiving.parse(answer(server))
    assert found is not None, f"a primary answers the probe: {answer(server)!r}"
    return found


def wait_for(check: Any, what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)
    return value


def switch_wal(server: Server) -> str:
    """Close the current segment (with a row in it); its name."""
    server.psql("CREATE TABLE IF NOT EXISTS t (id serial, at timestamptz default now())")
    server.psql("INSERT INTO t DEFAULT VALUES")
    return server.psql("SELECT pg_walfile_name(pg_switch_wal())")


def archived(server: Server, segment: str) -> bool:
    found = archiver(server)
    return not found.failing and found.archived_wal >= segment


def test_the_primary_archives_each_segment_to_its_own_repository_bit_for_bit(
    make_server: Any, pg: Runtime, store: ObjectStore
) -> None:
    instance = archiving_instance(store)
    server = make_server(instance, pg, store=store)
    segment = switch_wal(server)
    copy = server.root / "segment.copy"
    server.run_script(f'cp "$PGDATA/pg_wal/{segment}" {copy}', {"PGDATA": str(server.root / "data" / "pgdata")})
    wait_for(lambda: archived(server, segment), f"segment {segment} archived")
    stored = [key for key in store.objects(archive.repository_path(instance)) if segment in key]
    assert stored and stored[0].startswith("archive/db/"), store.objects(archive.repository_path(instance))
    # Fetched back through pgBackRest (decompressed, checksummed): the very bytes the server wrote.
    fetched = server.root / "segment.fetched"
    script = f"sh {server.root}/config/{archive.SCRIPT_FILE} archive-get {segment} {fetched}"
    server.run_script(script, {})
    assert hashlib.sha256(fetched.read_bytes()).digest() == hashlib.sha256(copy.read_bytes()).digest()
    found = archiver(server)
    assert found.mode == "on" and found.error == "" and found.pending == 0
    assert "pgBackRest stanza-create" in (server.root / "server.log").read_text(), "the first push created it"


def test_a_wrong_key_is_reported_in_pgbackrests_words_and_a_rotated_key_is_used_without_a_restart(
    make_server: Any, pg: Runtime, store: ObjectStore
) -> None:
    instance = archiving_instance(store)
    good = store.secret_key
    server = make_server(instance, pg, store=dataclasses.replace(store, secret_key="not-the-key"))
    segment = switch_wal(server)
    failing = wait_for(lambda: (a := archiver(server)).failing and a, "the push to fail")
    assert failing.failed_wal <= segment and "SignatureDoesNotMatch" in failing.error, failing
    value = archiving.condition(instance, answer(server))
    assert value is not None and value.status == "False" and value.reason == "ArchiveFailing"
    assert failing.failed_wal in value.message and "SignatureDoesNotMatch" in value.message
    assert good not in value.message and "not-the-key" not in value.message
    log = (server.root / "server.log").read_text()
    assert "SignatureDoesNotMatch" in log, "pgBackRest's whole message is in the server's log"
    assert "not-the-key" not in log and "not-the-key" not in failing.error, "and no key in it"
    # The Secret's key rotated: the mounted file changes, the next push reads it.
    (server.root / "object-store" / archive.SECRET_KEY_FILE).write_text(good)
    later = switch_wal(server)  # a new segment wakes the archiver, which retries the failed one first
    wait_for(lambda: archived(server, later), f"segment {later} archived after the rotation", timeout=90)
    assert archiver(server).error == "", "the last error is cleared by a success"


def test_a_missing_bucket_is_named(make_server: Any, pg: Runtime, store: ObjectStore) -> None:
    instance = archiving_instance(store, bucket="no-such-bucket")
    server = make_server(instance, pg, store=store)
    switch_wal(server)
    failing = wait_for(lambda: (a := archiver(server)).failing and a, "the push to fail")
    assert "NoSuchBucket" in failing.error, failing


@dataclasses.dataclass(frozen=True)
class WithoutPgBackRest(Runtime):
    """This machine's PostgreSQL with a PATH that has no pgbackrest: an image that lacks it."""

    tools: Path = Path()

    def base_env(self, home: Path) -> dict[str, str]:
        return {**super().base_env(home), "PATH": f"{self.major_bin}:{self.tools}"}

    @property
    def major_bin(self) -> str:
        return f"/usr/lib/postgresql/{self.major}/bin"


def test_an_image_without_pgbackrest_runs_without_archiving_and_says_why(
    make_server: Any, pg_workdir: Path, store: ObjectStore
) -> None:
    majors = installed_majors()
    assert majors, ".ci/run installs postgresql-15"
    tools = pg_workdir / "tools"
    tools.mkdir()
    for tool in ("cat", "sed", "mkdir", "rm", "mv", "sh"):
        (tools / tool).symlink_to(f"/bin/{tool}")
    instance = archiving_instance(store)
    server = make_server(instance, WithoutPgBackRest(majors[-1], tools=tools), store=store)
    found = archiver(server)
    assert found.mode == "off"
    assert "has no pgbackrest: WAL is not archived" in (server.root / "server.log").read_text()
    value = archiving.condition(instance, answer(server))
    assert value is not None and value.reason == "ArchiverMissing" and instance.image in value.message


def test_a_promoted_standby_archives_what_it_streamed_and_the_lost_primary_never_archived(
    make_server: Any, pg: Runtime, store: ObjectStore
) -> None:
    """No gap across a failover: what the old primary could not archive (the store was away), the new one pushes."""
    instance = archiving_instance(store, instances=2)
    primary = make_server(instance, pg, name="primary", store=store)
    first = switch_wal(primary)
    wait_for(lambda: archived(primary, first), f"segment {first} archived")
    standby = make_server(instance, pg, name="standby", upstream=primary, store=store)
    store.stop()
    lost = [switch_wal(primary) for _ in range(3)]
    position = primary.psql("SELECT pg_current_wal_lsn()")
    wait_for(lambda: standby.psql(f"SELECT pg_last_wal_replay_lsn() >= '{position}'") == "t", "the standby to replay")
    stop_server(primary)
    store.start()
    promote = (
        f"psql -h {standby.socket_dir} -p {standby.port} -U postgres -d postgres -XAtc 'select pg_promote(true, 60)'"
    )
    out = standby.run_script(archive.REARCHIVE_STREAMED + promote, {"PGDATA": str(standby.root / "data" / "pgdata")})
    assert out.stdout.strip() == "t", out
    repository = archive.repository_path(instance)
    stored = lambda: {Path(k).name[:24] for k in store.objects(repository) if k.startswith("archive/db/")}  # noqa: E731
    wait_for(lambda: set(lost) <= stored(), f"the segments {lost} archived by the new primary", timeout=90)


def test_a_new_cluster_of_a_newer_major_upgrades_the_stanza_and_archives_on(
    make_server: Any, pg_upgrade_pair: tuple[Runtime, Runtime], store: ObjectStore
) -> None:
    """After a major upgrade the SampleDB's repository holds an older cluster's stanza: it is upgraded, not stuck."""
    old, new = pg_upgrade_pair
    instance = archiving_instance(store)
    before = make_server(instance, old, name="old", store=store)
    segment = switch_wal(before)
    wait_for(lambda: archived(before, segment), f"{old.id}'s segment {segment} archived")
    stop_server(before)
    after = make_server(instance, new, name="new", store=store)  # a new cluster, as the upgrade makes
    later = switch_wal(after)
    wait_for(lambda: archived(after, later), f"{new.id}'s segment {later} archived")
    assert "pgBackRest stanza-upgrade" in (after.root / "server.log").read_text()


def test_an_idle_primary_archives_within_archive_timeout_from_its_start(
    make_server: Any, pg: Runtime, store: ObjectStore
) -> None:
    """After a start the checkpointer sleeps checkpoint_timeout (5 min) before it applies archive_timeout,
    unless woken: the start script's helper wakes it, and exits as the postmaster's child without harm."""
    instance = archiving_instance(store, parameters={"archive_timeout": "10s"})
    server = make_server(instance, pg, store=store)
    started = server.psql("SELECT pg_postmaster_start_time()")
    server.psql("CREATE TABLE t (id serial, at timestamptz default now())")
    server.psql("INSERT INTO t DEFAULT VALUES")  # no switch asked for: only archive_timeout closes the segment
    segment = server.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    wait_for(lambda: archived(server, segment), f"{segment} archived by archive_timeout alone", timeout=45)
    assert server.psql("SELECT pg_postmaster_start_time()") == started, "the server did not restart"
    log = (server.root / "server.log").read_text()
    assert "terminating any other active server processes" not in log and "was terminated by" not in log, log[-2000:]

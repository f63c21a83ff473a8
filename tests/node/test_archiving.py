"""Continuous WAL archiving from real PostgreSQL in a Pod to a real object store inside the node's network.

The store (versitygw with TLS, `tests/objectstore.py`) listens at the node's address inside the
node's network namespace; Pods reach it by a DNS name its certificate carries: a headless Service
without a selector whose EndpointSlice names the node's address. Nothing leaves the machine.
What is checked is what the archive holds (the very bytes of a segment, fetched back through
pgBackRest, and every segment between two points), not only what the status says.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client as k8s

from sampledb_localcluster import LocalCluster
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.reconcile import schedule
from sampledb_operator.reconcile.conditions import ARCHIVING
from sampledb_operator.reconcile.recovery import lsn_number
from sampledb_operator.resources import archive
from sampledb_operator.resources.paths import PGDATA
from tests.node.conftest import SOCKET_DIR, checksum, wait_for
from tests.node.test_journey import ROWS, app_sql, degraded, sampledb, seed, start_client, status, wait_phase
from tests.objectstore import BUCKET, ObjectStore, start_object_store

pytestmark = pytest.mark.timeout(900)
STORE_SERVICE = "object-store"


def expose(admin: KubeApi, k8s_api: k8s.ApiClient, namespace: str, store: ObjectStore) -> None:
    """A DNS name for the store, `object-store.<namespace>.svc`, resolving to the node's address."""
    admin.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": STORE_SERVICE, "namespace": namespace},
                  "spec": {"clusterIP": "None", "ports": [{"name": "https", "port": store.port}]}})  # fmt: skip
    k8s.DiscoveryV1Api(k8s_api).create_namespaced_endpoint_slice(namespace, {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
        "metadata": {"name": STORE_SERVICE, "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": STORE_SERVICE}},
        "endpoints": [{"addresses": [store.address]}],
        "ports": [{"name": "https", "port": store.port, "protocol": "TCP"}],
    })  # fmt: skip


def secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": namespace}, "data": encoded}


def server(kubectl: Any, namespace: str, pod: str, *command: str) -> str:
    return str(kubectl("exec", "-n", namespace, pod, "-c", "postgres", "--", *command)).strip()


def sql(kubectl: Any, namespace: str, pod: str, query: str) -> str:
    return server(kubectl, namespace, pod, "psql", "-h", SOCKET_DIR, "-U", "postgres", "-d", "app", "-XAtc", query)


def switch(kubectl: Any, namespace: str, pod: str, rows: int) -> str:
    """Commit `rows` rows, close the segment holding them; its name."""
    sql(kubectl, namespace, pod, "create table if not exists t (id serial primary key, at timestamptz default now())")
    sql(kubectl, namespace, pod, f"insert into t select from generate_series(1, {rows})")
    return sql(kubectl, namespace, pod, "select pg_walfile_name(pg_switch_wal())")


def condition(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return next((c for c in status(admin, namespace, name).get("conditions", []) if c["type"] == ARCHIVING), {})


def archived_in_status(admin: KubeApi, namespace: str, name: str, segment: str) -> bool:
    archived = status(admin, namespace, name).get("archive", {}).get("lastArchivedWAL", "")
    return archived >= segment and condition(admin, namespace, name).get("status") == "True"


def segments(store: ObjectStore, repository: str) -> list[str]:
    """The whole WAL segments in the repository: `<segment>-<checksum>.lz4` (not `.partial`, `.history`)."""
    names = [Path(key).name for key in store.objects(repository) if key.startswith("archive/db/")]
    return sorted({name[:24] for name in names if name[:24].isalnum() and name[24:25] == "-"})


@pytest.fixture
def object_store(
    admin: KubeApi, namespace: str, local_cluster: LocalCluster, k8s_api: k8s.ApiClient, tmp_path: Path
) -> Iterator[tuple[ObjectStore, dict[str, Any]]]:
    """The store in the node's network, its DNS name, its key and CA Secrets; the objectStore naming them."""
    with node_object_store(admin, k8s_api, local_cluster, namespace, tmp_path / "store") as found:
        yield found


@contextlib.contextmanager
def node_object_store(
    admin: KubeApi, k8s_api: k8s.ApiClient, cluster: LocalCluster, namespace: str, root: Path
) -> Iterator[tuple[ObjectStore, dict[str, Any]]]:
    """`object_store` for any caller (the upgrade benchmark too): stopped when the block ends."""
    network = cluster.network
    assert network is not None
    store = start_object_store(
        root, host=f"{STORE_SERVICE}.{namespace}.svc", address=str(network.node_ip), netns=network.netns
    )
    try:
        expose(admin, k8s_api, namespace, store)
        keys = {"accessKeyId": store.access_key, "secretAccessKey": store.secret_key}
        admin.create(secret(namespace, "s3-keys", keys))
        admin.create(secret(namespace, "s3-ca", {"ca.crt": store.ca.read_text()}))
        spec = {"endpoint": store.endpoint, "bucket": BUCKET, "credentials": {"secretName": "s3-keys"},
                "caBundle": {"name": "s3-ca", "key": "ca.crt"}}  # fmt: skip
        yield store, spec
    finally:
        store.stop()


def repository_of(admin: KubeApi, namespace: str, name: str) -> str:
    path: str = wait_for(lambda: status(admin, namespace, name).get("archive", {}).get("repositoryPath"),
                         timeout=60, what="status.archive.repositoryPath")  # fmt: skip
    assert path.startswith(f"/sampledb/{namespace}/{name}/")
    return path


def following(first: str, last: str) -> list[str]:
    """Every segment name from `first` to `last` on `first`'s timeline (the tests stay in one log file)."""
    start, end = int(first[16:], 16), int(last[16:], 16)
    return [f"{first[:16]}{n:08X}" for n in range(start, end + 1)]


def test_wal_reaches_the_object_store_bit_for_bit_and_catches_up_after_the_store_was_away(
    admin: KubeApi, kubectl: Any, namespace: str, object_store: tuple[ObjectStore, dict[str, Any]]
) -> None:
    store, spec = object_store
    admin.create(sampledb("arch", namespace, 17, backup={"objectStore": spec}))
    wait_phase(admin, namespace, "arch")
    repository = repository_of(admin, namespace, "arch")

    # A closed segment reaches the store, and pgBackRest gives back exactly the bytes the server wrote.
    first = switch(kubectl, namespace, "arch-0", 100)
    written = server(kubectl, namespace, "arch-0", "sha256sum", f"{PGDATA}/pg_wal/{first}").split()[0]
    wait_for(lambda: archived_in_status(admin, namespace, "arch", first), timeout=120,
             what=f"status.archive to report {first} archived")  # fmt: skip
    assert first in segments(store, repository)
    fetch = f"{archive.RUN_DIR}/{first}"
    server(
        kubectl,
        namespace,
        "arch-0",
        "sh",
        f"/etc/sampledb/config/{archive.SCRIPT_FILE}",
        "archive-get",
        first,
        fetch,
    )
    assert server(kubectl, namespace, "arch-0", "sha256sum", fetch).split()[0] == written

    # The store goes away: the condition says so, naming the segment; the server keeps the WAL.
    store.stop()
    away = [switch(kubectl, namespace, "arch-0", 100) for _ in range(3)]
    failing = wait_for(lambda: (c := condition(admin, namespace, "arch")).get("status") == "False" and c,
                       timeout=180, what="ContinuousArchiving False while the store is away")  # fmt: skip
    # pgBackRest gives up connecting, or the push is cut at its bound: either way, said in the condition.
    unreachable = ("the object store does not answer", "unable to connect")
    assert failing["reason"] == "ArchiveFailing" and any(u in failing["message"] for u in unreachable), failing
    assert status(admin, namespace, "arch")["archive"]["pendingSegments"] >= 1

    # Back: every segment written meanwhile is archived, none missing between the first and the last.
    store.start()
    last = switch(kubectl, namespace, "arch-0", 100)  # a new segment wakes the archiver
    wait_for(lambda: archived_in_status(admin, namespace, "arch", last), timeout=180,
             what=f"{last} archived once the store is back")  # fmt: skip
    stored = segments(store, repository)
    span = [name for name in stored if first <= name <= last]
    expected = following(first, last)
    assert span == expected, f"a gap in the archive: {sorted(set(expected) - set(span))}"
    assert set(away) <= set(stored)
    log = str(kubectl("logs", "-n", namespace, "arch-0", "-c", "postgres"))
    assert store.secret_key not in log and store.secret_key not in str(
        kubectl("get", "sampledb,pod", "-n", namespace, "-o", "yaml")
    )


def test_a_failover_leaves_no_gap_in_the_archive(
    admin: KubeApi, kubectl: Any, namespace: str, object_store: tuple[ObjectStore, dict[str, Any]]
) -> None:
    """Segments the lost primary closed but could not archive (the store was away) are archived by the new one."""
    store, spec = object_store
    admin.create(sampledb("gap", namespace, 17, instances=2, backup={"objectStore": spec}))
    wait_for(lambda: status(admin, namespace, "gap").get("readyInstances") == 2, timeout=300, what="two servers")
    wait_phase(admin, namespace, "gap")
    repository = repository_of(admin, namespace, "gap")
    first = switch(kubectl, namespace, "gap-0", 100)
    wait_for(lambda: first in segments(store, repository), timeout=120, what=f"{first} archived")
    store.stop()
    unarchived = [switch(kubectl, namespace, "gap-0", 100) for _ in range(3)]
    position = sql(kubectl, namespace, "gap-0", "select pg_current_wal_lsn()")
    replayed = f"select pg_last_wal_replay_lsn() >= '{position}'"
    wait_for(lambda: sql(kubectl, namespace, "gap-1", replayed) == "t", timeout=60, what="gap-1 to replay them")
    assert not set(unarchived) & set(segments(store, repository)), "the store was away: nothing of them archived"

    kubectl("delete", "pod", "-n", namespace, "gap-0", "--grace-period=0", "--force")
    wait_for(lambda: (status(admin, namespace, "gap").get("failover") or {}).get("state") == "Completed",
             timeout=180, what="the failover to gap-1")  # fmt: skip
    assert status(admin, namespace, "gap")["currentPrimary"] == "gap-1"
    store.start()
    later = switch(kubectl, namespace, "gap-1", 100)  # on the new timeline; wakes the archiver
    wait_for(lambda: later in segments(store, repository), timeout=180, what=f"{later} archived by gap-1")
    wait_for(lambda: set(unarchived) <= set(segments(store, repository)), timeout=120,
             what=f"the lost primary's unarchived segments {unarchived} archived by gap-1")  # fmt: skip
    old_timeline = [s for s in segments(store, repository) if s[:8] == first[:8] and s >= first]
    assert old_timeline[: len(following(first, unarchived[-1]))] == following(first, unarchived[-1])
    assert later[:8] > first[:8], "the new primary archives on its own timeline"


def backup_status(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return (admin.get("SampleDBBackup", namespace, name) or {}).get("status") or {}


def physical_backup(admin: KubeApi, namespace: str, name: str, instance: str, **spec: Any) -> dict[str, Any]:
    """A SampleDBBackup of method Physical, taken to its end; its status."""
    admin.create({"apiVersion": "sampledb.io/v1", "kind": "SampleDBBackup",
                  "metadata": {"name": name, "namespace": namespace},
                  "spec": {"instance": instance, "method": "Physical", **spec}})  # fmt: skip
    done: dict[str, Any] = wait_for(
        lambda: (s := backup_status(admin, namespace, name)).get("phase") in ("Succeeded", "Failed") and s,
        timeout=300, what=f"the base backup {name} to finish")  # fmt: skip
    assert done["phase"] == "Succeeded", done
    return done


def in_backup_container(kubectl: Any, namespace: str, pod: str, script: str) -> str:
    return str(kubectl("exec", "-n", namespace, pod, "-c", archive.BACKUP_CONTAINER, "--", "sh", "-c", script)).strip()


def test_a_physical_backup_runs_beside_the_primary_and_restores_to_exactly_the_rows_before_it(
    admin: KubeApi, kubectl: Any, namespace: str, object_store: tuple[ObjectStore, dict[str, Any]]
) -> None:
    store, spec = object_store
    admin.create(sampledb("base", namespace, 17, backup={"objectStore": {**spec, "retention": {"fullBackups": 1}}}))
    wait_phase(admin, namespace, "base")
    repository = repository_of(admin, namespace, "base")
    switch(kubectl, namespace, "base-0", 5000)
    rows = "select count(*), sum(hashtext(id::text || at::text)) from t"
    before = sql(kubectl, namespace, "base-0", rows)

    first = physical_backup(admin, namespace, "base-full-1", "base")
    label = first["backupLabel"]
    assert first["pod"] == "base-0" and first["startLSN"] <= first["stopLSN"], first
    assert first["bytes"] > 10_000_000 and 0 < first["repositoryBytes"] < first["bytes"], first
    assert first["location"] == f"s3://{BUCKET}{repository}/backup/db/{label}", first
    assert f"backup/db/{label}/backup.manifest" in store.objects(repository)
    reasons = [e["reason"] for e in admin.list_objects("Event", namespace) if e["regarding"]["name"] == "base-full-1"]
    assert "BackupStarted" in reasons and "BackupSucceeded" in reasons, reasons
    switch(kubectl, namespace, "base-0", 100)  # written after the backup: not in what it restores to
    assert sql(kubectl, namespace, "base-0", rows) != before

    # Restored in the Pod's backup container (into its scratch folder), to the backup's consistency point.
    check = "/tmp/restore-check"
    restored = in_backup_container(
        kubectl,
        namespace,
        "base-0",
        f"""set -e
sh /etc/sampledb/config/{archive.SCRIPT_FILE} restore --pg1-path={check} --set={label} --type=immediate \
  --target-action=promote >/dev/null
echo "local all all trust" > {check}/pg_hba.conf && : > {check}/postgresql.conf
pg_ctl start -D {check} -w -t 120 -l {check}.log -o "-c port=5499 -c listen_addresses='' \
  -c unix_socket_directories=/tmp -c archive_mode=off" >/dev/null
until [ "$(psql -h /tmp -p 5499 -U postgres -d postgres -XAtc 'select pg_is_in_recovery()')" = f ]; do sleep 1; done
psql -h /tmp -p 5499 -U postgres -d app -XAtc '{rows}'
pg_ctl stop -D {check} -m fast >/dev/null && rm -rf {check} {check}.log""",
    )
    assert restored == before, "the base backup holds exactly the rows committed before it"

    # Retention (fullBackups 1): the next backup expires the first one. It is verified in the Pod:
    # restored into the backup container's /tmp, started, and checked with pg_amcheck.
    second = physical_backup(admin, namespace, "base-full-2", "base", verify=True)
    assert second["backupLabel"] != label and second["verified"] is True, second
    uid = (admin.get("SampleDBBackup", namespace, "base-full-2") or {})["metadata"]["uid"]
    run_log = in_backup_container(kubectl, namespace, "base-0", f"cat {archive.BACKUPS_DIR}/{uid}.log")
    assert f"base backup {second['backupLabel']} verified" in run_log, run_log[-2000:]
    kept = {key.split("/")[2] for key in store.objects(repository) if key.startswith("backup/db/2")}
    assert kept == {second["backupLabel"]}, kept
    # The backup container's main process reaped what it ran (and the restore's server): no zombie left.
    zombies = in_backup_container(kubectl, namespace, "base-0", "grep -l '^State:.*Z' /proc/[0-9]*/status || :")
    assert zombies == "", zombies
    log = str(kubectl("logs", "-n", namespace, "base-0", "-c", archive.BACKUP_CONTAINER))
    assert store.secret_key not in log and store.secret_key not in str(
        kubectl("get", "sampledbbackup", "-n", namespace, "-o", "yaml")
    )

    # Scheduled: the first at once, the next at the next minute; each then expires the one before it
    # (fullBackups 1), and its record is pruned. The records made by hand stay.
    patch = {"spec": {"backup": {"objectStore": {"schedule": "* * * * *"}}}}
    admin.merge_patch("SampleDB", namespace, "base", patch)
    first_run = wait_for(lambda: scheduled(admin, namespace, "Succeeded"), timeout=300, what="a scheduled backup")
    wait_for(lambda: len(scheduled(admin, namespace, "Succeeded")) >= 2, timeout=300, what="the next one")
    wait_for(lambda: first_run[0] not in scheduled(admin, namespace, None), timeout=60, what="the first one's pruning")
    admin.merge_patch("SampleDB", namespace, "base", {"spec": {"backup": {"objectStore": {"schedule": None}}}})
    wait_for(lambda: not scheduled(admin, namespace, "Running") and not scheduled(admin, namespace, "Pending"),
             timeout=300, what="the last scheduled backup to end")  # fmt: skip
    newest = scheduled(admin, namespace, "Succeeded")[-1]
    record = admin.get("SampleDBBackup", namespace, newest) or {}
    assert record["spec"] == {"instance": "base", "method": "Physical", "verify": False}, record
    kept = {key.split("/")[2] for key in store.objects(repository) if key.startswith("backup/db/2")}
    assert kept == {record["status"]["backupLabel"]} == {record["status"]["oldestBackupLabel"]}, (kept, record)
    assert admin.get("SampleDBBackup", namespace, "base-full-1") is not None, "made by hand: never pruned"


def scheduled(admin: KubeApi, namespace: str, phase: str | None) -> list[str]:
    """The scheduled SampleDBBackups of instance `base` in `phase` (None: all), oldest first."""
    return sorted(
        b["metadata"]["name"]
        for b in admin.list_objects("SampleDBBackup", namespace)
        if schedule.scheduled_for(b) and b["spec"]["instance"] == "base"
        if phase is None or (b.get("status") or {}).get("phase") == phase
    )


def recovering(name: str, namespace: str, spec: dict[str, Any], **recovery: Any) -> dict[str, Any]:
    return sampledb(name, namespace, 17, backup={"objectStore": spec}, recovery=recovery, deletionPolicy="Delete")


def test_point_in_time_recovery_to_a_time_holds_exactly_the_rows_before_it_and_to_the_latest_every_commit(
    admin: KubeApi, kubectl: Any, namespace: str, object_store: tuple[ObjectStore, dict[str, Any]]
) -> None:
    """The issue's scenario on real Pods: rows with timestamps, a base backup, a point, more rows; then new SampleDBs
    recovered to the point, and to the latest point after the source and its volume are deleted."""
    _store, spec = object_store
    admin.create(sampledb("src", namespace, 17, backup={"objectStore": spec}, deletionPolicy="Delete"))
    wait_phase(admin, namespace, "src")
    repository = repository_of(admin, namespace, "src")
    rows = "select count(*), sum(hashtext(id::text || at::text)) from t"
    now = "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    too_early = sql(kubectl, namespace, "src-0", now)  # before any base backup
    switch(kubectl, namespace, "src-0", 2000)
    base = physical_backup(admin, namespace, "src-base", "src")
    switch(kubectl, namespace, "src-0", 300)
    before = sql(kubectl, namespace, "src-0", rows)
    point = sql(kubectl, namespace, "src-0", now)
    sql(kubectl, namespace, "src-0", "select pg_sleep(1)")
    last = switch(kubectl, namespace, "src-0", 400)
    everything = sql(kubectl, namespace, "src-0", rows)
    wait_for(lambda: archived_in_status(admin, namespace, "src", last), timeout=120, what=f"{last} archived")

    # To the point, from the base backup: exactly the rows committed before it, and the new Secret's passwords.
    admin.create(recovering("to-point", namespace, spec, backup="src-base", target={"time": point}))
    recovered = wait_phase(admin, namespace, "to-point", timeout=300)
    assert sql(kubectl, namespace, "to-point-0", rows) == before != everything
    client = start_client(admin, namespace, "to-point", 17)
    assert app_sql(kubectl, namespace, client, "select current_user") == "app", "through the Service, its password"
    reached = recovered["recovery"]
    assert reached["repositoryPath"] == repository and reached["backupLabel"] == base["backupLabel"], reached
    assert reached["target"] == f"time {point}" and reached["reached"].startswith("before "), reached
    assert reached["timeline"] == 2 and lsn_number(reached["lsn"]) > lsn_number(base["stopLSN"]), reached
    assert repository_of(admin, namespace, "to-point") != repository, "it archives to its own repository"

    # The source and its volume gone: to the latest point, every commit it acknowledged (all archived).
    admin.delete("SampleDB", namespace, "src")
    wait_for(lambda: admin.get("PersistentVolumeClaim", namespace, "data-src-0") is None, timeout=240,
             what="the source's volume to be deleted")  # fmt: skip
    admin.create(recovering("latest", namespace, spec, repositoryPath=repository))
    wait_phase(admin, namespace, "latest", timeout=300)
    assert sql(kubectl, namespace, "latest-0", rows) == everything
    assert status(admin, namespace, "latest")["recovery"]["reached"] == "no recovery target specified"

    # Before the oldest base backup: refused, with what the repository holds, and nothing served.
    admin.create(recovering("early", namespace, spec, repositoryPath=repository, target={"time": too_early}))
    failed = wait_for(lambda: (c := degraded(admin, namespace, "early")).get("reason") == "RecoveryFailed" and c,
                      timeout=240, what="early to be refused")  # fmt: skip
    assert "no base backup ends before the target" in failed["message"], failed
    assert f"the repository {repository} holds base backups ending from" in failed["message"], failed
    assert status(admin, namespace, "early").get("readyInstances", 0) == 0


def upgrade_status(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return status(admin, namespace, name).get("upgrade") or {}


def test_copy_upgrades_with_pg_upgrade_after_an_online_base_backup_and_auto_falls_back_when_it_refuses(
    admin: KubeApi, kubectl: Any, psql: Any, namespace: str, object_store: tuple[ObjectStore, dict[str, Any]]
) -> None:
    """15 -> 17 by pg_upgrade --copy (Auto with a store); 17 -> 18, which pg_upgrade refuses, by dump and restore.

    Debian's 17 gives every column an attribute option 18 refuses when pg_upgrade restores the
    schema (docs/plans/fast-upgrade.md §7): a real refusal, after which the old cluster serves again
    and the next attempt is Logical by itself.
    """
    _, spec = object_store
    admin.create(sampledb("cp", namespace, 15, backup={"objectStore": spec}))
    admin.create(sampledb("fb", namespace, 17, backup={"objectStore": spec}))
    before = {}
    for name in ("cp", "fb"):
        wait_phase(admin, namespace, name)
        before[name] = seed(psql, namespace, name, 5000)
        psql(namespace, name, "create index on journey (payload)", db="app")
    client = start_client(admin, namespace, "cp", 15)
    app_sql(kubectl, namespace, client, "create table mine (id int primary key)")
    admin.merge_patch("SampleDB", namespace, "cp", {"spec": {"postgres": {"version": 17}}})
    admin.merge_patch("SampleDB", namespace, "fb", {"spec": {"postgres": {"version": 18}}})

    done = wait_for(lambda: (u := upgrade_status(admin, namespace, "cp")).get("phase") in ("Succeeded", "Failed") and u,
                    timeout=600, what="the Copy upgrade", interval=2)  # fmt: skip
    assert done["phase"] == "Succeeded" and done["method"] == "Copy" and done["attempt"] == 1, done
    record = admin.get("SampleDBBackup", namespace, "cp-upgrade17-1") or {}
    assert record["spec"]["method"] == "Physical" and record["status"]["phase"] == "Succeeded", record
    assert record["status"]["backupLabel"] in done["backup"]
    wait_phase(admin, namespace, "cp")
    assert psql(namespace, "cp", "show server_version_num")[:2] == "17"
    assert checksum(psql(namespace, "cp", ROWS, db="app")) == before["cp"]
    plan = psql(
        namespace, "cp", "set enable_seqscan = off; explain select * from journey where payload = 'x'", db="app"
    )
    assert "journey_payload_idx" in plan, plan
    # The application's role and password came through pg_upgrade (not from a dump): it logs in and writes.
    app_sql(kubectl, namespace, client, "insert into mine values (1)")
    jobs = {
        j["metadata"]["name"] for j in admin.list_objects("Job", namespace) if "-upgrade17-" in j["metadata"]["name"]
    }
    assert jobs == {"cp-upgrade17-1-check", "cp-upgrade17-1-run", "cp-upgrade17-1-verify"}, jobs

    done = wait_for(lambda: (u := upgrade_status(admin, namespace, "fb")).get("phase") == "Succeeded" and u,
                    timeout=600, what="the fallback upgrade", interval=2)  # fmt: skip
    assert done["method"] == "Logical" and done["attempt"] == 2, done
    assert "pg_upgrade could not upgrade" in done["message"] and "pg_attver" in done["message"], done["message"]
    # Found by the check's schema rehearsal, with the old version serving: no run Job, so no downtime for it.
    jobs = {
        j["metadata"]["name"]
        for j in admin.list_objects("Job", namespace)
        if "fb-upgrade18-1-" in j["metadata"]["name"]
    }
    assert jobs == {"fb-upgrade18-1-check"}, jobs
    wait_phase(admin, namespace, "fb")
    assert psql(namespace, "fb", "show server_version_num")[:2] == "18"
    assert checksum(psql(namespace, "fb", ROWS, db="app")) == before["fb"]

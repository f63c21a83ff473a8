"""The user journey on the real node, each step checked in PostgreSQL itself.

Every instance runs the operator's default image for its major (our Debian-built images, loaded
under those names), in a namespace enforcing Pod Security "restricted".
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from sampledb_localcluster.images import ContainerdLoader
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.settings import DEFAULT_IMAGES
from tests.node.conftest import checksum, client_pod, restricted_pod, wait_for

ROWS = "select id, payload from journey order by id"
# Real Pods, Jobs and CronJobs take minutes (an upgrade with its rollback, three scheduled runs).
pytestmark = pytest.mark.timeout(900)


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


def seed(psql: Any, namespace: str, instance: str, count: int) -> str:
    """The journey table with ``count`` rows, written as the superuser over the server's socket."""
    rows = f"select g as id, md5(g::text) as payload from generate_series(1, {count}) g"
    psql(namespace, instance, f"create table journey as {rows}", db="app")
    return checksum(psql(namespace, instance, ROWS, db="app"))


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


def pod_uid(admin: KubeApi, namespace: str, pod: str) -> str | None:
    return ((admin.get("Pod", namespace, pod) or {}).get("metadata") or {}).get("uid")


def test_a_parameter_change_rolls_the_pod_and_the_server_runs_with_it(
    admin: KubeApi, psql: Any, namespace: str
) -> None:
    admin.create(sampledb("params", namespace, 17, postgres={"version": 17, "parameters": {"work_mem": "4MB"}}))
    wait_phase(admin, namespace, "params")
    psql(namespace, "params", "create table kept as select g as id from generate_series(1, 500) g", db="app")
    before, rows = pod_uid(admin, namespace, "params-0"), checksum(psql(namespace, "params", "table kept", db="app"))
    assert psql(namespace, "params", "show work_mem") == "4MB"

    admin.merge_patch("SampleDB", namespace, "params", {"spec": {"postgres": {"parameters": {"work_mem": "16MB"}}}})
    wait_for(lambda: pod_uid(admin, namespace, "params-0") not in (None, before), timeout=120, what="the Pod to roll")
    wait_phase(admin, namespace, "params")
    wait_for(lambda: psql(namespace, "params", "show work_mem", check=False) == "16MB", timeout=60,
             what="the new server to run with work_mem = 16MB", interval=1)  # fmt: skip
    assert checksum(psql(namespace, "params", "table kept", db="app")) == rows


def degraded(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return next((c for c in status(admin, namespace, name).get("conditions", []) if c["type"] == "Degraded"), {})


def set_parameter(admin: KubeApi, namespace: str, name: str, value: str | None) -> None:
    patch = {"spec": {"postgres": {"parameters": {"transaction_timeout": value}}}}
    admin.merge_patch("SampleDB", namespace, name, patch)


def test_a_parameter_the_server_refuses_is_reported_and_the_database_keeps_serving(
    admin: KubeApi, psql: Any, namespace: str
) -> None:
    admin.create(sampledb("refuse", namespace, 15))
    wait_phase(admin, namespace, "refuse")
    rows, before = seed(psql, namespace, "refuse", 300), pod_uid(admin, namespace, "refuse-0")

    # A PostgreSQL 17+ parameter: known to the operator, refused by a 15 server at start.
    set_parameter(admin, namespace, "refuse", "5s")
    rejected = wait_for(lambda: (c := degraded(admin, namespace, "refuse")).get("reason") == "ParametersRejected" and c,
                        timeout=120, what="the refusal to be reported", interval=1)  # fmt: skip
    assert "unrecognized configuration parameter 'transaction_timeout'" in rejected["message"]
    assert status(admin, namespace, "refuse")["phase"] == "Degraded"
    # The database was never taken down for it: same Pod, same server, same rows.
    assert pod_uid(admin, namespace, "refuse-0") == before
    assert checksum(psql(namespace, "refuse", ROWS, db="app")) == rows

    set_parameter(admin, namespace, "refuse", None)
    wait_for(lambda: degraded(admin, namespace, "refuse").get("status") == "False", timeout=120,
             what="the instance to recover once the parameter is gone", interval=1)  # fmt: skip
    assert pod_uid(admin, namespace, "refuse-0") == before


def backup(name: str, namespace: str, instance: str, **spec: Any) -> dict[str, Any]:
    meta, body = {"name": name, "namespace": namespace}, {"instance": instance, **spec}
    return {"apiVersion": "sampledb.io/v1", "kind": "SampleDBBackup", "metadata": meta, "spec": body}


def backup_status(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return (admin.get("SampleDBBackup", namespace, name) or {}).get("status") or {}


def volume_sha256(admin: KubeApi, kubectl: Any, namespace: str, claim: str, path: str) -> str:
    """The file's SHA-256 computed in a Pod of our own that mounts the claim (not the operator's Job)."""
    pod = restricted_pod(namespace, f"reader-{claim}", DEFAULT_IMAGES[17])
    pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/v", "readOnly": True}]
    pod["spec"]["volumes"] = [{"name": "v", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}]
    admin.create(pod)
    wait_for(lambda: running(admin, namespace, pod["metadata"]["name"]), timeout=60, what="the reader Pod")
    out = kubectl("exec", "-n", namespace, pod["metadata"]["name"], "--", "sha256sum", f"/v/{path}")
    kubectl("delete", "pod", "-n", namespace, pod["metadata"]["name"], "--wait=false")
    return str(out).split()[0]


def test_backup_reports_what_the_job_measured_and_restores_into_a_new_instance(
    admin: KubeApi, kubectl: Any, psql: Any, namespace: str
) -> None:
    admin.create(sampledb("src", namespace, 15))
    wait_phase(admin, namespace, "src")
    client = start_client(admin, namespace, "src", 15)
    written = write_rows(kubectl, namespace, client, 2000)

    admin.create(backup("b1", namespace, "src", verify=True))
    done = wait_for(lambda: (s := backup_status(admin, namespace, "b1")).get("phase") in ("Succeeded", "Failed") and s,
                    timeout=180, what="the backup to finish", interval=1)  # fmt: skip
    assert done["phase"] == "Succeeded", done
    assert done["verified"] is True and done["bytes"] > 0 and len(done["sha256"]) == 64
    # The figures come from the Job's real termination message, which the kubelet wrote.
    pods = admin.list_objects("Pod", namespace, labels={"job-name": "b1"})
    succeeded = [p for p in pods if p["status"].get("phase") == "Succeeded"]
    terminated = succeeded[0]["status"]["containerStatuses"][0]["state"]["terminated"]
    assert done["sha256"] in terminated["message"] and str(done["bytes"]) in terminated["message"]
    claim, _, path = done["location"].partition(":")
    assert volume_sha256(admin, kubectl, namespace, claim, path.removeprefix("/backups/")) == done["sha256"]

    admin.create(sampledb("copy", namespace, 15, restore={"backup": "b1"}))
    wait_phase(admin, namespace, "copy")
    assert checksum(psql(namespace, "copy", ROWS, db="app")) == written


def test_schema_migrations_apply_once_and_a_bad_file_reports_postgres_error(
    admin: KubeApi, psql: Any, namespace: str
) -> None:
    files = {"001_init.sql": "create table items (id int primary key, name text not null);",
             "002_seed.sql": "insert into items values (1, 'one'), (2, 'two');"}  # fmt: skip
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "schema", "namespace": namespace},
                  "data": files})  # fmt: skip
    admin.create(sampledb("mig", namespace, 18, migrations={"configMap": "schema"}))
    wait_for(lambda: (status(admin, namespace, "mig").get("migrations") or {}).get("lastApplied") == "002_seed",
             timeout=240, what="the migrations to apply", interval=1)  # fmt: skip
    assert psql(namespace, "mig", "select count(*) from items", db="app") == "2"
    recorded = psql(namespace, "mig", "select count(*) from sampledb_schema_migrations", db="app")

    # A new file with an error, and no change to the SampleDB (the operator must notice the ConfigMap):
    # rolled back, reported with PostgreSQL's own message; 001-002 are not applied again.
    admin.merge_patch("ConfigMap", namespace, "schema", {"data": {"003_bad.sql": "insert into items values (3);"}})
    degraded = wait_for(
        lambda: next((c for c in status(admin, namespace, "mig").get("conditions", [])
                      if c["type"] == "Degraded" and c.get("reason") == "MigrationFailed"), None),
        timeout=180, what="the bad migration to be reported", interval=1)  # fmt: skip
    assert "migration 003_bad failed and was rolled back" in degraded["message"]
    assert 'null value in column "name"' in degraded["message"]
    assert psql(namespace, "mig", "select count(*) from items", db="app") == "2"
    assert psql(namespace, "mig", "select count(*) from sampledb_schema_migrations", db="app") == recorded


def upgrade_phase(admin: KubeApi, namespace: str, name: str) -> str | None:
    return (status(admin, namespace, name).get("upgrade") or {}).get("phase")


def test_major_upgrade_keeps_every_row_and_a_failed_step_rolls_back(
    admin: KubeApi, kubectl: Any, psql: Any, namespace: str
) -> None:
    for name in ("up", "rb"):
        admin.create(sampledb(name, namespace, 15))
    for name in ("up", "rb"):
        wait_phase(admin, namespace, name)
        seed(psql, namespace, name, 3000)
    before = {name: checksum(psql(namespace, name, ROWS, db="app")) for name in ("up", "rb")}

    admin.merge_patch("SampleDB", namespace, "up", {"spec": {"postgres": {"version": 17}}})
    # The check step proves the new image runs the target major: an image of another major fails it, for real.
    admin.merge_patch("SampleDB", namespace, "rb", {"spec": {"postgres": {"version": 17, "image": DEFAULT_IMAGES[18]}}})
    wait_for(lambda: upgrade_phase(admin, namespace, "up") == "Succeeded", timeout=420, what="the upgrade", interval=2)
    wait_phase(admin, namespace, "up")
    assert psql(namespace, "up", "show server_version_num")[:2] == "17"
    assert checksum(psql(namespace, "up", ROWS, db="app")) == before["up"]

    wait_for(lambda: upgrade_phase(admin, namespace, "rb") == "Failed", timeout=420, what="the rollback", interval=2)
    wait_for(lambda: status(admin, namespace, "rb").get("readyInstances") == 1, timeout=240,
             what="version 15 to serve again", interval=2)  # fmt: skip
    degraded = next(c for c in status(admin, namespace, "rb")["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "UpgradeFailed"
    assert psql(namespace, "rb", "show server_version_num")[:2] == "15"
    assert checksum(psql(namespace, "rb", ROWS, db="app")) == before["rb"]


def gone(admin: KubeApi, namespace: str, kind: str, name: str) -> bool:
    return admin.get(kind, namespace, name) is None


def test_deletion_policies_on_real_volumes(admin: KubeApi, psql: Any, namespace: str, local_cluster: Any) -> None:
    for name, policy in (("snap", "Snapshot"), ("keep", "Retain"), ("drop", "Delete")):
        admin.create(sampledb(name, namespace, 17, deletionPolicy=policy))
    for name in ("snap", "keep", "drop"):
        wait_phase(admin, namespace, name)
        seed(psql, namespace, name, 700)
    written = checksum(psql(namespace, "snap", ROWS, db="app"))
    drop_volume = admin.get("PersistentVolumeClaim", namespace, "data-drop-0")["spec"]["volumeName"]  # type: ignore[index]
    volumes = local_cluster.state_dir / "data" / "volumes"
    assert (volumes / drop_volume.removeprefix("pv-")).is_dir()

    for name in ("snap", "keep", "drop"):
        admin.delete("SampleDB", namespace, name)
    for name in ("snap", "keep", "drop"):
        wait_for(lambda n=name: gone(admin, namespace, "SampleDB", n), timeout=240, what=f"{name} to be deleted")  # type: ignore[misc]

    assert admin.get("PersistentVolumeClaim", namespace, "data-keep-0") is not None
    wait_for(lambda: gone(admin, namespace, "PersistentVolumeClaim", "data-drop-0"), what="the Delete volume to go")
    wait_for(lambda: not (volumes / drop_volume.removeprefix("pv-")).exists(), what="its folder to be removed")
    snapshot = admin.get("PersistentVolumeClaim", namespace, "snap-final-snapshot")
    assert snapshot is not None
    files = [f for f in (volumes / snapshot["spec"]["volumeName"].removeprefix("pv-")).rglob("*") if f.is_file()]
    dump = next(f for f in files if f.name == "app.dump")  # one custom-format dump per database
    admin.create(sampledb("reborn", namespace, 17, restore={
        "persistentVolumeClaim": "snap-final-snapshot",
        "file": str(dump.relative_to(volumes / snapshot["spec"]["volumeName"].removeprefix("pv-"))),
    }))  # fmt: skip
    wait_phase(admin, namespace, "reborn")
    assert checksum(psql(namespace, "reborn", ROWS, db="app")) == written


def postmaster_pid(pod_uid_: str) -> int:
    """The host pid of the server in the Pod (its container's main process), found through its cgroup."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            cgroups = (entry / "cgroup").read_text()
        except OSError:
            continue
        if argv[0] == b"postgres" and b"-D" in argv and f"pod{pod_uid_}" in cgroups:
            return int(entry.name)
    raise AssertionError(f"no postgres server process in Pod {pod_uid_}")


WRITER = """
i=0
while [ "$i" -lt 900 ]; do
  i=$((i + 1))
  psql -XAtqc "insert into load values ($i)" >/dev/null 2>&1 && echo "committed $i"
  sleep 0.05
done
echo done
"""


def test_a_killed_server_comes_back_with_every_committed_row(
    admin: KubeApi, kubectl: Any, psql: Any, namespace: str
) -> None:
    admin.create(sampledb("crash", namespace, 17))
    wait_phase(admin, namespace, "crash")
    committed = start_writer(admin, kubectl, psql, namespace, "crash")
    wait_for(lambda: len(committed()) >= 100, timeout=120, what="the writer to commit 100 rows", interval=1)
    uid = pod_uid(admin, namespace, "crash-0")
    assert uid is not None
    os.kill(postmaster_pid(uid), signal.SIGKILL)
    wait_for(lambda: "done" in kubectl("logs", "-n", namespace, "writer", check=False), timeout=240,
             what="the writer to finish", interval=2)  # fmt: skip

    acked = committed()
    assert acked[-1] > acked[99] + 100, "the writer committed nothing after the server came back"
    assert len(acked) < 900, "no insert failed: the kill did not interrupt the server"
    restarts = admin.get("Pod", namespace, "crash-0")["status"]["containerStatuses"][0]["restartCount"]  # type: ignore[index]
    assert restarts >= 1 and pod_uid(admin, namespace, "crash-0") == uid  # the container restarted in place
    stored = {int(v) for v in psql(namespace, "crash", "select id from load", db="app").split()}
    assert set(acked) <= stored, f"committed but lost: {sorted(set(acked) - stored)[:20]}"


def test_a_scheduled_backup_fires_and_retention_prunes(
    admin: KubeApi, psql: Any, namespace: str, local_cluster: Any
) -> None:
    admin.create(sampledb("cron", namespace, 17, backup={"schedule": "* * * * *", "retention": 2}))
    wait_phase(admin, namespace, "cron")
    seed(psql, namespace, "cron", 100)

    def succeeded() -> int:
        jobs = admin.list_objects("Job", namespace)
        ours = [j for j in jobs if j["metadata"]["name"].startswith("cron-backup-")]
        return sum(1 for j in ours if (j.get("status") or {}).get("succeeded"))

    wait_for(lambda: succeeded() >= 3, timeout=300, what="three scheduled backups", interval=5)
    claim = admin.get("PersistentVolumeClaim", namespace, "cron-backups")
    assert claim is not None
    folder = local_cluster.state_dir / "data" / "volumes" / claim["spec"]["volumeName"].removeprefix("pv-") / "cron"

    def between_runs() -> bool:  # a run writing its dump (before retention prunes) would show three
        cronjob = admin.get("CronJob", namespace, "cron-backup") or {}
        return not (cronjob.get("status") or {}).get("active")

    wait_for(between_runs, timeout=90, what="a moment between two scheduled runs", interval=1)
    dumps = sorted(folder.glob("*-scheduled.dump"))
    assert len(dumps) == 2, f"retention 2 kept {[d.name for d in dumps]}"
    for dump in dumps:
        recorded = dump.with_suffix(".sha256").read_text().split()[0]
        assert hashlib.sha256(dump.read_bytes()).hexdigest() == recorded


def start_writer(admin: KubeApi, kubectl: Any, psql: Any, namespace: str, instance: str) -> Any:
    """A Pod inserting rows through the Service (WRITER); returns a function listing the committed ids."""
    psql(namespace, instance, "create table load (id int primary key); grant all on load to app", db="app")
    writer = client_pod(namespace, instance, DEFAULT_IMAGES[17], database="app")
    writer["metadata"]["name"] = "writer"
    writer["spec"]["restartPolicy"] = "Never"
    writer["spec"]["containers"][0]["command"] = ["sh", "-c", WRITER]
    admin.create(writer)

    def committed() -> list[int]:
        logs = kubectl("logs", "-n", namespace, "writer", check=False)
        return [int(line.split()[1]) for line in logs.splitlines() if line.startswith("committed ")]

    return committed


def test_growing_the_volume_keeps_the_server_serving(admin: KubeApi, kubectl: Any, psql: Any, namespace: str) -> None:
    """spec.storage.size grows while an application writes: no failed insert, same server process."""
    admin.create(sampledb("grow", namespace, 17))
    wait_phase(admin, namespace, "grow")
    committed = start_writer(admin, kubectl, psql, namespace, "grow")
    wait_for(lambda: len(committed()) >= 50, timeout=120, what="the writer to commit 50 rows", interval=1)
    uid = pod_uid(admin, namespace, "grow-0")
    assert uid is not None
    server, started = postmaster_pid(uid), psql(namespace, "grow", "select pg_postmaster_start_time()")
    sts_uid = admin.get("StatefulSet", namespace, "grow")["metadata"]["uid"]  # type: ignore[index]

    admin.merge_patch("SampleDB", namespace, "grow", {"spec": {"storage": {"size": "2Gi"}}})
    grown = {"size": "2Gi", "capacity": "2Gi", "phase": "Resized"}
    wait_for(lambda: status(admin, namespace, "grow").get("storage") == grown, timeout=120,
             what="the volume to be resized", interval=1)  # fmt: skip
    assert len(committed()) < 900, "the writer finished before the growth did: it proved nothing"
    wait_for(lambda: "done" in kubectl("logs", "-n", namespace, "writer", check=False), timeout=240,
             what="the writer to finish", interval=2)  # fmt: skip

    acked = committed()
    failed = sorted(set(range(1, 901)) - set(acked))
    assert failed == [], f"inserts failed during the growth: {failed[:20]}"
    stored = {int(v) for v in psql(namespace, "grow", "select id from load", db="app").split()}
    assert stored == set(acked)
    # The same server all along: same Pod, same process, never restarted; adopted by a new StatefulSet.
    assert (pod_uid(admin, namespace, "grow-0"), postmaster_pid(uid)) == (uid, server)
    assert psql(namespace, "grow", "select pg_postmaster_start_time()") == started
    pod = admin.get("Pod", namespace, "grow-0")
    assert pod is not None and pod["status"]["containerStatuses"][0]["restartCount"] == 0
    sts = admin.get("StatefulSet", namespace, "grow")
    assert sts is not None and sts["metadata"]["uid"] != sts_uid
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    assert status(admin, namespace, "grow")["phase"] == "Ready"


# A patch release of 17 as the node sees it: our build of 17 under a second name (no registry here).
PATCHED_17 = "docker.io/library/postgres:17.7"


def rolled(admin: KubeApi, namespace: str, pod: str, before: str | None) -> bool:
    """`pod` is a new Pod (not UID `before`) running PATCHED_17 with every container ready."""
    found = admin.get("Pod", namespace, pod) or {}
    if found.get("metadata", {}).get("uid") in (None, before) or found["metadata"].get("deletionTimestamp"):
        return False
    image = next(c["image"] for c in found["spec"]["containers"] if c["name"] == "postgres")
    statuses = found.get("status", {}).get("containerStatuses") or []
    return image == PATCHED_17 and bool(statuses) and all(c["ready"] for c in statuses)


def test_an_image_change_within_the_major_rolls_the_pod_and_keeps_every_row(
    admin: KubeApi, psql: Any, namespace: str, local_cluster: Any
) -> None:
    """spec.postgres.image changes, the major stays: a rolling restart onto the new image, no upgrade."""
    ContainerdLoader(local_cluster.containerd_socket, quiet=True).tag(DEFAULT_IMAGES[17], PATCHED_17)
    admin.create(sampledb("patch", namespace, 17))
    assert wait_phase(admin, namespace, "patch")["image"] == DEFAULT_IMAGES[17]
    rows, before = seed(psql, namespace, "patch", 800), pod_uid(admin, namespace, "patch-0")
    psql(namespace, "patch", "checkpoint")

    admin.merge_patch("SampleDB", namespace, "patch", {"spec": {"postgres": {"version": 17, "image": PATCHED_17}}})
    # Ready and the new image show in the status while the old Pod still serves: wait for the new Pod.
    wait_for(lambda: rolled(admin, namespace, "patch-0", before), timeout=180,
             what="a new Pod on the new image, every container ready", interval=1)  # fmt: skip
    wait_phase(admin, namespace, "patch")
    assert status(admin, namespace, "patch")["image"] == PATCHED_17
    # The same data directory, opened by a server of the same major: every row, and no upgrade ran.
    assert psql(namespace, "patch", "show server_version_num")[:2] == "17"
    assert checksum(psql(namespace, "patch", ROWS, db="app")) == rows
    assert "upgrade" not in status(admin, namespace, "patch")
    jobs = [j["metadata"]["name"] for j in admin.list_objects("Job", namespace)]
    assert jobs == ["patch-init"], jobs  # no upgrade Job (patch-upgrade17-...), no config check either


def test_restore_from_a_dump_on_a_claim_of_the_users(admin: KubeApi, kubectl: Any, psql: Any, namespace: str) -> None:
    """restore: {persistentVolumeClaim, file}: a dump the user made with pg_dump, on a volume of their own."""
    admin.create(sampledb("origin", namespace, 17))
    wait_phase(admin, namespace, "origin")
    written = write_rows(kubectl, namespace, start_client(admin, namespace, "origin", 17), 1500)

    # The user's side: a claim, and pg_dump run as the application through the Service, onto it.
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    admin.create({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                  "metadata": {"name": "dumps", "namespace": namespace}, "spec": claim})  # fmt: skip
    dumper = client_pod(namespace, "origin", DEFAULT_IMAGES[17], database="app")
    dumper["metadata"]["name"] = "dumper"
    dumper["spec"]["securityContext"]["fsGroup"] = 999  # the local volume is made writable for the group
    dumper["spec"]["containers"][0]["volumeMounts"] = [{"name": "dumps", "mountPath": "/dumps"}]
    dumper["spec"]["volumes"] = [{"name": "dumps", "persistentVolumeClaim": {"claimName": "dumps"}}]
    admin.create(dumper)
    wait_for(lambda: running(admin, namespace, "dumper"), timeout=60, what="the dumper Pod")
    kubectl("exec", "-n", namespace, "dumper", "--", "sh", "-c", "mkdir -p /dumps/nightly && "
            "pg_dump --format=custom --file=/dumps/nightly/app.dump")  # fmt: skip
    kubectl("delete", "pod", "-n", namespace, "dumper", "--wait=true")

    restore = {"persistentVolumeClaim": "dumps", "file": "nightly/app.dump"}
    admin.create(sampledb("restored", namespace, 17, restore=restore))
    wait_phase(admin, namespace, "restored")
    assert checksum(psql(namespace, "restored", ROWS, db="app")) == written
    # Restored as the application's own: the new instance's owner owns the table (pg_restore --role).
    owner = "select tableowner from pg_tables where tablename = 'journey'"
    assert psql(namespace, "restored", owner, db="app") == "app"
    logs = kubectl("logs", "-n", namespace, "job/restored-init")
    assert "sampledb: restoring /restore/nightly/app.dump into app" in logs

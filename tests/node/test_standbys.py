"""Standbys on the real node: cloned from the primary, streaming, behind their Services, scaled away.

Every check is made in PostgreSQL: the standby's rows against the primary's, `pg_is_in_recovery()`
through each Service, `pg_stat_replication` on the primary, a write refused by a standby.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sampledb_localcluster import LocalCluster
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.resources.instance import ROLE_LABEL, SWITCHOVER_ANNOTATION
from tests.integration.conftest import OperatorProcess
from tests.node.conftest import SOCKET_DIR, checksum, ids, kill_server, tool_path, wait_for
from tests.node.test_journey import (
    ROWS,
    app_sql,
    sampledb,
    seed,
    start_client,
    status,
    upgrade_phase,
    wait_phase,
    write_rows,
)

pytestmark = pytest.mark.timeout(900)
VERSION = 17


def server_sql(kubectl: Any, namespace: str, pod: str, sql: str, *, db: str = "app", check: bool = True) -> str:
    """SQL as the superuser in one server's own container, over its socket."""
    client = ["psql", "-h", SOCKET_DIR, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-XAtc", sql]
    return str(kubectl("exec", "-n", namespace, pod, "-c", "postgres", "--", *client, check=check)).strip()


def through(kubectl: Any, namespace: str, client: str, host: str, sql: str) -> str:
    """SQL as the application through the Service `host`, from the client Pod."""
    argv = [
        "exec",
        "-n",
        namespace,
        client,
        "--",
        "sh",
        "-c",
        'psql -h "$0" -XAtc "$1" 2>&1',
        f"{host}.{namespace}.svc",
        sql,
    ]
    return str(kubectl(*argv, check=False)).strip()


def role(admin: KubeApi, namespace: str, pod: str) -> str | None:
    return ((admin.get("Pod", namespace, pod) or {}).get("metadata", {}).get("labels") or {}).get(ROLE_LABEL)


def disruptions_allowed(admin: KubeApi, namespace: str, pdb: str) -> int | None:
    """What the disruption controller computed for the budget `pdb`."""
    return ((admin.get("PodDisruptionBudget", namespace, pdb) or {}).get("status") or {}).get("disruptionsAllowed")


def test_standbys_stream_serve_reads_and_go_with_their_volumes(
    admin: KubeApi, kubectl: Any, psql: Any, namespace: str, k8s_api: k8s.ApiClient, operator: OperatorProcess
) -> None:
    """Two servers: rows written on the primary reach the standby; scaled to one, the standby and its claim go."""
    admin.create(sampledb("ha", namespace, VERSION, instances=2))
    wait_for(lambda: status(admin, namespace, "ha").get("readyInstances") == 2, timeout=300, what="two servers ready")
    ready = wait_phase(admin, namespace, "ha")
    assert ready["currentPrimary"] == "ha-0"
    wait_for(lambda: role(admin, namespace, "ha-1") == "replica", timeout=60, what="the standby's role label")
    assert role(admin, namespace, "ha-0") == "primary"

    # A drain may take the standby (its own budget) but never the primary: the API server refuses its eviction.
    budgets = lambda: [disruptions_allowed(admin, namespace, pdb) for pdb in ("ha", "ha-standbys")]  # noqa: E731
    wait_for(lambda: None not in budgets(), timeout=60, what="the budgets computed")
    assert budgets() == [0, 1]
    eviction = k8s.V1Eviction(metadata=k8s.V1ObjectMeta(name="ha-0", namespace=namespace))
    with pytest.raises(ApiException) as refused:
        k8s.CoreV1Api(k8s_api).create_namespaced_pod_eviction("ha-0", namespace, eviction)
    assert refused.value.status == 429

    # The standby was cloned, not initialised: same system identifier, in recovery, streaming by its name.
    identifier = "select system_identifier from pg_control_system()"
    assert server_sql(kubectl, namespace, "ha-1", identifier) == server_sql(kubectl, namespace, "ha-0", identifier)
    assert server_sql(kubectl, namespace, "ha-1", "select pg_is_in_recovery()") == "t"
    assert server_sql(kubectl, namespace, "ha-0", "select pg_is_in_recovery()") == "f"
    streaming = "select application_name, state from pg_stat_replication"
    wait_for(lambda: server_sql(kubectl, namespace, "ha-0", streaming) == "ha-1|streaming", timeout=60,
             what="the standby streaming")  # fmt: skip

    # Rows the application commits on the primary after the clone reach the standby, row for row.
    client = start_client(admin, namespace, "ha", VERSION)
    written = write_rows(kubectl, namespace, client, 5000)
    wait_for(
        lambda: checksum(server_sql(kubectl, namespace, "ha-1", ROWS, check=False)) == written,
        timeout=60,
        what="the standby to replay the rows",
    )

    # The status lists each server as the primary reports it; caught up, the standby lags by 0 bytes
    # (read from the primary every 30 s), and so says the metric.
    servers = lambda: status(admin, namespace, "ha").get("servers")  # noqa: E731
    streaming_now = [
        {"name": "ha-0", "ready": True, "role": "Primary"},
        {"name": "ha-1", "ready": True, "role": "Replica", "replication": "streaming", "synchronous": "async",
         "lagBytes": 0},
    ]  # fmt: skip
    wait_for(lambda: servers() == streaming_now, timeout=90, what=f"status.servers {streaming_now}")
    lag = f'sampledb_replication_lag_bytes{{name="ha",namespace="{namespace}",pod="ha-1"}}'
    streaming = lag.replace("sampledb_replication_lag_bytes", "sampledb_replication_streaming")
    assert (operator.metrics().get(lag), operator.metrics().get(streaming)) == (0.0, 1.0)

    # The Services: read-write is the primary, read-only the standby (which refuses writes), -r both.
    assert app_sql(kubectl, namespace, client, "select pg_is_in_recovery()") == "f"
    assert through(kubectl, namespace, client, "ha-ro", "select pg_is_in_recovery()") == "t"
    assert through(kubectl, namespace, client, "ha-ro", "select count(*) from journey") == "5000"
    refused = through(kubectl, namespace, client, "ha-ro", "insert into journey values (0, 'x')")
    assert "read-only transaction" in refused
    assert through(kubectl, namespace, client, "ha-r", "select count(*) from journey") == "5000"

    # Scaled to one (through the scale subresource, as kubectl does it): the standby, its claim and
    # the standbys' Services go; the primary keeps every row.
    kubectl("scale", "-n", namespace, "sampledb/ha", "--replicas=1")
    assert (admin.get("SampleDB", namespace, "ha") or {})["spec"]["instances"] == 1
    for kind, name in [
        ("Pod", "ha-1"),
        ("PersistentVolumeClaim", "data-ha-1"),
        ("Service", "ha-ro"),
        ("Service", "ha-r"),
    ]:
        wait_for(lambda k=kind, n=name: admin.get(k, namespace, n) is None, timeout=120, what=f"{kind} {name} gone")
    assert admin.get("PersistentVolumeClaim", namespace, "data-ha-0") is not None
    assert checksum(psql(namespace, "ha", ROWS, db="app")) == written
    wait_for(lambda: status(admin, namespace, "ha").get("readyInstances") == 1, timeout=60, what="one server")
    assert servers() is None and not {lag, streaming} & operator.metrics().keys(), "one server: nothing to report"

    # Scaled back to two: a fresh clone (its old claim is gone) catches up with a write made meanwhile.
    app_sql(kubectl, namespace, client, "insert into journey values (5001, 'after')")
    admin.merge_patch("SampleDB", namespace, "ha", {"spec": {"instances": 2}})
    wait_for(lambda: status(admin, namespace, "ha").get("readyInstances") == 2, timeout=300, what="two servers again")
    count = "select count(*) from journey"
    wait_for(lambda: server_sql(kubectl, namespace, "ha-1", count, check=False) == "5001", timeout=60,
             what="the new standby to have every row")  # fmt: skip


def test_a_major_upgrade_runs_on_the_primary_and_the_standby_is_cloned_again(
    admin: KubeApi, kubectl: Any, psql: Any, namespace: str
) -> None:
    """15 -> 17 with a standby: the primary is upgraded alone, then the standby's 15 data is replaced by a clone."""
    admin.create(sampledb("up", namespace, 15, instances=2))
    wait_for(lambda: status(admin, namespace, "up").get("readyInstances") == 2, timeout=300, what="two servers ready")
    written = seed(psql, namespace, "up", 3000)
    admin.merge_patch("SampleDB", namespace, "up", {"spec": {"postgres": {"version": 17}}})
    wait_for(lambda: upgrade_phase(admin, namespace, "up") == "Succeeded", timeout=420, what="the upgrade", interval=2)
    wait_for(lambda: status(admin, namespace, "up").get("readyInstances") == 2, timeout=300, what="the standby back")
    assert server_sql(kubectl, namespace, "up-1", "show server_version_num")[:2] == "17"
    assert server_sql(kubectl, namespace, "up-1", "select pg_is_in_recovery()") == "t"
    assert "PostgreSQL 15, the server 17: cloning again" in kubectl("logs", "-n", namespace, "up-1", "-c", "postgres")
    wait_for(lambda: checksum(server_sql(kubectl, namespace, "up-1", ROWS, check=False)) == written, timeout=60,
             what="the standby to have every row")  # fmt: skip


# Each write is its own connection through the read-write Service, so it reaches whichever server is
# the primary; a line is printed only for an acknowledged commit: "<id> <client clock>". Ids run
# from $1 + 1 to $1 + $0.
WRITER = """i=0
while [ "$i" -lt "$0" ]; do
  i=$((i + 1))
  if PGCONNECT_TIMEOUT=2 psql -XAtqc "insert into acked values ($(($1 + i)))" >/dev/null 2>&1; then
    echo "$(($1 + i)) $(date +%s.%N)"
  fi
  sleep 0.05
done
"""


@dataclass(frozen=True)
class Writes:
    """What a writer saw around an act: the commits acknowledged (id, time), and the longest pause."""

    acked: list[tuple[int, float]]
    acted: float  # when the act began
    outage: float  # the longest gap between two acknowledged commits after it
    resumed: float  # when the commit that ended that gap was acknowledged

    def ids(self) -> set[int]:
        return {i for i, _ in self.acked}


def under_writes(kube_config: str, namespace: str, client: str, act: Any, *, rows: int = 400, first: int = 0) -> Writes:
    """Run `act` 5 s into a writer of `rows` commits through the read-write Service; what the writer saw."""
    argv = ["exec", "-n", namespace, client, "--", "sh", "-c", WRITER, str(rows), str(first)]
    writer = subprocess.Popen(
        [str(tool_path("kubectl")), "--kubeconfig", kube_config, *argv], stdout=subprocess.PIPE, text=True
    )
    time.sleep(5)
    acted = time.time()
    act()
    out, _ = writer.communicate(timeout=180)
    acked = [(int(i), float(at)) for i, at in (line.split() for line in out.splitlines())]
    times = [at for _, at in acked]
    assert times[0] < acted < times[-1], "the writer ran before and after the act"
    outage, resumed = max((after - before, after) for before, after in itertools.pairwise(times) if after > acted)
    return Writes(acked, acted, outage, resumed)


def test_a_lost_primary_fails_over_to_the_standby_which_keeps_every_write_and_the_old_one_rejoins(
    admin: KubeApi, kubectl: Any, kube_config: str, namespace: str, operator: OperatorProcess
) -> None:
    """The primary's Pod killed with no grace under a writer: the standby is promoted, the old primary rewound.

    Then the two switchovers: one that a scale-down below the primary calls for, and one asked for
    by annotation under a writer, which loses no commit.
    """
    changes = lambda: {  # noqa: E731
        reason: operator.metrics().get(f'sampledb_primary_changes_total{{reason="{reason}"}}', 0.0)
        for reason in ("FailedOver", "SwitchedOver")
    }
    before = changes()
    admin.create(sampledb("fo", namespace, VERSION, instances=2))
    wait_for(lambda: status(admin, namespace, "fo").get("readyInstances") == 2, timeout=300, what="two servers ready")
    wait_phase(admin, namespace, "fo")
    client = start_client(admin, namespace, "fo", VERSION)
    app_sql(kubectl, namespace, client, "create table acked (id int primary key)")
    written = write_rows(kubectl, namespace, client, 2000)
    wait_for(lambda: checksum(server_sql(kubectl, namespace, "fo-1", ROWS, check=False)) == written, timeout=60,
             what="the standby to replay the rows")  # fmt: skip

    def kill_primary() -> None:
        kubectl("delete", "pod", "-n", namespace, "fo-0", "--grace-period=0", "--force")
        wait_for(lambda: primary(admin, namespace) == "fo-1", timeout=120, what="fo-1 promoted", interval=0.5)

    failed_over = under_writes(kube_config, namespace, client, kill_primary)
    print(f"\nfailover: writes stopped for {failed_over.outage:.1f} s (longest gap between acknowledged commits), "
          f"resumed {failed_over.resumed - failed_over.acted:.1f} s after the primary's Pod was killed")  # fmt: skip

    record = status(admin, namespace, "fo")["failover"]
    assert (record["state"], record["fromPod"], record["toPod"]) == ("Completed", "fo-0", "fo-1")
    assert "its Pod" in record["reason"]
    assert server_sql(kubectl, namespace, "fo-1", "select pg_is_in_recovery()") == "f"
    # Every commit acknowledged after the failover is on the new primary; so is every one before it
    # that had reached the standby (asynchronous replication: report any that had not).
    present = acked_ids(kubectl, namespace, "fo-1")
    lost = sorted(failed_over.ids() - present)
    print(f"failover: {len(failed_over.acked)} commits acknowledged, {len(lost)} lost: {lost[:20]}")
    assert not [i for i, at in failed_over.acked if at >= failed_over.resumed and i not in present]
    assert checksum(server_sql(kubectl, namespace, "fo-1", ROWS)) == written

    # The old primary comes back as a standby of the new one, rewound, streaming, with the same rows.
    wait_for(lambda: role(admin, namespace, "fo-0") == "replica", timeout=120, what="fo-0 labelled a replica")
    wait_for(lambda: status(admin, namespace, "fo").get("readyInstances") == 2, timeout=300, what="fo-0 back")
    assert "rewinding to its timeline" in kubectl("logs", "-n", namespace, "fo-0", "-c", "postgres")
    assert server_sql(kubectl, namespace, "fo-0", "select pg_is_in_recovery()") == "t"
    streaming = "select application_name, state from pg_stat_replication"
    wait_for(lambda: server_sql(kubectl, namespace, "fo-1", streaming) == "fo-0|streaming", timeout=60,
             what="fo-0 streaming from fo-1")  # fmt: skip
    wait_for(lambda: acked_ids(kubectl, namespace, "fo-0") == present, timeout=60, what="fo-0 to have every row")
    assert app_sql(kubectl, namespace, client, "select pg_is_in_recovery()") == "f"

    # Scaled to one while the primary is Pod 1: the primary moves to Pod 0 first (a switchover),
    # then the StatefulSet removes Pod 1.
    kubectl("scale", "-n", namespace, "sampledb/fo", "--replicas=1")
    done = lambda: (status(admin, namespace, "fo").get("failover") or {}).get("state") == "Completed"  # noqa: E731
    wait_for(lambda: primary(admin, namespace) == "fo-0" and done(), timeout=180, what="the switchover to fo-0")
    wait_for(lambda: admin.get("Pod", namespace, "fo-1") is None, timeout=180, what="fo-1 removed")
    record = status(admin, namespace, "fo")["failover"]
    assert (record["state"], record["toPod"], record.get("switchover")) == ("Completed", "fo-0", True)
    assert "spec.instances 1 leaves out the primary fo-1" in record["reason"]
    assert primary(admin, namespace) == "fo-0"
    assert server_sql(kubectl, namespace, "fo-0", "select pg_is_in_recovery()") == "f"
    assert acked_ids(kubectl, namespace, "fo-0") == present

    # Two servers again; a switchover asked for by annotation, under a writer: no commit lost.
    admin.merge_patch("SampleDB", namespace, "fo", {"spec": {"instances": 2}})
    wait_for(lambda: status(admin, namespace, "fo").get("readyInstances") == 2, timeout=300, what="fo-1 cloned")

    def ask_switchover() -> None:
        annotation = {"metadata": {"annotations": {SWITCHOVER_ANNOTATION: "fo-1"}}}
        admin.merge_patch("SampleDB", namespace, "fo", annotation)
        wait_for(lambda: primary(admin, namespace) == "fo-1", timeout=120, what="fo-1 promoted", interval=0.5)

    switched = under_writes(kube_config, namespace, client, ask_switchover, first=10_000)
    print(f"switchover: writes stopped for {switched.outage:.1f} s, resumed "
          f"{switched.resumed - switched.acted:.1f} s after it was asked for")  # fmt: skip
    assert switched.ids() <= acked_ids(kubectl, namespace, "fo-1"), "a switchover loses no acknowledged commit"
    annotations = lambda: (admin.get("SampleDB", namespace, "fo") or {})["metadata"].get("annotations") or {}  # noqa: E731
    wait_for(lambda: SWITCHOVER_ANNOTATION not in annotations(), timeout=60, what="the request removed")
    events = kubectl("get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}").split()
    assert {"FailoverStarted", "StandbyElected", "FailedOver", "SwitchoverStarted", "SwitchedOver"} <= set(events)
    after = changes()
    assert {r: after[r] - before[r] for r in after} == {"FailedOver": 1, "SwitchedOver": 2}
    # Settled, the operator writes nothing more (a status that never equals what it computes would
    # be written again on every pass: seen as hundreds of writes a second after this switchover).
    writes = lambda: operator.metrics()["sampledb_api_writes_total"]  # noqa: E731
    settled = writes()
    time.sleep(10)
    assert writes() - settled <= 2, "the operator keeps writing once the primary has changed"


def primary(admin: KubeApi, namespace: str, name: str = "fo") -> str | None:
    return status(admin, namespace, name).get("currentPrimary")


def acked_ids(kubectl: Any, namespace: str, pod: str) -> set[int]:
    return ids(server_sql(kubectl, namespace, pod, "select id from acked", check=False))


def test_a_primary_whose_server_dies_in_its_pod_is_replaced_and_rejoins_as_a_standby(
    admin: KubeApi, kubectl: Any, kube_config: str, namespace: str, local_cluster: LocalCluster
) -> None:
    """The postmaster killed, the Pod left alone: not ready, so a failover; the old primary is fenced and rewound."""
    admin.create(sampledb("pk", namespace, VERSION, instances=2))
    wait_for(lambda: status(admin, namespace, "pk").get("readyInstances") == 2, timeout=300, what="two servers ready")
    wait_phase(admin, namespace, "pk")
    client = start_client(admin, namespace, "pk", VERSION)
    app_sql(kubectl, namespace, client, "create table acked (id int primary key)")

    def crash_primary() -> None:
        kill_server(admin, local_cluster, namespace, "pk-0")
        wait_for(lambda: primary(admin, namespace, "pk") == "pk-1", timeout=120, what="pk-1 promoted", interval=0.5)

    writes = under_writes(kube_config, namespace, client, crash_primary)
    present = acked_ids(kubectl, namespace, "pk-1")
    lost = sorted(writes.ids() - present)
    print(f"\nserver killed: writes stopped for {writes.outage:.1f} s, resumed {writes.resumed - writes.acted:.1f} s "
          f"after the kill; {len(writes.acked)} commits acknowledged, {len(lost)} lost: {lost[:20]}")  # fmt: skip
    record = status(admin, namespace, "pk")["failover"]
    assert (record["fromPod"], record["toPod"], record["state"]) == ("pk-0", "pk-1", "Completed")
    assert "its Pod is not ready" in record["reason"]
    assert not [i for i, at in writes.acked if at >= writes.resumed and i not in present]

    # The killed server's Pod was fenced (deleted, so re-created) before the promotion; it came back a standby.
    wait_for(lambda: status(admin, namespace, "pk").get("readyInstances") == 2, timeout=300, what="pk-0 back")
    assert server_sql(kubectl, namespace, "pk-0", "select pg_is_in_recovery()") == "t"
    assert server_sql(kubectl, namespace, "pk-1", "select pg_is_in_recovery()") == "f"
    wait_for(lambda: acked_ids(kubectl, namespace, "pk-0") == present, timeout=60, what="pk-0 to have every row")
    servers = lambda: [(s["name"], s["role"], s.get("replication")) for s in status(admin, namespace, "pk")["servers"]]  # noqa: E731
    wait_for(lambda: servers() == [("pk-0", "Replica", "streaming"), ("pk-1", "Primary", None)], timeout=90,
             what="status.servers with pk-0 streaming from pk-1")  # fmt: skip


def test_with_synchronous_replication_a_failover_loses_no_acknowledged_commit(
    admin: KubeApi, kubectl: Any, kube_config: str, namespace: str
) -> None:
    """spec.replication.synchronous 1: each commit is on the standby's disk before it is acknowledged."""
    admin.create(sampledb("sy", namespace, VERSION, instances=2, replication={"synchronous": 1}))
    wait_for(lambda: status(admin, namespace, "sy").get("readyInstances") == 2, timeout=300, what="two servers ready")
    wait_phase(admin, namespace, "sy")
    client = start_client(admin, namespace, "sy", VERSION)
    app_sql(kubectl, namespace, client, "create table acked (id int primary key)")
    quorum = "select application_name, sync_state from pg_stat_replication"
    wait_for(lambda: server_sql(kubectl, namespace, "sy-0", quorum) == "sy-1|quorum", timeout=60,
             what="the standby in the commit quorum")  # fmt: skip

    def kill_primary() -> None:
        kubectl("delete", "pod", "-n", namespace, "sy-0", "--grace-period=0", "--force")
        wait_for(lambda: primary(admin, namespace, "sy") == "sy-1", timeout=120, what="sy-1 promoted", interval=0.5)

    writes = under_writes(kube_config, namespace, client, kill_primary)
    # The new primary waits for a standby too: its commits resume once sy-0 has rejoined.
    lost = sorted(writes.ids() - acked_ids(kubectl, namespace, "sy-1"))
    print(f"\nsynchronous failover: writes stopped for {writes.outage:.1f} s; {len(writes.acked)} commits "
          f"acknowledged, {len(lost)} lost")  # fmt: skip
    assert lost == [], "a synchronous failover lost acknowledged commits"
    wait_for(lambda: server_sql(kubectl, namespace, "sy-1", quorum) == "sy-0|quorum", timeout=120,
             what="the old primary back in the quorum")  # fmt: skip

"""SIGKILL the operator while it deletes a SampleDB with deletionPolicy Snapshot: one snapshot, every row in it.

Deleting such a SampleDB makes the operator take a final snapshot first (a volume it does not own,
and a Job that dumps every database onto it, `COMPLETE` last), wait for the Job, then delete the
StatefulSet and the data volume, then remove its finalizer (`reconcile/deletion.py`). Each step
must survive a restart anywhere: a second snapshot, a snapshot missing rows, or a data volume
deleted before the snapshot is complete would each lose or muddle the user's last copy.

On the real node: an instance with a seeded table and rows from a writer Pod (the application,
through the client Service; all acknowledged before the deletion) is deleted, and the operator is
SIGKILLed three times, restarting at once: right after the delete request (while it creates the
snapshot volume and Job), while the snapshot Job's Pod runs, and at a random 0-3 s after the third
incarnation started (the Job done, the workload and finalizer being removed, or already removed).
Then the SampleDB is gone, its StatefulSet and data volume too; the one snapshot volume holds
exactly one snapshot folder, complete, whose dump of the application database holds exactly the
rows written (the writer's rows as a set, the seeded table by checksum); the audit log shows the
snapshot Job and volume created once by the operator.
"""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from sampledb_localcluster import LocalCluster
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.resources.instance import COMPONENT_LABEL
from tests.audit_log import audit_entries
from tests.faults.checks import created_once, not_ready, sampledb
from tests.faults.conftest import KillableOperator
from tests.faults.kills import STARTED
from tests.faults.realnode import DumpReader, Kubectl, Writer, psql
from tests.integration.conftest import wait_for
from tests.node.conftest import checksum

NAME = "snap"
SEEDED = "select id, payload from seeded order by id"
SEEDED_ROWS = 20_000
WRITTEN_ROWS = 150


def _job(admin: KubeApi, namespace: str) -> dict[str, Any]:
    return (admin.get("Job", namespace, f"{NAME}-final-snapshot") or {}).get("status") or {}


def _where(admin: KubeApi, namespace: str) -> str:
    """What a kill interrupted: the SampleDB (present or gone) and the snapshot Job's progress."""
    obj = admin.get("SampleDB", namespace, NAME)
    job = admin.get("Job", namespace, f"{NAME}-final-snapshot")
    state = "no Job" if job is None else "Job done" if (job.get("status") or {}).get("succeeded") else "Job running"
    return f"{'deleting' if obj is not None else 'gone'}, {state}"


def _kill_and_restart(operator: KillableOperator, admin: KubeApi, namespace: str, delay: float) -> str:
    time.sleep(delay)
    operator.kill()
    where = _where(admin, namespace)
    operator.start(wait_healthy=False)
    wait_for(lambda: STARTED in operator.current_log(), timeout=30, what="the operator to start", interval=0.05)
    return where


@pytest.mark.timeout(900)
def test_a_killed_operator_finishes_a_snapshot_deletion_with_one_complete_snapshot(
    node_admin: KubeApi,
    node_kubectl: Kubectl,
    node_released: str,
    node_operator: KillableOperator,
    node_cluster: LocalCluster,
    fault_seed: int,
) -> None:
    admin, kubectl, namespace, operator = node_admin, node_kubectl, node_released, node_operator
    rng = random.Random(f"{fault_seed}:snapshot-deletion")
    replay = f"seed {fault_seed} (SAMPLEDB_FAULT_SEED={fault_seed})"
    admin.create(sampledb(NAME, namespace, deletionPolicy="Snapshot"))
    wait_for(lambda: not not_ready(admin, namespace, [NAME]), timeout=300, what=f"{NAME} to be Ready", interval=1)
    rows = f"select g as id, md5(g::text) as payload from generate_series(1, {SEEDED_ROWS}) g"
    psql(kubectl, namespace, NAME, f"create table seeded as {rows}")
    writer = Writer.start(admin, kubectl, namespace, NAME, limit=WRITTEN_ROWS, pause=0.05)
    acked = writer.wait_done()
    assert len(acked) == WRITTEN_ROWS, f"the writer's rows were not all acknowledged: {len(acked)}"
    stored, seeded = writer.stored(), checksum(psql(kubectl, namespace, NAME, SEEDED))
    assert stored == acked
    audit_offset = node_cluster.audit_log.stat().st_size

    admin.delete("SampleDB", namespace, NAME)
    kills = [_kill_and_restart(operator, admin, namespace, rng.uniform(0, 0.5))]
    wait_for(lambda: _job(admin, namespace).get("active") or _job(admin, namespace).get("succeeded"), timeout=120,
             what="the snapshot Job to run", interval=0.2)  # fmt: skip
    kills.append(_kill_and_restart(operator, admin, namespace, rng.uniform(0, 1)))
    kills.append(_kill_and_restart(operator, admin, namespace, rng.uniform(0, 3)))
    print(f"{replay}: killed the operator at {kills}")
    assert sum(1 for k in kills if k.startswith("deleting")) >= 2, f"{replay}: the kills missed the deletion: {kills}"
    operator.wait_healthy()
    wait_for(lambda: admin.get("SampleDB", namespace, NAME) is None, timeout=240, what=f"{NAME} to be deleted",
             interval=1)  # fmt: skip
    assert operator.alive()

    # The workload is gone; the one snapshot volume is kept.
    assert admin.get("StatefulSet", namespace, NAME) is None
    wait_for(lambda: admin.get("PersistentVolumeClaim", namespace, f"data-{NAME}-0") is None, timeout=60,
             what="the data volume to be deleted")  # fmt: skip
    claims = admin.list_objects("PersistentVolumeClaim", namespace, labels={COMPONENT_LABEL: "final-snapshot"})
    assert [c["metadata"]["name"] for c in claims] == [f"{NAME}-final-snapshot"]
    audit = audit_entries(node_cluster.audit_log, audit_offset)
    for resource in ("jobs", "persistentvolumeclaims"):
        problem = created_once(audit, namespace, resource, f"{NAME}-final-snapshot")
        assert problem is None, f"{replay}: {problem}"

    # Exactly one snapshot, complete, holding exactly the rows written.
    reader = DumpReader(kubectl, namespace, f"{NAME}-final-snapshot").start(admin)
    files = reader.files()
    folders = sorted({path.split("/")[0] for path in files})
    assert len(folders) == 1, f"{replay}: {len(folders)} snapshots on the volume: {files}"
    assert f"{folders[0]}/COMPLETE" in files, f"{replay}: the snapshot is incomplete: {files}"
    dump = f"{folders[0]}/app.dump"
    in_dump = {int(line) for line in reader.rows(dump, "load")}
    assert in_dump == acked, f"{replay}: missing {sorted(acked - in_dump)[:10]}, extra {sorted(in_dump - acked)[:10]}"
    assert checksum("\n".join(line.replace("\t", "|") for line in reader.rows(dump, "seeded"))) == seeded
    print(f"{replay}: the snapshot {folders[0]} holds the {len(acked)} rows written and the {SEEDED_ROWS} seeded")

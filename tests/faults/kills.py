"""The machinery of the operator-kill scenarios: a workload, a scenario, and the kill-restart-converge-check run.

A scenario adds work right after every start of the operator and kills it `kills` times: each
time at a random delay of 0-3 s after that incarnation could begin working (its "caches synced"
line: the Python imports, kopf's start-up and the first LIST of every kind come before it, about
3 s here and more under load, and a kill during them would test nothing) and, where the scenario
says so, once its work reached a given point (an upgrade's next step, a restore's Job), restarting
it at once. Then the last incarnation is left alone and
:func:`run` checks that everything converged; that every purpose (an instance's initial
configuration, a backup, a migration, an upgrade step) has exactly one Job, of the expected name
and owner, which the API server's audit log shows created exactly once by the operator (a repeated
create answered 409 is harmless); that every generated Secret was created once; and then the
scenario's own check of the data, in PostgreSQL, on the real node.

The delays come from the run's seed (`SAMPLEDB_FAULT_SEED` replays them; the machine's timing
still varies, which is the point of running many kills).
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from sampledb_localcluster import LocalCluster
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.reconcile.migrations import job_name
from sampledb_operator.resources.instance import COMPONENT_LABEL, INSTANCE_LABEL, Instance
from sampledb_operator.settings import Settings
from tests.audit_log import audit_entries
from tests.faults.checks import (
    JobPurpose,
    backup_purpose,
    check_jobs,
    created_once,
    init_purpose,
    migration_purpose,
    not_ready,
    sampledb,
)
from tests.faults.conftest import KillableOperator
from tests.faults.realnode import Kubectl, Writer, psql
from tests.integration.conftest import wait_for

MAX_KILL_DELAY = 3.0
STARTED = "starting the SampleDB operator"
SYNCED = "caches synced"  # observe/cache.py: from here on, every SampleDB is reconciled
WORKING = re.compile(r"sampledb_operator\.(reconcile|runtime)")  # a reconcile started writing or ended
KILL_POINT_TIMEOUT = 300.0  # for a scenario's work to reach the point of the next kill


@dataclass
class Workload:
    """What a scenario works on: its namespace, the admin client, the names it created, and what it wrote.

    Attributes:
        kubectl: The real node's kubectl (None on kwok), for psql in Pods and the writers' logs.
        writers: The writer of each instance that has one.
        acked_before: Per backup, the rows acknowledged before it was asked for; per writer
            (`writer <instance>`), those acknowledged when the kills began.
        checksums: Per table or instance, what its rows must still add up to.
        markers: Per restored instance, the rows written into it once it was ready.
    """

    admin: KubeApi
    namespace: str
    kubectl: Kubectl | None = None
    instances: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    writers: dict[str, Writer] = field(default_factory=dict)
    acked_before: dict[str, set[int]] = field(default_factory=dict)
    checksums: dict[str, str] = field(default_factory=dict)
    markers: dict[str, int] = field(default_factory=dict)

    def db(self, name: str) -> dict[str, Any]:
        obj = self.admin.get("SampleDB", self.namespace, name)
        assert obj is not None, f"SampleDB {name} is gone"
        return obj

    @property
    def node(self) -> Kubectl:
        assert self.kubectl is not None, "a data check on kwok: the scenario must set real_node"
        return self.kubectl

    def sql(self, instance: str, query: str, *, check: bool = True) -> str:
        return psql(self.node, self.namespace, instance, query, check=check)


def now(work: Workload, round_: int) -> bool:
    return True


def nothing(work: Workload) -> None:
    return None


def no_data_check(work: Workload) -> list[str]:
    return []


@dataclass(frozen=True)
class Scenario:
    """One kind of work to interrupt.

    Attributes:
        id: The test id.
        kills: How many times the operator is SIGKILLed while the work goes on.
        prepare: Runs first, with the operator undisturbed (e.g. instances to back up, made Ready).
        act: Adds work to interrupt; called with the round number (0, 1, ...) right after each
            start of the operator, so every kill lands while there is work in flight.
        pending: What has not converged yet (empty once everything has).
        expected_jobs: Every purpose a Job is expected for, once converged.
        real_node: Runs on the real-node cluster (its data is checked in PostgreSQL).
        kill_when: Waited for (with the round number) before the random delay of each kill, so that
            kills follow the work's progress on real Pods, whose steps take seconds each.
        check_data: What is wrong with the data once converged (empty when nothing is).
        converge_timeout: How long the last incarnation gets to converge.
    """

    id: str
    kills: int
    prepare: Callable[[Workload], None]
    act: Callable[[Workload, int], None]
    pending: Callable[[Workload], list[str]]
    expected_jobs: Callable[[Workload], list[JobPurpose]]
    real_node: bool = False
    kill_when: Callable[[Workload, int], bool] = now
    check_data: Callable[[Workload], list[str]] = no_data_check
    converge_timeout: float = 180.0


def _wait_started(operator: KillableOperator) -> None:
    """Until the current incarnation has listed every kind and starts reconciling (about 3 s here)."""
    wait_for(lambda: SYNCED in operator.current_log(), timeout=60, what="the operator's caches", interval=0.05)


def create_instances(work: Workload, count: int, prefix: str, **spec: Any) -> None:
    for i in range(count):
        name = f"{prefix}-{i}"
        work.admin.create(sampledb(name, work.namespace, **spec))
        work.instances.append(name)


def instances_not_ready(work: Workload) -> list[str]:
    return not_ready(work.admin, work.namespace, work.instances)


def wait_ready(work: Workload, timeout: float = 300) -> None:
    wait_for(lambda: not instances_not_ready(work), timeout=timeout, what=f"{work.instances} to be Ready", interval=1)


def init_jobs(work: Workload) -> list[JobPurpose]:
    return [init_purpose(work.db(name)) for name in work.instances]


def backups_pending(work: Workload) -> list[str]:
    pending = instances_not_ready(work)
    for name in work.backups:
        obj = work.admin.get("SampleDBBackup", work.namespace, name) or {}
        phase = (obj.get("status") or {}).get("phase")
        if phase != "Succeeded":
            pending.append(f"backup {name}: {phase}")
    return pending


def backup_jobs(work: Workload) -> list[JobPurpose]:
    backups = [work.admin.get("SampleDBBackup", work.namespace, name) for name in work.backups]
    return init_jobs(work) + [backup_purpose(b) for b in backups if b is not None]


def create_migrations(work: Workload, files: dict[str, str]) -> None:
    """The ConfigMap `schema` with the SQL files every migrating instance of the scenario names."""
    config_map = {"name": "schema", "namespace": work.namespace}
    work.admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": config_map, "data": files})


def migrations_pending(work: Workload) -> list[str]:
    pending = instances_not_ready(work)
    for name in work.instances:
        migrations = (work.db(name).get("status") or {}).get("migrations") or {}
        if migrations.get("phase") != "Succeeded":
            pending.append(f"{name} migrations: {migrations.get('phase')}")
    return pending


def migration_jobs(work: Workload) -> list[JobPurpose]:
    config_map = work.admin.get("ConfigMap", work.namespace, "schema")
    assert config_map is not None
    purposes = init_jobs(work)
    for name in work.instances:
        db = work.db(name)
        expected = job_name(Instance.from_object(db, Settings()), config_map)
        purposes.append(migration_purpose(db, expected))
    return purposes


UPGRADE_STEPS = ("backup", "check", "run", "verify")


def upgrade(work: Workload, names: list[str], version: int = 17) -> None:
    for name in names:
        work.admin.merge_patch("SampleDB", work.namespace, name, {"spec": {"postgres": {"version": version}}})


def upgrades_pending(work: Workload) -> list[str]:
    pending = instances_not_ready(work)
    for name in work.instances:
        status = work.db(name).get("status") or {}
        upgrade = status.get("upgrade") or {}
        if status.get("version") != 17 or upgrade.get("phase") != "Succeeded":
            pending.append(f"{name}: version {status.get('version')}, upgrade {upgrade.get('phase')}")
    return pending


def upgrade_jobs(work: Workload) -> list[JobPurpose]:
    purposes = init_jobs(work)
    for name in work.instances:
        db = work.db(name)
        for step in UPGRADE_STEPS:
            labels = {INSTANCE_LABEL: name, COMPONENT_LABEL: f"upgrade-{step}"}
            job = f"{name}-upgrade17-1-{step}"
            purposes.append(JobPurpose(f"upgrade step {step} of {name}", labels, job, db["metadata"]["uid"]))
    return purposes


def start_writers(work: Workload) -> None:
    """A writer per instance, each with some rows acknowledged before anything is interrupted."""
    for name in work.instances:
        work.writers[name] = Writer.start(work.admin, work.node, work.namespace, name)
    for writer in work.writers.values():
        writer.wait_acked(10)


def writer_problems(work: Workload) -> list[str]:
    """Acknowledged rows missing now; and a writer that never wrote again after the kills proves nothing."""
    problems = []
    for name, writer in work.writers.items():
        acked, stored = writer.acked(), writer.stored()  # the log first: every row in it is older
        lost = sorted(acked - stored)
        if lost:
            problems.append(f"{name}: {len(lost)} of {len(acked)} acknowledged rows lost, e.g. {lost[:10]}")
        before = work.acked_before.get(f"writer {name}", set())
        if not acked - before:
            problems.append(f"{name}: the writer committed nothing since the kills began (it proves nothing)")
        print(f"writer {name}: {len(acked)} rows acknowledged ({len(acked - before)} since the kills began)")
    return problems


def note_writers(work: Workload) -> None:
    """What each writer had acknowledged when the kills began."""
    for name, writer in work.writers.items():
        work.acked_before[f"writer {name}"] = writer.acked()


@dataclass(frozen=True)
class Environment:
    """Where a scenario runs: kwok for bookkeeping, the real node for data."""

    cluster: LocalCluster
    admin: KubeApi
    operator: KillableOperator
    namespace: str
    kubectl: Kubectl | None


def environment(request: pytest.FixtureRequest, scenario: Scenario) -> Environment:
    if scenario.real_node:
        names = ("node_cluster", "node_admin", "node_operator", "node_released")
        kubectl = request.getfixturevalue("node_kubectl")
    else:
        names = ("cluster", "admin", "killable_operator", "released")
        kubectl = None
    cluster, admin, operator, namespace = (request.getfixturevalue(name) for name in names)
    return Environment(cluster, admin, operator, namespace, kubectl)


def _phase(work: Workload) -> str:
    """Where the newest instance's upgrade, or else the instance itself, stood at a kill (for the report)."""
    if not work.instances:
        return "-"
    status = (work.admin.get("SampleDB", work.namespace, work.instances[-1]) or {}).get("status") or {}
    return f"{work.instances[-1]}: {(status.get('upgrade') or {}).get('phase') or status.get('phase')}"


def run(scenario: Scenario, request: pytest.FixtureRequest, fault_seed: int) -> None:
    """Prepare; kill and restart the operator `scenario.kills` times; check convergence, Jobs, Secrets, data."""
    env = environment(request, scenario)
    operator = env.operator
    rng = random.Random(f"{fault_seed}:{scenario.id}")
    replay = f"seed {fault_seed} (SAMPLEDB_FAULT_SEED={fault_seed}), scenario {scenario.id}"
    work = Workload(env.admin, env.namespace, env.kubectl)
    audit_offset = env.cluster.audit_log.stat().st_size
    scenario.prepare(work)
    delays, kills, phases = [], [], []
    for round_ in range(scenario.kills):
        scenario.act(work, round_)
        _wait_started(operator)
        wait_for(lambda r=round_: scenario.kill_when(work, r), timeout=KILL_POINT_TIMEOUT,  # type: ignore[misc]
                 what=f"{replay}: the work to reach kill point {round_}", interval=0.5)  # fmt: skip
        delays.append(rng.uniform(0, MAX_KILL_DELAY))
        time.sleep(delays[-1])
        kills.append(operator.kill())
        phases.append(_phase(work) if scenario.real_node else "")
        operator.start(wait_healthy=False)
    operator.wait_healthy()
    mid_work = sum(1 for i in operator.incarnations[:-1] if WORKING.search(i.log_path.read_text()))
    print(
        f"{replay}: killed {', '.join(f'{d:.2f}' for d in delays)} s after the caches synced "
        f"({', '.join(f'{s:.2f}' for s in kills)} s after spawn), {mid_work} of them mid-work"
        + (f"; at {phases}" if scenario.real_node else "")
    )
    # Kills before any reconcile (during start-up) test little: most must hit work.
    assert mid_work >= scenario.kills // 2, f"{replay}: only {mid_work} of {scenario.kills} kills interrupted work"
    began = time.monotonic()
    pending = scenario.pending(work)
    while pending and time.monotonic() - began < scenario.converge_timeout:
        time.sleep(1.0)
        pending = scenario.pending(work)
    assert pending == [], f"{replay}: not converged {scenario.converge_timeout:.0f} s after the last kill: {pending}"
    print(f"{replay}: converged {time.monotonic() - began:.1f} s after the last restart")
    audit = audit_entries(env.cluster.audit_log, audit_offset)
    report = check_jobs(env.admin, env.namespace, scenario.expected_jobs(work), audit)
    print(
        f"{replay}: {report.creates} Job create requests, {report.conflicts} answered 409, "
        f"{report.interrupted} interrupted"
    )
    assert report.problems == [], f"{replay}: " + "; ".join(report.problems)
    # A password is generated once: a second Secret would lock applications out of their database.
    secrets = [created_once(audit, env.namespace, "secrets", f"{name}-credentials") for name in work.instances]
    assert [p for p in secrets if p] == [], f"{replay}: generated Secrets"
    data = scenario.check_data(work)
    assert data == [], f"{replay}: " + "; ".join(data)
    assert operator.alive()

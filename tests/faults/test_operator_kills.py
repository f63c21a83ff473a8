"""SIGKILL the operator at random moments of its work; afterwards everything converges, no Job runs twice.

Each scenario adds work (instances to create, backups to take, migrations to run) right after
every start of the operator, and kills it `kills` times: each time at a random delay of 0-3 s
after that incarnation began running (its "starting the SampleDB operator" line; the Python
imports before it take about 2 s here, and a kill during them would test nothing), restarting it
at once. So kills land during kopf's start-up, the initial listing, and in the middle of
reconciles and Job creations alike. Then the last incarnation is left alone and the test checks
that everything converged, and that every purpose (an instance's initial configuration, a backup,
a migration) has exactly one Job, of the expected name and owner, which the API server's audit
log shows created exactly once by the operator (a repeated create answered 409 is harmless).

The upgrade scenario raises instances from PostgreSQL 15 to 17 two at a time, so kills land
between and inside the steps of the major-upgrade state machine (backup, check, run, verify).

Scenarios are rows of SCENARIOS: a new one is a `Scenario` with its own prepare/act/pending/
expected_jobs functions. The delays come from the run's seed (`SAMPLEDB_FAULT_SEED` replays them;
the machine's timing still varies, which is the point of running many kills).
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
from tests.faults.checks import (
    JobPurpose,
    audit_entries,
    backup_object,
    backup_purpose,
    check_jobs,
    created_once,
    init_purpose,
    migration_purpose,
    not_ready,
    sampledb,
)
from tests.faults.conftest import KillableOperator
from tests.integration.conftest import wait_for

MAX_KILL_DELAY = 3.0
STARTED = "starting the SampleDB operator"
WORKING = re.compile(r"sampledb_operator\.(reconcile|runtime)")  # a reconcile started writing or ended
CONVERGE_TIMEOUT = 180.0


@dataclass
class Workload:
    """What a scenario works on: its namespace, the admin client, and the names it created."""

    admin: KubeApi
    namespace: str
    instances: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)

    def db(self, name: str) -> dict[str, Any]:
        obj = self.admin.get("SampleDB", self.namespace, name)
        assert obj is not None, f"SampleDB {name} is gone"
        return obj


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
    """

    id: str
    kills: int
    prepare: Callable[[Workload], None]
    act: Callable[[Workload, int], None]
    pending: Callable[[Workload], list[str]]
    expected_jobs: Callable[[Workload], list[JobPurpose]]


def _nothing(work: Workload) -> None:
    return None


def _wait_started(operator: KillableOperator) -> None:
    """Until the current incarnation has imported everything and starts kopf (about 2 s here)."""
    wait_for(lambda: STARTED in operator.current_log(), timeout=30, what="the operator to start", interval=0.05)


def _create_instances(work: Workload, count: int, prefix: str, **spec: Any) -> None:
    for i in range(count):
        name = f"{prefix}-{i}"
        work.admin.create(sampledb(name, work.namespace, **spec))
        work.instances.append(name)


def _instances_not_ready(work: Workload) -> list[str]:
    return not_ready(work.admin, work.namespace, work.instances)


def _init_jobs(work: Workload) -> list[JobPurpose]:
    return [init_purpose(work.db(name)) for name in work.instances]


# -- create: many instances, a few more after every restart -----------------------------------------


def _act_create(work: Workload, round_: int) -> None:
    _create_instances(work, 3, f"db{round_}")


# -- backup: SampleDBBackups of Ready instances, each one Job ----------------------------------------


def _prepare_backup(work: Workload) -> None:
    _create_instances(work, 4, "src")
    wait_for(lambda: not _instances_not_ready(work), timeout=120, what="the instances to back up to be Ready")
    # A first backup of each instance, undisturbed, makes its backup volume. Otherwise a backup Job
    # Pod created while its volume is still being bound may wait in kube-scheduler's unschedulable
    # queue for its 5-minute flush (seen here with the local cluster's stand-in provisioner).
    for instance in work.instances:
        work.admin.create(backup_object(f"{instance}-first", work.namespace, instance))
        work.backups.append(f"{instance}-first")
    wait_for(lambda: not _backups_pending(work), timeout=120, what="the first backups to succeed")


def _act_backup(work: Workload, round_: int) -> None:
    for i in range(2):
        name = f"bk{round_}-{i}"
        instance = work.instances[(2 * round_ + i) % len(work.instances)]
        work.admin.create(backup_object(name, work.namespace, instance, verify=i == 0))
        work.backups.append(name)


def _backups_pending(work: Workload) -> list[str]:
    pending = _instances_not_ready(work)
    for name in work.backups:
        obj = work.admin.get("SampleDBBackup", work.namespace, name) or {}
        phase = (obj.get("status") or {}).get("phase")
        if phase != "Succeeded":
            pending.append(f"backup {name}: {phase}")
    return pending


def _backup_jobs(work: Workload) -> list[JobPurpose]:
    backups = [work.admin.get("SampleDBBackup", work.namespace, name) for name in work.backups]
    return _init_jobs(work) + [backup_purpose(b) for b in backups if b is not None]


# -- migration: a ConfigMap of SQL files applied to each new instance once it is ready ---------------

MIGRATIONS = {"001_init.sql": "CREATE TABLE t (x int);", "002_index.sql": "CREATE INDEX t_x ON t (x);"}


def _prepare_migration(work: Workload) -> None:
    work.admin.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "schema", "namespace": work.namespace},
            "data": MIGRATIONS,
        }
    )


def _act_migration(work: Workload, round_: int) -> None:
    # Each instance's migration Job waits for the database to be ready: it starts a round or two later.
    _create_instances(work, 1, f"mig{round_}", migrations={"configMap": "schema"})


def _migrations_pending(work: Workload) -> list[str]:
    pending = _instances_not_ready(work)
    for name in work.instances:
        migrations = (work.db(name).get("status") or {}).get("migrations") or {}
        if migrations.get("phase") != "Succeeded":
            pending.append(f"{name} migrations: {migrations.get('phase')}")
    return pending


def _migration_jobs(work: Workload) -> list[JobPurpose]:
    config_map = work.admin.get("ConfigMap", work.namespace, "schema")
    assert config_map is not None
    purposes = _init_jobs(work)
    for name in work.instances:
        db = work.db(name)
        expected = job_name(Instance.from_object(db, Settings()), config_map)
        purposes.append(migration_purpose(db, expected))
    return purposes


# -- upgrade: instances on 15 raised to 17, a few more after every restart ----------------------------

UPGRADE_STEPS = ("backup", "check", "run", "verify")


def _prepare_upgrade(work: Workload) -> None:
    _create_instances(work, 6, "up", postgres={"version": 15})
    wait_for(lambda: not _instances_not_ready(work), timeout=120, what="the instances on 15 to be Ready")


def _act_upgrade(work: Workload, round_: int) -> None:
    # Two instances per round, so every incarnation is killed in the middle of some upgrade's steps.
    for name in work.instances[2 * round_ : 2 * round_ + 2]:
        work.admin.merge_patch("SampleDB", work.namespace, name, {"spec": {"postgres": {"version": 17}}})


def _upgrades_pending(work: Workload) -> list[str]:
    pending = _instances_not_ready(work)
    for name in work.instances:
        status = work.db(name).get("status") or {}
        upgrade = status.get("upgrade") or {}
        if status.get("version") != 17 or upgrade.get("phase") != "Succeeded":
            pending.append(f"{name}: version {status.get('version')}, upgrade {upgrade.get('phase')}")
    return pending


def _upgrade_jobs(work: Workload) -> list[JobPurpose]:
    purposes = _init_jobs(work)
    for name in work.instances:
        db = work.db(name)
        for step in UPGRADE_STEPS:
            labels = {INSTANCE_LABEL: name, COMPONENT_LABEL: f"upgrade-{step}"}
            job = f"{name}-upgrade17-1-{step}"
            purposes.append(JobPurpose(f"upgrade step {step} of {name}", labels, job, db["metadata"]["uid"]))
    return purposes


SCENARIOS = [
    Scenario("create", 8, _nothing, _act_create, _instances_not_ready, _init_jobs),
    Scenario("backup", 7, _prepare_backup, _act_backup, _backups_pending, _backup_jobs),
    Scenario("migration", 7, _prepare_migration, _act_migration, _migrations_pending, _migration_jobs),
    Scenario("upgrade", 3, _prepare_upgrade, _act_upgrade, _upgrades_pending, _upgrade_jobs),
]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_sigkilled_operator_converges_without_duplicate_jobs(
    scenario: Scenario,
    admin: KubeApi,
    released: str,
    killable_operator: KillableOperator,
    cluster: LocalCluster,
    fault_seed: int,
) -> None:
    rng = random.Random(f"{fault_seed}:{scenario.id}")
    replay = f"seed {fault_seed} (SAMPLEDB_FAULT_SEED={fault_seed}), scenario {scenario.id}"
    work = Workload(admin, released)
    audit_offset = cluster.audit_log.stat().st_size
    scenario.prepare(work)
    delays, kills = [], []
    for round_ in range(scenario.kills):
        scenario.act(work, round_)
        _wait_started(killable_operator)
        delays.append(rng.uniform(0, MAX_KILL_DELAY))
        time.sleep(delays[-1])
        kills.append(killable_operator.kill())
        killable_operator.start(wait_healthy=False)
    killable_operator.wait_healthy()
    mid_work = sum(1 for i in killable_operator.incarnations[:-1] if WORKING.search(i.log_path.read_text()))
    print(
        f"{replay}: killed {', '.join(f'{d:.2f}' for d in delays)} s after kopf started "
        f"({', '.join(f'{s:.2f}' for s in kills)} s after spawn), {mid_work} of them mid-work"
    )
    # Kills before any reconcile (during imports or kopf's start-up) test little: most must hit work.
    assert mid_work >= scenario.kills // 2, f"{replay}: only {mid_work} of {scenario.kills} kills interrupted work"
    began = time.monotonic()
    pending = scenario.pending(work)
    while pending and time.monotonic() - began < CONVERGE_TIMEOUT:
        time.sleep(1.0)
        pending = scenario.pending(work)
    assert pending == [], f"{replay}: not converged {CONVERGE_TIMEOUT:.0f} s after the last kill: {pending}"
    print(f"{replay}: converged {time.monotonic() - began:.1f} s after the last restart")
    audit = audit_entries(cluster.audit_log, audit_offset)
    report = check_jobs(admin, released, scenario.expected_jobs(work), audit)
    print(
        f"{replay}: {report.creates} Job create requests, {report.conflicts} answered 409, "
        f"{report.interrupted} interrupted"
    )
    assert report.problems == [], f"{replay}: " + "; ".join(report.problems)
    # A password is generated once: a second Secret would lock applications out of their database.
    secrets = [created_once(audit, released, "secrets", f"{name}-credentials") for name in work.instances]
    assert [p for p in secrets if p] == [], f"{replay}: generated Secrets"
    assert killable_operator.alive()

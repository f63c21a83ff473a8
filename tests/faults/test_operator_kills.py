"""SIGKILL the operator at random moments of its work, on simulated Pods: it converges, no Job runs twice.

The bookkeeping scenarios (see `kills.py` for how kills are placed and what is checked): many
instances and many kills, cheap on kwok's simulated Pods, where no Job really runs and so no data
can be checked. The same kinds of work are interrupted on the real node, with their data checked
in PostgreSQL, in `test_operator_kills_data.py`.

- create: 24 instances in 8 rounds (Jobs and generated Secrets made once);
- backup: four instances, two SampleDBBackups per round for 7 rounds;
- migration: an instance with migrations per round for 7 rounds;
- upgrade: six instances raised from PostgreSQL 15 to 17, two at a time, so kills land between
  and inside the steps of the major-upgrade state machine (backup, check, run, verify).
"""

from __future__ import annotations

import pytest

from tests.faults.checks import backup_object
from tests.faults.kills import (
    Scenario,
    Workload,
    backup_jobs,
    backups_pending,
    create_instances,
    create_migrations,
    init_jobs,
    instances_not_ready,
    migration_jobs,
    migrations_pending,
    nothing,
    run,
    upgrade,
    upgrade_jobs,
    upgrades_pending,
    wait_ready,
)
from tests.integration.conftest import wait_for


def _act_create(work: Workload, round_: int) -> None:
    create_instances(work, 3, f"db{round_}")


def _prepare_backup(work: Workload) -> None:
    create_instances(work, 4, "src")
    wait_ready(work, timeout=120)
    # A first backup of each instance, undisturbed, makes its backup volume. Otherwise a backup Job
    # Pod created while its volume is still being bound may wait in kube-scheduler's unschedulable
    # queue for its 5-minute flush (seen here with the local cluster's stand-in provisioner).
    for instance in work.instances:
        work.admin.create(backup_object(f"{instance}-first", work.namespace, instance))
        work.backups.append(f"{instance}-first")
    wait_for(lambda: not backups_pending(work), timeout=120, what="the first backups to succeed")


def _act_backup(work: Workload, round_: int) -> None:
    for i in range(2):
        name = f"bk{round_}-{i}"
        instance = work.instances[(2 * round_ + i) % len(work.instances)]
        work.admin.create(backup_object(name, work.namespace, instance, verify=i == 0))
        work.backups.append(name)


def _prepare_migration(work: Workload) -> None:
    create_migrations(work, {"001_init.sql": "CREATE TABLE t (x int);", "002_index.sql": "CREATE INDEX t_x ON t (x);"})


def _act_migration(work: Workload, round_: int) -> None:
    # Each instance's migration Job waits for the database to be ready: it starts a round or two later.
    create_instances(work, 1, f"mig{round_}", migrations={"configMap": "schema"})


def _prepare_upgrade(work: Workload) -> None:
    create_instances(work, 6, "up", postgres={"version": 15})
    wait_ready(work, timeout=120)


def _act_upgrade(work: Workload, round_: int) -> None:
    # Two instances per round, so every incarnation is killed in the middle of some upgrade's steps.
    upgrade(work, work.instances[2 * round_ : 2 * round_ + 2])


SCENARIOS = [
    Scenario("create", 8, nothing, _act_create, instances_not_ready, init_jobs),
    Scenario("backup", 7, _prepare_backup, _act_backup, backups_pending, backup_jobs),
    Scenario("migration", 7, _prepare_migration, _act_migration, migrations_pending, migration_jobs),
    Scenario("upgrade", 3, _prepare_upgrade, _act_upgrade, upgrades_pending, upgrade_jobs),
]


@pytest.mark.timeout(420)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_sigkilled_operator_converges_without_duplicate_jobs(
    scenario: Scenario, request: pytest.FixtureRequest, fault_seed: int
) -> None:
    run(scenario, request, fault_seed)

"""SIGKILL the operator while it works on real databases: it converges, no Job runs twice, no row is lost.

The scenarios whose work touches data run on the real node (see `kills.py` for how kills are
placed, `realnode.py` for the writers and dump readers) and check the data in PostgreSQL itself:
writer Pods insert rows through the client Service before and during the kills, and every row
whose commit the server acknowledged must be there afterwards; each backup's dump must hold every
row acknowledged before the backup was asked for; a restored instance holds exactly its source's
rows (checksum); a migration's rows are there exactly once. Their bookkeeping twins with many more
kills and instances run on kwok (`test_operator_kills.py`).

- backup: two instances with writers, two SampleDBBackups per round for 5 rounds;
- restore: three instances restored from one backup, one per round, each kill after the previous
  one's restore Job appeared, then two more kills once the first serves; rows written into the
  restored instances that serve before those stay there;
- migration: three instances with three migrations, one per round, each kill after the previous
  one's migration Job appeared;
- upgrade: two instances with writers raised from PostgreSQL 15 to 17, one kill in each step of
  the state machine (backup, check, run, switch, verify);
- failover: two instances of two servers with writers; in each round the primary's Pod of each is
  deleted (the preStop hook's fast shutdown sends the standby every commit) and the operator is
  killed once a failover is under way. Every acknowledged row survives, and the primary's
  timeline proves one promotion per failover.
"""

from __future__ import annotations

import hashlib

import pytest

from sampledb_operator.resources.instance import COMPONENT_LABEL, INSTANCE_LABEL
from tests.faults.checks import JobPurpose, backup_object, backup_purpose, not_ready, sampledb
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
    note_writers,
    run,
    start_writers,
    upgrade,
    upgrade_jobs,
    upgrades_pending,
    wait_ready,
    writer_problems,
)
from tests.faults.realnode import DumpReader, dump_rows
from tests.integration.conftest import wait_for
from tests.node.conftest import checksum

# -- backup (real node): SampleDBBackups of instances being written to, each one Job --------------------


def _prepare_backup(work: Workload) -> None:
    create_instances(work, 2, "src")
    wait_ready(work)
    start_writers(work)
    # A first backup of each instance, undisturbed, makes its backup volume. Otherwise a backup Job
    # Pod created while its volume is still being bound may wait in kube-scheduler's unschedulable
    # queue for its 5-minute flush (seen here with the local cluster's stand-in provisioner).
    for instance in work.instances:
        _ask_backup(work, f"{instance}-first", instance, verify=False)
    wait_for(lambda: not backups_pending(work), timeout=180, what="the first backups to succeed", interval=1)
    note_writers(work)


def _ask_backup(work: Workload, name: str, instance: str, *, verify: bool) -> None:
    work.acked_before[name] = work.writers[instance].acked()
    work.admin.create(backup_object(name, work.namespace, instance, verify=verify))
    work.backups.append(name)


def _act_backup(work: Workload, round_: int) -> None:
    for i, instance in enumerate(work.instances):
        _ask_backup(work, f"bk{round_}-{i}", instance, verify=(round_ + i) % 2 == 0)


def _backup_data(work: Workload) -> list[str]:
    """Every dump holds the rows acknowledged before its backup was asked for, and no row the table lacks."""
    problems = writer_problems(work)
    readers: dict[str, DumpReader] = {}
    for name in work.backups:
        backup = work.admin.get("SampleDBBackup", work.namespace, name)
        assert backup is not None, f"SampleDBBackup {name} is gone"
        instance, (claim, _, path) = backup["spec"]["instance"], backup["status"]["location"].partition(":")
        if claim not in readers:
            readers[claim] = DumpReader(work.node, work.namespace, claim).start(work.admin)
        rows = dump_rows(readers[claim], path.removeprefix("/backups/"))
        missing = sorted(work.acked_before[name] - rows)
        if missing:
            problems.append(f"backup {name}: {len(missing)} rows acknowledged before it are not in it: {missing[:10]}")
        strange = sorted(rows - work.writers[instance].stored())
        if strange:
            problems.append(f"backup {name}: its dump holds rows the table does not: {strange[:10]}")
        if not rows:
            problems.append(f"backup {name}: an empty dump proves nothing")
        print(f"backup {name}: {len(rows)} rows in its dump, {len(work.acked_before[name])} acknowledged before it")
    return problems


# -- restore (real node): new instances from one backup, one per round ----------------------------------

RESTORED_ROWS = "select id, payload from seeded order by id"
RESTORES = 3


def _prepare_restore(work: Workload) -> None:
    create_instances(work, 1, "src")
    wait_ready(work)
    work.sql("src-0", "create table seeded as select g as id, md5(g::text) as payload from generate_series(1, 500) g")
    work.checksums["seeded"] = checksum(work.sql("src-0", RESTORED_ROWS))
    work.admin.create(backup_object("src-b", work.namespace, "src-0"))
    work.backups.append("src-b")
    wait_for(lambda: not backups_pending(work), timeout=180, what="the backup to restore from", interval=1)


def _act_restore(work: Workload, round_: int) -> None:
    if round_ < RESTORES:
        name = f"rst-{round_}"
        work.admin.create(sampledb(name, work.namespace, restore={"backup": "src-b"}))
        work.instances.append(name)
        return
    # Rows written into the restored instances that serve, while the others are still being
    # restored: whatever the operator does after the next kills must not touch them.
    for name in work.instances[1:]:
        if name not in work.markers and not not_ready(work.admin, work.namespace, [name]):
            work.sql(name, "create table later as select g as id from generate_series(1, 50) g")
            work.markers[name] = 50


def _restore_kill_when(work: Workload, round_: int) -> bool:
    """Round 0 at once; then each once the previous instance's restore Job exists; the last two once one serves."""
    if round_ == 0:
        return True
    if work.admin.get("Job", work.namespace, f"rst-{min(round_, RESTORES) - 1}-init") is None:
        return False
    return round_ < RESTORES or not not_ready(work.admin, work.namespace, ["rst-0"])


def _restore_jobs(work: Workload) -> list[JobPurpose]:
    backup = work.admin.get("SampleDBBackup", work.namespace, "src-b")
    assert backup is not None
    return [*init_jobs(work), backup_purpose(backup)]


def _restore_data(work: Workload) -> list[str]:
    """Each restored instance holds exactly the source's rows, once; rows written into it since are kept."""
    problems = [] if work.markers else ["no restored instance served during the kills: nothing was written into one"]
    print(f"restore: rows written into {sorted(work.markers)} once they served, before the last kills")
    for name in work.instances:
        found = checksum(work.sql(name, RESTORED_ROWS))
        if found != work.checksums["seeded"]:
            rows = work.sql(name, "select count(*) from seeded")
            problems.append(f"{name}: its rows differ from the backup's ({rows} rows, 500 written)")
    for name, written in work.markers.items():
        kept = work.sql(name, "select count(*) from later")
        if kept != str(written):
            problems.append(f"{name}: {kept} of the {written} rows written once it served are left")
    return problems


# -- migration (real node): a ConfigMap of SQL files applied to each new instance once it is ready -----

MIGRATIONS = {
    "001_init.sql": "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);",
    "002_seed.sql": "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 100) g;",
    "003_once.sql": "CREATE TABLE IF NOT EXISTS applied (n int); INSERT INTO applied VALUES (1);",
}
MIGRATED_ROWS = "select id, name from items order by id"
MIGRATED = checksum(
    "\n".join(f"{g}|{hashlib.md5(b'%d' % g, usedforsecurity=False).hexdigest()}" for g in range(1, 101))
)
MIGRATION_ROUNDS = 3


def _prepare_migration(work: Workload) -> None:
    create_migrations(work, MIGRATIONS)


def _act_migration(work: Workload, round_: int) -> None:
    # Each instance's migration Job waits for the database to be ready: kill_when waits for it.
    if round_ < MIGRATION_ROUNDS:
        create_instances(work, 1, f"mig{round_}", migrations={"configMap": "schema"})


def _migration_kill_when(work: Workload, round_: int) -> bool:
    """Round 0 at once; then each kill once the previous instance's migration Job exists."""
    if round_ == 0:
        return True
    labels = {INSTANCE_LABEL: f"mig{min(round_, MIGRATION_ROUNDS) - 1}-0", COMPONENT_LABEL: "migration"}
    return bool(work.admin.list_objects("Job", work.namespace, labels=labels))


def _migration_data(work: Workload) -> list[str]:
    """Every migration applied exactly once: its rows there, once, and recorded once."""
    problems = []
    for name in work.instances:
        if checksum(work.sql(name, MIGRATED_ROWS, check=False)) != MIGRATED:
            problems.append(f"{name}: items is not the 100 rows 002_seed.sql inserts")
        once = work.sql(name, "select count(*) from applied", check=False)
        recorded = work.sql(name, "select string_agg(version, ',' order by version) from sampledb_schema_migrations")
        if once != "1" or recorded != "001_init,002_seed,003_once":
            problems.append(f"{name}: 003_once.sql applied {once} times, recorded migrations {recorded!r}")
    return problems


# -- upgrade (real node): two instances being written to, raised from 15 to 17 ---------------------------

# One kill in each phase of the state machine (the last ones may land after it succeeded).
KILL_PHASES = ("BackingUp", "Checking", "Upgrading", "Switching", "Verifying", "Succeeded")
SEEDED_ROWS = "select id, payload from seeded order by id"


def _prepare_upgrade(work: Workload) -> None:
    create_instances(work, 2, "up", postgres={"version": 15})
    wait_ready(work)
    for name in work.instances:
        work.sql(name, "create table seeded as select g as id, md5(g::text) as payload from generate_series(1, 1000) g")
        work.checksums[name] = checksum(work.sql(name, SEEDED_ROWS))
    start_writers(work)
    note_writers(work)


def _act_upgrade(work: Workload, round_: int) -> None:
    if round_ == 0:
        upgrade(work, work.instances)


def _upgrade_kill_when(work: Workload, round_: int) -> bool:
    """Until the first instance's upgrade has reached the phase of this round (or a later one)."""
    phase = ((work.db(work.instances[0]).get("status") or {}).get("upgrade") or {}).get("phase")
    return phase in KILL_PHASES[round_:]


def _upgrade_data(work: Workload) -> list[str]:
    """The server runs 17 with the rows seeded before and every row acknowledged during the upgrade."""
    problems = writer_problems(work)
    for name in work.instances:
        major = work.sql(name, "show server_version_num")[:2]
        if major != "17":
            problems.append(f"{name}: the server runs {major}, not 17")
        if checksum(work.sql(name, SEEDED_ROWS)) != work.checksums[name]:
            problems.append(f"{name}: the rows seeded before the upgrade differ")
    return problems


# -- failover (real node): each round deletes every primary's Pod; one promotion per failover ------------

FAILOVERS = 3
TIMELINE = "select ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"


def _servers_pending(work: Workload) -> list[str]:
    pending = instances_not_ready(work)
    for name in work.instances:
        status = work.db(name).get("status") or {}
        failover = (status.get("failover") or {}).get("state")
        if status.get("readyInstances") != 2 or failover not in (None, "Completed"):
            pending.append(f"{name}: {status.get('readyInstances')} servers ready, failover {failover}")
    return pending


def _prepare_failover(work: Workload) -> None:
    create_instances(work, 2, "ha", instances=2)
    wait_for(lambda: not _servers_pending(work), timeout=300, what="both servers of each instance", interval=1)
    start_writers(work)
    note_writers(work)


def _act_failover(work: Workload, round_: int) -> None:
    wait_for(lambda: not _servers_pending(work), timeout=300, what="both servers of each instance", interval=1)
    for name in work.instances:
        primary = work.db(name)["status"]["currentPrimary"]
        work.node("delete", "pod", "-n", work.namespace, primary, "--wait=false")


def _failing_over(work: Workload, round_: int) -> bool:
    return any((work.db(n).get("status") or {}).get("failover", {}).get("state") in ("Fencing", "Promoting")
               for n in work.instances)  # fmt: skip


def _failover_data(work: Workload) -> list[str]:
    problems = writer_problems(work)
    for name in work.instances:
        timeline = int(work.sql(name, TIMELINE))
        if timeline != FAILOVERS + 1:
            problems.append(f"{name}: the primary is on timeline {timeline} after {FAILOVERS} failovers")
    return problems


SCENARIOS = [
    Scenario(
        "backup", 5, _prepare_backup, _act_backup, backups_pending, backup_jobs,
        real_node=True, check_data=_backup_data, converge_timeout=300,
    ),
    Scenario(
        "restore", RESTORES + 2, _prepare_restore, _act_restore, instances_not_ready, _restore_jobs,
        real_node=True, kill_when=_restore_kill_when, check_data=_restore_data, converge_timeout=300,
    ),
    Scenario(
        "migration", MIGRATION_ROUNDS + 1, _prepare_migration, _act_migration, migrations_pending, migration_jobs,
        real_node=True, kill_when=_migration_kill_when, check_data=_migration_data, converge_timeout=300,
    ),
    Scenario(
        "upgrade", 5, _prepare_upgrade, _act_upgrade, upgrades_pending, upgrade_jobs,
        real_node=True, kill_when=_upgrade_kill_when, check_data=_upgrade_data, converge_timeout=480,
    ),
    Scenario(
        "failover", FAILOVERS, _prepare_failover, _act_failover, _servers_pending, init_jobs,
        real_node=True, kill_when=_failing_over, check_data=_failover_data, converge_timeout=300,
    ),
]  # fmt: skip


# Real Pods: instances take 20-60 s to serve here, an upgrade some minutes; the first test also
# starts the real-node cluster.
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_sigkilled_operator_loses_no_acknowledged_row(
    scenario: Scenario, request: pytest.FixtureRequest, fault_seed: int
) -> None:
    run(scenario, request, fault_seed)

"""Major-version upgrades: the Jobs of the logical path (dump and restore) and of pg_upgrade --copy.

The Jobs of one upgrade, in the order `reconcile/upgrade.py` runs them (names are deterministic
per target version and attempt, so an operator restart finds them again instead of duplicating):
1. `backup` (old image, old server running): stops writes (`default_transaction_read_only` via
   ALTER SYSTEM, open sessions ended), dumps the whole cluster with pg_dumpall onto the backup
   volume, and records every table's exact row count next to the dump;
2. `check` (new image): the image really runs the target major, and the dump is intact (SHA-256);
3. `run` (new image, the StatefulSet scaled to zero, the data volume mounted): initdb a new cluster
   beside the old one, restore the dump into it on a private socket, compare every table's row
   count with the backup's, then swap the directories: `pgdata` becomes the new cluster and the old
   one is kept as `pgdata-<old major>`. Every step checks what a killed earlier Pod left behind;
4. the StatefulSet switches to the new image; `verify` (new image) checks that the live server
   runs the target major and holds every database and table of the dump;
5. on any failure, `rollback` (old image, StatefulSet at zero) moves the old directory back,
   lifts the write stop, and the StatefulSet returns to the old image with the old data.
Method Copy (`spec.postgres.upgrade.method`) has no `backup` Job: its pre-upgrade backup is a
physical base backup (a SampleDBBackup) taken while writes go on. Its `check` and `run` Jobs
first copy the old major's binaries out of the old image (an init container) and run them in the
new image (`resources/old_binaries.py`); `run` counts every table's rows on the old cluster, runs
`pg_upgrade --copy` (the old cluster is only read, so any failure before the swap leaves it as it
was), compares the counts on the new cluster and swaps like the logical path; `verify` also
analyzes every database, since pg_upgrade keeps no optimizer statistics before 18.
Scripts rely only on the operand-image contract (initdb, postgres, pg_isready, psql, pg_dumpall;
for Copy also pg_upgrade, pg_config, vacuumdb, ldd) plus POSIX shell tools; credentials come from
the Secret as files or environment, never argv.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sampledb_operator.api.common import UpgradeMethod
from sampledb_operator.jobs.backup import BACKUP_MOUNT
from sampledb_operator.jobs.common import TERMINATION_LOG, WAIT_FOR_SERVER, job, script_container, superuser_env
from sampledb_operator.resources import old_binaries
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import SUPERUSER_PASSWORD_KEY
from sampledb_operator.resources.statefulset import CREDENTIALS_DIR, DATA_MOUNT, initdb_flags


class Step(StrEnum):
    """The Jobs of an upgrade; the value is the suffix of the Job's name."""

    BACKUP = "backup"
    CHECK = "check"
    RUN = "run"
    VERIFY = "verify"
    ROLLBACK = "rollback"


UPGRADE_LABEL = "sampledb.io/upgrade-to"

# Shell helpers every upgrade script starts with. `fail` leaves the reason for the operator.
PRELUDE = """set -eu
fail() {
  msg=$(printf '%s' "$1" | tr -d '"\\\\' | tr '\\n' ' ')
  printf '{"error": "%s"}\\n' "$msg" > "$TERMINATION_LOG"
  echo "sampledb: $1" >&2
  exit 1
}
base="upgrade-$FROM_VERSION-to-$TO_VERSION-$ATTEMPT"
dir="$BACKUP_MOUNT/$INSTANCE"
"""

# Every table's exact row count as `database|schema.table|rows`, sorted, into the file "$1".
TABLE_COUNTS = """table_counts() {
  psql -X -At -v ON_ERROR_STOP=1 -o /tmp/databases \\
    -c "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1" || return 1
  : > "$1"
  while IFS= read -r db; do
    psql -X -At -v ON_ERROR_STOP=1 -d "$db" -o /tmp/rows <<'SQL'
SELECT format('SELECT %L, count(*) FROM %I.%I', n.nspname || '.' || c.relname, n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
 ORDER BY 1 \\gexec
SQL
    [ $? -eq 0 ] || return 1
    while IFS= read -r row; do printf '%s|%s\\n' "$db" "$row"; done < /tmp/rows >> "$1"
  done < /tmp/databases
  LC_ALL=C sort -o "$1" "$1"
}
"""

BACKUP_SCRIPT = f"""{PRELUDE}{TABLE_COUNTS}{WAIT_FOR_SERVER}mkdir -p "$dir"
echo "sampledb: stopping writes for the upgrade to PostgreSQL $TO_VERSION"
psql -X -q -v ON_ERROR_STOP=1 -c "ALTER SYSTEM SET default_transaction_read_only = on" -c "SELECT pg_reload_conf()"
sleep 1
psql -X -q -v ON_ERROR_STOP=1 -o /dev/null -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
echo "sampledb: dumping every database to $dir/$base.sql"
pg_dumpall --no-password --file="$dir/$base.sql.partial" || fail "pg_dumpall failed (see the Pod log)"
table_counts "$dir/$base.counts" || fail "counting the rows of every table failed (see the Pod log)"
sha256sum "$dir/$base.sql.partial" | sed 's/\\.partial$//' > "$dir/$base.sha256"
mv "$dir/$base.sql.partial" "$dir/$base.sql"
printf '{{"file": "%s", "bytes": %s, "tables": %s}}\\n' "$INSTANCE/$base.sql" \\
  "$(wc -c < "$dir/$base.sql")" "$(wc -l < "$dir/$base.counts")" > "$TERMINATION_LOG"
echo "sampledb: pre-upgrade backup written"
"""  # noqa: S608 - a shell script with fixed queries, nothing interpolated into SQL

CHECK_SCRIPT = f"""{PRELUDE}major=$(postgres --version | sed -E 's/^[^0-9]*([0-9]+).*/\\1/')
[ "$major" = "$TO_VERSION" ] || fail "the image runs PostgreSQL $major, not $TO_VERSION: set spec.postgres.image \\
to a PostgreSQL $TO_VERSION image"
for tool in initdb pg_isready psql; do
  command -v "$tool" > /dev/null || fail "the image has no $tool on PATH (see the operand-image contract)"
done
[ -s "$dir/$base.sql" ] || fail "the pre-upgrade backup $dir/$base.sql is missing"
sha256sum -c --status "$dir/$base.sha256" || fail "the pre-upgrade backup $base.sql is damaged"
echo '{{"checked": true}}' > "$TERMINATION_LOG"
echo "sampledb: PostgreSQL $major image and the pre-upgrade backup are fine"
"""

# The run Jobs' shared parts. RUN_PREPARE: resume what a killed Pod left (already upgraded, or
# killed between the two renames of the swap), check the old cluster and the room for a new one,
# initdb it beside. PRIVATE_SERVER: `private <postgres> <data dir> <name> [options]` starts a
# server with no TCP, its socket in /tmp. SWAP: the counts `table_counts` took on the old cluster
# (in $dir/$base.counts) against the new one's, then the two renames, marked so a kill between
# them is finished by the next Pod.
RUN_PREPARE = f"""live="$DATA_DIR/pgdata"; new="$DATA_DIR/pgdata.new"
kept="$DATA_DIR/pgdata-$FROM_VERSION"
restored="$DATA_DIR/.sampledb-restored-$TO_VERSION"
if [ "$(cat "$live/PG_VERSION" 2>/dev/null)" = "$TO_VERSION" ]; then
  echo "sampledb: the data directory is already PostgreSQL $TO_VERSION"
  rm -f "$restored"; echo '{{"upgraded": true}}' > "$TERMINATION_LOG"; exit 0
fi
if [ ! -e "$live" ] && [ -f "$restored" ]; then
  mv "$new" "$live"; rm -f "$restored"  # killed between the two renames: finish the swap
  echo '{{"upgraded": true}}' > "$TERMINATION_LOG"; exit 0
fi
[ "$(cat "$live/PG_VERSION" 2>/dev/null)" = "$FROM_VERSION" ] || fail "$live is not a PostgreSQL $FROM_VERSION \\
data directory"
rm -rf "$new" "$restored"
for old in "$DATA_DIR"/pgdata-[0-9]*; do rm -rf "$old"; done  # kept by a previous upgrade
need=$(du -sk "$live" | cut -f1); free=$(df -Pk "$DATA_DIR" | awk 'NR == 2 {{print $4}}')
[ "$free" -gt "$need" ] || fail "the data volume has $free KiB free and the new cluster needs about $need KiB: \\
grow spec.storage.size, then delete this Job to retry"
echo "sampledb: creating the PostgreSQL $TO_VERSION cluster"
initdb {initdb_flags('"$CREDENTIALS_DIR"')} -D "$new" > /tmp/initdb.log 2>&1 \\
  || fail "initdb failed: $(tail -n 3 /tmp/initdb.log)"
export PGHOST=/tmp PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
"""

PRIVATE_SERVER = """private() {
  bin=$1; data=$2; name=$3; shift 3
  "$bin" -D "$data" -c listen_addresses= -c unix_socket_directories=/tmp -c port=5432 "$@" > "/tmp/$name.log" 2>&1 &
  server=$!
  until pg_isready --quiet; do
    kill -0 "$server" 2>/dev/null || fail "the $name server did not start: $(tail -n 3 "/tmp/$name.log")"
    sleep 1
  done
}
"""

SWAP = """table_counts /tmp/counts || fail "counting the rows of every table failed (see the Pod log)"
cmp -s /tmp/counts "$dir/$base.counts" || fail "row counts differ from the old cluster's: \\
$(diff "$dir/$base.counts" /tmp/counts | grep '^[<>]' | head -n 5)"
kill -INT "$server"; wait "$server" || true
sync
touch "$restored"
mv "$live" "$kept"; mv "$new" "$live"; rm -f "$restored"
printf '{"upgraded": true, "tables": %s}\\n' "$(wc -l < /tmp/counts)" > "$TERMINATION_LOG"
echo "sampledb: upgraded to PostgreSQL $TO_VERSION; the old cluster is kept as $kept"
"""

# No fsync in the new cluster while it is restored (a crash restarts from scratch; SWAP syncs).
RUN_SCRIPT = f"""{PRELUDE}{TABLE_COUNTS}{PRIVATE_SERVER}{RUN_PREPARE}private postgres "$new" new -c fsync=off \\
  -c full_page_writes=off -c synchronous_commit=off -c maintenance_work_mem=256MB
echo "sampledb: restoring $base.sql"
# initdb made the superuser already: its CREATE ROLE is the one statement expected to fail.
sed '/^CREATE ROLE postgres;$/d' "$dir/$base.sql" | psql -X -q -v ON_ERROR_STOP=1 -o /dev/null 2> /tmp/restore.log \\
  || fail "restoring into PostgreSQL $TO_VERSION failed: $(tail -n 3 /tmp/restore.log)"
{SWAP}"""

VERIFY_SCRIPT = f"""{PRELUDE}{TABLE_COUNTS}{WAIT_FOR_SERVER}major=$(psql -X -At \\
  -c "SELECT current_setting('server_version_num')::int / 10000")
[ "$major" = "$TO_VERSION" ] || fail "the server runs PostgreSQL $major, not $TO_VERSION"
table_counts /tmp/counts || fail "listing the tables failed (see the Pod log)"
cut -d'|' -f1,2 "$dir/$base.counts" > /tmp/expected; cut -d'|' -f1,2 /tmp/counts > /tmp/found
missing=$(LC_ALL=C comm -23 /tmp/expected /tmp/found | head -n 5)
[ -z "$missing" ] || fail "tables missing after the upgrade: $missing"
printf '{{"verified": true, "tables": %s}}\\n' "$(wc -l < /tmp/counts)" > "$TERMINATION_LOG"
echo "sampledb: PostgreSQL $TO_VERSION serves every database and table of the backup"
"""

ROLLBACK_SCRIPT = f"""{PRELUDE}live="$DATA_DIR/pgdata"; kept="$DATA_DIR/pgdata-$FROM_VERSION"
if [ -d "$kept" ]; then  # the directories were swapped: put the old cluster back
  rm -rf "$DATA_DIR/pgdata-$TO_VERSION.failed"
  if [ -e "$live" ]; then mv "$live" "$DATA_DIR/pgdata-$TO_VERSION.failed"; fi
  mv "$kept" "$live"
fi
rm -rf "$DATA_DIR/pgdata.new" "$DATA_DIR/.sampledb-restored-$TO_VERSION"
[ "$(cat "$live/PG_VERSION" 2>/dev/null)" = "$FROM_VERSION" ] || fail "$live is not a PostgreSQL \\
$FROM_VERSION data directory: restore the pre-upgrade backup (status.upgrade.backup)"
# Lift the write stop the pre-upgrade backup put in place.
if [ -f "$live/postgresql.auto.conf" ]; then
  sed '/^default_transaction_read_only/d' "$live/postgresql.auto.conf" > /tmp/auto.conf
  cat /tmp/auto.conf > "$live/postgresql.auto.conf"
fi
echo '{{"rolledBack": true}}' > "$TERMINATION_LOG"
echo "sampledb: back on PostgreSQL $FROM_VERSION with its data"
"""

# Method Copy: the old major's binaries are copied from the old image by an init container
# (resources/old_binaries.py); USE_OLD_BINARIES puts them on OLD_BIN, with the libraries they need.
USE_OLD_BINARIES = f"""set -- "$FROM_VERSION"
{old_binaries.USE_SCRIPT}"""

# Before any downtime, with the old server running: the new image can run pg_upgrade (its tools,
# the old binaries), and the live schema restores into the new major. The schema is dumped by the
# new major's pg_dumpall, as pg_upgrade's own dump is, and restored into a scratch cluster in /tmp:
# what the new major refuses (an extension missing from its image, an option it does not know)
# stops the upgrade here, not in the run Job with the database down.
COPY_CHECK_SCRIPT = f"""{PRELUDE}{PRIVATE_SERVER}major=$(postgres --version | sed -E 's/^[^0-9]*([0-9]+).*/\\1/')
[ "$major" = "$TO_VERSION" ] || fail "the image runs PostgreSQL $major, not $TO_VERSION: set spec.postgres.image \\
to a PostgreSQL $TO_VERSION image"
for tool in initdb pg_upgrade pg_config pg_dumpall pg_isready psql vacuumdb ldd; do
  command -v "$tool" > /dev/null || fail "the image has no $tool on PATH, which method Copy needs (see the \\
operand-image contract), or set spec.postgres.upgrade.method: Logical"
done
{USE_OLD_BINARIES}
{WAIT_FOR_SERVER}echo "sampledb: rehearsing the schema on PostgreSQL $TO_VERSION"
pg_dumpall --schema-only --no-role-passwords --no-password --file=/tmp/schema.sql 2> /tmp/dump.log \\
  || fail "dumping the schema failed: $(tail -n 2 /tmp/dump.log)"
initdb --username=postgres --auth=trust --encoding=UTF8 -D /tmp/rehearsal > /tmp/initdb.log 2>&1 \\
  || fail "initdb failed: $(tail -n 3 /tmp/initdb.log)"
export PGHOST=/tmp PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
private postgres /tmp/rehearsal rehearsal
sed '/^CREATE ROLE postgres;$/d' /tmp/schema.sql | psql -X -q -v ON_ERROR_STOP=1 -o /dev/null 2> /tmp/restore.log \\
  || fail "the schema of PostgreSQL $FROM_VERSION does not restore into $TO_VERSION, so pg_upgrade would refuse \\
it: $(grep -v '^[[:space:]]*$' /tmp/restore.log | tail -n 2)"
kill -INT "$server"; wait "$server" || true
echo '{{"checked": true}}' > "$TERMINATION_LOG"
echo "sampledb: PostgreSQL $major can run pg_upgrade from $FROM_VERSION here, and the schema restores"
"""

# Like RUN_SCRIPT, with pg_upgrade --copy instead of a restore. The old cluster is only read:
# whatever fails before the swap leaves it as it was. Its rows are counted by its own binaries
# (a start that also ends a shutdown the Pod's stop cut short, which pg_upgrade would refuse).
COPY_RUN_SCRIPT = f"""{PRELUDE}{TABLE_COUNTS}{PRIVATE_SERVER}{RUN_PREPARE}{USE_OLD_BINARIES}
mkdir -p "$dir"
echo "sampledb: counting the rows of every table of PostgreSQL $FROM_VERSION"
private "$OLD_BIN/postgres" "$live" old -c jit=off
table_counts "$dir/$base.counts" || fail "counting the rows of every table failed (see the Pod log)"
kill -INT "$server"; wait "$server" || fail "the old server did not stop cleanly: $(tail -n 3 /tmp/old.log)"
echo "sampledb: pg_upgrade --copy from PostgreSQL $FROM_VERSION"
mkdir -p /tmp/pg_upgrade; cd /tmp/pg_upgrade
pg_upgrade --copy -b "$OLD_BIN" -B "$(pg_config --bindir)" -d "$live" -D "$new" -U postgres --socketdir=/tmp \\
  -o '-c jit=off' > /tmp/pg_upgrade.log 2>&1 || {{
  # Its own output names a log file; the server's or pg_restore's error is in there.
  cat /tmp/pg_upgrade.log "$new"/pg_upgrade_output.d/*/log/*.log 2>/dev/null
  cause=$(cat "$new"/pg_upgrade_output.d/*/log/*.log 2>/dev/null | grep -E 'ERROR|FATAL|error:' | tail -n 2)
  fail "pg_upgrade refused or failed; the PostgreSQL $FROM_VERSION cluster is untouched: \\
$(grep -v '^[[:space:]]*$' /tmp/pg_upgrade.log | grep -v 'Consult the last' | tail -n 2) $cause"
}}
cd /
private postgres "$new" new
{SWAP}"""

# pg_upgrade keeps no optimizer statistics before 18: gather them once the server serves again.
COPY_VERIFY_SCRIPT = f"""{VERIFY_SCRIPT}echo "sampledb: analyzing every database in stages (no statistics yet)"
vacuumdb --all --analyze-in-stages --quiet || echo "sampledb: analyze failed; autovacuum will gather statistics"
"""

SCRIPTS = {
    Step.BACKUP: BACKUP_SCRIPT,
    Step.CHECK: CHECK_SCRIPT,
    Step.RUN: RUN_SCRIPT,
    Step.VERIFY: VERIFY_SCRIPT,
    Step.ROLLBACK: ROLLBACK_SCRIPT,
}
COPY_SCRIPTS = {**SCRIPTS, Step.CHECK: COPY_CHECK_SCRIPT, Step.RUN: COPY_RUN_SCRIPT, Step.VERIFY: COPY_VERIFY_SCRIPT}
# Steps of method Copy that run the old binaries, copied from the old image first.
OLD_BINARIES_STEPS = {Step.CHECK, Step.RUN}
# Which image each step runs in: the old major's tools dump and repair the old cluster.
RUNS_ON_OLD_IMAGE = {Step.BACKUP, Step.ROLLBACK}
# Steps that need the data volume, and so the StatefulSet scaled to zero first.
OFFLINE_STEPS = {Step.RUN, Step.ROLLBACK}
# Steps that talk to the running server.
ONLINE_STEPS = {Step.BACKUP, Step.VERIFY}


def job_name(instance: Instance, to_version: int, attempt: int, step: Step) -> str:
    """Deterministic per target and attempt: at most 40 + 22 characters."""
    return f"{instance.name}-upgrade{to_version}-{attempt}-{step.value}"


def backup_file(instance: Instance, from_version: int, to_version: int, attempt: int) -> str:
    """Where the pre-upgrade backup lands, relative to the backup volume."""
    return f"{instance.name}/upgrade-{from_version}-to-{to_version}-{attempt}.sql"


def script_env(
    instance: Instance,
    *,
    from_version: int,
    to_version: int,
    attempt: int,
    data_dir: str = DATA_MOUNT,
    credentials_dir: str = CREDENTIALS_DIR,
    backup_mount: str = BACKUP_MOUNT,
    termination_log: str = TERMINATION_LOG,
) -> list[dict[str, Any]]:
    """What every step's script reads (besides the connection of the online steps)."""
    values = {
        "INSTANCE": instance.name,
        "FROM_VERSION": str(from_version),
        "TO_VERSION": str(to_version),
        "ATTEMPT": str(attempt),
        "BACKUP_MOUNT": backup_mount,
        "DATA_DIR": data_dir,
        "CREDENTIALS_DIR": credentials_dir,
        "TERMINATION_LOG": termination_log,
    }
    return [{"name": k, "value": v} for k, v in values.items()]


def upgrade_job(
    instance: Instance,
    step: Step,
    *,
    from_version: int,
    to_version: int,
    attempt: int,
    images: tuple[str, str],
    method: UpgradeMethod = UpgradeMethod.LOGICAL,
) -> dict[str, Any]:
    """The Job of one step; `images` are the old and the new major's, each step runs the one it needs."""
    copy = method is UpgradeMethod.COPY
    online = step in ONLINE_STEPS or (copy and step is Step.CHECK)  # Copy's check dumps the live schema
    env = script_env(instance, from_version=from_version, to_version=to_version, attempt=attempt)
    if online:
        env = [*superuser_env(instance), *env]
    writes_counts = step is Step.BACKUP or (copy and step is Step.RUN)
    volumes: list[dict[str, Any]] = [{"name": "backups", "persistentVolumeClaim": {"claimName": instance.backup_pvc}}]
    mounts: list[dict[str, Any]] = [{"name": "backups", "mountPath": BACKUP_MOUNT, "readOnly": not writes_counts}]
    if step in OFFLINE_STEPS:
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": instance.primary_pvc}})
        mounts.append({"name": "data", "mountPath": DATA_MOUNT})
    init = None
    if copy and step in OLD_BINARIES_STEPS:
        volumes.append({"name": "old-binaries", "emptyDir": {}})
        mounts.append({"name": "old-binaries", "mountPath": old_binaries.OLD_DIR})
        shared = [{"name": "old-binaries", "mountPath": old_binaries.OLD_DIR}]
        init = script_container("old-binaries", images[0], old_binaries.COPY_SCRIPT, shared)
    manifest = job(
        instance,
        name=job_name(instance, to_version, attempt, step),
        component=f"upgrade-{step.value}",
        script=(COPY_SCRIPTS if copy else SCRIPTS)[step],
        env=env,
        volumes=volumes,
        mounts=mounts,
        image=images[0] if step in RUNS_ON_OLD_IMAGE else images[1],
        init=init,
        # The online steps connect with the superuser password; RUN's initdb sets it from the file,
        # as the StatefulSet does. Both read it from the mounted Secret.
        credentials=(SUPERUSER_PASSWORD_KEY,) if online or step is Step.RUN else (),
    )
    manifest["metadata"]["labels"][UPGRADE_LABEL] = str(to_version)
    return manifest

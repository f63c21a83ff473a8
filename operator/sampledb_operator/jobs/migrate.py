"""Schema migrations: a Job that applies the pending SQL files of a ConfigMap, in order.

Steps (the script below), for each file in name order (`001_init.sql`, `002_orders.sql`, ...):
1. skip it if the table `sampledb_schema_migrations` records it with the same SHA-256; fail if it
   records it with a different one (an applied migration was edited: that needs a new file);
2. otherwise run it and record it in ONE transaction (`psql --single-transaction`), so a failing
   file leaves no trace: the database is as before that file, and later files are not tried;
3. write a one-line JSON summary to the termination log: the last applied version, or the file
   that failed with PostgreSQL's own error message, which the operator puts in the status.
Applying the same set twice therefore does nothing. Runs as the database owner, not the superuser.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.jobs.common import TERMINATION_LOG, WAIT_FOR_SERVER, connection_env, job
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import PASSWORD_KEY

MIGRATIONS_MOUNT = "/migrations"
TRACKING_TABLE = "sampledb_schema_migrations"


def migrate_script(*, mount: str = MIGRATIONS_MOUNT, termination_log: str = TERMINATION_LOG) -> str:
    """Apply pending migrations from `mount`; parameters come from the environment."""
    return f"""set -eu
{WAIT_FOR_SERVER}psql --no-psqlrc -q -v ON_ERROR_STOP=1 -c "CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (
  version text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
last=$(psql --no-psqlrc -At -c "SELECT coalesce(max(version), '') FROM {TRACKING_TABLE}")
applied=0
for path in $(ls -1 {mount}/*.sql 2>/dev/null | sort); do
  version=$(basename "$path" .sql)
  sum=$(sha256sum "$path" | cut -d' ' -f1)
  recorded=$(psql --no-psqlrc -At -v v="$version" <<'SQL'
SELECT checksum FROM {TRACKING_TABLE} WHERE version = :'v'
SQL
)
  if [ "$recorded" = "$sum" ]; then continue; fi
  if [ -n "$recorded" ]; then
    msg="migration $version was changed after it was applied (checksum differs); add a new file instead"
    printf '{{"failed": "%s", "error": "%s"}}\\n' "$version" "$msg" > {termination_log}
    echo "sampledb: $msg" >&2
    exit 1
  fi
  echo "sampledb: applying $version"
  record="INSERT INTO {TRACKING_TABLE} (version, checksum) VALUES (:'v', :'c');"
  if ! err=$( {{ cat "$path"; printf '\\n;\\n%s\\n' "$record"; }} \\
       | psql --no-psqlrc -q --single-transaction -v ON_ERROR_STOP=1 -v v="$version" -v c="$sum" 2>&1 >/dev/null); then
    reason=$(printf '%s' "$err" | grep -m1 'ERROR' | sed 's/\\\\/\\\\\\\\/g; s/"/\\\\"/g')
    printf '{{"failed": "%s", "error": "%s", "lastApplied": "%s"}}\\n' "$version" "$reason" "$last" > {termination_log}
    echo "sampledb: migration $version failed and was rolled back: $reason" >&2
    exit 1
  fi
  last=$version
  applied=$((applied + 1))
done
printf '{{"lastApplied": "%s", "appliedNow": %d}}\\n' "$last" "$applied" > {termination_log}
echo "sampledb: migrations up to date at ${{last:-nothing}} ($applied applied now)"
"""  # noqa: S608 - SQL takes its values through psql variables, not interpolation


def migration_job(instance: Instance, *, name: str, config_map: str) -> dict[str, Any]:
    """The Job applying the SQL files of `config_map` to the application database as its owner."""
    db = instance.spec.database
    env = connection_env(instance, user=db.owner, database=db.name, password_key=PASSWORD_KEY)
    return job(
        instance,
        name=name,
        component="migration",
        script=migrate_script(),
        env=env,
        volumes=[{"name": "migrations", "configMap": {"name": config_map}}],
        mounts=[{"name": "migrations", "mountPath": MIGRATIONS_MOUNT, "readOnly": True}],
        credentials=(PASSWORD_KEY,),
    )

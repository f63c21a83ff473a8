r"""The initial-configuration Job: creates the application role and database, once per instance.

The SQL is idempotent (it checks the catalogs first), so a retried Pod does no harm; the role's
password reaches psql from the mounted Secret file (`\set` with a backquoted `cat`), never through
an argument or the environment.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.jobs.common import WAIT_FOR_SERVER, job, superuser_env
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import PASSWORD_KEY, SUPERUSER_PASSWORD_KEY
from sampledb_operator.resources.statefulset import CREDENTIALS_DIR

CREDENTIALS = (SUPERUSER_PASSWORD_KEY, PASSWORD_KEY)

INIT_SQL = r"""\set ON_ERROR_STOP on
\getenv owner APP_OWNER
\getenv db APP_DATABASE
\set owner_password `cat "$APP_PASSWORD_FILE"`
SELECT format('CREATE ROLE %I LOGIN', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'owner', :'owner_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
"""

RESTORE_MOUNT = "/restore"
# Restore only into a database without tables, in one transaction: a retried Pod never restores
# twice, and a failed restore leaves the database empty rather than half-filled.
RESTORE_STEP = """if [ -n "${RESTORE_FILE:-}" ]; then
  user_tables="SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
  if [ "$(psql --no-psqlrc -At -d "$APP_DATABASE" -c "$user_tables")" = "0" ]; then
    echo "sampledb: restoring $RESTORE_FILE into $APP_DATABASE"
    pg_restore --no-owner --role="$APP_OWNER" --single-transaction --exit-on-error \\
      --dbname="$APP_DATABASE" "$RESTORE_FILE"
  else
    echo "sampledb: $APP_DATABASE already has tables: not restoring again"
  fi
fi
"""

INIT_SCRIPT = f"""set -eu
{WAIT_FOR_SERVER}psql --no-psqlrc --quiet <<'SQL'
{INIT_SQL}SQL
echo "sampledb: application database and role are in place"
{RESTORE_STEP}"""


def init_job(instance: Instance, restore: tuple[str, str] | None = None) -> dict[str, Any]:
    """The Job that creates spec.database.name owned by spec.database.owner.

    With `restore` = (claim, file inside it), it then restores that dump into the new database.
    """
    db = instance.spec.database
    env = [
        *superuser_env(instance),
        {"name": "APP_OWNER", "value": db.owner},
        {"name": "APP_DATABASE", "value": db.name},
        {"name": "APP_PASSWORD_FILE", "value": f"{CREDENTIALS_DIR}/{PASSWORD_KEY}"},
    ]
    if restore is None:
        return job(
            instance, name=instance.init_job, component="init", script=INIT_SCRIPT, env=env, credentials=CREDENTIALS
        )
    claim, file = restore
    env.append({"name": "RESTORE_FILE", "value": f"{RESTORE_MOUNT}/{file}"})
    return job(
        instance,
        name=instance.init_job,
        component="init",
        script=INIT_SCRIPT,
        env=env,
        volumes=[{"name": "restore", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}],
        mounts=[{"name": "restore", "mountPath": RESTORE_MOUNT, "readOnly": True}],
        credentials=CREDENTIALS,
    )

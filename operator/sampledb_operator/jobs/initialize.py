r"""The initial-configuration Job: creates the application role and database, once per instance.

The SQL is idempotent (it checks the catalogs first), so a retried Pod does no harm; the role's
password reaches psql through `\getenv` from the environment, never through an argument.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.jobs.common import job, superuser_env
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import PASSWORD_KEY

WAIT_FOR_SERVER = 'until pg_isready --quiet; do echo "sampledb: waiting for $PGHOST"; sleep 2; done\n'

INIT_SQL = r"""\set ON_ERROR_STOP on
\getenv owner APP_OWNER
\getenv db APP_DATABASE
\getenv owner_password APP_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', :'owner', :'owner_password') \gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
"""

INIT_SCRIPT = f"""set -eu
{WAIT_FOR_SERVER}psql --no-psqlrc --quiet <<'SQL'
{INIT_SQL}SQL
echo "sampledb: application database and role are in place"
"""


def init_job(instance: Instance) -> dict[str, Any]:
    """The Job that creates spec.database.name owned by spec.database.owner."""
    db = instance.spec.database
    env = [
        *superuser_env(instance),
        {"name": "APP_OWNER", "value": db.owner},
        {"name": "APP_DATABASE", "value": db.name},
        {
            "name": "APP_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": instance.credentials_secret, "key": PASSWORD_KEY}},
        },
    ]
    return job(instance, name=instance.init_job, component="init", script=INIT_SCRIPT, env=env)

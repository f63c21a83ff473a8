"""The generated credentials Secret.

Passwords come from `secrets` (a CSPRNG) and are created once: the Secret is never rewritten,
because a new password would lock the applications out of a database initialised with the old
one. A user-supplied Secret (spec.credentials.secretName) is only read, never built here.
"""

from __future__ import annotations

import secrets
from typing import Any

from sampledb_operator.resources.instance import POSTGRES_PORT, Instance

USERNAME_KEY = "username"
PASSWORD_KEY = "password"  # noqa: S105 - a key name, not a password
SUPERUSER_PASSWORD_KEY = "superuser-password"  # noqa: S105
REQUIRED_KEYS = (USERNAME_KEY, PASSWORD_KEY, SUPERUSER_PASSWORD_KEY)
_PASSWORD_BYTES = 32
# When a password file is mounted ($PASSWORD_FILE), it becomes libpq's $PGPASSFILE: mode 0600, any
# host/port/database/user, `\` and `:` escaped as that format requires. Jobs and the database
# container (a standby's connection to the primary) both start with it.
PASSFILE_FROM_SECRET = r"""if [ -n "${PASSWORD_FILE:-}" ]; then
  (umask 077 && sed 's/[\\:]/\\&/g; s/^/*:*:*:*:/' "$PASSWORD_FILE" > "$PGPASSFILE")
fi
"""  # noqa: S105 - a script that copies the mounted file, no password in it


def generate_password() -> str:
    """A URL-safe password with 256 bits of entropy."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def credentials_secret(instance: Instance, *, password: str, superuser_password: str) -> dict[str, Any]:
    """The Secret applications mount to connect; passwords are passed in to keep this pure."""
    db = instance.spec.database
    host = f"{instance.client_service}.{instance.namespace}.svc"
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": instance.metadata(instance.credentials_secret, "credentials"),
        "type": "Opaque",
        "stringData": {
            USERNAME_KEY: db.owner,
            PASSWORD_KEY: password,
            SUPERUSER_PASSWORD_KEY: superuser_password,
            "database": db.name,
            "host": host,
            "port": str(POSTGRES_PORT),
            "uri": f"postgresql://{db.owner}:{password}@{host}:{POSTGRES_PORT}/{db.name}",
        },
    }

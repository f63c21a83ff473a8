"""The configuration check: a new postgresql.conf must start a server before the database gets it.

A parameter the server refuses only at start (a name this major does not know, a value out of
range, settings that contradict each other, more shared memory than the container may have)
would otherwise crash-loop the rolled Pod and leave the database down. So before a changed
configuration reaches the ConfigMap and the StatefulSet, this Job starts a throwaway server with
it: same image, same resources, the candidate file, a fresh cluster in the Pod's own /tmp. Its
one-line JSON summary (the termination log) is `{"ok": true}`, or `{"error": "<the server's FATAL
and ERROR lines>"}`.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.jobs.common import TERMINATION_LOG, job
from sampledb_operator.resources import statefulset
from sampledb_operator.resources.config import postgresql_conf
from sampledb_operator.resources.instance import Instance

CHECK_DIR = "/tmp/sampledb-check"  # noqa: S108 - the Job's own emptyDir


def check_script(conf: str, *, termination_log: str = TERMINATION_LOG) -> str:
    """Start and stop a scratch server with `conf`; report the server's own words if it refuses."""
    # Only the scratch server's own paths change, and its archive command does nothing (its WAL is
    # no database's; archive_mode stays the candidate's, as checked against wal_level); every
    # other setting is the candidate's.
    overrides = (
        f"-c config_file={CHECK_DIR}/postgresql.conf -c listen_addresses='' -c unix_socket_directories={CHECK_DIR}"
        " -c archive_command=/bin/true"
    )
    return f"""set -eu
export PGDATA={CHECK_DIR}/pgdata
mkdir -p {CHECK_DIR}
initdb --username=postgres --auth=trust --no-sync -D "$PGDATA" >/dev/null
cat > {CHECK_DIR}/postgresql.conf <<'SAMPLEDB_CONF'
{conf}SAMPLEDB_CONF
if pg_ctl -D "$PGDATA" -o "{overrides}" -l {CHECK_DIR}/server.log -w -t 60 start >/dev/null; then
  pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
  echo '{{"ok": true}}' > {termination_log}
  echo "sampledb: the server starts with this configuration"
  exit 0
fi
cat {CHECK_DIR}/server.log >&2
reason=$(grep -E 'FATAL|ERROR|LOG:  .*(invalid|unrecognized|out of range)' {CHECK_DIR}/server.log | head -n 5 \\
  | sed 's/^.*\\(FATAL\\|ERROR\\|LOG\\):  */\\1: /' | tr -d '\\000-\\011\\013-\\037' | tr '"\\\\' "''" \\
  | tr '\\n' ';' | sed 's/;$//')
printf '{{"error": "%s"}}\\n' "${{reason:-the server did not start (see the Job's log)}}" > {termination_log}
exit 1
"""


def config_check_job(instance: Instance, name: str) -> dict[str, Any]:
    """The check Job for the instance's desired configuration, with the server container's resources."""
    body = job(
        instance,
        name=name,
        component="config-check",
        script=check_script(postgresql_conf(instance)),
        env=[],
        image=instance.image,
    )
    body["spec"]["backoffLimit"] = 0  # a refused configuration is refused again
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = statefulset.resources(instance)
    return body

"""Logical backups: a Job (on demand) or CronJob (scheduled) that dumps the application database.

Steps of one backup run (the script below):
1. wait for the server; dump the application database with pg_dump (custom format, compressed)
   to `<name>.partial`, then record its SHA-256 and rename it: a dump is either whole or absent;
2. with verification on, restore it into a scratch database on the same server and drop that
   again; a dump that does not restore fails the Job (so it is never kept as "good");
3. with retention, delete the oldest scheduled dumps beyond the count;
4. write a one-line JSON summary (file, bytes, sha256, verified) to the termination log, where
   the operator reads it back into the SampleDBBackup's status.
Credentials come from the instance's Secret as a mounted file, never the command line or environment.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.jobs.common import TERMINATION_LOG, WAIT_FOR_SERVER, job, superuser_env
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import SUPERUSER_PASSWORD_KEY
from sampledb_operator.resources.volumes import claim

BACKUP_MOUNT = "/backups"


def backup_script(*, mount: str = BACKUP_MOUNT, termination_log: str = TERMINATION_LOG) -> str:
    """The backup run; parameters (database, label, verify, retention) come from the environment."""
    return f"""set -eu
{WAIT_FOR_SERVER}dir={mount}/$INSTANCE
mkdir -p "$dir"
stamp=$(date -u +%Y%m%dT%H%M%SZ)
name="$stamp-$BACKUP_LABEL"
pg_dump --format=custom --compress=6 --no-password --file="$dir/$name.partial" "$APP_DATABASE"
sha=$(sha256sum "$dir/$name.partial" | cut -d' ' -f1)
mv "$dir/$name.partial" "$dir/$name.dump"
echo "$sha  $name.dump" > "$dir/$name.sha256"
verified=false
if [ "${{VERIFY:-false}}" = "true" ]; then
  scratch="sampledb_verify_$(date +%s)"
  psql --no-psqlrc -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \\"$scratch\\""
  if ! pg_restore --exit-on-error --no-owner --dbname="$scratch" "$dir/$name.dump"; then
    psql --no-psqlrc -q -c "DROP DATABASE IF EXISTS \\"$scratch\\""
    rm -f "$dir/$name.dump" "$dir/$name.sha256"
    echo "{{\\"error\\": \\"backup $name does not restore; it was removed\\"}}" > {termination_log}
    exit 1
  fi
  psql --no-psqlrc -q -c "DROP DATABASE \\"$scratch\\""
  verified=true
fi
if [ -n "${{RETAIN:-}}" ]; then
  ls -1 "$dir" | grep -- "-scheduled\\.dump$" | sort -r | tail -n +$((RETAIN + 1)) | while read -r old; do
    rm -f "$dir/$old" "$dir/${{old%.dump}}.sha256"
    echo "sampledb: retention removed $old"
  done
fi
bytes=$(wc -c < "$dir/$name.dump")
summary=$(printf '{{"file": "%s", "bytes": %s, "sha256": "%s", "verified": %s}}' \\
  "$INSTANCE/$name.dump" "$bytes" "$sha" "$verified")
echo "$summary" > {termination_log}
echo "sampledb: backup written: $summary"
"""


def backup_pvc(instance: Instance) -> dict[str, Any]:
    """The instance's backup volume (owned: it goes with the instance)."""
    return claim(instance, instance.backup_pvc, "backups", owned=True)


def backup_env(instance: Instance, *, label: str, verify: bool, retain: int | None) -> list[dict[str, Any]]:
    """What the script needs besides the superuser connection."""
    env = [
        *superuser_env(instance),
        {"name": "INSTANCE", "value": instance.name},
        {"name": "APP_DATABASE", "value": instance.spec.database.name},
        {"name": "BACKUP_LABEL", "value": label},
        {"name": "VERIFY", "value": "true" if verify else "false"},
    ]
    if retain is not None:
        env.append({"name": "RETAIN", "value": str(retain)})
    return env


def backup_job(instance: Instance, *, name: str, label: str, verify: bool) -> dict[str, Any]:
    """A one-off backup Job (for a SampleDBBackup)."""
    return job(
        instance,
        name=name,
        component="backup",
        script=backup_script(),
        env=backup_env(instance, label=label, verify=verify, retain=None),
        volumes=[{"name": "backups", "persistentVolumeClaim": {"claimName": instance.backup_pvc}}],
        mounts=[{"name": "backups", "mountPath": BACKUP_MOUNT}],
        credentials=(SUPERUSER_PASSWORD_KEY,),
    )


def backup_cronjob(instance: Instance) -> dict[str, Any] | None:
    """The scheduled backups of spec.backup, or None when there is no schedule."""
    backup = instance.spec.backup
    if backup.schedule is None:
        return None
    template = job(
        instance,
        name=instance.backup_cronjob,
        component="scheduled-backup",
        script=backup_script(),
        env=backup_env(instance, label="scheduled", verify=backup.verify, retain=backup.retention),
        volumes=[{"name": "backups", "persistentVolumeClaim": {"claimName": instance.backup_pvc}}],
        mounts=[{"name": "backups", "mountPath": BACKUP_MOUNT}],
        credentials=(SUPERUSER_PASSWORD_KEY,),
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": template["metadata"],
        "spec": {
            "schedule": backup.schedule,
            "concurrencyPolicy": "Forbid",  # never two dumps of one database at once
            "startingDeadlineSeconds": 600,
            "successfulJobsHistoryLimit": 3,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {"metadata": {"labels": template["metadata"]["labels"]}, "spec": template["spec"]},
        },
    }

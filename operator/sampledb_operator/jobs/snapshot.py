"""The final snapshot taken before a SampleDB with `deletionPolicy: Snapshot` is removed.

Steps (driven by `reconcile/deletion.py`):
1. create the snapshot PVC (not owned by the SampleDB, so it outlives it) and the snapshot Job;
2. the Job dumps the roles and every database with pg_dump (custom format, compressed) and writes
   a `COMPLETE` marker last, so a half-written snapshot is recognisable;
3. when the Job has succeeded the operator deletes the StatefulSet and the data volumes; if it
   failed, deletion stops there with a Degraded condition and an event: no data is lost.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.jobs.common import WAIT_FOR_SERVER, job, superuser_env
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.secret import SUPERUSER_PASSWORD_KEY
from sampledb_operator.resources.volumes import claim

SNAPSHOT_MOUNT = "/snapshot"


def snapshot_script(mount: str = SNAPSHOT_MOUNT) -> str:
    """Dump roles and every database into a timestamped folder under `mount`, COMPLETE last."""
    return f"""set -eu
{WAIT_FOR_SERVER}out={mount}/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"
pg_dumpall --globals-only > "$out/globals.sql"
list_databases="SELECT datname FROM pg_database WHERE NOT datistemplate"
databases=$(psql --no-psqlrc -At -c "$list_databases")
for db in $databases; do
  echo "sampledb: dumping database $db"
  pg_dump --format=custom --compress=6 --file="$out/$db.dump" "$db"
done
touch "$out/COMPLETE"
echo "sampledb: final snapshot written to $out"
"""  # noqa: S608 - a shell script with a fixed query, nothing interpolated into SQL


def snapshot_pvc(instance: Instance) -> dict[str, Any]:
    """A volume as large as the data volume, kept after the instance is deleted."""
    return claim(instance, instance.snapshot_pvc, "final-snapshot", owned=False)


def snapshot_job(instance: Instance) -> dict[str, Any]:
    """The Job that writes the final snapshot onto the snapshot PVC."""
    return job(
        instance,
        name=instance.snapshot_job,
        component="final-snapshot",
        script=snapshot_script(),
        env=superuser_env(instance),
        volumes=[{"name": "snapshot", "persistentVolumeClaim": {"claimName": instance.snapshot_pvc}}],
        mounts=[{"name": "snapshot", "mountPath": SNAPSHOT_MOUNT}],
        credentials=(SUPERUSER_PASSWORD_KEY,),
    )

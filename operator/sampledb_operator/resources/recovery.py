"""Point-in-time recovery (`spec.recovery`): a new SampleDB's primary starts from the object store.

The operator resolves the source (`reconcile/recovery.py`) and writes pgBackRest's restore options
into the instance's ConfigMap (RECOVERY_FILE: a repository, perhaps a base backup, a target). The
primary's start script, finding them and an empty volume, runs two steps instead of initdb
(`statefulset.start_script`); each leaves the volume in a state the next start resumes from:

1. **Restore**: pgBackRest restores into a side folder, moved into place only when
   whole, with the RECOVERING marker in it; a restore cut short starts again. pgBackRest picks the
   newest base backup that ends before a time or LSN target; when none does (it fails, or says it
   falls back to the latest one, which could only recover to a later point) the target is refused.
2. **Recover** (while RECOVERING is there): the server replays archived WAL up to the
   target with no TCP listener (no client, not even the operator's init Job, sees a half-recovered
   database) and promotes itself there. Then, over the trusted socket: the superuser's password
   becomes the new Secret's (the restored roles carry the source's), the recovery settings
   pgBackRest wrote are removed (a standby cloned later must not stop at the target), and the new
   timeline's stop reason is kept in RECOVERED, which the operator reads into status.recovery. The
   server stops, the marker goes, and the start script starts it as every other start does.

Through both steps RESTORING_FILE is in the Pod's private folder: the startup and liveness probes
pass (a restore of a large database outlasts them) and the readiness probe fails (the Pod joins
its Services only with the server clients get). A fast shutdown of the recovering server (the
Pod deleted) ends the start quietly; the next start resumes.

A refusal or failure (no base backup before the target, a target past the end of the archive, a
restore point the archive does not hold: PostgreSQL's own FATAL) ends the start with the reason and
the repository's window (its base backups, its WAL, when it last received a segment) in the Pod's
termination message, which the operator shows as the `RecoveryFailed` condition; the volume is left
as it was, so a retry starts over. The new SampleDB archives to its own repository from its first
segment on; its point-in-time recoveries need one of its own base backups.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sampledb_operator.api.v1 import RecoverySpec
from sampledb_operator.resources import archive
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.paths import CONFIG_DIR

RECOVERY_FILE = "recovery.options"  # in the ConfigMap: pgBackRest restore options, one per line
# In the Pod's private socket folder while the start script restores or recovers: the startup and
# liveness probes pass (a restore of a large database outlasts them), the readiness probe fails
# (the server that replays is not the one clients get). Removed at every start and when done.
RESTORING_FILE = "sampledb.restoring"
RECOVERING = "sampledb.recovering"  # in PGDATA: restored, not yet recovered and cleaned up
RECOVERED = "sampledb.recovered"  # in PGDATA: "<timeline>\t<LSN>\t<PostgreSQL's stop reason>"
# What pgBackRest says when no base backup ends before a time or LSN target: an error (2.45), or a
# warning that it restores the latest one instead (older versions, and some targets).
NO_BACKUP_ERROR = "unable to find backup set with"
FALLBACK_WARNING = "latest backup set will be used"
# Recovery settings pgBackRest writes into postgresql.auto.conf; removed once recovered.
RECOVERY_SETTINGS = (
    "restore_command",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_inclusive",
    "recovery_target_lsn",
    "recovery_target_name",
    "recovery_target_time",
    "recovery_target_timeline",
    "recovery_target_xid",
)


def target(spec: RecoverySpec) -> tuple[str, str] | None:
    """(pgBackRest's --type, --target) of spec.recovery.target; None: the latest point.

    A time goes as pgBackRest parses it to choose the base backup (`YYYY-MM-DD HH:MM:SS[.f]+00`,
    in UTC), which PostgreSQL reads as well.
    """
    wanted = spec.target
    if wanted is None:
        return None
    if wanted.time is not None:
        moment = datetime.fromisoformat(wanted.time).astimezone(UTC)
        text = moment.strftime("%Y-%m-%d %H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "")
        return "time", text + "+00"
    if wanted.lsn is not None:
        return "lsn", wanted.lsn.upper()
    if wanted.name is not None:
        return "name", wanted.name
    return None


def describe(spec: RecoverySpec) -> str:
    """The target for status.recovery: `latest`, or the kind and the value as the user wrote it."""
    wanted = spec.target
    for kind in ("time", "lsn", "name"):
        value = getattr(wanted, kind) if wanted else None
        if value is not None:
            return f"{kind} {value}"
    return "latest"


def options(instance: Instance, *, script: str = f"{CONFIG_DIR}/{archive.SCRIPT_FILE}") -> str | None:
    """RECOVERY_FILE: `pgbackrest restore` options, one per line, the source repository first; None: no recovery.

    WAL is fetched through `pgbackrest.sh` (restore_command), which writes the current keys first.
    """
    source, spec = instance.recovery_source, instance.spec.recovery
    if source is None or spec is None:
        return None
    repository = f"--repo1-path={source.repository_path}"
    lines = [repository, *([f"--set={source.label}"] if source.label else [])]
    point = target(spec)
    if point is not None:
        lines += [f"--type={point[0]}", f"--target={point[1]}", "--target-action=promote"]
    lines.append(f'--recovery-option=restore_command=sh {script} {repository} archive-get %f "%p"')
    return "\n".join(lines) + "\n"


def config_files(instance: Instance) -> dict[str, str]:
    """The ConfigMap's RECOVERY_FILE while the instance is to be recovered; none otherwise."""
    text = options(instance)
    return {RECOVERY_FILE: text} if text is not None else {}


def start_step(
    *,
    config_dir: str,
    script: str,
    run_dir: str,
    socket_dir: str,
    port: int,
    termination_log: str,
    server: str,
    restoring: str,
) -> str:
    """The primary's part of the start script: restore, then recover (see the module docstring).

    `server` is how the script runs postgres; here it runs without a TCP listener. `restoring` is
    the RESTORING_FILE the probes look for (the start script removes it at every start).
    """
    sql = f"psql -h {socket_dir} -p {port} -U postgres -d postgres -XAtq"
    resets = "\n".join(f"ALTER SYSTEM RESET {name};" for name in RECOVERY_SETTINGS)
    common = rf"""repository="$(sed -n 1p {config_dir}/{RECOVERY_FILE})"
mkdir -p {run_dir}
window() {{  # what the source repository holds, in pgBackRest's words
  info="$(sh {script} "$repository" info 2>&1)" ||
    {{ printf 'pgBackRest cannot read it: %s' "$(printf '%s\n' "$info" | grep -m1 ERROR || :)"; return 0; }}
  stops="$(printf '%s\n' "$info" | sed -n 's/^ *timestamp start\/stop: .* \/ //p')"
  wal="$(printf '%s\n' "$info" | sed -n 's/^ *wal archive min\/max ([0-9]*): //p' | tail -n 1)"
  last="$(sh {script} "$repository" repo-ls --recurse --output=json archive 2>/dev/null |
    grep -o '"time":[0-9]*' | cut -d: -f2 | sort -n | tail -n 1)"
  [ -n "$stops" ] || {{ printf 'the repository %s holds no base backup' "${{repository#*=}}"; return 0; }}
  printf 'the repository %s holds base backups ending from %s to %s (UTC), and WAL %s, last archived %s' \
    "${{repository#*=}}" "$(printf '%s\n' "$stops" | head -n 1)" "$(printf '%s\n' "$stops" | tail -n 1)" \
    "${{wal:-none}}" "${{last:+$(date -u -d "@$last" '+%Y-%m-%d %H:%M:%S+00')}}"
}}
refuse() {{  # the reason and the window: the Pod's termination message (the RecoveryFailed condition)
  printf 'sampledb: spec.recovery: %s; %s\n' "$1" "$(window)" | head -c 3900 | tee {termination_log} >&2
  exit 1
}}
"""
    restore = rf""": > {restoring}
echo "sampledb: restoring a base backup from the object store (spec.recovery: ${{repository#*=}})"
set --
while IFS= read -r option; do set -- "$@" "$option"; done < {config_dir}/{RECOVERY_FILE}
rm -rf "$PGDATA.restore"
mkdir -p -m 700 "$PGDATA.restore"
rc=0
sh {script} restore --pg1-path="$PGDATA.restore" --log-level-console=info "$@" > {run_dir}/restore.log 2>&1 || rc=$?
cat {run_dir}/restore.log
if grep -q -e '{NO_BACKUP_ERROR}' -e '{FALLBACK_WARNING}' {run_dir}/restore.log; then
  rm -rf "$PGDATA.restore"
  refuse "no base backup ends before the target, which is before what the repository can recover"
fi
[ "$rc" -eq 0 ] || refuse "the restore failed: $(grep -m1 ERROR {run_dir}/restore.log || echo 'see the log')"
rm -f "$PGDATA.restore/{RECOVERED}"  # a source recovered itself: its record is not this recovery's
: > "$PGDATA.restore/{RECOVERING}"
rm -rf "$PGDATA"
mv "$PGDATA.restore" "$PGDATA"
"""
    recover = rf""": > {restoring}
echo "sampledb: recovering: replaying archived WAL (no client can connect until it is done)"
{server} > {run_dir}/recovery.log 2>&1 &
recovering=$!
waited=0
until [ "$({sql} -c 'select pg_is_in_recovery()' 2>/dev/null)" = f ]; do
  if ! kill -0 "$recovering" 2>/dev/null; then
    cat {run_dir}/recovery.log
    # Stopped on purpose (the Pod is deleted: the preStop hook's fast shutdown): not a failure.
    grep -q 'received [a-z]* shutdown request' {run_dir}/recovery.log && exit 143
    refuse "PostgreSQL stopped recovering: $(grep -E 'FATAL|PANIC' {run_dir}/recovery.log |
      grep -v -e 'is starting up' -e 'not yet accepting connections' | tail -n 2 |
      sed 's/^.*\(FATAL\|PANIC\): *//' | tr '\n' ' ')"
  fi
  if [ $((waited % 30)) -eq 0 ]; then
    replayed="$({sql} -c 'select pg_last_wal_replay_lsn()' 2>/dev/null || echo '(starting)')"
    echo "sampledb: recovering: replayed up to $replayed"
  fi
  waited=$((waited + 1))
  sleep 1
done
{sql} -v ON_ERROR_STOP=1 <<'SQL'
SET log_statement = 'none';
SET log_min_error_statement = 'panic';
SET log_min_duration_statement = -1;
SET log_min_duration_sample = -1;
SET log_transaction_sample_rate = 0;
\set password `cat "$PASSWORD_FILE"`
ALTER ROLE postgres PASSWORD :'password';
{resets}
SQL
timeline="$({sql} -c 'select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)')"
printf '%d\t%s\n' "$((0x$timeline))" "$(grep . "$PGDATA/pg_wal/$timeline.history" | tail -n 1 | cut -f2-)" \
  > "$PGDATA/{RECOVERED}"
pg_ctl stop -D "$PGDATA" -m fast -w -t 3600 > /dev/null || :  # the shutdown checkpoint may be long
wait "$recovering" || :
cat {run_dir}/recovery.log
rm -f "$PGDATA/{RECOVERING}" {restoring}
echo "sampledb: recovered to timeline $(cut -f1 "$PGDATA/{RECOVERED}"): $(cut -f3 "$PGDATA/{RECOVERED}")"
"""
    return f"""if [ -f {config_dir}/{RECOVERY_FILE} ]; then
{common}if [ ! -s "$PGDATA/PG_VERSION" ]; then
{restore}fi
if [ -f "$PGDATA/{RECOVERING}" ]; then
{recover}fi
fi
"""

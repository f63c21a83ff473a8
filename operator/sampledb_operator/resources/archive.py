"""Continuous WAL archiving to an S3-compatible object store (`spec.backup.objectStore`), with pgBackRest.

Why pgBackRest: it is packaged for every Debian release our images come from (bookworm 2.45,
trixie 2.55, forky 2.60), adds about 1 MB of C to an image (barman-cli-cloud adds Python and
boto3, 110-150 MB; WAL-G is neither packaged nor obtainable here), refuses secrets on its command
line and redacts them in its own log, checks that a repository belongs to the database pushing
into it (the stanza records the system identifier), and restores to a time, an LSN or a named
point. What the operand image must then have: `pgbackrest` on PATH, from the same release as the
server. An image without it still runs: the start script leaves `archive_mode` off and says so,
and the `ContinuousArchiving` condition names the image (`reconcile/archiving.py`); WAL never
piles up behind a command that cannot work.

How it runs: the server's archiver calls `archive_command` for every completed segment, so
pgBackRest runs in the database container, through `pgbackrest.sh` (in the instance's ConfigMap):
- The settings without a secret are `pgbackrest.conf`, in the same ConfigMap (a change reaches the
  Pods without a restart: pgBackRest reads it on every call).
- The access keys are files of the user's Secret, mounted in the Pod. The script writes them into
  a pgBackRest `conf.d` file in the Pod's private socket folder (mode 0600) before every call, so a
  rotated key is used from the next segment on; no key is ever an argument, an environment
  variable, a line of a log or part of an object the operator writes.
- Each SampleDB has its own repository, `<path>/<namespace>/<name>/<uid>`: a re-created SampleDB
  of the same name never pushes into its predecessor's. Its stanza is created by the first push
  that finds none (the archiver runs it on the primary, where the server is up), so no step of the
  operator has to wait for it.
- A push that fails leaves its message in `$LAST_ERROR`, read with pg_stat_archiver
  (`reconcile/archiving.py`): the condition says why, in pgBackRest's own words; the server keeps
  the segment and retries.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from sampledb_operator.resources.paths import CONFIG_DIR, PGDATA, SOCKET_DIR

CONF_FILE = "pgbackrest.conf"
SCRIPT_FILE = "pgbackrest.sh"
STANZA = "db"
KEYS_DIR = "/etc/sampledb/object-store"  # the user's Secret: the two keys, as files
CA_DIR = "/etc/sampledb/object-store-ca"
ACCESS_KEY_FILE = "access-key-id"
SECRET_KEY_FILE = "secret-access-key"  # noqa: S105 - a file name
CA_FILE = "ca.crt"
RUN_DIR = f"{SOCKET_DIR}/pgbackrest"  # private to the Pod: the keys as pgBackRest reads them, the last error
LAST_ERROR = f"{RUN_DIR}/last-error"
NO_PGBACKREST_MESSAGE = "this image has no pgbackrest"
NO_PGBACKREST_FILE = "no-pgbackrest"  # in RUN_DIR, written by the start script: the image lacks the tool
PUSH_TIMEOUT_SECONDS = 60  # one segment's push, store unreachable or slow: then it fails, and is retried
ARCHIVE_TIMEOUT = "30s"  # an idle-ish database still archives: at most this much of its writes at risk
KEYS_VOLUME = "object-store-keys"
CA_VOLUME = "object-store-ca"


def repository_path(instance: Instance) -> str:
    """This SampleDB's own repository in the bucket."""
    store = instance.spec.backup.objectStore
    prefix = store.path.rstrip("/") if store else ""
    return f"{prefix}/{instance.namespace}/{instance.name}/{instance.uid}"


def pgbackrest_conf(instance: Instance) -> str | None:
    """The pgBackRest settings (no secret in them); None without an object store."""
    store = instance.spec.backup.objectStore
    if store is None:
        return None
    url = urlsplit(store.endpoint)
    lines = [
        "# Managed by the SampleDB operator; edit spec.backup.objectStore instead.",
        "[global]",
        "repo1-type=s3",
        f"repo1-s3-endpoint={url.hostname}",
        f"repo1-storage-port={url.port or 443}",
        f"repo1-s3-bucket={store.bucket}",
        f"repo1-s3-region={store.region}",
        f"repo1-s3-uri-style={store.uriStyle.value.lower()}",
        f"repo1-path={repository_path(instance)}",
    ]
    if store.caBundle is not None:
        lines.append(f"repo1-storage-ca-file={CA_DIR}/{CA_FILE}")
    if store.kmsKeyId is not None:
        lines.append(f"repo1-s3-kms-key-id={store.kmsKeyId}")
    if store.retention is not None:  # applied after each base backup (pgBackRest's expire-auto)
        count = store.retention.fullBackups
        kind, value = ("count", count) if count is not None else ("time", store.retention.recoveryWindowDays)
        lines += [f"repo1-retention-full-type={kind}", f"repo1-retention-full={value}"]
    lines += [
        "compress-type=lz4",  # fast: the archiver pushes one segment at a time
        # A store that does not answer: pgBackRest retries each request until its I/O timeout, which
        # at the default (60 s) held one push for minutes (PUSH_TIMEOUT bounds the whole push).
        "io-timeout=10",
        "log-level-file=off",  # the root file system is read-only; messages go to the server's log
        "lock-path=/tmp/pgbackrest",
        f"[{STANZA}]",
        f"pg1-path={PGDATA}",
        f"pg1-socket-path={SOCKET_DIR}",
        f"pg1-port={POSTGRES_PORT}",
        "pg1-user=postgres",
    ]
    return "\n".join(lines) + "\n"


def script() -> str:
    """`pgbackrest.sh COMMAND [ARG...]`: pgBackRest with this instance's settings and the current keys.

    `archive-push` that finds no stanza creates it, and one that finds the stanza of an older
    cluster (a major upgrade made a new one; the repository is this SampleDB's own) upgrades it,
    then pushes again. A push that fails writes pgBackRest's whole message to the server's log
    and its gist (first error, the store's error codes) to LAST_ERROR (removed by the next
    success), and exits non-zero, so the server keeps the segment and retries.
    The base-backup commands are in BACKUP_COMMANDS.
    """
    return f"""#!/bin/sh
# Managed by the SampleDB operator: pgBackRest with the object store's settings and keys.
set -eu
umask 077
mkdir -p {RUN_DIR}/conf.d
gist() {{  # the gist of pgBackRest's output for a condition or a status: printable, bounded
  out="$(cat)"
  {{ printf '%s\\n' "$out" | grep -m1 ERROR || printf '%s\\n' "$out" | sed -n 1p
    printf '%s\\n' "$out" | sed -n 's/.*<Code>\\([^<]*\\)<\\/Code><Message>\\([^<]*\\)<.*/\\1: \\2/p' | sort -u
  }} | LC_ALL=C tr -cd '\\11\\12\\40-\\176' | head -c 800
}}
fail() {{ printf '%s\\n' "$1" >&2; printf '%s\\n' "$1" | gist > {LAST_ERROR}; exit 1; }}
command -v pgbackrest >/dev/null || fail "sampledb: {NO_PGBACKREST_MESSAGE}"
[ -r {KEYS_DIR}/{ACCESS_KEY_FILE} ] && [ -r {KEYS_DIR}/{SECRET_KEY_FILE} ] ||
  fail "sampledb: the object store's keys are not mounted at {KEYS_DIR}"
{{
  printf '[global]\\nrepo1-s3-key='; tr -d '\\n' < {KEYS_DIR}/{ACCESS_KEY_FILE}
  printf '\\nrepo1-s3-key-secret='; tr -d '\\n' < {KEYS_DIR}/{SECRET_KEY_FILE}; printf '\\n'
}} > {RUN_DIR}/conf.d/keys.conf.$$
mv {RUN_DIR}/conf.d/keys.conf.$$ {RUN_DIR}/conf.d/keys.conf
pgbackrest="pgbackrest --config={CONFIG_DIR}/{CONF_FILE} --config-include-path={RUN_DIR}/conf.d --stanza={STANZA}"
# A push (or a stanza change) that cannot finish within PUSH_TIMEOUT_SECONDS fails, so that
# pg_stat_archiver says so (the server retries it): a store that does not answer is a failure.
bounded() {{ timeout -k 5 {PUSH_TIMEOUT_SECONDS} $pgbackrest "$@"; }}
{BACKUP_COMMANDS}[ "$1" = archive-push ] || exec $pgbackrest "$@"
rc=0
out="$(bounded "$@" 2>&1)" || rc=$?
case "$rc:$out" in
  0:*) rm -f {LAST_ERROR}; exit 0 ;;
  *"archive.info"*"missing"*) change=stanza-create ;;  # the repository's first push
  *"do not match"*"stanza"*) change=stanza-upgrade ;;  # a new cluster after a major upgrade, the same repository
  *) change= ;;
esac
if [ -n "$change" ]; then
  echo "sampledb: pgBackRest $change on this SampleDB's repository"
  rc=0
  out="$(bounded $change 2>&1 && bounded "$@" 2>&1)" || rc=$?
  if [ "$rc" -eq 0 ]; then rm -f {LAST_ERROR}; exit 0; fi
fi
if [ "$rc" -eq 124 ]; then
  out="sampledb: the push did not finish within {PUSH_TIMEOUT_SECONDS} s: the object store does not answer \\
(or too slowly)
$out"
fi
printf '%s\\n' "$out" >&2
printf '%s\\n' "$out" | gist > {LAST_ERROR}
exit 1
"""


# The base backups (`reconcile/base_backup.py` drives them through exec in BACKUP_CONTAINER, whose
# PID 1 reaps what `backup-start` leaves running). ID is the SampleDBBackup's UID; its files are in
# BACKUPS_DIR, on the Pod's private emptyDir, so they outlive a restart of the container, not of the Pod.
# - `backup-start ID [verify]`: start the base backup ID in the background, once (a second start, after a
#   status write that failed, finds the first);
# - `backup-run ID [verify]`: the backup itself, in the foreground: the stanza made this cluster's
#   (created, or upgraded after a major upgrade; retried while the archiver's push holds the lock),
#   then an online full backup (fast checkpoint) annotated with ID, then pgBackRest's `info` as JSON
#   (the operator finds the backup by its annotation), then with `verify` the check in VERIFY; its
#   output goes to ID.log, its exit code to ID.rc;
# - `backup-status ID`: a first line `succeeded` (then the JSON), `failed` (then the gist of the
#   error), `running` (then the last line of progress), `lost` (started, no process, no outcome:
#   the container restarted) or `unknown` (never started here: the Pod is a new one).
BACKUP_CONTAINER = "pgbackrest"
# Its main process: it only waits (TERM ends it at once), and reaps the backups `backup-start`
# leaves behind (an orphan's parent becomes PID 1; the shell's `wait` collects any child). Not the
# server's container: there PID 1 is the postmaster, which takes an unknown child's exit code as a
# crashed backend and restarts every session.
BACKUP_CONTAINER_COMMAND = "trap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait $!; done\n"
BACKUP_CONTAINER_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}}
BACKUPS_DIR = f"{RUN_DIR}/backups"
ANNOTATION = "sampledb.io/backup"
VERIFY_PORT = 5499  # the scratch server's: on a socket in its own folder, no TCP listener
# `backup-run ID verify`, after the backup: restore it (to its consistency point) into a scratch
# folder, start it, wait for it to promote and check every database with pg_amcheck (heap and
# B-tree indexes: what data checksums alone do not catch); a backup that fails is expired from the
# repository, so no recovery starts from it, and the run fails with the reason.
_ANNOTATED = '"annotation":{"' + ANNOTATION.replace("/", "\\/") + '":"'  # in a sed pattern: / escaped
VERIFY = rf"""      label="$(sed -n 's/.*{_ANNOTATED}'"$2"'"}}[^[]*"label":"\([^"]*\)".*/\1/p' "$f.json")"
      scratch="/tmp/sampledb-verify-$2"
      sql="psql -h $scratch -p {VERIFY_PORT} -U postgres -XAtq"
      echo "sampledb: verifying base backup $label: restoring it into $scratch, then pg_amcheck"
      why=
      rm -rf "$scratch" && mkdir -p -m 700 "$scratch/data" && : > "$scratch/postgresql.conf" &&
        echo 'local all all trust' > "$scratch/pg_hba.conf" || why="no scratch folder in /tmp"
      if [ -n "$why" ]; then
        :
      elif ! $pgbackrest restore --pg1-path="$scratch/data" --set="$label" --type=immediate \
          --target-action=promote; then
        why="it does not restore"
      elif ! pg_ctl start -D "$scratch/data" -w -t 600 -l "$scratch/server.log" -o "-c port={VERIFY_PORT} \
          -c listen_addresses= -c unix_socket_directories=$scratch -c archive_mode=off \
          -c config_file=$scratch/postgresql.conf -c hba_file=$scratch/pg_hba.conf"; then
        why="the restored server does not start: $(grep -m1 FATAL "$scratch/server.log")"
      else
        until [ "$($sql -d postgres -c 'select pg_is_in_recovery()')" = f ]; do
          pg_ctl status -D "$scratch/data" > /dev/null || {{ why="the restored server stopped recovering"; break; }}
          sleep 1
        done
        [ -n "$why" ] || pg_amcheck -h "$scratch" -p {VERIFY_PORT} -U postgres --all --install-missing ||
          why="pg_amcheck finds corruption in it (see above)"
        pg_ctl stop -D "$scratch/data" -m fast -w > /dev/null || :
      fi
      rm -rf "$scratch"
      if [ -n "$why" ]; then
        $pgbackrest expire --set="$label" || :
        echo "ERROR: sampledb: base backup $label failed verification ($why); it was expired from the repository"
        rc=1
      else
        echo "sampledb: base backup $label verified"
      fi
"""  # noqa: S608 - a shell script: its SQL is constant
BACKUP_COMMANDS = rf"""case "$1" in backup-*)
  case "${{2:-}}" in ""|*[!0-9a-z-]*) echo "sampledb: $1 needs the backup's ID" >&2; exit 2 ;; esac
  mkdir -p {BACKUPS_DIR}
  f={BACKUPS_DIR}/$2 ;;
esac
case "$1" in
  backup-start)
    if ( set -C; : > "$f.started" ) 2>/dev/null; then
      trap '' HUP
      sh "$0" backup-run "$2" "${{3:-}}" > /dev/null 2>&1 < /dev/null &
      echo $! > "$f.pid"
    fi
    echo started; exit 0 ;;
  backup-run)
    locked() {{  # a stanza command, retried while a push holds the repository's archive lock
      n=0
      until out="$(bounded "$@" 2>&1)"; do
        n=$((n + 1))
        case "$out" in *"acquire lock"*) [ "$n" -lt 30 ] && sleep 1 && continue ;; esac
        printf '%s\n' "$out"; return 1
      done
    }}
    exec > "$f.log" 2>&1
    rc=0
    {{ locked stanza-create || case "$out" in *"do not match"*) locked stanza-upgrade ;; *) false ;; esac
    }} && $pgbackrest backup --type=full --start-fast --log-level-console=info --annotation={ANNOTATION}="$2" &&
      $pgbackrest info --output=json > "$f.json" || rc=$?
    if [ "$rc" -eq 0 ] && [ "${{3:-}}" = verify ]; then
{VERIFY}    fi
    echo "$rc" > "$f.rc"; exit "$rc" ;;
  backup-status)
    if [ "$(cat "$f.rc" 2>/dev/null)" = 0 ]; then echo succeeded; cat "$f.json"
    elif [ -f "$f.rc" ]; then echo failed; gist < "$f.log"
    elif [ ! -f "$f.started" ]; then echo unknown
    elif [ ! -f "$f.pid" ] || kill -0 "$(cat "$f.pid")" 2>/dev/null; then
      echo running; tail -n 1 "$f.log" 2>/dev/null || :
    else echo lost; fi
    exit 0 ;;
esac
"""


# Run just before pg_promote on a standby (`reconcile/failover.py`). A standby marks every segment
# it streamed as archived (`.done`: with archive_mode on, only a primary archives), though the old
# primary may not have archived it yet (it was lost, or the store was away), and a promoted server
# never archives what it did not write itself: the archive would have a gap, and no recovery could
# cross it. Marked `.ready` again, the new primary's archiver pushes them; pgBackRest accepts a
# segment it already holds with the same checksum. Not before promotion (in recovery, `.ready` does
# not keep a segment from being recycled), and once only (standby.signal goes with the promotion).
REARCHIVE_STREAMED = """if [ -f "$PGDATA/standby.signal" ]; then
  for done in "$PGDATA"/pg_wal/archive_status/*.done; do
    [ -e "$done" ] || continue
    case "$done" in *.partial.done) continue ;; esac
    mv "$done" "${done%.done}.ready"
  done
fi
"""


def promote_command(instance: Instance, command: list[str]) -> list[str]:
    """`command` (the promotion), preceded by REARCHIVE_STREAMED when the instance archives."""
    if not instance.archives:
        return command
    return ["sh", "-c", REARCHIVE_STREAMED + 'exec "$@"', "promote", *command]


def postgresql_settings(instance: Instance) -> list[str]:
    """The lines of postgresql.conf that archive (before the user's: archive_timeout may be tuned)."""
    if not instance.archives:
        return []
    return [
        "archive_mode = 'on'",
        f"archive_command = 'sh {CONFIG_DIR}/{SCRIPT_FILE} archive-push %p'",
        f"archive_timeout = '{ARCHIVE_TIMEOUT}'",
    ]


def config_files(instance: Instance) -> dict[str, str]:
    """The ConfigMap's pgBackRest files; none without an object store."""
    conf = pgbackrest_conf(instance)
    return {CONF_FILE: conf, SCRIPT_FILE: script()} if conf is not None else {}


def volumes(instance: Instance) -> list[dict[str, Any]]:
    """The keys (and CA bundle) of the object store, from the user's Secrets, readable by the server only."""
    store = instance.spec.backup.objectStore
    if store is None:
        return []
    keys = store.credentials
    items = [
        {"key": keys.accessKeyIdKey, "path": ACCESS_KEY_FILE},
        {"key": keys.secretAccessKeyKey, "path": SECRET_KEY_FILE},
    ]
    listed = [{"name": KEYS_VOLUME, "secret": {"secretName": keys.secretName, "items": items, "defaultMode": 0o440}}]
    if store.caBundle is not None:
        ca = {"secretName": store.caBundle.name, "items": [{"key": store.caBundle.key, "path": CA_FILE}]}
        listed.append({"name": CA_VOLUME, "secret": {**ca, "defaultMode": 0o444}})
    return listed


def mounts(instance: Instance) -> list[dict[str, Any]]:
    """Where `volumes` appear in the database container."""
    where = {KEYS_VOLUME: KEYS_DIR, CA_VOLUME: CA_DIR}
    return [{"name": v["name"], "mountPath": where[v["name"]], "readOnly": True} for v in volumes(instance)]


def secret_references(instance: Instance) -> list[tuple[str, str, list[str]]]:
    """(field, Secret name, keys it must have) for each Secret the object store names."""
    store = instance.spec.backup.objectStore
    if store is None:
        return []
    keys = store.credentials
    refs = [
        (
            "spec.backup.objectStore.credentials.secretName",
            keys.secretName,
            [keys.accessKeyIdKey, keys.secretAccessKeyKey],
        )
    ]
    if store.caBundle is not None:
        refs.append(("spec.backup.objectStore.caBundle.name", store.caBundle.name, [store.caBundle.key]))
    return refs

"""Each server's role, readiness and replication lag, for `status.servers` and the metrics.

Only the primary knows how far every standby got (`pg_stat_replication`), so the act layer reads
it there with `psql` through `pods/exec`, as failover reads positions, and hands the answer to the
decision as `Snapshot.replication`. It is read at most once a period per SampleDB with standbys
(`Settings.replication_probe_seconds`, 30 s by default, 0 never; a pass in between reuses the
last answer, see `act.reconciler`), and never with one server unless it archives: the same exec
then reads `pg_stat_archiver` too (`reconcile/archiving.py`). The status changes, and so is
written, only when a role, a readiness, a replication state or a lag changes: an idle database
costs one exec per period and no write. At scale the period is the knob: 1,000 SampleDBs with
standbys cost about 33 execs a second at 30 s.

The lag is the primary's current WAL position minus what the standby has replayed, in bytes:
what a read on that standby would not see yet, and, with asynchronous replication, an upper
bound of what a failover to it would lose. A standby missing from `pg_stat_replication` is
reported `NotStreaming` (cloning, waiting for the primary, or cut off) with no lag.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sampledb_operator.reconcile import archiving
from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.reconcile.recovery import RECOVERY_SQL
from sampledb_operator.reconcile.status import pod_ready
from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.statefulset import SERVER_CONTAINER, server_sql

NOT_STREAMING = "NotStreaming"
LAG_SQL = (
    "select application_name, state, sync_state,"
    " coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint::text, '')"
    " from pg_stat_replication where not pg_is_in_recovery()"
)


@dataclass(frozen=True)
class Standby:
    """One row of the primary's `pg_stat_replication`."""

    state: str  # streaming, catchup, startup, backup, stopping
    sync_state: str  # async, potential, sync, quorum
    lag_bytes: int | None  # None until the standby reports a replay position


def period(instance: Instance) -> float | None:
    """Seconds between two reads of the primary; None: never read (one server and no archiving, or reads off)."""
    seconds = instance.settings.replication_probe_seconds
    return float(seconds) if seconds and (instance.has_standbys or instance.archives) else None


def primary_probe(instance: Instance, pods: Iterable[dict[str, Any]]) -> Action | None:
    """The read of the primary's `pg_stat_replication` (and `pg_stat_archiver`, the point it recovered to).

    None when there is nothing to read (see `period`), or no settled and ready primary.
    """
    if period(instance) is None or instance.target_primary is not None:
        return None
    primary = instance.serving_primary
    if not any(p["metadata"]["name"] == primary and pod_ready(p) for p in pods):
        return None
    queries = [LAG_SQL, *([archiving.ARCHIVE_SQL] if instance.archives else [])]
    queries += [RECOVERY_SQL] if instance.spec.recovery is not None else []
    body = {"container": SERVER_CONTAINER, "command": server_sql(*queries)}
    return Action(Verb.EXEC, "Pod", primary, "ReadPrimary", body)


def parse(answer: str) -> dict[str, Standby]:
    """The primary's answer to LAG_SQL by standby name (`application_name` is the Pod's name)."""
    standbys = {}
    for line in answer.splitlines():
        fields = line.split("|")
        if len(fields) != 4 or not fields[0]:
            continue
        lag = int(fields[3]) if fields[3].lstrip("-").isdigit() else None
        standbys[fields[0]] = Standby(fields[1], fields[2], max(lag, 0) if lag is not None else None)
    return standbys


def servers(
    instance: Instance, pods: Iterable[dict[str, Any]], answer: str | None, previous: list[dict[str, Any]] | None
) -> list[dict[str, Any]] | None:
    """`status.servers`: every database Pod by ordinal; None with one server (the instance's status says it all).

    Without an answer (the primary is not ready or did not answer) a standby keeps the replication
    fields last reported, so an unanswered read does not make the status flap.
    """
    if not instance.has_standbys:
        return None
    known = {s["name"]: s for s in previous or []}
    standbys = parse(answer) if answer is not None else None
    listed = []
    for pod in sorted(pods, key=lambda p: instance.ordinal(p["metadata"]["name"])):
        name = pod["metadata"]["name"]
        server: dict[str, Any] = {"name": name, "ready": pod_ready(pod)}
        if name == instance.primary:
            server["role"] = "Primary"
        else:
            server.update(role="Replica", **_replication(name, standbys, known.get(name) or {}))
        listed.append(server)
    return listed


def _replication(name: str, standbys: dict[str, Standby] | None, before: dict[str, Any]) -> dict[str, Any]:
    if standbys is None:
        return {k: before[k] for k in ("replication", "synchronous", "lagBytes") if k in before}
    standby = standbys.get(name)
    if standby is None:
        return {"replication": NOT_STREAMING}
    found = {"replication": standby.state, "synchronous": standby.sync_state, "lagBytes": standby.lag_bytes}
    return {k: v for k, v in found.items() if v is not None}


def standby_metrics(listed: list[dict[str, Any]] | None) -> dict[str, tuple[bool, int | None]]:
    """Each replica of `status.servers` as (streaming, lag in bytes), for the metrics."""
    return {
        s["name"]: (s.get("replication") == "streaming", s.get("lagBytes"))
        for s in listed or []
        if s["role"] == "Replica"
    }

"""Prometheus metrics of the operator (served on /metrics by `prometheus_client`)."""

from __future__ import annotations

import contextlib
import threading

from prometheus_client import Counter, Gauge, Histogram

RECONCILES = Counter("sampledb_reconcile_total", "Reconcile passes, by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "sampledb_reconcile_duration_seconds",
    "Duration of one reconcile pass.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WRITES = Counter("sampledb_api_writes_total", "Write requests sent to the API server by reconciles.")
PRIMARY_CHANGES = Counter(
    "sampledb_primary_changes_total",
    "Primaries promoted in place of another: by failover (FailedOver) or switchover (SwitchedOver).",
    ["reason"],
)
PRIMARY_CHANGE_EVENTS = ("FailedOver", "SwitchedOver")
INSTANCES = Gauge("sampledb_instances", "Managed SampleDB instances, by phase.", ["phase"])

_phases: dict[str, str] = {}
_lock = threading.Lock()


def record_phase(key: str, phase: str | None) -> None:
    """Remember an instance's phase (None: it is gone) and move it between the per-phase gauges."""
    with _lock:
        old = _phases.pop(key, None)
        if old is not None:
            INSTANCES.labels(old).dec()
        if phase is not None:
            _phases[key] = phase
            INSTANCES.labels(phase).inc()


# Labelled by the SampleDB's own namespace and name (the chart's ServiceMonitor honours them).
REPLICATION_LAG = Gauge(
    "sampledb_replication_lag_bytes",
    "WAL a standby has not replayed yet, in bytes, as its primary last reported it.",
    ["namespace", "name", "pod"],
)
REPLICATION_STREAMING = Gauge(
    "sampledb_replication_streaming",
    "1 when the primary lists the standby as streaming, else 0 (cloning, catching up, cut off).",
    ["namespace", "name", "pod"],
)
_standbys: dict[tuple[str, str], set[str]] = {}


def record_replication(key: tuple[str, str], standbys: dict[str, tuple[bool, int | None]]) -> None:
    """Set each standby's (streaming, lag) for one SampleDB; standbys no longer there (all, with {}) are dropped."""
    with _lock:
        for pod in _standbys.pop(key, set()) - standbys.keys():
            REPLICATION_STREAMING.remove(*key, pod)
            _remove_lag(key, pod)
        for pod, (streaming, lag) in standbys.items():
            REPLICATION_STREAMING.labels(*key, pod).set(1 if streaming else 0)
            if lag is None:
                _remove_lag(key, pod)
            else:
                REPLICATION_LAG.labels(*key, pod).set(lag)
        if standbys:
            _standbys[key] = set(standbys)


def _remove_lag(key: tuple[str, str], pod: str) -> None:
    with contextlib.suppress(KeyError):  # it never had a lag
        REPLICATION_LAG.remove(*key, pod)


WAL_ARCHIVE_FAILING = Gauge(
    "sampledb_wal_archive_failing",
    "1 while the primary does not archive its WAL (spec.backup.objectStore): its last attempt failed, or archiving "
    "is off (no pgbackrest in the image); else 0.",
    ["namespace", "name"],
)
WAL_ARCHIVE_PENDING = Gauge(
    "sampledb_wal_archive_pending_segments",
    "WAL segments complete on the primary and not yet archived.",
    ["namespace", "name"],
)
WAL_LAST_ARCHIVED = Gauge(
    "sampledb_wal_last_archived_timestamp_seconds",
    "When the primary last archived a WAL segment (Unix time): now minus this bounds the writes at risk.",
    ["namespace", "name"],
)
_ARCHIVE_GAUGES = (WAL_ARCHIVE_FAILING, WAL_ARCHIVE_PENDING, WAL_LAST_ARCHIVED)


def record_archiving(key: tuple[str, str], failing: bool, pending: int, last_archived: float | None) -> None:
    """Set one SampleDB's archiving gauges (the last archive time only once there is one)."""
    WAL_ARCHIVE_FAILING.labels(*key).set(1 if failing else 0)
    WAL_ARCHIVE_PENDING.labels(*key).set(pending)
    if last_archived is not None:
        WAL_LAST_ARCHIVED.labels(*key).set(last_archived)


def forget_archiving(key: tuple[str, str]) -> None:
    """Drop one SampleDB's archiving gauges (gone, or no longer archiving)."""
    for gauge in _ARCHIVE_GAUGES:
        with contextlib.suppress(KeyError):
            gauge.remove(*key)


BASE_BACKUP_LAST = Gauge(
    "sampledb_base_backup_last_completed_timestamp_seconds",
    "When the newest succeeded physical base backup of a SampleDB ended (Unix time): now minus this is how much "
    "WAL a recovery to the latest point replays.",
    ["namespace", "name"],
)


def record_base_backup(key: tuple[str, str], completed: float | None) -> None:
    """Set one SampleDB's newest base backup time; drop it when it has none (or is gone)."""
    if completed is not None:
        BASE_BACKUP_LAST.labels(*key).set(completed)
    else:
        with contextlib.suppress(KeyError):
            BASE_BACKUP_LAST.remove(*key)

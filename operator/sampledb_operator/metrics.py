"""Prometheus metrics of the operator (served on /metrics by `prometheus_client`)."""

from __future__ import annotations

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


REPLICATION_LAG = Gauge(
    "sampledb_replication_lag_bytes",
    "WAL a standby has not replayed yet, in bytes, as its primary last reported it (every 30 s).",
    ["namespace", "name", "pod"],
)
_lagging: dict[tuple[str, str], set[str]] = {}


def record_lag(key: tuple[str, str], lags: dict[str, int]) -> None:
    """Set the standbys' lag of one SampleDB; standbys no longer reported (or every one, with {}) are dropped."""
    with _lock:
        for pod in _lagging.pop(key, set()) - lags.keys():
            REPLICATION_LAG.remove(*key, pod)
        for pod, lag in lags.items():
            REPLICATION_LAG.labels(*key, pod).set(lag)
        if lags:
            _lagging[key] = set(lags)

"""Leader election with a coordination.k8s.io Lease, so that of two replicas only one acts.

As in client-go, a candidate judges the holder's Lease expired by how long *it* has seen the
Lease unchanged (a local monotonic clock), never by comparing timestamps written by another
machine, so clock skew between nodes cannot produce two leaders. Every write is a JSON patch that
tests the resourceVersion first: of two candidates racing for an expired Lease, one wins.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sampledb_operator.k8s.api import ApiError, KubeApi

logger = logging.getLogger(__name__)


def micro_time() -> str:
    """A Lease's MicroTime: RFC 3339 with microseconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _Seen:
    resource_version: str
    since: float  # monotonic time when this version was first seen


class LeaderElector:
    """Acquires and renews one Lease on behalf of `identity`."""

    def __init__(
        self,
        api: KubeApi,
        *,
        name: str,
        namespace: str,
        identity: str,
        lease_seconds: int = 15,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._seen: _Seen | None = None

    def try_acquire_or_renew(self) -> bool:
        """One attempt; True when this candidate holds the Lease afterwards."""
        lease = self.api.get("Lease", self.namespace, self.name)
        if lease is None:
            return self._create()
        spec = lease.get("spec") or {}
        if spec.get("holderIdentity") == self.identity:
            return self._write(lease, {**spec, "renewTime": micro_time()})
        if not self._expired(lease):
            return False
        logger.info("lease %s/%s of %s expired; taking over", self.namespace, self.name, spec.get("holderIdentity"))
        now = micro_time()
        taken = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.lease_seconds,
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": int(spec.get("leaseTransitions") or 0) + 1,
        }
        return self._write(lease, taken)

    def _expired(self, lease: dict[str, Any]) -> bool:
        version = lease["metadata"]["resourceVersion"]
        if not (lease.get("spec") or {}).get("holderIdentity"):
            return True  # released
        if self._seen is None or self._seen.resource_version != version:
            self._seen = _Seen(version, self.clock())
            return False
        duration = int(lease["spec"].get("leaseDurationSeconds") or self.lease_seconds)
        return self.clock() - self._seen.since > duration

    def _create(self) -> bool:
        now = micro_time()
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self.lease_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            self.api.create(lease)
        except ApiError as err:
            if err.conflict:
                return False
            raise
        return True

    def _write(self, lease: dict[str, Any], spec: dict[str, Any]) -> bool:
        ops = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": lease["metadata"]["resourceVersion"]},
            {"op": "replace", "path": "/spec", "value": spec},
        ]
        try:
            self.api.json_patch("Lease", self.namespace, self.name, ops)
        except ApiError as err:
            if err.conflict or err.status == 422:  # a failed `test`: someone else wrote first
                return False
            raise
        return True

    def release(self) -> None:
        """Give the Lease up on shutdown so a standby takes over at once."""
        lease = self.api.get("Lease", self.namespace, self.name)
        if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
            self._write(lease, {**lease["spec"], "holderIdentity": None})


def hold_leadership(elector: LeaderElector, *, on_lost: Callable[[], None], stop: threading.Event) -> None:
    """Block until leader, then renew in a daemon thread; `on_lost` runs if renewals fail too long."""
    retry = max(1.0, elector.lease_seconds / 3)
    while not elector.try_acquire_or_renew():
        logger.info("waiting to become leader (lease %s/%s)", elector.namespace, elector.name)
        if stop.wait(retry):
            return
    logger.info("became leader as %s", elector.identity)

    def renew() -> None:
        last_ok = time.monotonic()
        while not stop.wait(retry):
            held: bool | None = None
            try:
                held = elector.try_acquire_or_renew()
            except Exception:  # the API server may be briefly unreachable: tolerate it for a lease
                logger.warning("lease renewal failed", exc_info=True)
            if held:
                last_ok = time.monotonic()
                continue
            if held is False or time.monotonic() - last_ok > elector.lease_seconds:
                logger.error("lost leadership of lease %s/%s; stopping", elector.namespace, elector.name)
                on_lost()
                return

    threading.Thread(target=renew, name="lease-renewal", daemon=True).start()

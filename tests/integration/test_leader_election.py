"""Leader election on a real API server: one holder, takeover only after the Lease expires."""

from __future__ import annotations

from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.k8s.leader import LeaderElector


class FakeClock:
    """A monotonic clock the test advances, so expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def electors(admin: KubeApi, namespace: str, clock: FakeClock) -> tuple[LeaderElector, LeaderElector]:
    def make(identity: str) -> LeaderElector:
        return LeaderElector(admin, name="lock", namespace=namespace, identity=identity, lease_seconds=15, clock=clock)

    return make("replica-a"), make("replica-b")


def holder(admin: KubeApi, namespace: str) -> str | None:
    lease = admin.get("Lease", namespace, "lock")
    assert lease is not None
    return lease["spec"].get("holderIdentity")


def test_only_one_replica_leads_until_the_lease_expires(admin: KubeApi, namespace: str) -> None:
    clock = FakeClock()
    a, b = electors(admin, namespace, clock)
    assert a.try_acquire_or_renew() is True
    assert b.try_acquire_or_renew() is False  # first sight of a's Lease starts b's expiry clock
    clock.now += 10
    assert a.try_acquire_or_renew() is True  # a renews: the resourceVersion changes
    clock.now += 10
    assert b.try_acquire_or_renew() is False  # 20 s since b first looked, but a renewed meanwhile
    clock.now += 16  # a stops renewing (crashed); b has now seen the same Lease for 16 s > 15 s
    assert b.try_acquire_or_renew() is True
    assert holder(admin, namespace) == "replica-b"
    assert a.try_acquire_or_renew() is False  # the old leader does not get it back
    lease = admin.get("Lease", namespace, "lock")
    assert lease is not None
    assert lease["spec"]["leaseTransitions"] == 1


def test_release_hands_over_at_once(admin: KubeApi, namespace: str) -> None:
    clock = FakeClock()
    a, b = electors(admin, namespace, clock)
    assert a.try_acquire_or_renew() is True
    a.release()
    assert holder(admin, namespace) is None
    assert b.try_acquire_or_renew() is True

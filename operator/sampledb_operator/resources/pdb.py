"""The PodDisruptionBudgets: the primary is never evicted voluntarily; standbys one at a time.

A node drain that reaches the primary waits until the user deletes the Pod (or, once switchover
exists, issue #16, until the primary has moved), instead of silently stopping the writes. With one
server the budget covers every database Pod, as it always did. With standbys it covers the primary
by its Pod name, and a second budget lets a drain take the standbys one at a time.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources.instance import Instance
from sampledb_operator.resources.services import primary_selector, standbys_selector


def pod_disruption_budget(instance: Instance) -> dict[str, Any]:
    """MinAvailable 1 over the primary (every database Pod, with one server)."""
    selector = primary_selector(instance) if instance.has_standbys else instance.selector_labels()
    return _budget(instance, instance.pdb, {"minAvailable": 1}, selector)


def standbys_budget(instance: Instance) -> dict[str, Any] | None:
    """All standbys but one must stay available; none with one server.

    Not `maxUnavailable: 1`: that counts against the StatefulSet's replicas, the primary included,
    so the primary's absence from this budget would already use up the one disruption (seen on
    the real node: 0 allowed with one healthy standby).
    """
    if not instance.has_standbys:
        return None
    limit = {"minAvailable": instance.spec.instances - 2}
    return _budget(instance, instance.standbys_pdb, limit, standbys_selector(instance))


def _budget(instance: Instance, name: str, limit: dict[str, int], selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": instance.metadata(name, "database"),
        "spec": {**limit, "selector": {"matchLabels": selector}},
    }

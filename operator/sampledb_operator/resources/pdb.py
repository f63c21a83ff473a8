"""The PodDisruptionBudget: a single server is never evicted voluntarily; of several, one at a time.

With one server, a node drain waits until the user deletes the Pod or scales down knowingly,
instead of silently taking the database offline. With standbys, one Pod may go at a time.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources.instance import Instance


def pod_disruption_budget(instance: Instance) -> dict[str, Any]:
    """MinAvailable 1 over one server; maxUnavailable 1 over several."""
    limit = {"minAvailable": 1} if instance.spec.instances == 1 else {"maxUnavailable": 1}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": instance.metadata(instance.pdb, "database"),
        "spec": {**limit, "selector": {"matchLabels": instance.selector_labels()}},
    }

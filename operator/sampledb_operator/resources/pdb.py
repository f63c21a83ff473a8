"""The PodDisruptionBudget: a single-instance database is never evicted voluntarily.

A node drain then waits until the user deletes the Pod or scales down knowingly, instead of
silently taking the database offline.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources.instance import Instance


def pod_disruption_budget(instance: Instance) -> dict[str, Any]:
    """MinAvailable 1 over the instance's database Pods."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": instance.metadata(instance.pdb, "database"),
        "spec": {"minAvailable": 1, "selector": {"matchLabels": instance.selector_labels()}},
    }

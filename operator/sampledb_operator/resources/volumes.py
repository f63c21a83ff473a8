"""PersistentVolumeClaims: the data volume template and the backup/snapshot volumes share one shape."""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources.instance import Instance


def claim_spec(instance: Instance) -> dict[str, Any]:
    """ReadWriteOnce, as large as spec.storage.size, in spec.storage.storageClassName (or the default)."""
    storage = instance.spec.storage
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": storage.size}}}
    if storage.storageClassName:
        spec["storageClassName"] = storage.storageClassName
    return spec


def claim(instance: Instance, name: str, component: str, *, owned: bool) -> dict[str, Any]:
    """A standalone claim; `owned=False` keeps it after the SampleDB is deleted."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": instance.metadata(name, component, owned=owned),
        "spec": claim_spec(instance),
    }

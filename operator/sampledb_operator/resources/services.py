"""The headless Service (stable Pod DNS for the StatefulSet) and the Services clients connect to.

- `<name>` (read-write): the primary only, by its Pod name (`status.currentPrimary`), so that a
  failover moves it with one write and a standby can never be behind it.
- `<name>-ro`: the standbys only, by the role label the operator puts on each Pod.
- `<name>-r`: every ready server.
The last two exist only while spec.instances > 1 (with one server, `<name>` is all there is).
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources.instance import POSTGRES_PORT, ROLE_LABEL, Instance, Role

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"  # set by the StatefulSet controller
_PORTS = [{"name": "postgres", "port": POSTGRES_PORT, "targetPort": "postgres", "protocol": "TCP"}]


def headless_service(instance: Instance) -> dict[str, Any]:
    """Governs the StatefulSet; publishes not-ready Pods so a restarting server keeps its DNS name."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": instance.metadata(instance.headless_service, "database"),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": instance.selector_labels(),
            "ports": _PORTS,
        },
    }


def primary_selector(instance: Instance) -> dict[str, str]:
    """The primary's Pod, by the name the StatefulSet controller labels it with (no label of ours needed)."""
    return {**instance.selector_labels(), POD_NAME_LABEL: instance.primary}


def standbys_selector(instance: Instance) -> dict[str, str]:
    """The standbys, by the role label the operator sets (`reconcile/replicas.py`)."""
    return {**instance.selector_labels(), ROLE_LABEL: Role.REPLICA.value}


def client_service(instance: Instance) -> dict[str, Any]:
    """What applications connect to for writes: the primary's Pod, once it is ready."""
    return _service(instance, instance.client_service, primary_selector(instance))


def read_only_service(instance: Instance) -> dict[str, Any] | None:
    """The ready standbys; none with one server."""
    return (
        _service(instance, instance.read_only_service, standbys_selector(instance)) if instance.has_standbys else None
    )


def any_service(instance: Instance) -> dict[str, Any] | None:
    """Every ready server, primary and standbys (a Pod still cloning is not ready); none with one server."""
    return _service(instance, instance.any_service, instance.selector_labels()) if instance.has_standbys else None


def _service(instance: Instance, name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": instance.metadata(name, "database"),
        "spec": {"type": "ClusterIP", "selector": selector, "ports": _PORTS},
    }

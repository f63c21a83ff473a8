"""The headless Service (stable Pod DNS for the StatefulSet) and the client Service."""

from __future__ import annotations

from typing import Any

from sampledb_operator.resources.instance import POSTGRES_PORT, Instance

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


def client_service(instance: Instance) -> dict[str, Any]:
    """What applications connect to: only ready database Pods behind it."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": instance.metadata(instance.client_service, "database"),
        "spec": {"type": "ClusterIP", "selector": instance.selector_labels(), "ports": _PORTS},
    }

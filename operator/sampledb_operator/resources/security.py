"""Security contexts that satisfy the Pod Security Standard "restricted" for every Pod we create."""

from __future__ import annotations

from typing import Any

# The uid/gid of the `postgres` user in the official images; initdb needs the uid to exist.
POSTGRES_UID = 999


def pod_security_context() -> dict[str, Any]:
    """Non-root, with the volume group set so the data directory is writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": POSTGRES_UID,
        "runAsGroup": POSTGRES_UID,
        "fsGroup": POSTGRES_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """No privilege escalation, no capabilities, read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }

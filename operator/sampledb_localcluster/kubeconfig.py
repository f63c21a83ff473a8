"""Write kubeconfig files for the local cluster's users.

The certificates are embedded (``*-data`` fields) rather than referenced by path so a kubeconfig
stays usable when copied elsewhere, and every client in play (kubectl, helm, the ``kubernetes``
Python client, pykube, the Go components) reads the same file without extra setup.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from sampledb_localcluster.layout import CertKeyPair


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_kubeconfig(path: Path, server: str, ca_cert: Path, client: CertKeyPair, user: str) -> Path:
    """Write a single-context kubeconfig that authenticates with a client certificate.

    Args:
        path: Where to write (readable by its owner only: it holds a private key).
        server: The API server URL.
        ca_cert: The CA that signed the API server's certificate.
        client: The client certificate and key.
        user: Name of the user entry and the context.

    Returns:
        ``path``.
    """
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sampledb-local",
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(client.cert),
                    "client-key-data": _b64(client.key),
                },
            }
        ],
        "contexts": [{"name": user, "context": {"cluster": "sampledb-local", "user": user}}],
        "current-context": user,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path

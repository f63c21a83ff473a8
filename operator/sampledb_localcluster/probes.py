"""Minimal HTTP(S) calls for health checks and cluster bootstrap.

The harness talks to its components before anyone else may, and only needs a handful of
requests (health endpoints, creating Node objects), so it uses ``http.client`` directly: no
dependency on a Kubernetes client library and, unlike ``urllib``/``requests``, no proxy settings
from the environment can send loopback traffic elsewhere.
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sampledb_localcluster.layout import CertKeyPair

Probe = Callable[[], "ProbeResult"]
"""A health check: called repeatedly until it reports ``ok``."""


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one health check.

    Attributes:
        ok: The component is healthy.
        detail: Why not, e.g. ``HTTP 500: [-]poststarthook/rbac/bootstrap-roles failed``.
    """

    ok: bool
    detail: str = ""


def client_tls_context(ca_cert: CertKeyPair | None = None, client: CertKeyPair | None = None) -> ssl.SSLContext:
    """Build a TLS context for talking to a component.

    Args:
        ca_cert: Verify the server against this CA (its ``cert`` path); ``None`` skips verification,
            which is fine for the health ports of components that serve self-signed certificates.
        client: Present this client certificate.
    """
    if ca_cert is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cafile=str(ca_cert.cert))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return context


def request(
    method: str,
    url: str,
    context: ssl.SSLContext | None = None,
    body: Any = None,
    timeout: float = 5.0,
) -> tuple[int, str]:
    """Send one request and return ``(status, body text)``.

    Args:
        method: HTTP method.
        url: Absolute ``http://`` or ``https://`` URL.
        context: TLS context for ``https`` URLs.
        body: JSON-serialisable request body, if any.
        timeout: Socket timeout in seconds.

    Raises:
        OSError: The connection failed.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    headers = {"Accept": "application/json"}
    payload = None
    if body is not None:
        payload = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, path or "/", body=payload, headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    finally:
        connection.close()


def http_probe(url: str, context: ssl.SSLContext | None = None, expect: str | None = None) -> Probe:
    """Build a probe that passes when ``GET url`` answers 200 (and contains ``expect``, if given).

    Args:
        url: The health endpoint.
        context: TLS context for ``https`` URLs.
        expect: Text the body must contain, e.g. ``"true"`` for etcd's ``/health``.
    """

    def probe() -> ProbeResult:
        try:
            status, text = request("GET", url, context, timeout=2.0)
        except (OSError, http.client.HTTPException) as error:
            return ProbeResult(False, f"GET {url}: {error}")
        if status != 200 or (expect is not None and expect not in text):
            failing = [line for line in text.splitlines() if line.startswith("[-]")]
            return ProbeResult(False, f"GET {url}: HTTP {status}: {' '.join(failing) or text[:300]}")
        return ProbeResult(True)

    return probe

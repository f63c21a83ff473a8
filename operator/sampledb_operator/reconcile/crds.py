"""Keep this release's CRDs installed as generated, wired to the conversion webhook.

Helm installs `crds/` once and never upgrades them, so with `SAMPLEDB_MANAGE_CRDS=true` (the Helm
chart's default) the operator brings the existing CRDs up to date at start-up and points their
conversion webhook at its Service with the current CA bundle, again whenever the CA file changes
(certificate rotation). Under OLM, which manages CRDs and webhook certificates itself, it stays off.
The operator only patches CRDs that exist (by name), so it needs no permission to create CRDs.
"""

from __future__ import annotations

import base64
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sampledb_operator.api import crdgen
from sampledb_operator.conversion.migration import migrate_storage
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.settings import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookEndpoint:
    """Where the API server finds the conversion webhook, and the CA that signed its certificate."""

    namespace: str
    name: str
    ca_file: Path
    port: int = 443

    @classmethod
    def parse(cls, service: str, ca_file: Path) -> WebhookEndpoint:
        """From `namespace/name` as given in SAMPLEDB_WEBHOOK_SERVICE."""
        namespace, _, name = service.partition("/")
        if not namespace or not name:
            raise ValueError(f"SAMPLEDB_WEBHOOK_SERVICE must be <namespace>/<name>, not {service!r}")
        return cls(namespace, name, ca_file)

    def client_config(self) -> dict[str, Any]:
        """The CRD's conversion clientConfig for this endpoint (`url: None` removes a URL in a merge patch)."""
        ca_bundle = base64.b64encode(self.ca_file.read_bytes()).decode()
        service = {"namespace": self.namespace, "name": self.name, "path": "/convert", "port": self.port}
        return {"service": service, "caBundle": ca_bundle, "url": None}


def desired_spec(crd: dict[str, Any], webhook: WebhookEndpoint | None) -> dict[str, Any]:
    """The spec to hold: as generated, with the webhook wired when one is given."""
    spec: dict[str, Any] = crd["spec"]
    if webhook is not None and spec.get("conversion", {}).get("strategy") == "Webhook":
        conversion = {
            **spec["conversion"],
            "webhook": {**spec["conversion"]["webhook"], "clientConfig": webhook.client_config()},
        }
        spec = {**spec, "conversion": conversion}
    return spec


def _differs(desired: Any, current: Any) -> bool:
    """True when `current` lacks or changes something `desired` says (server defaults are ignored)."""
    if isinstance(desired, dict) and isinstance(current, dict):
        return any(_differs(value, current.get(key)) for key, value in desired.items())
    if isinstance(desired, list) and isinstance(current, list):
        return len(desired) != len(current) or any(_differs(d, c) for d, c in zip(desired, current, strict=True))
    return bool(desired != current)


def ensure_crds(api: KubeApi, webhook: WebhookEndpoint | None) -> list[str]:
    """Patch every CRD of this release that is out of date; returns the names patched."""
    patched = []
    for crd in crdgen.all_crds().values():
        name = crd["metadata"]["name"]
        current = api.get("CustomResourceDefinition", None, name)
        if current is None:
            logger.error("CRD %s is not installed: install it (helm install does) before the operator", name)
            continue
        spec = desired_spec(crd, webhook)
        if not _differs(spec, current["spec"]):
            continue
        api.merge_patch("CustomResourceDefinition", None, name, {"spec": spec})
        logger.info("CRD %s brought up to date (this release's schema and webhook wiring)", name)
        patched.append(name)
    return patched


def webhook_endpoint(settings: Settings) -> WebhookEndpoint | None:
    """The webhook wiring the settings ask for, if any."""
    if not (settings.webhook_service and settings.webhook_ca_file):
        return None
    return WebhookEndpoint.parse(settings.webhook_service, Path(settings.webhook_ca_file))


def maintain_crds(api: KubeApi, settings: Settings, *, interval: float = 30) -> None:
    """Background loop: CRDs up to date (when managed), storage migration once, CA rotations followed.

    Failures are logged and retried; reconciles never wait for this.
    """
    migrated = False
    while True:
        try:
            if settings.manage_crds:
                ensure_crds(api, webhook_endpoint(settings))
            if not migrated:
                migrate_storage(api)
                migrated = True
        except Exception:
            logger.exception("CRD maintenance failed; retrying in %.0f s", interval)
        if migrated and not settings.manage_crds:
            return
        time.sleep(interval)

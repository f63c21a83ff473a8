"""The operator keeps its CRDs current and wired to the webhook Service (SAMPLEDB_MANAGE_CRDS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sampledb_localcluster import pki
from sampledb_operator.api import crdgen
from sampledb_operator.conversion.migration import CRD_NAME
from sampledb_operator.k8s.api import KubeApi, load_client
from sampledb_operator.reconcile.crds import WebhookEndpoint, ensure_crds
from tests.conftest import external_kubeconfig
from tests.integration.conftest import apply, wired_crd
from tests.webhook_process import WebhookReplicas


@pytest.fixture
def operator_api(request: pytest.FixtureRequest, operator_rbac: None) -> KubeApi:
    if external_kubeconfig(request.config):
        pytest.skip("needs the local cluster's operator identity")
    return KubeApi(load_client(str(request.getfixturevalue("local_cluster").operator_kubeconfig)))


@pytest.fixture
def restore_test_wiring(admin: KubeApi, crds: list[str], conversion_webhook: WebhookReplicas | None) -> Iterator[None]:
    """Put the CRD back on the test webhook afterwards: the rest of the session converts through it."""
    yield
    apply(admin, wired_crd(crdgen.sampledb_crd(), conversion_webhook))


@pytest.mark.usefixtures("restore_test_wiring")
def test_stale_crd_is_updated_and_wired_to_the_service(
    admin: KubeApi, operator_api: KubeApi, conversion_webhook: WebhookReplicas | None, tmp_path: Path
) -> None:
    # An older release's CRD: one printer column fewer, webhook reached by URL.
    stale = crdgen.sampledb_crd()
    for version in stale["spec"]["versions"]:
        version["additionalPrinterColumns"] = version["additionalPrinterColumns"][:2]
    apply(admin, wired_crd(stale, conversion_webhook))

    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(pki.create_ca(tmp_path / "ca1").cert.read_bytes())
    endpoint = WebhookEndpoint.parse("sampledb-system/sampledb-webhook", ca_file)
    assert ensure_crds(operator_api, endpoint) == [CRD_NAME]  # with the operator's own RBAC

    crd = admin.get("CustomResourceDefinition", None, CRD_NAME)
    assert crd is not None
    client_config = crd["spec"]["conversion"]["webhook"]["clientConfig"]
    assert "url" not in client_config
    assert client_config["service"] == {
        "namespace": "sampledb-system",
        "name": "sampledb-webhook",
        "path": "/convert",
        "port": 443,
    }
    assert client_config["caBundle"] == endpoint.client_config()["caBundle"]
    columns = [c["name"] for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    current = [c["name"] for c in crdgen.sampledb_crd()["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert columns == current and len(current) > 2  # the stale CRD had two
    assert ensure_crds(operator_api, endpoint) == []  # nothing left to change: no write

    ca_file.write_bytes(pki.create_ca(tmp_path / "ca2").cert.read_bytes())  # rotation
    assert ensure_crds(operator_api, endpoint) == [CRD_NAME]


def test_invalid_webhook_service_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="SAMPLEDB_WEBHOOK_SERVICE must be <namespace>/<name>"):
        WebhookEndpoint.parse("just-a-name", Path("/tls/ca.crt"))

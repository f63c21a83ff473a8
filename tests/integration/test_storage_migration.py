"""Storage-version migration on a real API server, checked against what etcd actually holds."""

from __future__ import annotations

import base64
import copy
import json
import urllib.request
from typing import Any

import pytest

from sampledb_operator.api import crdgen
from sampledb_operator.api.v1 import SampleDBSpec
from sampledb_operator.conversion.migration import CRD_NAME, migrate_storage, stored_versions
from sampledb_operator.k8s.api import KubeApi, Resource, load_client
from tests.conftest import external_kubeconfig
from tests.integration.conftest import apply, wait_for, wired_crd
from tests.webhook_process import WebhookReplicas

V1BETA1 = Resource("/apis/sampledb.io/v1beta1", "sampledbs")


def crd_storing(version: str, hooks: WebhookReplicas | None) -> dict[str, Any]:
    """The generated CRD, as an older release would have had it: storing `version`."""
    crd = copy.deepcopy(crdgen.sampledb_crd())
    for entry in crd["spec"]["versions"]:
        entry["storage"] = entry["name"] == version
    return wired_crd(crd, hooks)


def etcd_api_version(etcd_url: str, namespace: str, name: str) -> str:
    """The apiVersion of the object as stored in etcd (custom resources are stored as JSON)."""
    key = base64.b64encode(f"/registry/sampledb.io/sampledbs/{namespace}/{name}".encode()).decode()
    request = urllib.request.Request(f"{etcd_url}/v3/kv/range", data=json.dumps({"key": key}).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        kvs = json.loads(response.read())["kvs"]
    return str(json.loads(base64.b64decode(kvs[0]["value"]))["apiVersion"])


@pytest.fixture
def etcd_url(request: pytest.FixtureRequest) -> str:
    if external_kubeconfig(request.config):
        pytest.skip("reads etcd directly, which only the local cluster exposes")
    state = request.getfixturevalue("local_cluster").read_state()
    return f"http://127.0.0.1:{state['ports']['etcd']}"


def test_migration_rewrites_every_object_and_records_v1_only(
    request: pytest.FixtureRequest,
    admin: KubeApi,
    crds: list[str],
    operator_rbac: None,
    conversion_webhook: WebhookReplicas | None,
    namespace: str,
    etcd_url: str,
) -> None:
    # An older release stored v1beta1: objects written then are v1beta1 in etcd.
    apply(admin, crd_storing("v1beta1", conversion_webhook))
    wait_for(lambda: "v1beta1" in stored_versions(admin), what="v1beta1 recorded as a stored version")

    def create(name: str) -> None:
        body = {
            "apiVersion": "sampledb.io/v1beta1",
            "kind": "SampleDB",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"version": 16, "deletionPolicy": "Delete"},
        }
        admin._request("POST", V1BETA1.path(namespace), body=body)

    # storedVersions may list v1beta1 from an earlier test while the API server still stores v1 for
    # a moment: wait until a new object is stored as v1beta1 (the operator, which writes each new
    # object at once, would otherwise rewrite some in v1 before the switch).
    probes = iter(range(100))

    def stores_v1beta1() -> bool:
        probe = f"probe{next(probes)}"
        create(probe)
        return etcd_api_version(etcd_url, namespace, probe) == "sampledb.io/v1beta1"

    wait_for(stores_v1beta1, what="the API server to store new objects as v1beta1")
    names = [f"db{i}" for i in range(7)]
    for name in names:
        create(name)
    assert {etcd_api_version(etcd_url, namespace, n) for n in names} == {"sampledb.io/v1beta1"}
    before = {n: admin.get("SampleDB", namespace, n)["spec"] for n in names}  # type: ignore[index]

    # The upgrade installs the CRD storing v1; nothing has been rewritten yet.
    apply(admin, crd_storing("v1", conversion_webhook))
    assert set(stored_versions(admin)) == {"v1beta1", "v1"}

    operator_api = KubeApi(load_client(str(request.getfixturevalue("local_cluster").operator_kubeconfig)))
    report = migrate_storage(operator_api)  # with the operator's own RBAC
    assert report.needed
    assert report.rewritten >= len(names)
    assert stored_versions(admin) == ("v1",)
    assert {etcd_api_version(etcd_url, namespace, n) for n in names} == {"sampledb.io/v1"}
    for name in names:
        # Rewriting through v1 applies v1's schema defaults (e.g. spec.database), which reads of a
        # v1beta1-stored object never did: the same meaning, not a loss.
        after = admin.get("SampleDB", namespace, name)["spec"]  # type: ignore[index]
        assert SampleDBSpec.model_validate(after) == SampleDBSpec.model_validate(before[name])
        assert set(before[name]) <= set(after)
        assert admin._request("GET", V1BETA1.path(namespace, name))["spec"]["version"] == 16

    again = migrate_storage(operator_api)  # safe to run twice: nothing left to do
    assert not again.needed
    assert again.rewritten == 0
    assert CRD_NAME in crds

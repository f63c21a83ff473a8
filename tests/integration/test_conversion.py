"""Both API versions on a real API server, converted by the real webhook process."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from typing import Any

import pytest

from sampledb_localcluster.tools import tool_path
from sampledb_operator.conversion.convert import convert
from sampledb_operator.k8s.api import ApiError, KubeApi, Resource
from tests.counter_examples import counter_examples
from tests.integration.conftest import wait_for
from tests.webhook_process import WebhookReplicas

pytestmark = pytest.mark.usefixtures("operator")
V1BETA1 = Resource("/apis/sampledb.io/v1beta1", "sampledbs")


def beta_object(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "sampledb.io/v1beta1",
        "kind": "SampleDB",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def read_v1beta1(admin: KubeApi, namespace: str, name: str | None = None) -> dict[str, Any]:
    return admin._request("GET", V1BETA1.path(namespace, name))


def create_v1beta1(admin: KubeApi, obj: dict[str, Any]) -> dict[str, Any]:
    return admin._request("POST", V1BETA1.path(obj["metadata"]["namespace"]), body=obj)


def test_created_as_v1beta1_read_as_v1_and_back(admin: KubeApi, namespace: str) -> None:
    create_v1beta1(
        admin,
        beta_object(
            "old",
            namespace,
            version=16,
            storageSize="2Gi",
            backupSchedule="@daily",
            backupRetention=3,
        ),
    )
    as_v1 = admin.get("SampleDB", namespace, "old")
    assert as_v1 is not None
    assert as_v1["apiVersion"] == "sampledb.io/v1"
    assert as_v1["spec"]["postgres"]["version"] == 16
    assert as_v1["spec"]["storage"]["size"] == "2Gi"
    assert as_v1["spec"]["backup"]["schedule"] == "@daily"
    assert as_v1["spec"]["backup"]["retention"] == 3
    as_beta = read_v1beta1(admin, namespace, "old")
    assert as_beta["spec"]["version"] == 16
    assert as_beta["spec"]["storageSize"] == "2Gi"
    assert as_beta["spec"]["backupRetention"] == 3


def test_v1_only_fields_survive_a_v1beta1_read_modify_write(admin: KubeApi, namespace: str) -> None:
    spec = {
        "postgres": {"version": 17},
        "storage": {"size": "1Gi"},
        "resources": {"limits": {"memory": "3Gi"}},
        "database": {"name": "shop", "owner": "shopper"},
    }
    admin.create(
        {
            "apiVersion": "sampledb.io/v1",
            "kind": "SampleDB",
            "metadata": {"name": "rich", "namespace": namespace},
            "spec": spec,
        }
    )
    before = admin.get("SampleDB", namespace, "rich")
    assert before is not None
    # An old client reads v1beta1, changes what it knows about, and writes the whole object back
    # (retrying on a conflict, as every client must: the operator writes the object too).
    for _ in range(10):
        old = read_v1beta1(admin, namespace, "rich")
        old["spec"]["backupRetention"] = 9
        old["metadata"].setdefault("labels", {})["edited-by"] = "old-client"
        try:
            admin._request("PUT", V1BETA1.path(namespace, "rich"), body=old)
            break
        except ApiError as err:
            if not err.conflict:
                raise
    else:
        raise AssertionError("the object kept changing for 10 tries")
    after = admin.get("SampleDB", namespace, "rich")
    assert after is not None
    assert after["spec"]["resources"] == before["spec"]["resources"]
    assert after["spec"]["database"] == {"name": "shop", "owner": "shopper"}
    assert after["spec"]["backup"]["retention"] == 9
    assert "conversion.sampledb.io/v1-spec" not in (after["metadata"].get("annotations") or {})


def kubectl_names(kubeconfig: str, resource: str, namespace: str) -> list[str]:
    kubectl = tool_path("kubectl")
    out = subprocess.run(
        [
            str(kubectl),
            f"--kubeconfig={kubeconfig}",
            "get",
            resource,
            "-n",
            namespace,
            "-o",
            "json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return sorted(item["metadata"]["name"] for item in json.loads(out.stdout)["items"])


def test_kubectl_lists_the_same_objects_in_both_versions(admin: KubeApi, namespace: str, kube_config: str) -> None:
    create_v1beta1(admin, beta_object("b1", namespace))
    admin.create(
        {
            "apiVersion": "sampledb.io/v1",
            "kind": "SampleDB",
            "metadata": {"name": "a1", "namespace": namespace},
            "spec": {},
        }
    )
    v1_names = kubectl_names(kube_config, "sampledbs.v1.sampledb.io", namespace)
    beta_names = kubectl_names(kube_config, "sampledbs.v1beta1.sampledb.io", namespace)
    assert v1_names == beta_names == ["a1", "b1"]


def test_operator_reconciles_an_object_created_as_v1beta1(admin: KubeApi, namespace: str) -> None:
    create_v1beta1(
        admin,
        beta_object("legacy", namespace, version=15, storageSize="1Gi", deletionPolicy="Delete"),
    )
    ready = wait_for(
        lambda: (
            (o := admin.get("SampleDB", namespace, "legacy")) and (o.get("status") or {}).get("phase") == "Ready" and o
        ),
        timeout=90,
        what="legacy to be Ready",
    )
    assert ready["status"]["version"] == 15
    sts = admin.get("StatefulSet", namespace, "legacy")
    assert sts is not None
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert read_v1beta1(admin, namespace, "legacy")["status"]["phase"] == "Ready"


def test_v1beta1_reads_never_fail_while_webhook_replicas_restart(
    admin: KubeApi, namespace: str, conversion_webhook: WebhookReplicas | None
) -> None:
    if conversion_webhook is None:
        pytest.skip("the webhook runs inside the existing cluster; restarting it is the e2e suite's job")
    create_v1beta1(admin, beta_object("probe", namespace))
    failures: list[str] = []
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.wait(0.5):  # twice a second
            try:
                items = read_v1beta1(admin, namespace)["items"]
                assert [i["metadata"]["name"] for i in items] == ["probe"]
                reads += 1
            except Exception as err:
                failures.append(repr(err))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(2):  # replace every replica, one at a time, twice over
            for old in list(conversion_webhook.processes):
                conversion_webhook.start_replica()
                conversion_webhook.stop_replica(old)
                time.sleep(1)
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert reads >= 10


@pytest.mark.parametrize(
    ("database", "field"),
    [
        ({"owner": "postgres"}, "spec.database.owner"),
        ({"owner": "pg_monitor"}, "spec.database.owner"),
        ({"name": "template0"}, "spec.database.name"),
    ],
)
def test_reserved_names_are_refused_in_both_versions(
    admin: KubeApi, namespace: str, database: dict[str, str], field: str
) -> None:
    """The superuser's name as owner would hand the application the superuser's rights: never admitted."""
    v1 = {
        "apiVersion": "sampledb.io/v1",
        "kind": "SampleDB",
        "metadata": {"name": "v1r", "namespace": namespace},
    }
    with pytest.raises(ApiError) as err:
        admin.create({**v1, "spec": {"database": database}})
    assert err.value.status == 422 and f"{field}: Invalid value" in err.value.message, err.value.message
    beta = beta_object("betar", namespace)
    beta["metadata"]["annotations"] = {"conversion.sampledb.io/v1-spec": json.dumps({"database": database})}
    with pytest.raises(ApiError) as err:
        create_v1beta1(admin, beta)
    assert f"{field}: Value error" in err.value.message and "must not be" in err.value.message, err.value.message
    # The same objects with an ordinary name are admitted: the refusal is about the name alone.
    admin.create({**v1, "spec": {"database": dict.fromkeys(database, "app_owner")}})
    beta["metadata"]["annotations"] = {"conversion.sampledb.io/v1-spec": json.dumps({"database": {"owner": "x"}})}
    create_v1beta1(admin, beta)


def _as_v1beta1(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The same spec as a v1beta1 client writes it (what has no v1beta1 field rides in the annotation)."""
    obj = {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": {"name": name, "namespace": namespace}}
    beta: dict[str, Any] = convert({**obj, "spec": spec}, "sampledb.io/v1beta1")
    return beta


@pytest.mark.parametrize(("rule", "spec"), counter_examples(), ids=[rule for rule, _ in counter_examples()])
def test_nothing_the_operator_refuses_is_admitted(
    admin: KubeApi, namespace: str, rule: str, spec: dict[str, Any]
) -> None:
    """Every rule of the operator's model, broken once, is refused by the API server in both versions."""
    field = rule.split(":", 1)[0]
    v1 = {"apiVersion": "sampledb.io/v1", "kind": "SampleDB", "metadata": {"name": "ce1", "namespace": namespace}}
    with pytest.raises(ApiError) as err:
        admin.create({**v1, "spec": spec})
    assert field.removeprefix("spec.").rsplit(".", 1)[-1] in err.value.message, err.value.message
    with pytest.raises(ApiError) as err:
        create_v1beta1(admin, _as_v1beta1("ce2", namespace, spec))
    assert err.value.status in (422, 500), err.value.message

"""Proof that the test cluster is a real Kubernetes, and that the harness cleans up after itself.

API validation, RBAC, the built-in controllers, the scheduler and kwok-simulated kubelets must
behave as in production, since the operator's integration tests rely on them. The harness's own
lifecycle is covered too: the detached CLI, and the clean-up when the process owning a cluster is
terminated or killed.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pykube
import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.rest import ApiException
from pytest_helm_charts.clusters import Cluster

from sampledb_localcluster import OPERATOR_USER, LocalCluster, load_versions
from tests.conftest import live_processes_mentioning

OPERATOR_DIR = Path(__file__).resolve().parents[2] / "operator"
CRD_GROUP = "clustertest.sampledb.example.com"


def wait_until(what: str, check: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    """Poll until `check()` returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def is_local(config: pytest.Config) -> bool:
    return not (config.getoption("kubeconfig", default=None) or os.environ.get("KUBECONFIG"))


@pytest.fixture
def local(request: pytest.FixtureRequest) -> LocalCluster:
    """The session's local cluster; skips when the run targets an existing cluster instead."""
    if not is_local(request.config):
        pytest.skip("needs the local cluster (its CA, audit log or operator identity)")
    cluster: LocalCluster = request.getfixturevalue("local_cluster")
    return cluster


# -- the API server ----------------------------------------------------------------------------------


def test_server_reports_the_pinned_version(k8s_api: k8s.ApiClient) -> None:
    version = k8s.VersionApi(k8s_api).get_code()
    assert version.git_version == load_versions()["KUBERNETES_VERSION"]


@pytest.fixture(scope="module")
def widget_crd(k8s_api: k8s.ApiClient) -> Iterator[str]:
    """A namespaced test CRD whose schema requires spec.replicas >= 1."""
    ext = k8s.ApiextensionsV1Api(k8s_api)
    name = f"widgets.{CRD_GROUP}"
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["replicas"],
                "properties": {"replicas": {"type": "integer", "minimum": 1}},
            }
        },
    }
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": schema}}],
        },
    }
    ext.create_custom_resource_definition(body)

    def established() -> bool:
        conditions = ext.read_custom_resource_definition(name).status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until("the CRD to be established", established, timeout=30)
    yield name
    ext.delete_custom_resource_definition(name)


def test_crd_schema_rejects_invalid_objects_with_422(k8s_api: k8s.ApiClient, widget_crd: str, namespace: str) -> None:
    custom = k8s.CustomObjectsApi(k8s_api)

    def widget(name: str, replicas: int) -> dict[str, Any]:
        return {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"replicas": replicas},
        }

    custom.create_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", widget("good", 1))
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(CRD_GROUP, "v1", namespace, "widgets", widget("bad", 0))
    assert rejected.value.status == 422
    assert "spec.replicas" in rejected.value.body
    assert "greater than or equal to 1" in rejected.value.body


def test_garbage_collector_deletes_dependents(k8s_api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(k8s_api)
    owner = core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="owner")))
    reference = k8s.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    child_meta = k8s.V1ObjectMeta(name="child", owner_references=[reference])
    core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=child_meta))

    core.delete_namespaced_config_map("owner", namespace)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_until("the garbage collector to delete the child ConfigMap", child_gone, timeout=60)


# -- scheduling and kwok -----------------------------------------------------------------------------


def test_fake_nodes_are_ready_with_the_requested_capacity(k8s_api: k8s.ApiClient, local: LocalCluster) -> None:
    nodes = k8s.CoreV1Api(k8s_api).list_node(label_selector="type=kwok").items
    assert [node.metadata.name for node in nodes] == ["kwok-node-0"]
    node = nodes[0]
    assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "True"
    assert node.status.capacity == {"cpu": "32", "memory": "256Gi", "pods": "110"}


def pod_template(labels: dict[str, str], restart_policy: str = "Always") -> dict[str, Any]:
    return {
        "metadata": {"labels": labels},
        "spec": {
            "restartPolicy": restart_policy,
            "containers": [{"name": "main", "image": "registry.invalid/never-pulled:1", "command": ["true"]}],
        },
    }


def test_job_completes_through_kwok(kube_cluster: Cluster, namespace: str) -> None:
    api = kube_cluster.kube_client
    job = pykube.Job(
        api,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "one-shot", "namespace": namespace},
            "spec": {"backoffLimit": 0, "template": pod_template({"app": "one-shot"}, restart_policy="Never")},
        },
    )
    job.create()

    def complete() -> bool:
        job.reload()
        conditions = job.obj.get("status", {}).get("conditions", [])
        return any(c["type"] == "Complete" and c["status"] == "True" for c in conditions)

    wait_until("the Job to complete", complete)
    pods = list(pykube.Pod.objects(api, namespace=namespace).filter(selector={"job-name": "one-shot"}))
    assert [pod.obj["status"]["phase"] for pod in pods] == ["Succeeded"]


def test_statefulset_pods_become_running_and_ready(kube_cluster: Cluster, namespace: str) -> None:
    api = kube_cluster.kube_client
    labels = {"app": "db"}
    sts = pykube.StatefulSet(
        api,
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": namespace},
            "spec": {
                "replicas": 2,
                "serviceName": "db",
                "selector": {"matchLabels": labels},
                "template": pod_template(labels),
            },
        },
    )
    sts.create()

    def all_ready() -> bool:
        sts.reload()
        return sts.obj.get("status", {}).get("readyReplicas") == 2

    wait_until("both StatefulSet replicas to be ready", all_ready)
    pods = sorted(pykube.Pod.objects(api, namespace=namespace).filter(selector=labels), key=lambda p: p.name)
    assert [pod.name for pod in pods] == ["db-0", "db-1"]
    for pod in pods:
        assert pod.obj["status"]["phase"] == "Running"
        assert {c["type"]: c["status"] for c in pod.obj["status"]["conditions"]}["Ready"] == "True"
        assert pod.obj["spec"]["nodeName"] == "kwok-node-0", "placed by the real scheduler"


# -- identities and the audit log --------------------------------------------------------------------


def test_operator_identity_is_the_service_account_user_and_subject_to_rbac(
    local: LocalCluster, k8s_api: k8s.ApiClient, namespace: str
) -> None:
    operator_api = k8s_config.new_client_from_config(config_file=str(local.operator_kubeconfig))
    try:
        review = k8s.AuthenticationV1Api(operator_api).create_self_subject_review(
            k8s.V1SelfSubjectReview(api_version="authentication.k8s.io/v1", kind="SelfSubjectReview")
        )
        assert review.status.user_info.username == OPERATOR_USER
        assert "system:serviceaccounts:sampledb-system" in review.status.user_info.groups

        operator_core = k8s.CoreV1Api(operator_api)
        with pytest.raises(ApiException) as denied:
            operator_core.list_namespaced_service_account(namespace)
        assert denied.value.status == 403

        rbac = k8s.RbacAuthorizationV1Api(k8s_api)
        rule = k8s.V1PolicyRule(api_groups=[""], resources=["serviceaccounts"], verbs=["list"])
        rbac.create_namespaced_role(namespace, k8s.V1Role(metadata=k8s.V1ObjectMeta(name="read-sa"), rules=[rule]))
        subject = k8s.RbacV1Subject(kind="ServiceAccount", name="sampledb-operator", namespace="sampledb-system")
        binding = k8s.V1RoleBinding(
            metadata=k8s.V1ObjectMeta(name="operator-reads-sa"),
            role_ref=k8s.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="read-sa"),
            subjects=[subject],
        )
        rbac.create_namespaced_role_binding(namespace, binding)

        def allowed() -> bool:
            try:
                operator_core.list_namespaced_service_account(namespace)
            except ApiException as error:
                if error.status != 403:
                    raise
                return False
            return True

        wait_until("the RoleBinding to the ServiceAccount to apply to the operator", allowed, timeout=15)
    finally:
        operator_api.close()


def test_audit_log_records_write_requests(local: LocalCluster, k8s_api: k8s.ApiClient, namespace: str) -> None:
    core = k8s.CoreV1Api(k8s_api)
    core.create_namespaced_config_map(namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="audited")))

    def create_event() -> dict[str, Any] | None:
        for line in local.audit_log.read_text(encoding="utf-8").splitlines():
            event = json.loads(line)
            ref = event.get("objectRef", {})
            if event["verb"] == "create" and ref.get("namespace") == namespace and ref.get("name") == "audited":
                return event
        return None

    event = wait_until("the create to appear in the audit log", create_event, timeout=10)
    assert event["level"] == "Metadata"
    assert event["user"]["username"] == "admin"
    assert event["objectRef"]["resource"] == "configmaps"
    assert event["responseStatus"]["code"] == 201


@pytest.fixture
def denying_webhook(local: LocalCluster, tmp_path: Path) -> Iterator[int]:
    """An HTTPS admission webhook on 127.0.0.1 that denies everything, with a cert from the cluster CA."""
    cert, key = local.issue_serving_cert("webhook", ["127.0.0.1"], ["localhost"], tmp_path)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            response = {"uid": review["request"]["uid"], "allowed": False, "status": {"message": "denied by test"}}
            body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_with_a_cert_from_issue_serving_cert_is_called_by_the_api_server(
    local: LocalCluster, k8s_api: k8s.ApiClient, namespace: str, denying_webhook: int
) -> None:
    admission = k8s.AdmissionregistrationV1Api(k8s_api)
    name = f"deny-{namespace}"
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "deny.clustertest.sampledb.example.com",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{denying_webhook}/validate",
                    "caBundle": base64.b64encode(local.ca_cert.read_bytes()).decode(),
                },
                "rules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "failurePolicy": "Fail",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
            }
        ],
    }
    admission.create_validating_webhook_configuration(config)
    core = k8s.CoreV1Api(k8s_api)
    try:

        def denied_by_webhook() -> bool:
            try:
                core.create_namespaced_config_map(
                    namespace, k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(generate_name="x-"))
                )
            except ApiException as error:
                # A TLS failure would say "failed calling webhook" instead of our message.
                return "denied by test" in error.body
            return False

        # The API server picks up new webhook configurations within a moment, not instantly.
        wait_until("the webhook to deny a ConfigMap", denied_by_webhook, timeout=15)
    finally:
        admission.delete_validating_webhook_configuration(name)


# -- the harness's own lifecycle ---------------------------------------------------------------------


def processes_using(state_dir: Path) -> list[str]:
    """Names of live non-Python processes whose arguments mention `state_dir` (our components do)."""
    programs = (Path(argv[0]).name for argv in live_processes_mentioning(state_dir))
    return sorted(p for p in programs if not p.startswith("python"))


def run_cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sampledb_localcluster", "--state-dir", str(state_dir), *args],
        cwd=OPERATOR_DIR,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_up_status_env_down(tmp_path: Path) -> None:
    state_dir = tmp_path / "cli-cluster"
    try:
        up = run_cli(state_dir, "up")
        assert up.returncode == 0, up.stderr
        assert "ready in" in up.stderr
        kubeconfig = state_dir / "kubeconfig"
        assert str(kubeconfig) in up.stdout
        # `up` has returned; the cluster keeps running without it.
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
        assert server.startswith("https://127.0.0.1:")
        status = run_cli(state_dir, "status")
        assert status.returncode == 0, status.stdout
        assert "kube-apiserver" in status.stdout
        assert "NOT RUNNING" not in status.stdout
        env = run_cli(state_dir, "env")
        assert f"export KUBECONFIG={kubeconfig}" in env.stdout.splitlines()
        nodes = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=str(kubeconfig))).list_node()
        assert len(nodes.items) == 1
        assert len(processes_using(state_dir)) == 5
    finally:
        first = run_cli(state_dir, "down")
    assert first.returncode == 0
    assert "stopped" in first.stdout
    assert processes_using(state_dir) == []
    second = run_cli(state_dir, "down")
    assert second.returncode == 0, "down is idempotent"
    assert "no cluster running" in second.stdout
    assert run_cli(state_dir, "status").returncode == 1


CHILD_SCRIPT = """
import sys, time
from pathlib import Path
from sampledb_localcluster import LocalCluster
cluster = LocalCluster(Path(sys.argv[1]), quiet=True)
cluster.start()
print("READY", flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_in_process_cluster_dies_with_its_owner(tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM runs the stop handler; SIGKILL cannot be handled, PR_SET_PDEATHSIG covers it."""
    state_dir = tmp_path / "owned-cluster"
    owner = subprocess.Popen(
        [sys.executable, "-c", CHILD_SCRIPT, str(state_dir)],
        cwd=OPERATOR_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        assert owner.stdout.readline().strip() == "READY"
        assert processes_using(state_dir) == [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kwok",
        ]
        owner.send_signal(sig)
        owner.wait(timeout=30)
        wait_until("every component to exit", lambda: processes_using(state_dir) == [], timeout=15)
    finally:
        owner.kill()
        owner.wait()
        LocalCluster(state_dir, quiet=True).stop()  # in case the test failed half-way


def test_a_bare_cluster_runs_the_api_alone_and_nothing_acts_on_its_objects(tmp_path: Path) -> None:
    """`node="none"` (the restart benchmark's): a StatefulSet stays as written, with no Pod and its status ours."""
    cluster = LocalCluster(tmp_path / "bare", node="none", quiet=True)
    try:
        cluster.start()
        assert processes_using(tmp_path / "bare") == ["etcd", "kube-apiserver"]
        api = k8s_config.new_client_from_config(config_file=str(cluster.kubeconfig))
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        core.create_namespace({"metadata": {"name": "bare"}})
        labels = {"app": "bare"}
        container = {"name": "c", "image": "example.invalid/none:1"}
        spec = {"replicas": 1, "selector": {"matchLabels": labels}, "serviceName": "bare",
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}}}  # fmt: skip
        apps.create_namespaced_stateful_set("bare", {"metadata": {"name": "bare"}, "spec": spec})
        status = {"status": {"replicas": 1, "readyReplicas": 1, "currentRevision": "r", "updateRevision": "r"}}
        apps.patch_namespaced_stateful_set_status("bare", "bare", status)
        time.sleep(5)  # a controller manager would have made a Pod and rewritten the status by now
        assert core.list_namespaced_pod("bare").items == []
        assert apps.read_namespaced_stateful_set("bare", "bare").status.ready_replicas == 1
        assert core.list_node().items == []
    finally:
        cluster.stop()
    assert processes_using(tmp_path / "bare") == []

"""The Helm chart, with the real (pinned) Helm: lint, render, schema, and a full release lifecycle.

Static part: `helm lint --strict` with every `ci/*-values.yaml`, then every rendered scenario is
parsed and checked: Pod Security Standard "restricted" for every Pod spec, no RBAC wildcard, the
webhook's replicas and PodDisruptionBudget, the operator's environment, the RBAC rules against their
single source `config/rbac/role.yaml`, and `values.schema.json` rejecting bad values.

Cluster part, on the session's cluster with a real node (tests/e2e/conftest.py): the chart is
installed into a namespace that enforces "restricted" with the image `make docker-build` made; its
operator and webhook run as real Pods and reconcile SampleDBs (one created as v1, one as v1beta1)
into real PostgreSQL. Then: the API server converts through the webhook's Service (the webhook's
own counters show it), `helm test` reaches the databases and fails when one is down, the webhook
Pods are replaced under a v1beta1 reader, an upgrade to a new chart version runs under writes
(rows, Pod UIDs and restarts compared), the certificate is kept and rotated, and uninstall keeps
the CRDs and the databases (a new install adopts them).
"""

from __future__ import annotations

import base64
import datetime
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.e2e.installs import (
    CHART,
    Load,
    Release,
    delete_namespaces,
    delete_sampledbs,
    deployment_available,
    helm,
    new_namespace,
    restore_change_through_v1beta1_is_refused,
    sampledb,
)
from tests.integration.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SCENARIOS = [path.name.removesuffix("-values.yaml") for path in CI_VALUES]
CRD_NAME = "sampledbs.sampledb.io"
CHART_CRDS = sorted(yaml.safe_load(path.read_text())["metadata"]["name"] for path in (CHART / "crds").glob("*.yaml"))
RELEASE = "sampledb-operator"


# -- helpers ---------------------------------------------------------------------------------------


def template(*args: str, namespace: str = "sampledb-system") -> list[dict[str, Any]]:
    """`helm template` the chart; every rendered document (test hooks included), parsed."""
    out = helm("template", RELEASE, str(CHART), "--namespace", namespace, *args).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The Pod spec inside a workload object, if it is one."""
    kind, spec = doc["kind"], doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    elif kind not in {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}:
        return None
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def env_of(deployment: dict[str, Any], container: str) -> dict[str, str]:
    (spec,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == container]
    return {e["name"]: e.get("value", "") for e in spec.get("env") or []}


def canonical(rules: list[dict[str, Any]]) -> list[str]:
    """Rules as sorted JSON strings, to compare rule sets regardless of order."""
    return sorted(json.dumps(rule, sort_keys=True) for rule in rules)


def source_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load((REPO / "config/rbac/role.yaml").read_text())["rules"]
    return rules


# -- Pod Security Standard "restricted" ------------------------------------------------------------

# https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """Why a Pod spec fails the "restricted" Pod Security Standard, plus this chart's own rules.

    The standard's checks (host namespaces, volume types, privileged, capabilities, privilege
    escalation, non-root, seccomp, host ports, procMount, sysctls, AppArmor, SELinux), and what the
    chart promises on top: user 65532, a read-only root filesystem, CPU/memory requests and limits.
    """
    problems: list[str] = []
    pod_context = spec.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if spec.get(field) is (field != "hostUsers"):
            problems.append(f"pod: {field} is {spec[field]}")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)} is not allowed")
    if pod_context.get("sysctls"):
        problems.append("pod: sysctls are set")
    containers = [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]
    if not containers:
        problems.append("pod: no containers")
    for container in containers:
        name = f"container {container['name']}"
        context = container.get("securityContext") or {}

        def effective(field: str, context: dict[str, Any] = context) -> Any:
            return context.get(field, pod_context.get(field))

        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = context.get("capabilities") or {}
        if "ALL" not in (capabilities.get("drop") or []):
            problems.append(f"{name}: capabilities.drop lacks ALL")
        if set(capabilities.get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities {capabilities['add']}")
        if effective("runAsNonRoot") is not True:
            problems.append(f"{name}: runAsNonRoot is not true")
        if effective("runAsUser") != 65532:
            problems.append(f"{name}: runAsUser is {effective('runAsUser')}, not 65532")
        seccomp = (effective("seccompProfile") or {}).get("type")
        if seccomp not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: seccompProfile.type is {seccomp}")
        apparmor = (effective("appArmorProfile") or {}).get("type")
        if apparmor not in {None, "RuntimeDefault", "Localhost"}:
            problems.append(f"{name}: appArmorProfile.type is {apparmor}")
        if (effective("seLinuxOptions") or {}).get("type") not in {None, "", "container_t", "container_init_t"}:
            problems.append(f"{name}: seLinuxOptions.type is not allowed")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{name}: procMount is {context['procMount']}")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem is not true")
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
        resources = container.get("resources") or {}
        for kind in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if not (resources.get(kind) or {}).get(resource):
                    problems.append(f"{name}: no {resource} in resources.{kind}")
    return problems


def test_restricted_checker_catches_violations() -> None:
    """The checker itself: a compliant spec passes, each kind of violation is reported."""
    good: dict[str, Any] = {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
        "volumes": [{"name": "tls", "secret": {"secretName": "x"}}],
        "containers": [
            {
                "name": "c",
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
                "resources": {"requests": {"cpu": "1m", "memory": "1Mi"}, "limits": {"cpu": "1m", "memory": "1Mi"}},
            }
        ],
    }
    assert restricted_violations(good) == []
    bad = json.loads(json.dumps(good))
    bad["hostNetwork"] = True
    bad["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    context = bad["containers"][0]["securityContext"]
    context.update(privileged=True, allowPrivilegeEscalation=True, runAsUser=0, capabilities={"add": ["SYS_ADMIN"]})
    context["readOnlyRootFilesystem"] = False
    bad["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 80}]
    del bad["containers"][0]["resources"]["limits"]
    problems = "\n".join(restricted_violations(bad))
    for expected in (
        "hostNetwork",
        "hostPath",
        "privileged",
        "allowPrivilegeEscalation",
        "capabilities.drop lacks ALL",
        "adds capabilities",
        "runAsUser is 0",
        "readOnlyRootFilesystem",
        "hostPort",
        "resources.limits",
    ):
        assert expected in problems


# -- lint and render -------------------------------------------------------------------------------


@pytest.mark.parametrize("values", CI_VALUES, ids=SCENARIOS)
def test_helm_lint_strict(values: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values))
    assert "0 chart(s) failed" in result.stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Every ci/ scenario, rendered once."""
    return {name: template("-f", str(path)) for name, path in zip(SCENARIOS, CI_VALUES, strict=True)}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_pod_is_restricted(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    workloads = [doc for doc in rendered[scenario] if pod_spec(doc) is not None]
    names = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in workloads)
    # operator, webhook, and the `helm test` Job
    assert len(workloads) == 3, names
    for doc in workloads:
        spec = pod_spec(doc)
        assert spec is not None
        problems = restricted_violations(spec)
        assert not problems, f"{doc['kind']}/{doc['metadata']['name']} is not 'restricted': {problems}"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_no_rbac_wildcard_and_every_object_labelled(rendered: dict[str, list[dict[str, Any]]], scenario: str) -> None:
    for doc in rendered[scenario]:
        where = f"{scenario}: {doc['kind']}/{doc['metadata']['name']}"
        labels = doc["metadata"].get("labels") or {}
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
            assert key in labels, f"{where} lacks the label {key}"
        for rule in doc.get("rules") or [] if doc["kind"] in {"Role", "ClusterRole"} else []:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(field) or []), f"{where}: wildcard in {field}: {rule}"
    # the webhook has no RBAC at all
    webhook_sa = f"{RELEASE}-webhook"
    for binding in find(rendered[scenario], "RoleBinding") + find(rendered[scenario], "ClusterRoleBinding"):
        assert all(s["name"] != webhook_sa for s in binding["subjects"]), binding["metadata"]["name"]


def test_webhook_runs_two_replicas_with_a_pdb_and_no_token(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    webhook = one(docs, "Deployment", f"{RELEASE}-webhook")
    assert webhook["spec"]["replicas"] == 2
    assert webhook["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = webhook["spec"]["selector"]["matchLabels"]
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    pod = webhook["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["terminationGracePeriodSeconds"] >= 10
    service_account = one(docs, "ServiceAccount", pod["serviceAccountName"])
    assert service_account["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    assert container["args"] == ["webhook", "--cert", "/tls/tls.crt", "--key", "/tls/tls.key", "--port", "9443"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"
    service = one(docs, "Service", "sampledb-webhook")
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    assert rendered["ha"] and one(rendered["ha"], "Deployment", f"{RELEASE}-webhook")["spec"]["replicas"] == 3


def test_operator_environment(rendered: dict[str, list[dict[str, Any]]]) -> None:
    operator = one(rendered["default"], "Deployment", RELEASE)
    assert operator["spec"]["template"]["spec"]["containers"][0]["args"] == ["run"]
    env = env_of(operator, "operator")
    assert env["SAMPLEDB_WEBHOOK_SERVICE"] == "sampledb-system/sampledb-webhook"
    assert env["SAMPLEDB_WEBHOOK_CA_FILE"] == "/tls/ca.crt"
    assert env["SAMPLEDB_MANAGE_CRDS"] == "true"
    assert env["SAMPLEDB_NAMESPACES"] == ""
    assert env["SAMPLEDB_LEADER_ELECTION"] == "true"
    assert env["SAMPLEDB_LEASE_NAMESPACE"] == "sampledb-system"
    assert env["SAMPLEDB_METRICS_PORT"] == "8080"
    assert env["SAMPLEDB_HEALTH_PORT"] == "8081"
    assert env["SAMPLEDB_LOG_LEVEL"] == "INFO"
    assert not any(name.startswith("SAMPLEDB_IMAGE_PG") for name in env)
    # the CA file comes from the webhook's TLS Secret, and only ca.crt of it
    secret_name = f"{RELEASE}-webhook-tls"
    (volume,) = [v for v in operator["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == secret_name
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert one(rendered["default"], "Secret", secret_name)["type"] == "kubernetes.io/tls"
    # one replica: Recreate and /readyz; two: rolling, and readiness that a standby passes
    assert operator["spec"]["strategy"]["type"] == "Recreate"
    probe = operator["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"]
    assert probe == "/readyz"
    ha = one(rendered["ha"], "Deployment", RELEASE)
    assert ha["spec"]["replicas"] == 2
    assert ha["spec"]["strategy"]["type"] == "RollingUpdate"
    assert ha["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["path"] == "/healthz"
    overridden = one(template("--set", "postgresImages.pg16=registry.example/postgres:16.9"), "Deployment", RELEASE)
    assert env_of(overridden, "operator")["SAMPLEDB_IMAGE_PG16"] == "registry.example/postgres:16.9"


def test_cluster_role_rules_are_the_source_rules(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["default"]
    role = one(docs, "ClusterRole")
    assert role["rules"] == source_rules()
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": "sampledb-system"}]
    assert not find(docs, "Role") and not find(docs, "RoleBinding")


def test_watch_namespaces_gets_roles_and_a_small_cluster_role(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["watch-namespaces"]
    operator = one(docs, "Deployment", RELEASE)
    assert env_of(operator, "operator")["SAMPLEDB_NAMESPACES"] == "team-a,team-b"
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in find(docs, "Role")}
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]): b for b in find(docs, "RoleBinding")}
    assert (
        set(roles)
        == set(bindings)
        == {
            ("team-a", RELEASE),
            ("team-b", RELEASE),
            ("sampledb-system", f"{RELEASE}-leader-election"),
        }
    )
    cluster_rules = one(docs, "ClusterRole")["rules"]
    namespaced_rules = roles[("team-a", RELEASE)]["rules"]
    assert roles[("team-b", RELEASE)]["rules"] == namespaced_rules
    # every source rule lands in exactly one place; the ClusterRole holds only the cluster-scoped
    # rules: the CRDs, reading StorageClasses (whether a volume may grow) and watching Nodes (a drain)
    assert canonical(cluster_rules + namespaced_rules) == canonical(source_rules())
    cluster_groups = {group for rule in cluster_rules for group in rule["apiGroups"]}
    assert cluster_rules and cluster_groups == {"apiextensions.k8s.io", "storage.k8s.io", ""}
    assert [r for r in cluster_rules if r["apiGroups"] != ["apiextensions.k8s.io"]] == [
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]},
    ]
    leases = roles[("sampledb-system", f"{RELEASE}-leader-election")]["rules"]
    assert leases and all(rule["apiGroups"] == ["coordination.k8s.io"] for rule in leases)
    for (namespace, name), binding in bindings.items():
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE, "namespace": "sampledb-system"}]
        assert namespace in {"team-a", "team-b", "sampledb-system"}


def test_cert_manager_replaces_the_helm_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["cert-manager"]
    assert not find(docs, "Secret"), "with cert-manager, Helm must not write the TLS Secret"
    certificate = one(docs, "Certificate", f"{RELEASE}-webhook")
    assert certificate["spec"]["secretName"] == f"{RELEASE}-webhook-tls"
    assert "sampledb-webhook.sampledb-system.svc" in certificate["spec"]["dnsNames"]
    ca_issuer = one(docs, "Issuer", certificate["spec"]["issuerRef"]["name"])
    ca_certificate = one(docs, "Certificate", f"{RELEASE}-webhook-ca")
    assert ca_certificate["spec"]["isCA"] is True
    assert ca_issuer["spec"]["ca"]["secretName"] == ca_certificate["spec"]["secretName"]
    assert "selfSigned" in one(docs, "Issuer", ca_certificate["spec"]["issuerRef"]["name"])["spec"]
    operator = one(docs, "Deployment", RELEASE)
    assert env_of(operator, "operator")["SAMPLEDB_WEBHOOK_CA_FILE"] == "/tls/ca.crt"
    # cert-manager's CA injector fills the validating webhook's caBundle from the serving Certificate.
    (validating,) = find(docs, "ValidatingWebhookConfiguration")
    injected = validating["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    assert injected == f"sampledb-system/{RELEASE}-webhook"
    assert "caBundle" not in validating["webhooks"][0]["clientConfig"]
    own_issuer = template("--set", "webhook.certManager.enabled=true", "--set", "webhook.certManager.issuerRef.name=ca")
    assert one(own_issuer, "Certificate")["spec"]["issuerRef"] == {"name": "ca"}
    assert not find(own_issuer, "Issuer")


def test_monitoring_objects(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert not find(rendered["default"], "ServiceMonitor") and not find(rendered["default"], "PrometheusRule")
    docs = rendered["monitoring"]
    service = one(docs, "Service", f"{RELEASE}-metrics")
    monitor = one(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"] == "http-metrics"
    rules = {r["alert"]: r["expr"] for r in one(docs, "PrometheusRule")["spec"]["groups"][0]["rules"]}
    assert 'sampledb_instances{phase="Degraded"' in rules["SampleDBDegraded"]
    assert 'rate(sampledb_reconcile_total{result="error"' in rules["SampleDBReconcileErrors"]
    assert (
        rules["SampleDBReplicationLag"] == "max by (namespace, name, pod) (sampledb_replication_lag_bytes) > 104857600"
    )
    assert rules["SampleDBStandbyNotStreaming"] == "max by (namespace, name, pod) (sampledb_replication_streaming) == 0"
    assert rules["SampleDBWALArchiveFailing"] == "max by (namespace, name) (sampledb_wal_archive_failing) == 1"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True, "a SampleDB's own namespace label is kept"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "replicaCount=0"], "at '/replicaCount': minimum: got 0, want 1"),
        (["--set", "replicaCount=1.5"], "at '/replicaCount': got string, want integer"),
        (["--set", "logLevel=LOUD"], "at '/logLevel': value must be one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'"),
        (["--set", "image.tag=2"], "at '/image/tag': got number, want string"),
        (["--set", "watchNamespaces[0]=Team_A"], "at '/watchNamespaces/0': 'Team_A' does not match pattern"),
        (["--set", "watchNamespaces=team-a"], "at '/watchNamespaces': got string, want array"),
        (["--set", "webhook.replicaCount=1"], "at '/webhook/replicaCount': minimum: got 1, want 2"),
        (["--set", "replicas=2"], "additional properties 'replicas' not allowed"),
        (["--set", "replicaCount=2", "--set", "leaderElection.enabled=false"], "needs leaderElection.enabled=true"),
    ],
    ids=[
        "replicas-0",
        "replicas-float",
        "log-level",
        "tag-number",
        "namespace-label",
        "namespaces-string",
        "webhook-1",
        "typo",
        "ha-without-lease",
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(values: list[str], message: str) -> None:
    result = helm("template", RELEASE, str(CHART), *values, check=False)
    assert result.returncode != 0, f"helm template {' '.join(values)} rendered"
    assert message in result.stderr, result.stderr


def test_image_tag_defaults_to_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    operator = one(template(), "Deployment", RELEASE)
    assert operator["spec"]["template"]["spec"]["containers"][0]["image"] == (
        f"localhost/sampledb-operator:{chart['appVersion']}"
    )
    tagged = one(template("--set-string", "image.tag=1.2"), "Deployment", f"{RELEASE}-webhook")
    assert tagged["spec"]["template"]["spec"]["containers"][0]["image"] == "localhost/sampledb-operator:1.2"


# -- against the cluster: a real node, real Pods, real PostgreSQL -----------------------------------


def load_certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def tls(release: Release) -> dict[str, bytes]:
    data = release.get("secret", f"{RELEASE}-webhook-tls")["data"]
    return {key: base64.b64decode(value) for key, value in data.items()}


@dataclass
class Databases:
    """The SampleDBs the release serves: one created as v1, one as v1beta1, each with ROWS rows."""

    namespace: str
    names: tuple[str, ...] = ("one", "beta")
    ready_after: float = 0.0


ROWS = 100


@pytest.fixture(scope="module")
def release(kube_config: str) -> Iterator[Release]:
    """The chart installed with its defaults into a fresh namespace that enforces "restricted"."""
    namespace = new_namespace(kube_config, "sampledb-e2e")
    installed = Release(RELEASE, namespace, kube_config)
    apps: list[str] = []
    try:
        installed.install()
        yield installed
    finally:
        for app in installed.kubectl("get", "ns", "-l", "sampledb.test/apps=true", "-o", "name").stdout.split():
            apps.append(app.removeprefix("namespace/"))
            delete_sampledbs(installed, apps[-1])
        installed.helm("uninstall", RELEASE, "--ignore-not-found", "--wait", "--timeout", "120s", check=False)
        delete_namespaces(kube_config, namespace, *apps)


@pytest.fixture(scope="module")
def databases(release: Release) -> Databases:
    """Two databases reconciled by the release's operator, created right after the install."""
    namespace = new_namespace(release.kubeconfig, "sampledb-apps")
    release.kubectl("label", "namespace", namespace, "sampledb.test/apps=true")
    found = Databases(namespace)
    release.apply(namespace, sampledb("one"), sampledb("beta", beta=True))
    release.wait_ready(namespace, *found.names)
    found.ready_after = time.monotonic() - release.installed_at
    print(f"\nhelm install -> both SampleDBs Ready (real PostgreSQL 17): {found.ready_after:.1f} s")
    for name in found.names:
        release.query(
            namespace,
            name,
            f"CREATE TABLE load (id serial PRIMARY KEY); INSERT INTO load SELECT FROM generate_series(1, {ROWS})",
        )
    return found


def test_install_wires_deployments_crds_rbac_and_tls(release: Release) -> None:
    for name in (RELEASE, f"{RELEASE}-webhook"):
        assert deployment_available(release.get("deployment", name)), f"Deployment {name} is not Available"
    assert CRD_NAME in CHART_CRDS
    for name in CHART_CRDS:
        crd = release.get("crd", name)
        assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True", name
    # Real Pods, admitted under "restricted", each container Ready (its probes answered).
    pods = release.items("pods", release.namespace)
    assert len(pods) == 3, [p["metadata"]["name"] for p in pods]
    for pod in pods:
        statuses = pod["status"]["containerStatuses"]
        assert all(s["ready"] and "running" in s["state"] for s in statuses), pod["metadata"]["name"]
        for container in pod["spec"]["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True

    def ready_endpoints(service: str) -> int:
        slices = release.items("endpointslices", release.namespace, "-l", f"kubernetes.io/service-name={service}")
        return sum(
            1
            for item in slices
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
        )

    wait_for(lambda: ready_endpoints("sampledb-webhook") == 2, what="2 ready webhook endpoints")
    wait_for(lambda: ready_endpoints(f"{RELEASE}-metrics") == 1, what="1 ready metrics endpoint")

    # The webhook Pods carry no API token: the ServiceAccount admission plugin honoured the opt-out.
    for pod in release.items("pods", release.namespace, "-l", "app.kubernetes.io/component=webhook"):
        volumes = [v for v in pod["spec"]["volumes"] if "projected" in v]
        assert not volumes, f"webhook Pod {pod['metadata']['name']} mounts a token: {volumes}"

    # RBAC as the API server decides it.
    assert release.can(RELEASE, "patch", "sampledbs.sampledb.io", "--all-namespaces")
    assert release.can(RELEASE, "create", "leases.coordination.k8s.io", "-n", release.namespace)
    assert release.can(RELEASE, "patch", f"customresourcedefinitions/{CRD_NAME}")
    assert not release.can(RELEASE, "patch", "customresourcedefinitions/other.example.com")
    # Secrets are listed and watched for the caches (key names only are kept), never rewritten.
    assert release.can(RELEASE, "watch", "secrets", "--all-namespaces")
    for verb in ("update", "patch", "delete"):
        assert not release.can(RELEASE, verb, "secrets", "--all-namespaces"), verb
    webhook = f"{RELEASE}-webhook"
    for verb_and_resource in (("get", "secrets"), ("list", "sampledbs.sampledb.io"), ("get", "configmaps")):
        assert not release.can(webhook, *verb_and_resource, "-n", release.namespace), verb_and_resource

    # The serving certificate names the Service and chains to ca.crt.
    certs = tls(release)
    (ca,) = load_certs(certs["ca.crt"])
    (cert,) = load_certs(certs["tls.crt"])
    service_dns = f"sampledb-webhook.{release.namespace}.svc"
    assert service_dns in dns_names(cert)
    assert f"{service_dns}.cluster.local" in dns_names(cert)
    cert.verify_directly_issued_by(ca)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    annotations = release.get("secret", f"{RELEASE}-webhook-tls")["metadata"]["annotations"]
    recorded = datetime.datetime.fromisoformat(annotations["sampledb.io/tls-not-after"])
    assert abs(recorded - cert.not_valid_after_utc) < datetime.timedelta(minutes=5)


def test_sampledbs_of_both_versions_run_real_postgresql(release: Release, databases: Databases) -> None:
    for name in databases.names:
        assert release.query(databases.namespace, name, "SELECT count(*) FROM load") == str(ROWS)
        assert release.query(databases.namespace, name, "SHOW server_version_num").startswith("17")
    beta = json.loads(
        release.kubectl("get", "sampledbs.v1beta1.sampledb.io", "beta", "-n", databases.namespace, "-o", "json").stdout
    )
    assert beta["apiVersion"] == "sampledb.io/v1beta1" and beta["spec"]["storageSize"] == "1Gi"
    assert beta["status"]["phase"] == "Ready"


def test_the_api_server_converts_through_the_webhook_service(release: Release, databases: Databases) -> None:
    conversion = release.get("crd", CRD_NAME, "")["spec"]["conversion"]["webhook"]["clientConfig"]["service"]
    assert (conversion["namespace"], conversion["name"]) == (release.namespace, "sampledb-webhook")
    before = release.webhook_conversions()
    for touch in range(3):
        release.kubectl("annotate", "sampledbs.v1beta1.sampledb.io", "beta", "-n", databases.namespace,
                        f"e2e.sampledb.io/touch={touch}", "--overwrite")  # fmt: skip
    after = release.webhook_conversions()
    # A write through v1beta1 is converted to the stored v1 (lists may come from the API server's
    # cache, already converted): the Pods behind the Service counted each write.
    assert after.get("Success", 0) - before.get("Success", 0) >= 3, (before, after)
    assert after.get("Failure", 0) == before.get("Failure", 0), (before, after)


def test_a_restore_change_through_v1beta1_is_refused_by_the_webhook_service(
    release: Release, databases: Databases
) -> None:
    name = f"{release.namespace}-{RELEASE}-v1beta1"
    (hook,) = release.get("validatingwebhookconfiguration", name)["webhooks"]
    service = hook["clientConfig"]["service"]
    assert (service["namespace"], service["name"], service["path"]) == (
        release.namespace,
        "sampledb-webhook",
        "/validate-v1beta1",
    )
    tls = release.get("secret", f"{RELEASE}-webhook-tls")
    assert hook["clientConfig"]["caBundle"] == tls["data"]["ca.crt"]
    before = release.webhook_admissions()
    with k8s_config.new_client_from_config(release.kubeconfig) as api:
        restore_change_through_v1beta1_is_refused(k8s.CustomObjectsApi(api), databases.namespace)
    after = release.webhook_admissions()
    # The Pods behind the Service answered: the refusal (twice when the API server retried the
    # update on a fresher copy), and the allowed label change.
    assert after.get("Denied", 0) - before.get("Denied", 0) >= 1, (before, after)
    assert after.get("Allowed", 0) - before.get("Allowed", 0) >= 1, (before, after)


def helm_test_passes(release: Release) -> None:
    result = release.helm("test", release.name, "--timeout", "180s")
    assert "Phase:          Succeeded" in result.stdout, result.stdout
    assert release.items("jobs", release.namespace) == [], "a passed test Job is deleted (hook-succeeded)"


def test_helm_test_reaches_every_database_and_fails_when_one_is_down(release: Release, databases: Databases) -> None:
    targets = ",".join(f"{databases.namespace}/{name}" for name in databases.names)
    release.upgrade("--set", f"tests.databases={{{targets}}}")
    helm_test_passes(release)

    # Take one database down for real: no operator to bring it back, then its server stopped.
    release.kubectl("scale", f"deployment/{RELEASE}", "-n", release.namespace, "--replicas=0")
    wait_for(
        lambda: not release.items("pods", release.namespace, "-l", "app.kubernetes.io/component=operator"),
        what="the operator gone",
    )
    release.kubectl("scale", "statefulset/one", "-n", databases.namespace, "--replicas=0")
    wait_for(lambda: "one-0" not in release.database_pods(databases.namespace), what="one-0 gone")
    try:
        failed = release.helm("test", release.name, "--timeout", "180s", check=False)
        assert failed.returncode != 0, failed.stdout
        # The failed Job is kept: its log names what it reached and what it could not.
        job_logs = release.kubectl("logs", "-n", release.namespace, f"job/{RELEASE}-test-webhook").stdout
        assert "conversion webhook at https://sampledb-webhook." in job_logs, job_logs
        assert f"database {databases.namespace}/one at one.{databases.namespace}.svc:5432 is unreachable" in job_logs
        assert f"database {databases.namespace}/beta: PostgreSQL answers" in job_logs
    finally:
        release.kubectl("scale", f"deployment/{RELEASE}", "-n", release.namespace, "--replicas=1")
        release.wait_rollout(RELEASE)
    # The operator scales the StatefulSet back (StatefulSetDrifted); the data is where it was.
    release.wait_ready(databases.namespace, "one")
    wait_for(
        lambda: release.psql(databases.namespace, "one", "SELECT 1", check=False).returncode == 0, what="one answering"
    )
    assert release.query(databases.namespace, "one", "SELECT count(*) FROM load") == str(ROWS)
    helm_test_passes(release)  # and replaces the failed Job
    release.upgrade("--set", "tests.databases=null")


def test_webhook_keeps_answering_while_its_pods_are_replaced(
    release: Release, databases: Databases, k8s_api: Any
) -> None:
    webhook = f"{RELEASE}-webhook"
    with Load(release, databases.namespace, k8s_api) as load:
        time.sleep(2)
        release.kubectl("rollout", "restart", f"deployment/{webhook}", "-n", release.namespace)
        release.wait_rollout(webhook)
        (victim, *_) = release.items("pods", release.namespace, "-l", "app.kubernetes.io/component=webhook")
        release.kubectl("delete", "pod", victim["metadata"]["name"], "-n", release.namespace, "--wait=false")
        time.sleep(2)
        wait_for(lambda: deployment_available(release.get("deployment", webhook)) or None, what="webhook available")
        time.sleep(3)
    print(
        f"\nv1beta1 reads while both webhook Pods were replaced, then one deleted: {load.reads} ok, "
        f"{len(load.read_failures)} failed"
    )
    assert load.reads >= 20
    assert load.read_failures == [], load.read_failures


def test_upgrade_to_a_new_chart_version_keeps_every_database_serving(
    release: Release, databases: Databases, k8s_api: Any, tmp_path: Path
) -> None:
    # The next chart version: every object's helm.sh/chart label changes, so both Deployments roll.
    chart = tmp_path / "sampledb-operator"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta["version"] = "0.1.1"
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    # A CRD left behind by an older release (Helm never upgrades crds/): the operator brings it up to date.
    stale = {"op": "replace", "path": "/spec/versions/1/schema/openAPIV3Schema/description", "value": "stale"}
    release.kubectl("patch", "crd", CRD_NAME, "--type=json", "-p", json.dumps([stale]))
    pods = release.database_pods(databases.namespace)
    operator_pods = {
        p["metadata"]["uid"]
        for p in release.items("pods", release.namespace, "-l", "app.kubernetes.io/component=operator")
    }
    started = time.monotonic()
    with Load(release, databases.namespace, k8s_api, writes_to="one") as load:
        time.sleep(2)
        release.upgrade(chart=chart)
        release.wait_rollout(RELEASE)
        wait_for(
            lambda: served_versions(release) == chart_versions(chart), what="the CRD brought up to date", timeout=120
        )
        time.sleep(3)
    print(
        f"\nhelm upgrade to chart 0.1.1 in {time.monotonic() - started:.1f} s: {load.writes} rows written, "
        f"{len(load.write_failures)} failed; {load.reads} v1beta1 reads, {len(load.read_failures)} failed"
    )
    new_operator = release.items("pods", release.namespace, "-l", "app.kubernetes.io/component=operator")
    assert {p["metadata"]["uid"] for p in new_operator}.isdisjoint(operator_pods), "the operator was not replaced"
    assert all(p["metadata"]["labels"]["helm.sh/chart"] == "sampledb-operator-0.1.1" for p in new_operator)
    assert load.write_failures == [] and load.read_failures == [], (load.write_failures, load.read_failures)
    assert load.writes >= 10
    assert release.query(databases.namespace, "one", "SELECT count(*) FROM load") == str(ROWS + load.writes)
    assert release.query(databases.namespace, "beta", "SELECT count(*) FROM load") == str(ROWS)
    assert release.database_pods(databases.namespace) == pods, "a database Pod restarted or was replaced"
    release.wait_ready(databases.namespace, *databases.names, timeout=30)


def served_versions(release: Release) -> list[dict[str, Any]]:
    versions: list[dict[str, Any]] = release.get("crd", CRD_NAME, "")["spec"]["versions"]
    return versions


def chart_versions(chart: Path) -> list[dict[str, Any]]:
    crds = [yaml.safe_load(path.read_text()) for path in (chart / "crds").glob("*.yaml")]
    (crd,) = [crd for crd in crds if crd["metadata"]["name"] == CRD_NAME]
    versions: list[dict[str, Any]] = crd["spec"]["versions"]
    return versions


def test_upgrade_keeps_the_certificate_and_rolls_the_operator(release: Release) -> None:
    before = tls(release)
    operator = release.get("deployment", RELEASE)
    webhook = release.get("deployment", f"{RELEASE}-webhook")
    release.upgrade("--set", "logLevel=DEBUG")
    assert tls(release) == before, "a plain upgrade must reuse the webhook certificate"
    after = release.get("deployment", RELEASE)
    assert after["metadata"]["generation"] > operator["metadata"]["generation"]
    assert env_of(after, "operator")["SAMPLEDB_LOG_LEVEL"] == "DEBUG"
    assert deployment_available(after)
    # A new ReplicaSet took over: the rollout happened and finished.
    replica_sets = release.items("rs", release.namespace, "-l", "app.kubernetes.io/component=operator")
    active = [rs for rs in replica_sets if rs["spec"]["replicas"] > 0]
    assert len(replica_sets) >= 2 and len(active) == 1
    assert env_of(active[0], "operator")["SAMPLEDB_LOG_LEVEL"] == "DEBUG"
    annotation = "checksum/webhook-tls"
    for old, name in ((operator, RELEASE), (webhook, f"{RELEASE}-webhook")):
        new = release.get("deployment", name)
        assert (
            new["spec"]["template"]["metadata"]["annotations"][annotation]
            == (old["spec"]["template"]["metadata"]["annotations"][annotation])
        )


def test_rotate_replaces_the_certificate_and_conversion_keeps_working(release: Release, databases: Databases) -> None:
    before = tls(release)
    webhook_before = release.get("deployment", f"{RELEASE}-webhook")
    release.upgrade("--set", "webhook.tls.rotate=true")
    rotated = tls(release)
    assert rotated["tls.crt"] != before["tls.crt"] and rotated["tls.key"] != before["tls.key"]
    new_ca, previous_ca = load_certs(rotated["ca.crt"])
    assert previous_ca == load_certs(before["ca.crt"])[0]
    (cert,) = load_certs(rotated["tls.crt"])
    cert.verify_directly_issued_by(new_ca)
    webhook_after = release.get("deployment", f"{RELEASE}-webhook")
    assert webhook_after["metadata"]["generation"] > webhook_before["metadata"]["generation"], "webhook not rolled"
    assert deployment_available(webhook_after)
    # The API server trusts the new certificate: the operator put the new CA bundle in the CRD.
    wait_for(
        lambda: (
            release.kubectl("get", "sampledbs.v1beta1.sampledb.io", "-n", databases.namespace, check=False).returncode
            == 0
        ),
        what="a v1beta1 read through the rotated certificate",
        timeout=60,
    )
    # Once the flag is dropped, upgrades reuse the new certificate again.
    release.upgrade("--set", "webhook.tls.rotate=false")
    assert tls(release) == rotated


def test_uninstall_keeps_the_crds_and_the_databases(release: Release, databases: Databases) -> None:
    assert "keeps the CRD sampledbs.sampledb.io and every" in " ".join(release.notes.split()), release.notes
    manifest = release.manifest()
    cluster_names = {
        kind: [doc["metadata"]["name"] for doc in find(manifest, kind)]
        for kind in ("ClusterRole", "ClusterRoleBinding", "ValidatingWebhookConfiguration")
    }
    # A webhook configuration left behind would make every v1beta1 update fail once its Pods are gone.
    assert all(cluster_names.values()), cluster_names
    assert release.leftovers([release.namespace], {})  # the sweep sees the installed objects
    pods = release.database_pods(databases.namespace)
    rows = {name: release.query(databases.namespace, name, "SELECT count(*) FROM load") for name in databases.names}
    release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    # Helm deletes what it created; ReplicaSets, Pods and EndpointSlices go by garbage collection.
    wait_for(
        lambda: not release.leftovers([release.namespace], cluster_names) or None,
        what="every object of the release to be gone",
        timeout=90,
    )
    for name in CHART_CRDS:
        assert release.get("crd", name, "")["metadata"]["name"] == name, "the CRDs stay (by design)"
    # The databases keep running without the operator, with their data.
    assert release.database_pods(databases.namespace) == pods
    for name in databases.names:
        assert release.query(databases.namespace, name, "SELECT count(*) FROM load") == rows[name]
    # Installing again adopts them: still Ready, nothing restarted.
    release.install()
    release.wait_ready(databases.namespace, *databases.names, timeout=120)
    assert release.database_pods(databases.namespace) == pods

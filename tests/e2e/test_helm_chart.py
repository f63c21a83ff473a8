"""The Helm chart, with the real (pinned) Helm: lint, render, schema, and a full release lifecycle.

Static part: `helm lint --strict` with every `ci/*-values.yaml`, then every rendered scenario is
parsed and checked: Pod Security Standard "restricted" for every Pod spec, no RBAC wildcard, the
webhook's replicas and PodDisruptionBudget, the operator's environment, the RBAC rules against their
single source `config/rbac/role.yaml`, and `values.schema.json` rejecting bad values.

Cluster part, against the session's cluster (tests/conftest.py): install into a fresh namespace that
enforces "restricted", upgrade (the webhook certificate is kept), rotate (it is not), `helm test`,
uninstall (nothing but the CRD remains). The local cluster's Pods are simulated by kwok: they become
Running and Ready but run nothing, so these tests assert what Helm and Kubernetes wire (objects,
admission, RBAC decisions, Service endpoints, rollouts), not behaviour inside the Pods; the check the
`helm test` Job runs in its Pod is run here against the real webhook process instead.
"""

from __future__ import annotations

import base64
import datetime
import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509

from sampledb_localcluster import pki
from sampledb_localcluster.tools import tool_path
from tests.integration.conftest import wait_for
from tests.webhook_process import WebhookReplicas

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sampledb-operator"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SCENARIOS = [path.name.removesuffix("-values.yaml") for path in CI_VALUES]
CRD_NAME = "sampledbs.sampledb.io"
CHART_CRDS = sorted(yaml.safe_load(path.read_text())["metadata"]["name"] for path in (CHART / "crds").glob("*.yaml"))
RELEASE = "sampledb-operator"


# -- helpers ---------------------------------------------------------------------------------------


def run(tool: str, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the pinned `helm` or `kubectl`; on failure, the error shows the command and its output."""
    result = subprocess.run([str(tool_path(tool)), *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{tool} {' '.join(args)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
        )
    return result


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("helm", *args, check=check)


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
    # every source rule lands in exactly one place; the ClusterRole holds only the CRD rules
    assert canonical(cluster_rules + namespaced_rules) == canonical(source_rules())
    assert cluster_rules and all(rule["apiGroups"] == ["apiextensions.k8s.io"] for rule in cluster_rules)
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


# -- against the cluster ---------------------------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    kubeconfig: str

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--namespace", self.namespace, "--kubeconfig", self.kubeconfig, check=check)

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run("kubectl", "--kubeconfig", self.kubeconfig, *args, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        result = self.kubectl("get", kind, name, "-n", namespace or self.namespace, "-o", "json")
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    def install(self, *values: str) -> None:
        result = self.helm("install", self.name, str(CHART), *values, "--wait", "--timeout", "120s")
        # The namespaces warn (and enforce) "restricted": the API server would say so here.
        assert "PodSecurity" not in result.stderr, result.stderr

    def upgrade(self, *values: str) -> None:
        self.helm("upgrade", self.name, str(CHART), "--reuse-values", *values, "--wait", "--timeout", "120s")

    def tls(self) -> dict[str, bytes]:
        data = self.get("secret", f"{RELEASE}-webhook-tls")["data"]
        return {key: base64.b64decode(value) for key, value in data.items()}

    def can(self, account: str, *args: str) -> bool:
        """`kubectl auth can-i` as one of the release's ServiceAccounts (the API server's RBAC decision)."""
        result = self.kubectl(
            "auth", "can-i", *args, f"--as=system:serviceaccount:{self.namespace}:{account}", check=False
        )
        return result.stdout.strip() == "yes"

    def manifest(self) -> list[dict[str, Any]]:
        return [doc for doc in yaml.safe_load_all(self.helm("get", "manifest", self.name).stdout) if doc]

    def leftovers(self, namespaces: list[str], cluster_names: dict[str, list[str]]) -> list[str]:
        """Every object still carrying the release's labels, in `namespaces` and cluster-wide, plus the
        cluster-scoped objects by name."""
        selector = f"app.kubernetes.io/instance={self.name},app.kubernetes.io/name=sampledb-operator"
        found: list[str] = []
        for namespaced in ("true", "false"):
            kinds = self.kubectl("api-resources", "--verbs=list", f"--namespaced={namespaced}", "-o", "name")
            listing = ",".join(kinds.stdout.split())
            for namespace in namespaces if namespaced == "true" else [None]:
                scope = ["-n", namespace] if namespace else []
                out = self.kubectl("get", listing, *scope, "-l", selector, "-o", "name", "--ignore-not-found")
                found += [f"{namespace or 'cluster'}: {line}" for line in out.stdout.split()]
        for kind, names in cluster_names.items():
            for name in names:
                out = self.kubectl("get", kind, name, "-o", "name", "--ignore-not-found")
                found += [f"cluster: {line}" for line in out.stdout.split()]
        return found


def new_namespace(kubeconfig: str, prefix: str, *, restricted: bool = True) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    run("kubectl", "--kubeconfig", kubeconfig, "create", "namespace", name)
    if restricted:
        labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn", "audit")]
        run("kubectl", "--kubeconfig", kubeconfig, "label", "namespace", name, *labels)
    # Pods are refused until the controller manager has made the namespace's default ServiceAccount.
    wait_for(
        lambda: (
            run("kubectl", "--kubeconfig", kubeconfig, "get", "sa", "default", "-n", name, check=False).returncode == 0
        ),
        what=f"the default ServiceAccount of {name}",
    )
    return name


def delete_namespaces(kubeconfig: str, *names: str) -> None:
    run("kubectl", "--kubeconfig", kubeconfig, "delete", "namespace", *names, "--wait=false", "--ignore-not-found")


def deployment_available(deployment: dict[str, Any]) -> bool:
    status = deployment.get("status") or {}
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    return (
        conditions.get("Available") == "True"
        and status.get("observedGeneration") == deployment["metadata"]["generation"]
        and status.get("updatedReplicas") == deployment["spec"]["replicas"]
        and status.get("readyReplicas") == deployment["spec"]["replicas"]
    )


def load_certs(pem: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(pem)


def dns_names(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


@pytest.fixture(scope="module")
def release(kube_config: str) -> Iterator[Release]:
    """The chart installed with its defaults into a fresh namespace that enforces "restricted"."""
    namespace = new_namespace(kube_config, "sampledb-e2e")
    installed = Release(RELEASE, namespace, kube_config)
    try:
        installed.install()
        yield installed
    finally:
        installed.helm("uninstall", RELEASE, "--ignore-not-found", "--wait", "--timeout", "120s", check=False)
        delete_namespaces(kube_config, namespace)


def test_install_wires_deployments_crds_rbac_and_tls(release: Release) -> None:
    for name in (RELEASE, f"{RELEASE}-webhook"):
        assert deployment_available(release.get("deployment", name)), f"Deployment {name} is not Available"
    assert CRD_NAME in CHART_CRDS
    for name in CHART_CRDS:
        crd = release.get("crd", name)
        assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True", name

    # The Services select the Pods: kwok gives them IPs and marks them Ready, the EndpointSlice
    # controller lists them.
    def ready_endpoints(service: str) -> int:
        slices = release.kubectl(
            "get",
            "endpointslices",
            "-n",
            release.namespace,
            "-l",
            f"kubernetes.io/service-name={service}",
            "-o",
            "json",
        )
        return sum(
            1
            for item in json.loads(slices.stdout)["items"]
            for endpoint in item.get("endpoints") or []
            if (endpoint.get("conditions") or {}).get("ready")
        )

    wait_for(lambda: ready_endpoints("sampledb-webhook") == 2, what="2 ready webhook endpoints")
    wait_for(lambda: ready_endpoints(f"{RELEASE}-metrics") == 1, what="1 ready metrics endpoint")

    # The webhook Pods carry no API token: the ServiceAccount admission plugin honoured the opt-out.
    pods = json.loads(
        release.kubectl(
            "get", "pods", "-n", release.namespace, "-l", "app.kubernetes.io/component=webhook", "-o", "json"
        ).stdout
    )["items"]
    assert len(pods) == 2
    for pod in pods:
        volumes = [v for v in pod["spec"]["volumes"] if "projected" in v]
        assert not volumes, f"webhook Pod {pod['metadata']['name']} mounts a token: {volumes}"

    # RBAC as the API server decides it.
    assert release.can(RELEASE, "patch", "sampledbs.sampledb.io", "--all-namespaces")
    assert release.can(RELEASE, "create", "leases.coordination.k8s.io", "-n", release.namespace)
    assert release.can(RELEASE, "patch", f"customresourcedefinitions/{CRD_NAME}")
    assert not release.can(RELEASE, "patch", "customresourcedefinitions/other.example.com")
    assert not release.can(RELEASE, "list", "secrets", "--all-namespaces")
    webhook = f"{RELEASE}-webhook"
    for verb_and_resource in (("get", "secrets"), ("list", "sampledbs.sampledb.io"), ("get", "configmaps")):
        assert not release.can(webhook, *verb_and_resource, "-n", release.namespace), verb_and_resource

    # The serving certificate names the Service and chains to ca.crt.
    tls = release.tls()
    (ca,) = load_certs(tls["ca.crt"])
    (cert,) = load_certs(tls["tls.crt"])
    service_dns = f"sampledb-webhook.{release.namespace}.svc"
    assert service_dns in dns_names(cert)
    assert f"{service_dns}.cluster.local" in dns_names(cert)
    cert.verify_directly_issued_by(ca)
    now = datetime.datetime.now(datetime.UTC)
    assert cert.not_valid_before_utc <= now < cert.not_valid_after_utc
    annotations = release.get("secret", f"{RELEASE}-webhook-tls")["metadata"]["annotations"]
    recorded = datetime.datetime.fromisoformat(annotations["sampledb.io/tls-not-after"])
    assert abs(recorded - cert.not_valid_after_utc) < datetime.timedelta(minutes=5)


def test_upgrade_keeps_the_certificate_and_rolls_the_operator(release: Release) -> None:
    before = release.tls()
    operator = release.get("deployment", RELEASE)
    webhook = release.get("deployment", f"{RELEASE}-webhook")
    release.upgrade("--set", "logLevel=DEBUG")
    assert release.tls() == before, "a plain upgrade must reuse the webhook certificate"
    after = release.get("deployment", RELEASE)
    assert after["metadata"]["generation"] > operator["metadata"]["generation"]
    assert env_of(after, "operator")["SAMPLEDB_LOG_LEVEL"] == "DEBUG"
    assert deployment_available(after)
    # A new ReplicaSet took over: the rollout happened and finished.
    replica_sets = json.loads(
        release.kubectl(
            "get", "rs", "-n", release.namespace, "-l", "app.kubernetes.io/component=operator", "-o", "json"
        ).stdout
    )["items"]
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


def test_rotate_replaces_the_certificate_and_keeps_the_old_ca(release: Release) -> None:
    before = release.tls()
    webhook_before = release.get("deployment", f"{RELEASE}-webhook")
    release.upgrade("--set", "webhook.tls.rotate=true")
    rotated = release.tls()
    assert rotated["tls.crt"] != before["tls.crt"] and rotated["tls.key"] != before["tls.key"]
    new_ca, previous_ca = load_certs(rotated["ca.crt"])
    assert previous_ca == load_certs(before["ca.crt"])[0]
    (cert,) = load_certs(rotated["tls.crt"])
    cert.verify_directly_issued_by(new_ca)
    webhook_after = release.get("deployment", f"{RELEASE}-webhook")
    assert webhook_after["metadata"]["generation"] > webhook_before["metadata"]["generation"], "webhook not rolled"
    assert deployment_available(webhook_after)
    # Once the flag is dropped, upgrades reuse the new certificate again.
    release.upgrade("--set", "webhook.tls.rotate=false")
    assert release.tls() == rotated


def test_helm_test_passes(release: Release) -> None:
    # kwok completes the test Job's Pod without running it: this proves the hook is created,
    # admitted under "restricted" and awaited by Helm. The check inside the Pod runs for real on
    # kind, and here in test_helm_test_check_against_the_real_webhook.
    result = release.helm("test", release.name, "--timeout", "120s")
    assert "Phase:          Succeeded" in result.stdout, result.stdout
    jobs = release.kubectl("get", "jobs", "-n", release.namespace, "-o", "name").stdout.split()
    assert jobs == [], "a passed test Job is deleted (hook-delete-policy hook-succeeded)"


class HelmCertWebhook(WebhookReplicas):
    """The webhook process with the release's certificate, which names the Service, not 127.0.0.1."""

    def ssl_context(self) -> Any:
        context = super().ssl_context()
        context.check_hostname = False  # only for the readiness poll; the test Job's check verifies it
        return context


def test_helm_test_check_against_the_real_webhook(release: Release, tmp_path: Path) -> None:
    """Run the `helm test` Job's script, as rendered, against the real webhook process serving the
    release's certificate, with the Service's DNS name resolved to loopback."""
    (job,) = [doc for doc in yaml.safe_load_all(release.helm("get", "hooks", release.name).stdout) if doc]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python3", "-c"]
    script: str = container["args"][0]
    tls = release.tls()
    for name, content in tls.items():
        (tmp_path / name).write_bytes(content)
    hooks = HelmCertWebhook(tmp_path, tmp_path / "ca.crt", tmp_path / "tls.crt", tmp_path / "tls.key")
    hooks.start_replica()
    try:
        service_dns = f"sampledb-webhook.{release.namespace}.svc"
        resolve_to_loopback = (
            "import socket\n"
            "_getaddrinfo = socket.getaddrinfo\n"
            "def _loopback(host, port, *args, **kwargs):\n"
            f"    if host == {service_dns!r}:\n"
            f"        return _getaddrinfo('127.0.0.1', {hooks.port}, *args, **kwargs)\n"
            "    return _getaddrinfo(host, port, *args, **kwargs)\n"
            "socket.getaddrinfo = _loopback\n"
        )
        local_script = resolve_to_loopback + script.replace("/tls/ca.crt", str(tmp_path / "ca.crt"))
        result = subprocess.run(
            [sys.executable, "-c", local_script], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "healthy, TLS verified" in result.stdout
        # and the same check refuses the webhook when ca.crt is not the CA that signed it
        other_ca = pki.create_ca(tmp_path / "other-ca").cert
        untrusted = resolve_to_loopback + script.replace("/tls/ca.crt", str(other_ca))
        refused = subprocess.run(
            [sys.executable, "-c", untrusted], capture_output=True, text=True, timeout=60, check=False
        )
        assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr, refused.stderr
    finally:
        hooks.stop()


def test_uninstall_removes_everything_but_the_crds(release: Release) -> None:
    manifest = release.manifest()
    cluster_names = {
        kind: [doc["metadata"]["name"] for doc in find(manifest, kind)]
        for kind in ("ClusterRole", "ClusterRoleBinding")
    }
    assert cluster_names["ClusterRole"] and cluster_names["ClusterRoleBinding"]
    assert release.leftovers([release.namespace], {})  # the sweep sees the installed objects
    release.helm("uninstall", release.name, "--wait", "--timeout", "120s")
    # Helm deletes what it created; ReplicaSets, Pods and EndpointSlices go by garbage collection.
    wait_for(
        lambda: not release.leftovers([release.namespace], cluster_names) or None,
        what="every object of the release to be gone",
        timeout=90,
    )
    for name in CHART_CRDS:
        assert release.get("crd", name)["metadata"]["name"] == name, "the CRDs stay (by design)"


def test_watch_namespaces_release(kube_config: str) -> None:
    """Two operator replicas watching two namespaces: Roles there, nothing anywhere else, all removed."""
    watched = [new_namespace(kube_config, "sampledb-team") for _ in range(2)]
    other = new_namespace(kube_config, "sampledb-other")
    namespace = new_namespace(kube_config, "sampledb-e2e-ns")
    installed = Release("watcher", namespace, kube_config)
    fullname = f"watcher-{RELEASE}"
    try:
        installed.install(
            "--set", f"watchNamespaces={{{','.join(watched)}}}", "--values", str(CHART / "ci" / "ha-values.yaml")
        )
        for name in (fullname, f"{fullname}-webhook"):
            assert deployment_available(installed.get("deployment", name)), name
        for team in watched:
            assert installed.get("role", fullname, team)["rules"]
            assert installed.get("rolebinding", fullname, team)["roleRef"]["name"] == fullname
        account = fullname
        for team in watched:
            assert installed.can(account, "patch", "sampledbs.sampledb.io", "-n", team)
            assert installed.can(account, "create", "statefulsets.apps", "-n", team)
        assert not installed.can(account, "patch", "sampledbs.sampledb.io", "-n", other)
        assert not installed.can(account, "patch", "sampledbs.sampledb.io", "--all-namespaces")
        assert installed.can(account, "list", "customresourcedefinitions.apiextensions.k8s.io")
        assert installed.can(account, "patch", "leases.coordination.k8s.io", "-n", namespace)
        assert not installed.can(account, "patch", "leases.coordination.k8s.io", "-n", other)
        manifest = installed.manifest()
        cluster_names = {kind: [d["metadata"]["name"] for d in find(manifest, kind)] for kind in ("ClusterRole",)}
        installed.helm("uninstall", installed.name, "--wait", "--timeout", "120s")
        wait_for(
            lambda: not installed.leftovers([namespace, *watched, other], cluster_names) or None,
            what="every object of the release to be gone",
            timeout=90,
        )
    finally:
        installed.helm("uninstall", installed.name, "--ignore-not-found", check=False)
        delete_namespaces(kube_config, namespace, other, *watched)

"""What the install tests share: a Helm release, namespaces, SampleDBs with real data, and load.

Every check of data goes through PostgreSQL (``psql`` in the server's container over its local
socket); every check of the conversion webhook goes through the API server, which calls it through
its Service (kube-proxy, real Pods), and through the webhook's own request counters.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from sampledb_localcluster.tools import tool_path
from tests.integration.conftest import wait_for

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sampledb-operator"
SOCKET_DIR = "/var/run/postgresql"
READY_TIMEOUT = 300.0
"""Apply -> Ready of real PostgreSQL on a loaded 2-core machine (12 s median when quiet)."""
WEBHOOK_PORT = 9443
# GET /metrics from inside the webhook's container (its certificate names the Service, not 127.0.0.1).
READ_METRICS = (
    "import ssl, urllib.request; context = ssl._create_unverified_context(); "
    f"url = 'https://127.0.0.1:{WEBHOOK_PORT}/metrics'; "
    "print(urllib.request.urlopen(url, context=context, timeout=5).read().decode())"
)
RESTRICTED_LABELS = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn", "audit")]


def run(tool: str, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """Run the pinned `helm` or `kubectl`; on failure, the error shows the command and its output."""
    result = subprocess.run([str(tool_path(tool)), *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{tool} {' '.join(args)} exited with {result.returncode}:\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("helm", *args, check=check)


@dataclass
class Release:
    """One Helm release of the chart, and kubectl against its cluster."""

    name: str
    namespace: str
    kubeconfig: str
    installed_at: float = 0.0
    notes: str = ""

    def helm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return helm(*args, "--namespace", self.namespace, "--kubeconfig", self.kubeconfig, check=check)

    def kubectl(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return run("kubectl", "--kubeconfig", self.kubeconfig, *args, check=check, timeout=timeout)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        result = self.kubectl("get", kind, name, "-n", namespace or self.namespace, "-o", "json")
        obj: dict[str, Any] = json.loads(result.stdout)
        return obj

    def items(self, kind: str, namespace: str, *selector: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = json.loads(
            self.kubectl("get", kind, "-n", namespace, *selector, "-o", "json").stdout
        )["items"]
        return found

    def install(self, *values: str) -> None:
        self.installed_at = time.monotonic()
        result = self.helm("install", self.name, str(CHART), *values, "--wait", "--timeout", "180s")
        # The namespaces warn (and enforce) "restricted": the API server would say so here.
        assert "PodSecurity" not in result.stderr, result.stderr
        self.notes = result.stdout

    def upgrade(self, *values: str, chart: Path = CHART) -> None:
        self.helm("upgrade", self.name, str(chart), "--reuse-values", *values, "--wait", "--timeout", "180s")

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

    def wait_rollout(self, deployment: str, timeout: int = 240) -> None:
        self.kubectl("rollout", "status", f"deployment/{deployment}", "-n", self.namespace, f"--timeout={timeout}s")

    # -- the operator's objects and the databases --------------------------------------------------

    def apply(self, namespace: str, *objects: dict[str, Any]) -> None:
        body = "\n---\n".join(json.dumps(obj) for obj in objects)
        result = subprocess.run(
            [str(tool_path("kubectl")), "--kubeconfig", self.kubeconfig, "apply", "-n", namespace, "-f", "-"],
            input=body,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr

    def phase(self, namespace: str, name: str) -> str | None:
        out = self.kubectl("get", "sampledb", name, "-n", namespace, "-o", "jsonpath={.status.phase}", check=False)
        return out.stdout.strip() or None if out.returncode == 0 else None

    def wait_ready(self, namespace: str, *names: str, timeout: float = READY_TIMEOUT) -> None:
        for name in names:
            wait_for(
                lambda n=name: self.phase(namespace, n) == "Ready",
                what=f"SampleDB {namespace}/{name} Ready",
                timeout=timeout,
            )

    def psql(self, namespace: str, instance: str, sql: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """As the superuser, in the server's container, over its socket (database `app`)."""
        exec_ = ["exec", "-n", namespace, f"{instance}-0", "-c", "postgres", "--"]
        client = ["psql", "-h", SOCKET_DIR, "-U", "postgres", "-d", "app", "-v", "ON_ERROR_STOP=1", "-qXAtc", sql]
        return self.kubectl(*exec_, *client, check=check, timeout=60)

    def query(self, namespace: str, instance: str, sql: str) -> str:
        return self.psql(namespace, instance, sql).stdout.strip()

    def database_pods(self, namespace: str) -> dict[str, tuple[str, int]]:
        """``{pod: (uid, restarts)}`` of the database Pods: a restart or a replacement changes it."""
        pods = self.items("pods", namespace, "-l", "app.kubernetes.io/managed-by=sampledb-operator")
        return {
            pod["metadata"]["name"]: (
                pod["metadata"]["uid"],
                sum(s.get("restartCount", 0) for s in pod["status"].get("containerStatuses") or []),
            )
            for pod in pods
            if pod["metadata"]["name"].endswith("-0")
        }

    def webhook_counts(self, metric: str, selector: str = "app.kubernetes.io/component=webhook") -> dict[str, float]:
        """One of the webhook Pods' own request counters (by result), summed over the Pods.

        Read inside each Pod (`kubectl exec`, through the kubelet): the API server's Pod proxy would
        need a route from the Pods back to the host, which the real node deliberately lacks.
        """
        totals: dict[str, float] = {}
        for pod in self.items("pods", self.namespace, "-l", selector):
            if pod["metadata"].get("deletionTimestamp"):
                continue
            exec_ = ["exec", "-n", self.namespace, pod["metadata"]["name"], "-c", "webhook", "--"]
            metrics = self.kubectl(*exec_, "python3", "-c", READ_METRICS).stdout
            for line in metrics.splitlines():
                if line.startswith(f"{metric}{{"):
                    result = line.split('result="', 1)[1].split('"', 1)[0]
                    totals[result] = totals.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
        return totals

    def webhook_conversions(self) -> dict[str, float]:
        """ConversionReviews answered, by result."""
        return self.webhook_counts("sampledb_conversion_requests_total")

    def webhook_admissions(self) -> dict[str, float]:
        """AdmissionReviews of v1beta1 updates answered, by result (Allowed, Denied, BadRequest)."""
        return self.webhook_counts("sampledb_admission_reviews_total")


def new_namespace(kubeconfig: str, prefix: str, *, restricted: bool = True) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    run("kubectl", "--kubeconfig", kubeconfig, "create", "namespace", name)
    if restricted:
        run("kubectl", "--kubeconfig", kubeconfig, "label", "namespace", name, *RESTRICTED_LABELS)
    # Pods are refused until the controller manager has made the namespace's default ServiceAccount.
    wait_for(
        lambda: (
            run("kubectl", "--kubeconfig", kubeconfig, "get", "sa", "default", "-n", name, check=False).returncode == 0
        ),
        what=f"the default ServiceAccount of {name}",
        timeout=90,
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


def sampledb(name: str, *, beta: bool = False) -> dict[str, Any]:
    """A PostgreSQL 17 instance with a 1Gi volume, removed with its data when deleted (tests only)."""
    if beta:
        spec: dict[str, Any] = {"version": 17, "storageSize": "1Gi", "deletionPolicy": "Delete"}
    else:
        spec = {"postgres": {"version": 17}, "storage": {"size": "1Gi"}, "deletionPolicy": "Delete"}
    version = "v1beta1" if beta else "v1"
    return {"apiVersion": f"sampledb.io/{version}", "kind": "SampleDB", "metadata": {"name": name}, "spec": spec}


RESERVED_ANNOTATION = "conversion.sampledb.io/v1-spec"


def restore_change_through_v1beta1_is_refused(custom: k8s.CustomObjectsApi, namespace: str) -> str:
    """The installed validating webhook holds v1's `restore is immutable` for an update sent as v1beta1.

    A SampleDB whose restore names a backup that never comes (it waits, harmlessly, and is deleted
    at the end); its restore source changed through the reserved annotation must be refused with 422
    naming spec.restore, the stored spec unchanged, while a label change through v1beta1 passes.
    Returns the refusal's message.
    """
    name = f"restore-{secrets.token_hex(3)}"
    body = sampledb(name)
    body["spec"]["restore"] = {"backup": "never-made"}
    custom.create_namespaced_custom_object("sampledb.io", "v1", namespace, "sampledbs", body)
    try:
        hostile = {"metadata": {"annotations": {RESERVED_ANNOTATION: json.dumps({"restore": {"backup": "other"}})}}}
        try:
            custom.patch_namespaced_custom_object("sampledb.io", "v1beta1", namespace, "sampledbs", name, hostile)
        except k8s.ApiException as err:
            refusal = err
        else:
            raise AssertionError("a restore change through v1beta1 was admitted")
        assert refusal.status == 422 and "spec.restore: Invalid value: restore is immutable" in str(refusal.body)
        labelled = {"metadata": {"labels": {"e2e.sampledb.io/touched": "yes"}}}
        custom.patch_namespaced_custom_object("sampledb.io", "v1beta1", namespace, "sampledbs", name, labelled)
        stored = custom.get_namespaced_custom_object("sampledb.io", "v1", namespace, "sampledbs", name)
        assert stored["spec"]["restore"] == {"backup": "never-made"}
        assert stored["metadata"]["labels"]["e2e.sampledb.io/touched"] == "yes"
        return str(refusal.body)
    finally:
        custom.delete_namespaced_custom_object("sampledb.io", "v1", namespace, "sampledbs", name)


def delete_sampledbs(release: Release, namespace: str) -> None:
    """Delete every SampleDB of `namespace` while an operator still runs to let them go."""
    release.kubectl(
        "delete", "sampledbs.sampledb.io", "--all", "-n", namespace, "--wait=true", "--timeout=180s", check=False
    )


@dataclass
class Load:
    """Background load during an operation: rows written to one database, and v1beta1 requests.

    Each v1beta1 "read" is a list and an annotation patch through v1beta1, twice a second: the
    patch cannot be served from a cache, so every one of them is converted by the webhook.

    Each counts what succeeded and keeps what failed, so a test asserts zero failures and shows
    how many attempts that zero stands for.
    """

    release: Release
    namespace: str
    api: k8s.ApiClient
    writes_to: str | None = None
    read_interval: float = 0.5
    writes: int = 0
    reads: int = 0
    write_failures: list[str] = field(default_factory=list)
    read_failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._read, daemon=True)]
        if self.writes_to:
            self._threads.append(threading.Thread(target=self._write, daemon=True))
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=90)

    def _read(self) -> None:
        custom = k8s.CustomObjectsApi(self.api)
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                listed = custom.list_namespaced_custom_object(
                    "sampledb.io", "v1beta1", self.namespace, "sampledbs", _request_timeout=10
                )
                # A list may be answered from the API server's cache, already converted; a write
                # through v1beta1 always calls the webhook (v1 -> v1beta1 -> patched -> v1).
                name = listed["items"][0]["metadata"]["name"]
                touch = {"metadata": {"annotations": {"e2e.sampledb.io/touch": str(self.reads)}}}
                custom.patch_namespaced_custom_object(
                    "sampledb.io", "v1beta1", self.namespace, "sampledbs", name, touch, _request_timeout=10
                )
                self.reads += 1
            except Exception as error:  # every failure is a finding, whatever its kind
                detail = getattr(error, "body", None) or str(error)
                self.read_failures.append(f"{time.strftime('%H:%M:%S')} {type(error).__name__}: {str(detail)[:400]}")
            self._stop.wait(max(0.0, self.read_interval - (time.monotonic() - started)))

    def _write(self) -> None:
        assert self.writes_to
        while not self._stop.is_set():
            sql = "INSERT INTO load VALUES (default) RETURNING 1"
            result = self.release.psql(self.namespace, self.writes_to, sql, check=False)
            if result.returncode == 0 and result.stdout.strip() == "1":
                self.writes += 1
            else:
                said = (result.stderr or result.stdout).strip()
                self.write_failures.append(f"{time.strftime('%H:%M:%S')} exit {result.returncode}: {said[:300]}")
            self._stop.wait(0.2)

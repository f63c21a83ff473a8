"""OLM installs the operator from our catalog, wires its conversion webhook, and upgrades it.

Against the session's cluster (tests/conftest.py), with the pinned OLM v0.38.0 run the way its
developers run it out of cluster: OLM's CRDs installed from the Go module cache, the `olm` and
`catalog` operators as local processes (logs in pytest's tmp dir, stopped at the end whatever
happens), and the catalog served by `opm serve` on a loopback port, behind a grpc CatalogSource
with `address: 127.0.0.1:<port>`.

The catalog is rendered for the test by hack/bundle.py from catalog/template.yaml plus a second
bundle version generated into a temp dir (0.1.1, which replaces the committed 0.1.0), so the
channel has an upgrade edge. Its bundles carry their manifests inline (`image: ""`, olm.bundle.object
properties): OLM turns those into install steps directly, while a bundle image would need an
unpack Job, whose Pod cannot run here (kwok simulates Pods: Deployments become Available but
nothing runs inside). So this test asserts what OLM wires (InstallPlan, CSV phases, Deployments,
RBAC, the webhook Service, its certificate and the CA in the CRD), not the operator's behaviour.
"""

from __future__ import annotations

import base64
import datetime
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from cryptography import x509
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from sampledb_localcluster import pki
from sampledb_localcluster.tools import load_versions, tool_path
from tests.webhook_process import free_port

REPO = Path(__file__).resolve().parents[2]
PACKAGE = "sampledb-operator"
OLD, NEW = "0.1.0", "0.1.1"
OLD_CSV, NEW_CSV = f"{PACKAGE}.v{OLD}", f"{PACKAGE}.v{NEW}"
CATALOG_SOURCE = "sampledb-catalog"
OLM_NAMESPACE = "olm"
OPERATOR_DEPLOYMENT, WEBHOOK_DEPLOYMENT = "sampledb-operator", "sampledb-operator-webhook"
# What OLM names the webhook's Service and certificate Secret (install/certresources.go).
WEBHOOK_SERVICE = f"{WEBHOOK_DEPLOYMENT}-service"
WEBHOOK_SECRET = f"{WEBHOOK_SERVICE}-cert"
OLM_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"
OUR_CRDS = ("sampledbs.sampledb.io", "sampledbbackups.sampledb.io")
TIMEOUT = 180.0
GROUP, V1ALPHA1, V1 = "operators.coreos.com", "v1alpha1", "v1"
T = TypeVar("T")


# -- helpers ---------------------------------------------------------------------------------------


def olm_crds_dir() -> Path:
    """OLM's CRDs, from the Go module cache that building the pinned `olm` filled."""
    version = load_versions()["OLM_VERSION"]
    cache = os.environ.get("GOMODCACHE")
    if not cache:
        go = shutil.which("go") or "/usr/local/go/bin/go"
        try:
            cache = subprocess.run([go, "env", "GOMODCACHE"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            cache = str(Path.home() / "go" / "pkg" / "mod")
    path = Path(cache.strip()) / f"github.com/operator-framework/operator-lifecycle-manager@{version}/deploy/chart/crds"
    if not path.is_dir():
        pytest.fail(
            f"OLM's CRDs are not at {path}: run `hack/build-tools.sh olm` (or `cd $(mktemp -d) && go mod init x && "
            f"GOFLAGS=-mod=mod go get github.com/operator-framework/operator-lifecycle-manager@{version}`)"
        )
    return path


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def run(argv: list[str], *, timeout: float = 120) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def get_or_none(read: Callable[[], T]) -> T | None:
    try:
        return read()
    except ApiException as err:
        if err.status == 404:
            return None
        raise


def delete_quietly(delete: Callable[[], object]) -> None:
    try:
        delete()
    except ApiException as err:
        if err.status != 404:
            raise


def condition(obj: dict[str, Any] | None, kind: str) -> str | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            status: str = cond.get("status")
            return status
    return None


def tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return f"({path.name}: no log)"
    return f"--- last lines of {path.name} ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# -- the OLM installation --------------------------------------------------------------------------


@dataclass
class Olm:
    """OLM on the test cluster: its processes, our catalog, and API handles."""

    api: k8s.ApiClient
    kube_config: str
    workdir: Path
    namespace: str = ""
    catalog_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log(name).open("ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})}
            )

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited with {process.returncode}\n{tail(self.log(name))}")

    def stop(self) -> None:
        """Stop what this fixture started, by process id: SIGTERM, then SIGKILL after 10 s."""
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def get(
        self, plural: str, name: str, namespace: str | None = None, version: str = V1ALPHA1
    ) -> dict[str, Any] | None:
        ns = namespace or self.namespace
        return get_or_none(lambda: self.custom.get_namespaced_custom_object(GROUP, version, ns, plural, name))

    def create(self, plural: str, body: dict[str, Any], version: str = V1ALPHA1) -> None:
        ns = body["metadata"].get("namespace", self.namespace)
        self.custom.create_namespaced_custom_object(GROUP, version, ns, plural, body)

    def diagnostics(self) -> str:
        """OLM's view and its logs, for failure messages."""
        parts = []
        for plural in ("subscriptions", "installplans", "clusterserviceversions"):
            try:
                items = self.custom.list_namespaced_custom_object(GROUP, V1ALPHA1, self.namespace, plural)["items"]
            except ApiException as err:
                items = [{"error": str(err)}]
            for item in items:
                status = item.get("status") or {}
                summary = {k: status.get(k) for k in ("phase", "state", "reason", "message", "conditions")}
                name = (item.get("metadata") or {}).get("name")
                parts.append(f"{plural}/{name}: {yaml.safe_dump(summary, width=200)}")
        source = self.get("catalogsources", CATALOG_SOURCE, OLM_NAMESPACE) or {}
        parts.append(f"catalogsource: {(source.get('status') or {}).get('connectionState')}")
        parts += [tail(self.log(name)) for name in ("olm", "catalog", "opm")]
        return "\n".join(parts)

    def wait_for(self, probe: Callable[[], T | None], what: str, timeout: float = TIMEOUT) -> T:
        """Poll `probe` until truthy; fail with OLM's state and logs. Stops early if a process died."""
        deadline = time.monotonic() + timeout
        last: T | None = None
        while time.monotonic() < deadline:
            self.check_alive()
            last = probe()
            if last:
                return last
            time.sleep(0.5)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})\n{self.diagnostics()}"
        )


def _crd_established(ext: k8s.ApiextensionsV1Api, name: str) -> bool:
    crd = get_or_none(lambda: ext.read_custom_resource_definition(name))
    conditions = (crd.status.conditions or []) if crd and crd.status else []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


def _snapshot_crd(ext: k8s.ApiextensionsV1Api, name: str) -> dict[str, Any] | None:
    crd = get_or_none(lambda: ext.read_custom_resource_definition(name))
    return None if crd is None else ext.api_client.sanitize_for_serialization(crd)


def _restore_crd(ext: k8s.ApiextensionsV1Api, name: str, before: dict[str, Any] | None) -> None:
    """Leave our CRDs as they were: OLM rewired (or, on CSV deletion, unwired) their conversion."""
    current = _snapshot_crd(ext, name)
    if current is None:
        return
    if before is None:
        delete_quietly(lambda: ext.delete_custom_resource_definition(name))
        return
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": name,
            "resourceVersion": current["metadata"]["resourceVersion"],
            "labels": before["metadata"].get("labels"),
            "annotations": before["metadata"].get("annotations"),
        },
        "spec": before["spec"],
    }
    ext.replace_custom_resource_definition(name, body)


@pytest.fixture(scope="module")
def olm(k8s_api: k8s.ApiClient, kube_config: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Olm]:
    """OLM's CRDs installed, `catalog` and `olm` running, namespaces `olm` and a fresh operator one.

    Torn down whatever happens: our Subscription and CSVs deleted while OLM still runs (so it
    cleans up what it created), the processes stopped, and our CRDs and OLM's left as they were.
    """
    workdir = tmp_path_factory.mktemp("olm")
    state = Olm(api=k8s_api, kube_config=kube_config, workdir=workdir)
    ext, core, rbac = k8s.ApiextensionsV1Api(k8s_api), k8s.CoreV1Api(k8s_api), k8s.RbacAuthorizationV1Api(k8s_api)
    crd_files = sorted(olm_crds_dir().glob("*.yaml"))
    olm_crd_names = [yaml.safe_load(path.read_text())["metadata"]["name"] for path in crd_files]
    preexisting_olm_crds = {n for n in olm_crd_names if get_or_none(lambda n=n: ext.read_custom_resource_definition(n))}
    if preexisting_olm_crds and k8s.AppsV1Api(k8s_api).list_namespaced_deployment(OLM_NAMESPACE).items:
        pytest.skip("OLM already runs on this cluster (Deployments in namespace olm): not starting a second one")
    our_crds_before = {name: _snapshot_crd(ext, name) for name in OUR_CRDS}
    created_namespaces: list[str] = []
    created_olm_config = False
    try:
        kubectl = str(tool_path("kubectl"))
        args = [kubectl, "--kubeconfig", kube_config, "apply", "--server-side", "--force-conflicts"]
        run([*args, *(a for path in crd_files for a in ("-f", str(path)))])
        for name in olm_crd_names:
            state.wait_for(lambda n=name: _crd_established(ext, n), f"OLM CRD {name} to be established", 60)

        state.namespace = f"sampledb-olm-{secrets.token_hex(3)}"
        for name in (OLM_NAMESPACE, state.namespace):
            if get_or_none(lambda n=name: core.read_namespace(n)) is None:
                core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
                created_namespaces.append(name)
        # No copies of the CSV in every namespace of a cluster other tests share.
        olm_config = {"apiVersion": f"{GROUP}/{V1}", "kind": "OLMConfig", "metadata": {"name": "cluster"}}
        olm_config["spec"] = {"features": {"disableCopiedCSVs": True}}
        try:
            state.custom.create_cluster_custom_object(GROUP, V1, "olmconfigs", olm_config)
            created_olm_config = True
        except ApiException as err:
            if err.status != 409:
                raise

        # Both serve health/metrics on a fixed port: 8080 without TLS, 8443 with it (which also needs
        # a client CA): `olm` gets the first, `catalog` the second, with a throwaway certificate.
        ca = pki.create_ca(workdir / "ca", cn="olm-test-ca")
        cert, key = pki.issue_serving_cert(
            "127.0.0.1", ["127.0.0.1"], ["localhost"], workdir, ca_cert=ca.cert, ca_key=ca.key, name="catalog"
        )
        env = {"KUBECONFIG": kube_config}
        state.start(
            "catalog",
            [str(tool_path("catalog")), "--kubeconfig", kube_config, "--namespace", OLM_NAMESPACE,
             "--tls-cert", str(cert), "--tls-key", str(key), "--client-ca", str(ca.cert), "--interval", "30s"],
            env,
        )  # fmt: skip
        state.start("olm", [str(tool_path("olm")), "--namespace", OLM_NAMESPACE, "--interval", "30s"], env)
        yield state
    finally:
        try:
            _uninstall(state, rbac)
        finally:
            state.stop()
            for name in OUR_CRDS:
                _restore_crd(ext, name, our_crds_before[name])
            for name in created_namespaces:
                delete_quietly(lambda n=name: core.delete_namespace(n))
            if created_olm_config:
                delete_quietly(lambda: state.custom.delete_cluster_custom_object(GROUP, V1, "olmconfigs", "cluster"))
            for name in set(olm_crd_names) - preexisting_olm_crds:
                delete_quietly(lambda n=name: ext.delete_custom_resource_definition(n))


def _uninstall(state: Olm, rbac: k8s.RbacAuthorizationV1Api) -> None:
    """Delete what the test asked OLM for, while OLM runs, and sweep what it leaves."""
    if not state.namespace or all(p.poll() is not None for p in state.processes.values()):
        return
    custom, ns = state.custom, state.namespace
    delete_quietly(lambda: custom.delete_namespaced_custom_object(GROUP, V1ALPHA1, ns, "subscriptions", PACKAGE))
    for csv in custom.list_namespaced_custom_object(GROUP, V1ALPHA1, ns, "clusterserviceversions")["items"]:
        name = csv["metadata"]["name"]
        delete_quietly(
            lambda n=name: custom.delete_namespaced_custom_object(GROUP, V1ALPHA1, ns, "clusterserviceversions", n)
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not custom.list_namespaced_custom_object(GROUP, V1ALPHA1, ns, "clusterserviceversions")["items"]:
            break
        time.sleep(0.5)
    delete_quietly(lambda: custom.delete_namespaced_custom_object(GROUP, V1, ns, "operatorgroups", "sampledb"))
    delete_quietly(
        lambda: custom.delete_namespaced_custom_object(GROUP, V1ALPHA1, OLM_NAMESPACE, "catalogsources", CATALOG_SOURCE)
    )
    # OLM labels the cluster-scoped RBAC it creates for a CSV or OperatorGroup with their namespace.
    selector = f"olm.owner.namespace={ns}"
    for item in rbac.list_cluster_role_binding(label_selector=selector).items:
        delete_quietly(lambda n=item.metadata.name: rbac.delete_cluster_role_binding(n))
    for item in rbac.list_cluster_role(label_selector=selector).items:
        delete_quietly(lambda n=item.metadata.name: rbac.delete_cluster_role(n))


# -- the catalog -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """catalog/template.yaml plus bundle 0.1.1 (replacing 0.1.0) in both channels, rendered."""
    work = tmp_path_factory.mktemp("catalog")
    generator = [sys.executable, str(REPO / "hack" / "bundle.py")]
    new_bundle = work / "bundles" / NEW
    run([*generator, "bundle", "--version", NEW, "--replaces", OLD_CSV, "--output", str(new_bundle)])
    template = yaml.safe_load((REPO / "catalog" / "template.yaml").read_text())
    for entry in template["entries"]:
        if entry["schema"] == "olm.bundle":
            entry["image"] = str((REPO / "catalog" / entry["image"]).resolve())
        elif entry["schema"] == "olm.channel":
            assert OLD_CSV in {e["name"] for e in entry["entries"]}, f"{OLD_CSV} not in channel {entry['name']}"
            entry["entries"].append({"name": NEW_CSV, "replaces": OLD_CSV})
    template["entries"].append({"schema": "olm.bundle", "image": str(new_bundle)})
    (work / "template.yaml").write_text(yaml.safe_dump(template))
    root = work / "catalog"
    run([*generator, "catalog", "--template", str(work / "template.yaml"), "--output", str(root)])
    return root


def test_catalog_serves_both_bundles_inline(catalog: Path) -> None:
    """No bundle image to unpack: every bundle has `image: ""` and its manifests inline."""
    docs = [d for d in yaml.safe_load_all((catalog / PACKAGE / "catalog.yaml").read_text()) if d]
    bundles = {d["name"]: d for d in docs if d["schema"] == "olm.bundle"}
    assert set(bundles) == {OLD_CSV, NEW_CSV}
    for bundle in bundles.values():
        assert bundle["image"] == ""
        assert sum(p["type"] == "olm.bundle.object" for p in bundle["properties"]) >= 3
    stable = next(d for d in docs if d["schema"] == "olm.channel" and d["name"] == "stable")
    assert {"name": NEW_CSV, "replaces": OLD_CSV} in stable["entries"]


@pytest.fixture(scope="module")
def catalog_source(olm: Olm, catalog: Path) -> str:
    """`opm serve` on a loopback port (stopped with OLM's processes) and a CatalogSource for it."""
    port = free_port()
    olm.start(
        "opm",
        [str(tool_path("opm")), "serve", str(catalog), "-p", str(port),
         "--pprof-addr", f"127.0.0.1:{free_port()}", "-t", str(olm.workdir / "opm-termination.log")],
    )  # fmt: skip
    olm.wait_for(lambda: port_open(port), f"opm serve to listen on 127.0.0.1:{port}", 60)
    olm.catalog_port = port
    olm.create(
        "catalogsources",
        {
            "apiVersion": f"{GROUP}/{V1ALPHA1}",
            "kind": "CatalogSource",
            "metadata": {"name": CATALOG_SOURCE, "namespace": OLM_NAMESPACE},
            "spec": {
                "sourceType": "grpc",
                "address": f"127.0.0.1:{port}",
                "displayName": "SampleDB (test catalog)",
                "publisher": "SampleDB",
            },
        },
    )

    def ready() -> bool:
        source = olm.get("catalogsources", CATALOG_SOURCE, OLM_NAMESPACE) or {}
        state = ((source.get("status") or {}).get("connectionState") or {}).get("lastObservedState")
        return state == "READY"

    olm.wait_for(ready, "the CatalogSource to be READY")
    return CATALOG_SOURCE


# -- install ---------------------------------------------------------------------------------------


def approve_install_plan(olm: Olm, csv_name: str) -> dict[str, Any]:
    """Wait for the Subscription's InstallPlan for `csv_name`, check it needs no unpack, approve it."""

    def plan() -> dict[str, Any] | None:
        sub = olm.get("subscriptions", PACKAGE) or {}
        ref = (sub.get("status") or {}).get("installPlanRef")
        found = olm.get("installplans", ref["name"]) if ref else None
        if found and csv_name in found["spec"]["clusterServiceVersionNames"]:
            return found
        return None

    found = olm.wait_for(plan, f"an InstallPlan for {csv_name}")
    assert found["spec"]["approval"] == "Manual" and not found["spec"]["approved"]
    olm.custom.patch_namespaced_custom_object(
        GROUP, V1ALPHA1, olm.namespace, "installplans", found["metadata"]["name"], {"spec": {"approved": True}}
    )

    def complete() -> dict[str, Any] | None:
        current = olm.get("installplans", found["metadata"]["name"]) or {}
        phase = (current.get("status") or {}).get("phase")
        if phase == "Failed":
            message = current["status"].get("message") or current["status"].get("conditions")
            raise AssertionError(f"InstallPlan for {csv_name} failed: {message}\n{olm.diagnostics()}")
        return current if phase == "Complete" else None

    done = olm.wait_for(complete, f"the InstallPlan for {csv_name} to complete")
    status = done["status"]
    # Inline bundles: install steps straight from the catalog, no bundle lookup (unpack Job).
    assert not status.get("bundleLookups"), f"OLM wanted to unpack a bundle image: {status['bundleLookups']}"
    kinds = {step["resource"]["kind"] for step in status["plan"]}
    assert {"ClusterServiceVersion", "CustomResourceDefinition", "ServiceAccount"} <= kinds, kinds
    jobs = k8s.BatchV1Api(olm.api).list_namespaced_job(OLM_NAMESPACE).items
    assert not jobs, f"unexpected Jobs in {OLM_NAMESPACE}: {[j.metadata.name for j in jobs]}"
    return done


def csv_phase(olm: Olm, name: str) -> str | None:
    csv = olm.get("clusterserviceversions", name) or {}
    phase: str | None = (csv.get("status") or {}).get("phase")
    return phase


def deployment_available(olm: Olm, name: str, csv_name: str) -> bool:
    apps = k8s.AppsV1Api(olm.api)
    dep = get_or_none(lambda: apps.read_namespaced_deployment(name, olm.namespace))
    if dep is None or (dep.metadata.labels or {}).get("olm.owner") != csv_name:
        return False
    conditions = dep.status.conditions or []
    return any(c.type == "Available" and c.status == "True" for c in conditions) and (
        dep.status.updated_replicas == dep.spec.replicas and dep.status.observed_generation == dep.metadata.generation
    )


@pytest.fixture(scope="module")
def installed(olm: Olm, catalog_source: str) -> str:
    """An AllNamespaces OperatorGroup and a Subscription to `stable` starting at 0.1.0, approved."""
    olm.create(
        "operatorgroups",
        {"apiVersion": f"{GROUP}/{V1}", "kind": "OperatorGroup", "metadata": {"name": "sampledb"}, "spec": {}},
        version=V1,
    )
    olm.create(
        "subscriptions",
        {
            "apiVersion": f"{GROUP}/{V1ALPHA1}",
            "kind": "Subscription",
            "metadata": {"name": PACKAGE},
            "spec": {
                "name": PACKAGE,
                "channel": "stable",
                "source": catalog_source,
                "sourceNamespace": OLM_NAMESPACE,
                "installPlanApproval": "Manual",
                "startingCSV": OLD_CSV,
            },
        },
    )
    approve_install_plan(olm, OLD_CSV)
    olm.wait_for(lambda: csv_phase(olm, OLD_CSV) == "Succeeded", f"CSV {OLD_CSV} to succeed")
    return OLD_CSV


def test_csv_succeeds_and_both_deployments_are_available(olm: Olm, installed: str) -> None:
    for name in (OPERATOR_DEPLOYMENT, WEBHOOK_DEPLOYMENT):
        olm.wait_for(lambda n=name: deployment_available(olm, n, installed), f"Deployment {name} to be Available")
    # OLM may briefly send a Succeeded CSV back to Pending/NeedsReinstall (its caches lag behind
    # the Secret and CRD it just wrote, more so on a busy machine) and then reinstall: wait for it.
    olm.wait_for(lambda: csv_phase(olm, installed) == "Succeeded", f"CSV {installed} to stay Succeeded")
    sub = olm.get("subscriptions", PACKAGE) or {}
    assert sub["status"]["installedCSV"] == installed


def test_operator_runs_with_olm_settings_and_rbac(olm: Olm, installed: str) -> None:
    dep = k8s.AppsV1Api(olm.api).read_namespaced_deployment(OPERATOR_DEPLOYMENT, olm.namespace)
    template = dep.spec.template
    # AllNamespaces: OLM sets olm.targetNamespaces to "" on the Pod template; the env reads it.
    assert template.metadata.annotations["olm.targetNamespaces"] == ""
    env = {e.name: e for e in template.spec.containers[0].env}
    assert env["SAMPLEDB_NAMESPACES"].value_from.field_ref.field_path == "metadata.annotations['olm.targetNamespaces']"
    assert env["SAMPLEDB_MANAGE_CRDS"].value == "false"
    # The RBAC OLM created from the CSV, as the API server decides it for the operator's identity.
    user = f"system:serviceaccount:{olm.namespace}:sampledb-operator"
    authz = k8s.AuthorizationV1Api(olm.api)

    def allowed(verb: str, resource: str, group: str, namespace: str | None) -> bool:
        attrs = k8s.V1ResourceAttributes(verb=verb, resource=resource, group=group, namespace=namespace)
        review = k8s.V1SubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(user=user, resource_attributes=attrs))
        return bool(authz.create_subject_access_review(review).status.allowed)

    assert allowed("patch", "sampledbs", "sampledb.io", "default"), "cluster-wide SampleDB access"
    assert allowed("create", "statefulsets", "apps", "default")
    assert allowed("create", "leases", "coordination.k8s.io", olm.namespace), "Lease in the install namespace"
    # (The Lease rule is a namespaced `permissions` entry, but in AllNamespaces mode OLM grants
    # `permissions` in every namespace through ClusterRoles: not asserted either way here.)
    assert not allowed("delete", "secrets", "", "default"), "no more than config/rbac/role.yaml grants"
    webhook_user = f"system:serviceaccount:{olm.namespace}:sampledb-operator-webhook"
    core = k8s.CoreV1Api(olm.api)
    assert core.read_namespaced_service_account("sampledb-operator-webhook", olm.namespace)
    attrs = k8s.V1ResourceAttributes(verb="get", resource="sampledbs", group="sampledb.io", namespace="default")
    review = k8s.V1SubjectAccessReview(spec=k8s.V1SubjectAccessReviewSpec(user=webhook_user, resource_attributes=attrs))
    assert not authz.create_subject_access_review(review).status.allowed, "the webhook has no RBAC"


def test_olm_wires_the_conversion_webhook(olm: Olm, installed: str) -> None:
    core, ext = k8s.CoreV1Api(olm.api), k8s.ApiextensionsV1Api(olm.api)

    def wired() -> Any:
        crd = ext.read_custom_resource_definition("sampledbs.sampledb.io")
        config = crd.spec.conversion.webhook.client_config if crd.spec.conversion.webhook else None
        return crd if config and config.service and config.ca_bundle else None

    crd = olm.wait_for(wired, "OLM to wire the conversion webhook into the CRD")
    conversion = crd.spec.conversion
    service_ref = conversion.webhook.client_config.service
    assert conversion.strategy == "Webhook"
    assert (service_ref.namespace, service_ref.name, service_ref.path, service_ref.port) == (
        olm.namespace,
        WEBHOOK_SERVICE,
        "/convert",
        9443,
    )
    assert conversion.webhook.conversion_review_versions == ["v1"]

    # The Service OLM created forwards to the webhook Pods' port.
    service = core.read_namespaced_service(WEBHOOK_SERVICE, olm.namespace)
    assert [(p.port, p.target_port) for p in service.spec.ports] == [(9443, 9443)]
    assert service.spec.selector["app.kubernetes.io/component"] == "webhook"

    # The CA in the CRD signed the serving certificate OLM generated for that Service.
    secret = core.read_namespaced_secret(WEBHOOK_SECRET, olm.namespace)
    ca_pem = base64.b64decode(conversion.webhook.client_config.ca_bundle)
    assert base64.b64decode(secret.data["olmCAKey"]) == ca_pem
    ca = x509.load_pem_x509_certificate(ca_pem)
    serving = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
    serving.verify_directly_issued_by(ca)
    names = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert f"{WEBHOOK_SERVICE}.{olm.namespace}.svc" in names
    assert serving.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)

    # The webhook Deployment mounts that certificate where its args read it.
    dep = k8s.AppsV1Api(olm.api).read_namespaced_deployment(WEBHOOK_DEPLOYMENT, olm.namespace)
    pod = dep.spec.template.spec
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["webhook-cert"].secret.secret_name == WEBHOOK_SECRET
    (container,) = pod.containers
    mounts = {m.mount_path: m.name for m in container.volume_mounts}
    assert mounts[OLM_CERT_DIR] == "webhook-cert"
    assert f"{OLM_CERT_DIR}/tls.crt" in container.args and f"{OLM_CERT_DIR}/tls.key" in container.args
    assert [p.container_port for p in container.ports] == [9443]
    # ... and its (simulated) Pods got it.
    pods = core.list_namespaced_pod(olm.namespace, label_selector="app.kubernetes.io/component=webhook").items
    assert pods and all(
        any(v.secret and v.secret.secret_name == WEBHOOK_SECRET for v in p.spec.volumes or []) for p in pods
    )


# -- upgrade ---------------------------------------------------------------------------------------


def test_upgrade_replaces_the_old_csv(olm: Olm, installed: str) -> None:
    """0.1.1 replaces 0.1.0 in the channel: OLM proposes it, and once approved swaps the CSVs."""
    # Before updating a CRD, OLM lists its objects in every served version (validateV1CRDCompatibility):
    # v1beta1 goes through the conversion webhook OLM wired, which nothing serves on simulated Pods.
    left = k8s.CustomObjectsApi(olm.api).list_cluster_custom_object("sampledb.io", "v1", "sampledbs")["items"]
    if left:
        names = [f"{o['metadata']['namespace']}/{o['metadata']['name']}" for o in left]
        pytest.skip(f"SampleDBs left by other tests ({names}) would need a real conversion webhook to upgrade")
    approve_install_plan(olm, NEW_CSV)
    olm.wait_for(lambda: csv_phase(olm, NEW_CSV) == "Succeeded", f"CSV {NEW_CSV} to succeed")
    olm.wait_for(lambda: olm.get("clusterserviceversions", OLD_CSV) is None, f"the replaced CSV {OLD_CSV} to go")
    new = olm.get("clusterserviceversions", NEW_CSV) or {}
    assert new["spec"]["replaces"] == OLD_CSV
    olm.wait_for(
        lambda: (olm.get("subscriptions", PACKAGE) or {}).get("status", {}).get("installedCSV") == NEW_CSV,
        "the Subscription to report the new CSV",
    )
    apps = k8s.AppsV1Api(olm.api)
    for name in (OPERATOR_DEPLOYMENT, WEBHOOK_DEPLOYMENT):
        olm.wait_for(lambda n=name: deployment_available(olm, n, NEW_CSV), f"Deployment {name} upgraded, Available")
        dep = apps.read_namespaced_deployment(name, olm.namespace)
        assert dep.spec.template.spec.containers[0].image.endswith(f":{NEW}")
        assert dep.spec.template.metadata.labels["app.kubernetes.io/version"] == NEW
    # The CRD was updated from the new bundle, then wired to the webhook again by OLM.
    ext = k8s.ApiextensionsV1Api(olm.api)

    def rewired() -> bool:
        crd = ext.read_custom_resource_definition("sampledbs.sampledb.io")
        webhook = crd.spec.conversion.webhook
        config = webhook.client_config if webhook else None
        return bool(config and config.ca_bundle and config.service and config.service.name == WEBHOOK_SERVICE)

    olm.wait_for(rewired, "the CRD's conversion webhook to be wired after the upgrade")
    olm.wait_for(
        lambda: (olm.get("subscriptions", PACKAGE) or {}).get("status", {}).get("state") == "AtLatestKnown",
        "the Subscription to be at the latest version of its channel",
    )

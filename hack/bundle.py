#!/usr/bin/env python3
"""Generate the OLM bundle and the file-based catalog from the project's single sources.

    hack/bundle.py bundle   [--version V] [--image IMG] [--channels C] [--default-channel D]
                            [--replaces CSV] [--output DIR] [--dockerfile PATH]
    hack/bundle.py catalog  [--template catalog/template.yaml] [--output DIR] [--dockerfile PATH]

`make bundle` and `make catalog` run it with the venv's Python. Nothing in bundle/, bundle.Dockerfile,
catalog/<package>/ or catalog.Dockerfile is written by hand; every value comes from:

- the CSV base `config/manifests/bases/sampledb-operator.clusterserviceversion.yaml` (descriptions,
  descriptors, install modes, icon, ...), which must not set any field generated here;
- `crds/*.yaml` (generated from the pydantic models), copied byte for byte into bundle/manifests/;
- `config/rbac/role.yaml`: the Lease rule becomes a namespaced `permissions` entry (leader election
  in the install namespace), every other rule goes to `clusterPermissions`, except the Helm-only
  rules that write the CRDs themselves (OLM owns them: see `OLM_OWNED_RESOURCES`);
- the Helm chart `charts/sampledb-operator`, rendered by `helm template` with
  `config/manifests/helm-values.yaml`: its two Deployments become the CSV's install strategy, its
  metrics Service and webhook PodDisruptionBudget become bundle manifests, its
  ValidatingWebhookConfiguration a webhookdefinitions entry. What the chart cannot
  express under OLM is rewritten below (see `olm_operator_pod` and `olm_webhook_pod`);
- `config/samples/*.yaml` for the alm-examples annotation;
- the Makefile's defaults (VERSION, IMG, CHANNELS, DEFAULT_CHANNEL) for the command-line defaults,
  hack/versions.env for the tool images, `operator/sampledb_operator/settings.py` for the default
  PostgreSQL images listed in relatedImages.

The output is deterministic (no timestamps: the CSV has no createdAt annotation), so
tests/unit/test_bundle_sources.py can regenerate it and compare with what is committed.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "operator"))

from sampledb_localcluster.tools import load_versions, tool_path  # noqa: E402
from sampledb_operator.settings import DEFAULT_IMAGES  # noqa: E402

PACKAGE = "sampledb-operator"
CSV_BASE = REPO / "config" / "manifests" / "bases" / f"{PACKAGE}.clusterserviceversion.yaml"
HELM_VALUES = REPO / "config" / "manifests" / "helm-values.yaml"
CHART = REPO / "charts" / "sampledb-operator"
CRDS = REPO / "crds"
ROLE = REPO / "config" / "rbac" / "role.yaml"
SAMPLES = REPO / "config" / "samples"
BUNDLE_DIR = REPO / "bundle"
BUNDLE_DOCKERFILE = REPO / "bundle.Dockerfile"
CATALOG_DIR = REPO / "catalog"
CATALOG_TEMPLATE = CATALOG_DIR / "template.yaml"
CATALOG_DOCKERFILE = REPO / "catalog.Dockerfile"

# Where OLM mounts the serving certificate it generates for a webhookdefinitions entry, in every
# container of the Deployment named by deploymentName (install/certresources.go,
# AddDefaultCertVolumeAndVolumeMounts), and the CSV annotation it sets to the OperatorGroup's
# target namespaces ("" for AllNamespaces), which it copies onto the Deployments' Pod templates.
OLM_CERT_DIR = "/tmp/k8s-webhook-server/serving-certs"  # noqa: S108 (a path in the Pod, chosen by OLM)
OLM_TARGET_NAMESPACES = "metadata.annotations['olm.targetNamespaces']"
# Set by the chart from values that only make sense with Helm: dropped under OLM.
HELM_ONLY_ENV = ("SAMPLEDB_WEBHOOK_SERVICE", "SAMPLEDB_WEBHOOK_CA_FILE")
# Resources OLM owns: it installs and upgrades the bundle's CRDs and wires their conversion webhook,
# and the operator runs with SAMPLEDB_MANAGE_CRDS=false, so it never writes them. A rule of
# config/rbac/role.yaml granting more than OLM_READ_VERBS on them serves the Helm chart's CRD
# management only (reconcile/crds.py) and stays out of the CSV (the operatorframework suite warns
# "CSV contains permissions to create CRD" on create/patch of customresourcedefinitions). Their
# subresources are not owned: the storage-version migration patches customresourcedefinitions/status
# under OLM too. (Group, resource) pairs; such a rule may name nothing else.
OLM_OWNED_RESOURCES = frozenset({("apiextensions.k8s.io", "customresourcedefinitions")})
OLM_READ_VERBS = frozenset({"get", "list", "watch"})
# Fields of the CSV this script owns; the base must leave them out.
GENERATED_SPEC_FIELDS = ("install", "version", "replaces", "relatedImages", "webhookdefinitions")
GENERATED_ANNOTATIONS = ("alm-examples", "containerImage", "createdAt")
SCORECARD_TESTS = (
    ("basic", "basic-check-spec"),
    ("olm", "olm-bundle-validation"),
    ("olm", "olm-crds-have-validation"),
    ("olm", "olm-crds-have-resources"),
    ("olm", "olm-spec-descriptors"),
    ("olm", "olm-status-descriptors"),
)
GENERATED_HEADER = "# Generated by `make {target}` (hack/bundle.py): do not edit, edit its sources.\n"


class BundleError(RuntimeError):
    """A source does not have the shape the generator relies on."""


# -- sources -------------------------------------------------------------------------------------


def makefile_defaults(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The `NAME ?= value` defaults of the Makefile, `$(NAME)` expanded (`overrides` win, as `make X=`)."""
    raw: dict[str, str] = {}
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Z_]+) \?= (.*)$", line)
        if match:
            raw[match[1]] = match[2].strip()
    raw.update(overrides or {})

    def expand(value: str) -> str:
        return re.sub(r"\$\(([A-Z_]+)\)", lambda m: expand(raw.get(m[1], "")), value)

    return {name: expand(value) for name, value in raw.items()}


@dataclass(frozen=True)
class BundleOptions:
    """What distinguishes one bundle from another (the Makefile's variables)."""

    version: str
    image: str
    channels: str
    default_channel: str
    replaces: str | None = None

    @classmethod
    def defaults(cls) -> BundleOptions:
        """The options `make bundle` uses when no variable is overridden."""
        make = makefile_defaults()
        return cls(make["VERSION"], make["IMG"], make["CHANNELS"], make["DEFAULT_CHANNEL"])

    @property
    def csv_name(self) -> str:
        """The CSV's metadata.name, `<package>.v<version>`."""
        return f"{PACKAGE}.v{self.version}"


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text())


def run(argv: list[str], *, cwd: Path | None = None) -> str:
    """Run a tool; a failure raises with its output."""
    result = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False)
    if result.returncode != 0:
        raise BundleError(f"{' '.join(argv)} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def render_chart(image: str, namespace: str = "sampledb-system") -> list[dict[str, Any]]:
    """`helm template` the chart with the OLM values and the bundle's image."""
    repository, _, tag = image.rpartition(":")
    if not repository or "/" in tag:
        raise BundleError(f"image {image!r} must be repository:tag")
    out = run(
        [
            str(tool_path("helm")),
            "template",
            PACKAGE,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(HELM_VALUES),
            "--set",
            f"image.repository={repository}",
            "--set-string",
            f"image.tag={tag}",
        ]
    )
    return [doc for doc in yaml.safe_load_all(out) if doc]


def samples() -> list[dict[str, Any]]:
    """config/samples/*.yaml, in file-name order (the alm-examples)."""
    docs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    if not docs:
        raise BundleError("config/samples/ holds no sample")
    return docs


def crd_files() -> dict[str, bytes]:
    """crds/*.yaml by file name, as bytes: the bundle copies them unchanged."""
    files = {path.name: path.read_bytes() for path in sorted(CRDS.glob("*.yaml"))}
    if not files:
        raise BundleError("crds/ holds no CRD: run `make generate`")
    return files


# -- the chart's objects, made OLM's -------------------------------------------------------------


def _component(doc: dict[str, Any]) -> str | None:
    component: str | None = (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component")
    return component


def _one(docs: Iterable[dict[str, Any]], kind: str, component: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and _component(d) == component]
    if len(found) != 1:
        raise BundleError(f"the chart renders {len(found)} {kind} of component {component!r}, expected 1")
    return copy.deepcopy(found[0])


def olm_labels(labels: Mapping[str, str], version: str) -> dict[str, str]:
    """The chart's labels without Helm's own, managed by OLM, at the bundle's version."""
    cleaned = {k: v for k, v in labels.items() if k != "helm.sh/chart"}
    cleaned["app.kubernetes.io/managed-by"] = "olm"
    cleaned["app.kubernetes.io/version"] = version
    return cleaned


def olm_object(doc: dict[str, Any], version: str) -> dict[str, Any]:
    """A namespaced object of the chart as a bundle manifest: OLM sets the namespace."""
    obj = copy.deepcopy(doc)
    obj["metadata"].pop("namespace", None)
    obj["metadata"]["labels"] = olm_labels(obj["metadata"].get("labels") or {}, version)
    return obj


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in pod["containers"] if c["name"] == name]
    if len(found) != 1:
        raise BundleError(f"expected one container {name!r} in the chart's Pod, found {len(found)}")
    container: dict[str, Any] = found[0]
    return container


def _drop_volume(pod: dict[str, Any], name: str) -> None:
    """Remove a volume and its mounts (the chart's Secret it names does not exist under OLM)."""
    if not any(v["name"] == name for v in pod.get("volumes") or []):
        raise BundleError(f"the chart's Pod has no volume {name!r} to drop: update hack/bundle.py")
    pod["volumes"] = [v for v in pod["volumes"] if v["name"] != name]
    for container in pod["containers"]:
        container["volumeMounts"] = [m for m in container.get("volumeMounts") or [] if m["name"] != name]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env") or []}


def olm_operator_pod(pod: dict[str, Any]) -> None:
    """The operator container under OLM.

    - SAMPLEDB_NAMESPACES from the olm.targetNamespaces annotation (downward API): the OperatorGroup
      decides what is watched ("" in AllNamespaces mode: every namespace).
    - SAMPLEDB_LEASE_NAMESPACE from the Pod's own namespace: the install namespace, which the
      chart knows as the release namespace but a bundle cannot know in advance.
    - SAMPLEDB_MANAGE_CRDS=false (helm-values.yaml): OLM installs and upgrades the CRDs and wires
      the webhook, so the webhook Service/CA settings and the CA volume of the chart go away.
    """
    container = _container(pod, "operator")
    env = _env(container)
    for name, expected in (("SAMPLEDB_MANAGE_CRDS", "false"), ("SAMPLEDB_LEADER_ELECTION", "true")):
        if env.get(name, {}).get("value") != expected:
            raise BundleError(f"{name} must render as {expected!r} with config/manifests/helm-values.yaml")
    downward = {
        "SAMPLEDB_NAMESPACES": OLM_TARGET_NAMESPACES,
        "SAMPLEDB_LEASE_NAMESPACE": "metadata.namespace",
    }
    for name in downward:
        if name not in env:
            raise BundleError(f"the chart's operator container has no {name}: update hack/bundle.py")
    container["env"] = [
        {"name": e["name"], "valueFrom": {"fieldRef": {"fieldPath": downward[e["name"]]}}}
        if e["name"] in downward
        else e
        for e in container["env"]
        if e["name"] not in HELM_ONLY_ENV
    ]
    _drop_volume(pod, "webhook-ca")


def olm_webhook_pod(pod: dict[str, Any]) -> int:
    """The webhook container under OLM: it serves the certificate OLM generates and mounts.

    The chart's args are `webhook --cert C --key K --port P`; C and K become the files OLM mounts
    at OLM_CERT_DIR, and the chart's TLS Secret volume goes away. Returns the container port,
    which the webhookdefinitions entry must name (containerPort and targetPort).
    """
    container = _container(pod, "webhook")
    args = list(container["args"])
    if args[:1] != ["webhook"] or not {"--cert", "--key", "--port"} <= set(args):
        raise BundleError(f"unexpected webhook args in the chart: {args}")
    args[args.index("--cert") + 1] = f"{OLM_CERT_DIR}/tls.crt"
    args[args.index("--key") + 1] = f"{OLM_CERT_DIR}/tls.key"
    container["args"] = args
    port = int(args[args.index("--port") + 1])
    ports = [p["containerPort"] for p in container.get("ports") or []]
    if ports != [port]:
        raise BundleError(f"the webhook container's ports {ports} do not match --port {port}")
    _drop_volume(pod, "tls")
    return port


def olm_deployment(doc: dict[str, Any], version: str) -> dict[str, Any]:
    """A chart Deployment as an install-strategy entry: name, labels and spec (no namespace)."""
    spec = copy.deepcopy(doc["spec"])
    template = spec["template"]
    template["metadata"]["labels"] = olm_labels(template["metadata"].get("labels") or {}, version)
    # checksum/* roll the Pods when Helm's certificates change; helm template generates new ones
    # on every run, and OLM adds its own olmcahash annotation for the certificate it manages.
    annotations = template["metadata"].get("annotations") or {}
    template["metadata"]["annotations"] = {k: v for k, v in annotations.items() if not k.startswith("checksum/")}
    return {
        "name": doc["metadata"]["name"],
        "label": olm_labels(doc["metadata"].get("labels") or {}, version),
        "spec": spec,
    }


def _secret_volumes(pod: dict[str, Any]) -> list[str]:
    return [v["name"] for v in pod.get("volumes") or [] if "secret" in v]


# -- the CSV -------------------------------------------------------------------------------------


def olm_rules(rules: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the rules the CSV grants, the Helm-only rules it leaves out): see OLM_OWNED_RESOURCES.

    A rule that writes an OLM-owned resource must write nothing else and read nothing else (split it
    in config/rbac/role.yaml), so that leaving it out takes away exactly what OLM does instead.
    """
    kept: list[dict[str, Any]] = []
    helm_only: list[dict[str, Any]] = []
    for rule in rules:
        named = {(g, r) for g in rule.get("apiGroups") or [] for r in rule.get("resources") or []}
        owned = named & OLM_OWNED_RESOURCES
        if not owned or set(rule["verbs"]) <= OLM_READ_VERBS:
            kept.append(rule)
        elif named == owned and not OLM_READ_VERBS & set(rule["verbs"]):
            helm_only.append(rule)
        else:
            raise BundleError(
                f"config/rbac/role.yaml: rule {rule} writes {sorted(owned)}, which OLM owns, together with "
                "other resources or verbs: give the Helm-only write a rule of its own"
            )
    return kept, helm_only


def rbac_permissions(operator_sa: str, webhook_sa: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(permissions, clusterPermissions) from config/rbac/role.yaml, without its Helm-only rules.

    Leader election needs Leases in the install namespace only: that rule becomes a Role
    (permissions) there. (In AllNamespaces mode OLM grants `permissions` in every namespace, as
    ClusterRoles: OperatorGroup "singleton RBAC". The rule stays namespaced for what it means.)
    The webhook's ServiceAccount gets an entry without rules, so that OLM creates it: OLM creates
    the ServiceAccounts its permissions name, and the bundle validator refuses a ServiceAccount
    manifest that a Deployment of the CSV uses.
    """
    rules: list[dict[str, Any]] = load_yaml(ROLE)["rules"]
    for rule in rules:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            if "*" in (rule.get(field) or []):
                raise BundleError(f"config/rbac/role.yaml: wildcard in {field} of {rule}")
    lease = [r for r in rules if "coordination.k8s.io" in r.get("apiGroups", [])]
    if len(lease) != 1 or lease[0]["apiGroups"] != ["coordination.k8s.io"] or lease[0]["resources"] != ["leases"]:
        raise BundleError("config/rbac/role.yaml must have exactly one rule for coordination.k8s.io leases")
    kept, _ = olm_rules(rules)
    cluster = [r for r in kept if r not in lease]
    permissions = [
        {"serviceAccountName": operator_sa, "rules": lease},
        {"serviceAccountName": webhook_sa, "rules": []},
    ]
    return permissions, [{"serviceAccountName": operator_sa, "rules": cluster}]


def conversion_webhook(crds: Mapping[str, bytes], deployment: str, port: int) -> dict[str, Any]:
    """The webhookdefinitions entry for the CRDs of crds/ that convert through a webhook."""
    converted = []
    paths, review_versions = set(), set()
    for text in crds.values():
        crd = yaml.safe_load(text)
        conversion = crd["spec"].get("conversion") or {}
        if conversion.get("strategy") != "Webhook":
            continue
        converted.append(crd["metadata"]["name"])
        paths.add(conversion["webhook"]["clientConfig"]["service"].get("path", "/"))
        review_versions.add(tuple(conversion["webhook"]["conversionReviewVersions"]))
    if not converted or len(paths) != 1 or len(review_versions) != 1:
        raise BundleError(f"expected CRDs converted by one webhook path, got {converted} {paths} {review_versions}")
    (crd_group,) = {name.split(".", 1)[1] for name in converted}
    return {
        "type": "ConversionWebhook",
        # operator-sdk's naming: "c" + resource + group; OLM uses it only to label what it creates.
        "generateName": f"c{converted[0]}" if len(converted) == 1 else f"conversion.{crd_group}",
        "deploymentName": deployment,
        # The CRD's clientConfig.service.port is containerPort, the Service OLM creates forwards it
        # to targetPort: both the webhook's own port.
        "containerPort": port,
        "targetPort": port,
        "webhookPath": paths.pop(),
        "conversionCRDs": sorted(converted),
        # For conversion webhooks these become the CRD's conversionReviewVersions.
        "admissionReviewVersions": list(review_versions.pop()),
        "sideEffects": "None",
    }


# Fields of a chart webhook that a CSV webhookdefinitions entry carries under the same name.
WEBHOOK_FIELDS = ("admissionReviewVersions", "failurePolicy", "matchPolicy", "objectSelector", "rules", "sideEffects",
                  "timeoutSeconds")  # fmt: skip


def validating_webhooks(chart: list[dict[str, Any]], deployment: str, port: int) -> list[dict[str, Any]]:
    """The webhookdefinitions entries of the chart's ValidatingWebhookConfiguration (component webhook).

    OLM creates the configuration itself, named and wired to a Service of its own in front of
    `deployment`, with the certificate it generates; what stays of the chart's webhook is its
    name (generateName), its path and the fields that say what it is called for.
    """
    config = _one(chart, "ValidatingWebhookConfiguration", "webhook")
    entries = []
    for hook in config["webhooks"]:
        service = hook["clientConfig"].get("service")
        if not service or hook.get("namespaceSelector"):
            raise BundleError(f"webhook {hook['name']}: OLM needs a service clientConfig and sets namespaceSelector")
        entries.append(
            {
                "type": "ValidatingAdmissionWebhook",
                "generateName": hook["name"],
                "deploymentName": deployment,
                "containerPort": port,
                "targetPort": port,
                "webhookPath": service["path"],
                **{field: hook[field] for field in WEBHOOK_FIELDS if field in hook},
            }
        )
    return entries


def build_csv(opts: BundleOptions, chart: list[dict[str, Any]], crds: Mapping[str, bytes]) -> dict[str, Any]:
    """The CSV base completed with everything generated from the sources."""
    csv: dict[str, Any] = load_yaml(CSV_BASE)
    spec, annotations = csv["spec"], csv["metadata"].setdefault("annotations", {})
    owned = [f for f in GENERATED_SPEC_FIELDS if f in spec] + [a for a in GENERATED_ANNOTATIONS if a in annotations]
    if owned or "name" in csv["metadata"]:
        raise BundleError(f"{CSV_BASE.relative_to(REPO)} sets generated fields {owned or ['metadata.name']}")

    operator = _one(chart, "Deployment", "operator")
    webhook = _one(chart, "Deployment", "webhook")
    olm_operator_pod(operator["spec"]["template"]["spec"])
    port = olm_webhook_pod(webhook["spec"]["template"]["spec"])
    for deployment in (operator, webhook):
        left = _secret_volumes(deployment["spec"]["template"]["spec"])
        if left:
            raise BundleError(f"Deployment {deployment['metadata']['name']} still mounts chart Secrets {left}")
    operator_sa = operator["spec"]["template"]["spec"]["serviceAccountName"]
    webhook_sa = webhook["spec"]["template"]["spec"]["serviceAccountName"]
    permissions, cluster_permissions = rbac_permissions(operator_sa, webhook_sa)

    annotations["alm-examples"] = json.dumps(samples(), indent=2)
    annotations["containerImage"] = opts.image
    csv["metadata"] = {"name": opts.csv_name, **csv["metadata"]}
    install = {
        "strategy": "deployment",
        "spec": {
            "deployments": [olm_deployment(operator, opts.version), olm_deployment(webhook, opts.version)],
            "permissions": permissions,
            "clusterPermissions": cluster_permissions,
        },
    }
    related = [{"name": PACKAGE, "image": opts.image}]
    related += [{"name": f"postgres-{major}", "image": image} for major, image in sorted(DEFAULT_IMAGES.items())]
    generated: dict[str, Any] = {
        "version": opts.version,
        **({"replaces": opts.replaces} if opts.replaces else {}),
        "install": install,
        "webhookdefinitions": [
            conversion_webhook(crds, webhook["metadata"]["name"], port),
            *validating_webhooks(chart, webhook["metadata"]["name"], port),
        ],
        "relatedImages": related,
    }
    # Generated fields after the hand-written ones, in a fixed order.
    csv["spec"] = {**spec, **generated}
    return csv


# -- output --------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Block lists indented under their key, multi-line strings as literal blocks, no aliases."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        text = "\n".join(line.rstrip() for line in data.splitlines()) + ("\n" if data.endswith("\n") else "")
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_representer)


def dump_yaml(doc: Any) -> str:
    """YAML in a stable, readable layout (keys in insertion order)."""
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)


def _file_name(obj: dict[str, Any]) -> str:
    """operator-sdk's manifest naming: <name>_<group>_<version>_<kind>.yaml (core group: empty)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    return f"{obj['metadata']['name']}_{group.split('.')[0] + '_' if group else ''}{version}_{obj['kind'].lower()}.yaml"


def bundle_annotations(opts: BundleOptions) -> dict[str, str]:
    """bundle/metadata/annotations.yaml, which the bundle image repeats as labels."""
    return {
        "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
        "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
        "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
        "operators.operatorframework.io.bundle.package.v1": PACKAGE,
        "operators.operatorframework.io.bundle.channels.v1": opts.channels,
        "operators.operatorframework.io.bundle.channel.default.v1": opts.default_channel,
        "operators.operatorframework.io.test.mediatype.v1": "scorecard+v1",
        "operators.operatorframework.io.test.config.v1": "tests/scorecard/",
    }


def scorecard_config() -> dict[str, Any]:
    """bundle/tests/scorecard/config.yaml: the six standard static tests of operator-sdk's version."""
    image = f"quay.io/operator-framework/scorecard-test:{load_versions()['OPERATOR_SDK_VERSION']}"
    tests = [
        {
            "entrypoint": ["scorecard-test", test],
            "image": image,
            "labels": {"suite": suite, "test": f"{test}-test"},
            "storage": {"spec": {"mountPath": {}}},
        }
        for suite, test in SCORECARD_TESTS
    ]
    return {
        "apiVersion": "scorecard.operatorframework.io/v1alpha3",
        "kind": "Configuration",
        "metadata": {"name": "config"},
        "stages": [{"parallel": True, "tests": tests}],
        "storage": {"spec": {"mountPath": {}}},
    }


def bundle_dockerfile(opts: BundleOptions) -> str:
    """bundle.Dockerfile: FROM scratch, the annotations as labels, the three bundle folders."""
    labels = "\n".join(f"LABEL {k}={v}" for k, v in bundle_annotations(opts).items())
    return (
        GENERATED_HEADER.format(target="bundle")
        + "# The bundle image (`make bundle-build`): the build context is a copy of bundle/ under the name\n"
        + "# bundle/, because the repository's .dockerignore keeps bundle/ out of the root context.\n"
        + "FROM scratch\n\n"
        + "# Core bundle labels and the scorecard's, equal to bundle/metadata/annotations.yaml.\n"
        + labels
        + "\n\n# Copy files to locations specified by labels.\n"
        + "COPY bundle/manifests /manifests/\n"
        + "COPY bundle/metadata /metadata/\n"
        + "COPY bundle/tests/scorecard /tests/scorecard/\n"
    )


def bundle_files(opts: BundleOptions) -> dict[str, str]:
    """Every file of the bundle directory (relative path -> content)."""
    crds = crd_files()
    chart = render_chart(opts.image)
    csv = build_csv(opts, chart, crds)
    header = GENERATED_HEADER.format(target="bundle")
    files = {f"manifests/{PACKAGE}.clusterserviceversion.yaml": header + dump_yaml(csv)}
    for name, text in crds.items():
        files[f"manifests/{name}"] = text.decode()
    for kind, component in (("Service", "operator"), ("PodDisruptionBudget", "webhook")):
        obj = olm_object(_one(chart, kind, component), opts.version)
        files[f"manifests/{_file_name(obj)}"] = header + dump_yaml(obj)
    files["metadata/annotations.yaml"] = header + dump_yaml({"annotations": bundle_annotations(opts)})
    files["tests/scorecard/config.yaml"] = header + dump_yaml(scorecard_config())
    return dict(sorted(files.items()))


def read_tree(root: Path) -> dict[str, str]:
    """Every file under `root` (relative path -> content)."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def write_tree(root: Path, files: Mapping[str, str]) -> None:
    """Make `root` hold exactly `files` (stale files from an earlier run are removed)."""
    if root.exists():
        shutil.rmtree(root)
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


# -- the catalog ---------------------------------------------------------------------------------


def render_catalog(template: Path) -> dict[str, str]:
    """The file-based catalog of a basic template whose olm.bundle entries name bundle directories.

    `opm alpha render-template basic` (v1.59.0) renders bundle *images* only (AllowedRefMask
    RefBundleImage), which would also make OLM unpack them with a Job. So the template is expanded
    here the same way, with `opm render <bundle dir>` for each bundle: that yields the bundle with
    `image: ""` and its manifests inline as olm.bundle.object properties, which OLM turns into
    install steps directly. The result is normalised by `opm render` and checked by `opm validate`.
    Returns {"<package>/catalog.yaml": text}.
    """
    opm = str(tool_path("opm"))
    spec = load_yaml(template)
    if spec.get("schema") != "olm.template.basic":
        raise BundleError(f"{template}: schema must be olm.template.basic")
    docs: list[dict[str, Any]] = []
    for entry in spec["entries"]:
        if entry.get("schema") != "olm.bundle":
            docs.append(entry)
            continue
        if set(entry) != {"schema", "image"}:
            raise BundleError(f"{template}: a bundle entry has only schema and image, got {entry}")
        directory = (template.parent / entry["image"]).resolve()
        if not (directory / "manifests").is_dir():
            raise BundleError(f"{template}: {entry['image']} is not a bundle directory")
        docs.extend(d for d in yaml.safe_load_all(run([opm, "render", str(directory), "-o", "yaml"])) if d)
    packages = {d["name"] for d in docs if d.get("schema") == "olm.package"}
    if len(packages) != 1:
        raise BundleError(f"{template}: expected one olm.package, got {sorted(packages)}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "index.json").write_text("\n".join(json.dumps(d, sort_keys=True) for d in docs) + "\n")
        run([opm, "validate", str(root)])
        rendered = run([opm, "render", str(root), "-o", "yaml"])
    # The header goes into the first document: before a leading `---` it would make an empty one.
    body = rendered.removeprefix("---\n")
    return {f"{packages.pop()}/catalog.yaml": GENERATED_HEADER.format(target="catalog") + body}


def catalog_dockerfile(catalog_dir_name: str = "catalog") -> str:
    """`opm generate dockerfile` for the catalog, with the opm image pinned to hack/versions.env."""
    image = f"quay.io/operator-framework/opm:{load_versions()['OPM_VERSION']}"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / catalog_dir_name).mkdir()
        opm = str(tool_path("opm"))
        run([opm, "generate", "dockerfile", catalog_dir_name, "-i", image, "-b", image], cwd=Path(tmp))
        text = (Path(tmp) / f"{catalog_dir_name}.Dockerfile").read_text()
    return (
        GENERATED_HEADER.format(target="catalog")
        + "# Generated with `opm generate dockerfile`. Build context: a copy of catalog/ under the name\n"
        + "# catalog/ (`make catalog-build`), because the repository's .dockerignore keeps catalog/ out.\n"
        + text
    )


def write_catalog(template: Path, output: Path) -> list[Path]:
    """Write the rendered packages under `output` (one folder per package); validate the whole."""
    written = []
    for rel, text in render_catalog(template).items():
        package_dir = output / Path(rel).parent
        if package_dir.exists():
            shutil.rmtree(package_dir)
        package_dir.mkdir(parents=True)
        (output / rel).write_text(text)
        written.append(output / rel)
    run([str(tool_path("opm")), "validate", str(output)])
    return written


# -- command line --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    defaults = BundleOptions.defaults()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bundle = commands.add_parser("bundle", help="generate the bundle directory and its Dockerfile")
    bundle.add_argument("--version", default=defaults.version, help=f"bundle version (default {defaults.version})")
    bundle.add_argument("--image", help="operator image (default: the Makefile's IMG for that version)")
    bundle.add_argument("--channels", default=defaults.channels)
    bundle.add_argument("--default-channel", default=defaults.default_channel)
    bundle.add_argument("--replaces", help="name of the CSV this one replaces, e.g. sampledb-operator.v0.1.0")
    bundle.add_argument("--output", type=Path, default=BUNDLE_DIR, help="bundle directory (default bundle/)")
    bundle.add_argument(
        "--dockerfile", type=Path, help="where to write bundle.Dockerfile (default: next to bundle/ when --output is)"
    )
    catalog = commands.add_parser("catalog", help="render the file-based catalog and its Dockerfile")
    catalog.add_argument("--template", type=Path, default=CATALOG_TEMPLATE)
    catalog.add_argument("--output", type=Path, default=CATALOG_DIR, help="catalog root (default catalog/)")
    catalog.add_argument(
        "--dockerfile", type=Path, help="where to write catalog.Dockerfile (default: next to catalog/ when --output is)"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "bundle":
            image = args.image or makefile_defaults({"VERSION": args.version})["IMG"]
            opts = BundleOptions(args.version, image, args.channels, args.default_channel, args.replaces)
            output = args.output.resolve()
            write_tree(output, bundle_files(opts))
            dockerfile = args.dockerfile or (BUNDLE_DOCKERFILE if output == BUNDLE_DIR else None)
            if dockerfile:
                dockerfile.write_text(bundle_dockerfile(opts))
            print(f"bundle {opts.csv_name} (image {opts.image}) written to {output}")
        else:
            output = args.output.resolve()
            for path in write_catalog(args.template.resolve(), output):
                print(f"catalog written to {path} (opm validate: ok)")
            dockerfile = args.dockerfile or (CATALOG_DOCKERFILE if output == CATALOG_DIR else None)
            if dockerfile:
                dockerfile.write_text(catalog_dockerfile(output.name))
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

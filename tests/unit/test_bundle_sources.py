"""The OLM bundle and catalog are what hack/bundle.py generates now, and they make sense.

bundle/, bundle.Dockerfile, catalog/sampledb-operator/ and catalog.Dockerfile are generated from
crds/, config/rbac/role.yaml, the Helm chart, config/manifests/, config/samples/ and
catalog/template.yaml. The first tests regenerate them (with the pinned helm and opm) and fail
when the committed copies are stale. The others check the committed CSV the way OLM, `opm validate`
and the scorecard's static tests would (operator-sdk is not available here): owned CRDs, examples
valid against the CRD schemas, descriptors, RBAC without wildcards, images, the webhook wiring.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from sampledb_localcluster.tools import tool_path
from sampledb_operator.api import crdgen
from sampledb_operator.conversion.migration import CRD_NAME
from sampledb_operator.settings import DEFAULT_IMAGES

REPO = Path(__file__).resolve().parents[2]
HINT = "run `make bundle catalog` (hack/bundle.py) and commit the result"
CAPABILITY_LEVELS = ("Basic Install", "Seamless Upgrades", "Full Lifecycle", "Deep Insights", "Auto Pilot")


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("sampledb_bundle_generator", REPO / "hack" / "bundle.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


gen = _load_generator()


def _diff(expected: dict[str, str], committed: dict[str, str], where: str) -> str:
    missing = sorted(set(expected) - set(committed))
    extra = sorted(set(committed) - set(expected))
    stale = sorted(name for name in set(expected) & set(committed) if expected[name] != committed[name])
    if not (missing or extra or stale):
        return ""
    return f"{where} differs from the generator's output (missing {missing}, extra {extra}, stale {stale}): {HINT}"


# -- freshness -------------------------------------------------------------------------------------


def test_bundle_is_what_the_generator_produces_now() -> None:
    opts = gen.BundleOptions.defaults()
    problem = _diff(gen.bundle_files(opts), gen.read_tree(gen.BUNDLE_DIR), "bundle/")
    assert not problem, problem
    assert gen.BUNDLE_DOCKERFILE.read_text() == gen.bundle_dockerfile(opts), f"bundle.Dockerfile is stale: {HINT}"


def test_catalog_is_what_the_generator_renders_now() -> None:
    expected = gen.render_catalog(gen.CATALOG_TEMPLATE)
    committed = {
        str(path.relative_to(gen.CATALOG_DIR)): path.read_text() for path in gen.CATALOG_DIR.glob("*/catalog.yaml")
    }
    problem = _diff(expected, committed, "catalog/")
    assert not problem, problem
    assert gen.CATALOG_DOCKERFILE.read_text() == gen.catalog_dockerfile(), f"catalog.Dockerfile is stale: {HINT}"


def test_opm_validates_the_catalog() -> None:
    result = subprocess.run([str(tool_path("opm")), "validate", str(gen.CATALOG_DIR)], capture_output=True, text=True)
    assert result.returncode == 0, f"opm validate catalog/ failed:\n{result.stdout}\n{result.stderr}"


# -- the committed bundle and catalog --------------------------------------------------------------


@functools.cache
def manifests() -> list[dict[str, Any]]:
    return [yaml.safe_load(path.read_text()) for path in sorted((gen.BUNDLE_DIR / "manifests").glob("*.yaml"))]


def csv() -> dict[str, Any]:
    (found,) = [doc for doc in manifests() if doc["kind"] == "ClusterServiceVersion"]
    return found


def crds() -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == "CustomResourceDefinition"}


def crd_version(crd_name: str, version: str) -> dict[str, Any]:
    (found,) = [v for v in crds()[crd_name]["spec"]["versions"] if v["name"] == version]
    return found


def deployments() -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in csv()["spec"]["install"]["spec"]["deployments"]}


def container(deployment: str, name: str) -> dict[str, Any]:
    (found,) = [c for c in deployments()[deployment]["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def alm_examples() -> list[dict[str, Any]]:
    examples: list[dict[str, Any]] = json.loads(csv()["metadata"]["annotations"]["alm-examples"])
    return examples


def owned_for(api_version: str, kind: str) -> dict[str, Any]:
    group, version = api_version.split("/")
    found = [
        o
        for o in csv()["spec"]["customresourcedefinitions"]["owned"]
        if o["kind"] == kind and o["version"] == version and o["name"].split(".", 1)[1] == group
    ]
    assert len(found) == 1, f"no single owned CRD entry for {api_version} {kind}"
    return found[0]


def test_every_crd_is_owned_and_every_owned_entry_is_a_served_version() -> None:
    owned = csv()["spec"]["customresourcedefinitions"]["owned"]
    assert {o["name"] for o in owned} == set(crds()), "every CRD of the bundle must be owned, and only those"
    for entry in owned:
        crd = crds()[entry["name"]]
        assert entry["kind"] == crd["spec"]["names"]["kind"]
        assert crd_version(entry["name"], entry["version"])["served"], f"{entry['name']} {entry['version']} not served"
        assert entry.get("displayName") and entry.get("description"), f"{entry['name']}: displayName, description"
    storage_versions = {(name, v["name"]) for name, c in crds().items() for v in c["spec"]["versions"] if v["storage"]}
    assert storage_versions <= {(o["name"], o["version"]) for o in owned}, "the storage versions must be owned"


def test_bundle_crds_are_the_generated_crds() -> None:
    for path in sorted((REPO / "crds").glob("*.yaml")):
        assert (gen.BUNDLE_DIR / "manifests" / path.name).read_bytes() == path.read_bytes(), f"{path.name}: {HINT}"


def schema_problems(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """What the API server's structural validation would refuse (types, required, unknown, enum)."""
    problems: list[str] = []
    kind = schema.get("type")
    python_types = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "boolean": bool,
        "number": (int, float),
    }
    if kind in python_types and not isinstance(value, python_types[kind]):
        return [f"{path}: expected {kind}, got {value!r}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} not in {schema['enum']}")
    if kind == "object" and isinstance(value, dict):
        properties = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}.{name}: required")
        for name, item in value.items():
            if name in properties:
                problems += schema_problems(item, properties[name], f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                problems += schema_problems(item, schema["additionalProperties"], f"{path}.{name}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields") and path != "":
                problems.append(f"{path}.{name}: unknown field")
    if kind == "array" and isinstance(value, list):
        for index, item in enumerate(value):
            problems += schema_problems(item, schema.get("items", {}), f"{path}[{index}]")
    return problems


def test_alm_examples_are_the_samples_and_valid_against_the_crd_schemas() -> None:
    examples = alm_examples()
    assert examples == gen.samples(), f"alm-examples differ from config/samples/: {HINT}"
    kinds = set()
    for example in examples:
        owned = owned_for(example["apiVersion"], example["kind"])
        schema = crd_version(owned["name"], owned["version"])["schema"]["openAPIV3Schema"]
        body = {k: v for k, v in example.items() if k not in ("apiVersion", "kind", "metadata")}
        problems = schema_problems(body, schema, "")
        assert not problems, f"alm-example {example['kind']}/{example['metadata']['name']}: {problems}"
        kinds.add(example["kind"])
    assert kinds == {c["spec"]["names"]["kind"] for c in crds().values()}, "one example per owned kind"


def _schema_at(schema: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    for part in dotted.split("."):
        schema = schema.get("properties", {}).get(part)  # type: ignore[assignment]
        if schema is None:
            return None
    return schema


def test_descriptors_name_real_fields_and_cover_the_examples() -> None:
    """What the scorecard's olm-crds-have-resources, olm-spec/status-descriptors tests check, and more."""
    for owned in csv()["spec"]["customresourcedefinitions"]["owned"]:
        assert owned.get("resources"), f"{owned['name']} {owned['version']}: no resources (olm-crds-have-resources)"
        assert owned.get("statusDescriptors"), f"{owned['name']} {owned['version']}: no status descriptors"
        schema = crd_version(owned["name"], owned["version"])["schema"]["openAPIV3Schema"]["properties"]
        for section, key in (("spec", "specDescriptors"), ("status", "statusDescriptors")):
            for descriptor in owned.get(key, []):
                assert _schema_at(schema[section], descriptor["path"]) is not None, (
                    f"{owned['name']} {owned['version']}: {key} path {descriptor['path']!r} is not a {section} field"
                )
                assert descriptor.get("displayName") and descriptor.get("x-descriptors")
    for example in alm_examples():
        paths = {d["path"] for d in owned_for(example["apiVersion"], example["kind"]).get("specDescriptors", [])}
        missing = sorted(set(example["spec"]) - paths)
        assert not missing, f"{example['kind']}: spec fields without a descriptor (olm-spec-descriptors): {missing}"


def test_rbac_has_no_wildcard_and_leases_stay_in_the_install_namespace() -> None:
    strategy = csv()["spec"]["install"]["spec"]
    for entry in strategy["permissions"] + strategy["clusterPermissions"]:
        for rule in entry["rules"]:
            for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
                assert "*" not in (rule.get(field) or []), f"wildcard in {field} of {rule}"
    cluster_groups = {g for e in strategy["clusterPermissions"] for r in e["rules"] for g in r["apiGroups"]}
    assert "coordination.k8s.io" not in cluster_groups, "Leases belong in the namespaced permissions"
    # OLM creates the ServiceAccounts its permissions name (the bundle validator refuses a
    # ServiceAccount manifest that a Deployment of the CSV uses).
    accounts = {e["serviceAccountName"] for e in strategy["permissions"] + strategy["clusterPermissions"]}
    used = {d["spec"]["template"]["spec"]["serviceAccountName"] for d in deployments().values()}
    assert used <= accounts, f"OLM would not create the ServiceAccounts {used - accounts}"
    assert not [doc for doc in manifests() if doc["kind"] == "ServiceAccount"]


# -- RBAC per mode: the chart grants every rule of role.yaml, the CSV all but the CRD writes ---------

CRD_GROUP, CRDS_RESOURCE = "apiextensions.k8s.io", "customresourcedefinitions"
CRD_WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def role_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load((REPO / "config" / "rbac" / "role.yaml").read_text())["rules"]
    return rules


def csv_rules() -> list[dict[str, Any]]:
    strategy = csv()["spec"]["install"]["spec"]
    return [r for e in strategy["permissions"] + strategy["clusterPermissions"] for r in e["rules"]]


def helm_only(rule: dict[str, Any]) -> bool:
    """A write on the CRDs themselves: only the chart's SAMPLEDB_MANAGE_CRDS=true needs it, OLM owns the CRDs."""
    return (
        CRD_GROUP in rule["apiGroups"]
        and CRDS_RESOURCE in rule["resources"]
        and bool(set(rule["verbs"]) - {"get", "list", "watch"})
    )


def allows(rules: list[dict[str, Any]], verb: str, resource: str, name: str) -> bool:
    """Whether `rules` let `verb` on the apiextensions.k8s.io `resource` named `name` through."""
    return any(
        CRD_GROUP in r["apiGroups"]
        and resource in r["resources"]
        and verb in r["verbs"]
        and (not r.get("resourceNames") or name in r["resourceNames"])
        for r in rules
    )


def test_csv_rules_are_role_yaml_minus_the_helm_only_crd_writes() -> None:
    role = role_rules()
    expected = [r for r in role if not helm_only(r)]
    assert sorted(map(json.dumps, csv_rules())) == sorted(map(json.dumps, expected)), (
        f"the CSV's rules must be config/rbac/role.yaml's without its CRD writes: {HINT}"
    )
    # Exactly the one Helm-only rule: patch on this release's CRDs, by name (reconcile/crds.py).
    assert [r for r in role if helm_only(r)] == [
        {
            "apiGroups": [CRD_GROUP],
            "resources": [CRDS_RESOURCE],
            "resourceNames": sorted(crd["metadata"]["name"] for crd in crdgen.all_crds().values()),
            "verbs": ["patch"],
        }
    ]


def test_no_csv_rule_writes_the_crds_themselves() -> None:
    """OLM owns the CRDs (the operatorframework suite warns "CSV contains permissions to create CRD")."""
    for rule in csv_rules():
        on_crds = {CRD_GROUP, "*"} & set(rule["apiGroups"]) and {CRDS_RESOURCE, "*"} & set(rule["resources"])
        assert not (on_crds and set(rule["verbs"]) & (CRD_WRITE_VERBS | {"*"})), f"the CSV may not write CRDs: {rule}"


@pytest.mark.parametrize("mode", ["helm", "olm"])
def test_each_mode_may_make_its_crd_calls(mode: str) -> None:
    """The CRD calls of reconcile/crds.py and conversion/migration.py, against each mode's rules.

    Both modes: kopf lists and watches the CRDs; the storage migration gets the SampleDB CRD and
    patches its status (storedVersions). Helm's SAMPLEDB_MANAGE_CRDS=true only: get and patch
    each of this release's CRDs. Under OLM the operator runs with SAMPLEDB_MANAGE_CRDS=false.
    """
    rules = role_rules() if mode == "helm" else csv_rules()
    names = sorted(crd["metadata"]["name"] for crd in crdgen.all_crds().values())
    assert CRD_NAME in names
    calls = [("list", CRDS_RESOURCE, ""), ("watch", CRDS_RESOURCE, ""), ("get", CRDS_RESOURCE, CRD_NAME)]
    calls.append(("patch", f"{CRDS_RESOURCE}/status", CRD_NAME))
    if mode == "helm":
        calls += [(verb, CRDS_RESOURCE, name) for name in names for verb in ("get", "patch")]
    for verb, resource, name in calls:
        assert allows(rules, verb, resource, name), f"{mode}: {verb} {resource} {name or '(all)'} is not granted"
    if mode == "olm":
        assert not [n for n in names if allows(rules, "patch", CRDS_RESOURCE, n)]
    # Nothing else on CRDs: no create or delete, and the status of the SampleDB CRD only.
    assert not [n for n in names if n != CRD_NAME and allows(rules, "patch", f"{CRDS_RESOURCE}/status", n)]
    for verb in CRD_WRITE_VERBS - {"patch"}:
        assert not [n for n in names if allows(rules, verb, CRDS_RESOURCE, n)], f"{mode}: {verb} on CRDs"


def test_the_generator_refuses_a_rule_mixing_a_crd_write_with_other_grants() -> None:
    crd_write = {"apiGroups": [CRD_GROUP], "resources": [CRDS_RESOURCE], "verbs": ["patch"]}
    status = {"apiGroups": [CRD_GROUP], "resources": [f"{CRDS_RESOURCE}/status"], "verbs": ["patch"]}
    read = {"apiGroups": [CRD_GROUP], "resources": [CRDS_RESOURCE], "verbs": ["get", "list", "watch"]}
    assert gen.olm_rules([read, status, crd_write]) == ([read, status], [crd_write])
    for mixed in (
        {**crd_write, "resources": [CRDS_RESOURCE, f"{CRDS_RESOURCE}/status"]},
        {**crd_write, "verbs": ["get", "patch"]},
    ):
        with pytest.raises(gen.BundleError, match="rule of its own"):
            gen.olm_rules([mixed])


def test_related_images_list_the_operator_and_postgres_images() -> None:
    spec, annotations = csv()["spec"], csv()["metadata"]["annotations"]
    related = {r["image"] for r in spec["relatedImages"]}
    images = {c["image"] for d in deployments().values() for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {annotations["containerImage"]} == {gen.BundleOptions.defaults().image}
    assert images | set(DEFAULT_IMAGES.values()) <= related


def test_install_modes_capabilities_and_metadata() -> None:
    spec, annotations = csv()["spec"], csv()["metadata"]["annotations"]
    # OLM refuses to wire a conversion webhook unless AllNamespaces is the only supported mode
    # (operator-lifecycle-manager v0.38.0 pkg/controller/install/webhook.go, isSingletonOperator).
    modes = {m["type"]: m["supported"] for m in spec["installModes"]}
    assert modes == {"OwnNamespace": False, "SingleNamespace": False, "MultiNamespace": False, "AllNamespaces": True}
    assert annotations["capabilities"] in CAPABILITY_LEVELS
    assert annotations["categories"] == "Database"
    assert spec["minKubeVersion"] == "1.30.0"
    assert csv()["metadata"]["name"] == f"sampledb-operator.v{spec['version']}"
    icon = spec["icon"][0]
    assert icon["mediatype"] == "image/svg+xml"
    assert __import__("base64").b64decode(icon["base64data"]).startswith(b"<svg")
    for field in ("displayName", "description", "keywords", "maintainers", "provider", "links"):
        assert spec.get(field), f"CSV spec.{field} is empty"


def test_operator_deployment_is_wired_for_olm() -> None:
    env = {e["name"]: e for e in container("sampledb-operator", "operator")["env"]}
    assert env["SAMPLEDB_NAMESPACES"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.annotations['olm.targetNamespaces']"
    )
    assert env["SAMPLEDB_LEASE_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["SAMPLEDB_MANAGE_CRDS"]["value"] == "false"
    assert env["SAMPLEDB_LEADER_ELECTION"]["value"] == "true"
    assert "SAMPLEDB_WEBHOOK_SERVICE" not in env and "SAMPLEDB_WEBHOOK_CA_FILE" not in env
    for deployment in deployments().values():
        volumes = deployment["spec"]["template"]["spec"].get("volumes") or []
        assert not [v for v in volumes if "secret" in v], f"{deployment['name']} mounts a Secret OLM does not create"


def _webhook_definitions(kind: str) -> list[dict[str, Any]]:
    return [h for h in csv()["spec"]["webhookdefinitions"] if h["type"] == kind]


def test_conversion_webhook_definition_matches_the_webhook_deployment() -> None:
    (hook,) = _webhook_definitions("ConversionWebhook")
    assert hook["sideEffects"] == "None"
    webhook = container(hook["deploymentName"], "webhook")
    args = webhook["args"]
    assert args[args.index("--cert") + 1] == f"{gen.OLM_CERT_DIR}/tls.crt"
    assert args[args.index("--key") + 1] == f"{gen.OLM_CERT_DIR}/tls.key"
    port = int(args[args.index("--port") + 1])
    assert hook["containerPort"] == hook["targetPort"] == port == 9443
    assert [p["containerPort"] for p in webhook["ports"]] == [port]
    for name in hook["conversionCRDs"]:
        conversion = crds()[name]["spec"]["conversion"]
        assert conversion["strategy"] == "Webhook"
        assert hook["webhookPath"] == conversion["webhook"]["clientConfig"]["service"]["path"]
        assert hook["admissionReviewVersions"] == conversion["webhook"]["conversionReviewVersions"]
    webhook_crds = {n for n, c in crds().items() if c["spec"].get("conversion", {}).get("strategy") == "Webhook"}
    assert set(hook["conversionCRDs"]) == webhook_crds == {"sampledbs.sampledb.io"}


def test_validating_webhook_definition_is_the_charts_and_served_by_the_webhook() -> None:
    """The v1beta1 update check (conversion/admission.py) reaches OLM installs as Helm installs it."""
    from sampledb_operator.conversion import admission, webhook

    (hook,) = _webhook_definitions("ValidatingAdmissionWebhook")
    chart = gen.render_chart(gen.BundleOptions.defaults().image)
    (config,) = [d for d in chart if d["kind"] == "ValidatingWebhookConfiguration"]
    (chart_hook,) = config["webhooks"]
    assert hook["generateName"] == chart_hook["name"]
    assert hook["webhookPath"] == chart_hook["clientConfig"]["service"]["path"] == admission.PATH
    assert hook["rules"] == [
        {
            "apiGroups": ["sampledb.io"],
            "apiVersions": ["v1beta1"],
            "operations": ["UPDATE"],
            "resources": ["sampledbs"],
            "scope": "Namespaced",
        }
    ]
    assert hook["matchPolicy"] == "Exact" and hook["failurePolicy"] == "Fail" and hook["sideEffects"] == "None"
    (conversion,) = _webhook_definitions("ConversionWebhook")
    for field in ("deploymentName", "containerPort", "targetPort"):
        assert hook[field] == conversion[field], field
    routes = {(r.method, r.resource.canonical) for r in webhook.make_app().router.routes() if r.resource}
    assert ("POST", admission.PATH) in routes


def test_metadata_dockerfile_scorecard_and_catalog_agree() -> None:
    annotations = yaml.safe_load((gen.BUNDLE_DIR / "metadata" / "annotations.yaml").read_text())["annotations"]
    labels = dict(
        line.removeprefix("LABEL ").split("=", 1)
        for line in gen.BUNDLE_DOCKERFILE.read_text().splitlines()
        if line.startswith("LABEL ")
    )
    assert labels == annotations
    assert annotations["operators.operatorframework.io.bundle.package.v1"] == "sampledb-operator"
    assert annotations["operators.operatorframework.io.bundle.channels.v1"] == "stable,candidate"
    assert annotations["operators.operatorframework.io.bundle.channel.default.v1"] == "stable"

    scorecard = yaml.safe_load((gen.BUNDLE_DIR / "tests" / "scorecard" / "config.yaml").read_text())
    tests = [t["entrypoint"][1] for stage in scorecard["stages"] for t in stage["tests"]]
    assert sorted(tests) == sorted(test for _, test in gen.SCORECARD_TESTS)
    assert {t["image"] for s in scorecard["stages"] for t in s["tests"]} == {
        "quay.io/operator-framework/scorecard-test:v1.42.0"
    }

    catalog = [
        doc for doc in yaml.safe_load_all((gen.CATALOG_DIR / "sampledb-operator" / "catalog.yaml").read_text()) if doc
    ]
    (package,) = [d for d in catalog if d["schema"] == "olm.package"]
    assert package["defaultChannel"] == annotations["operators.operatorframework.io.bundle.channel.default.v1"]
    channels = {d["name"] for d in catalog if d["schema"] == "olm.channel"}
    assert channels == set(annotations["operators.operatorframework.io.bundle.channels.v1"].split(","))
    for channel in (d for d in catalog if d["schema"] == "olm.channel"):
        assert csv()["metadata"]["name"] in {e["name"] for e in channel["entries"]}, channel["name"]


def test_catalog_bundles_carry_their_manifests_inline() -> None:
    """OLM installs an inline bundle (no image) directly; a bundle image would need an unpack Job."""
    catalog = (gen.CATALOG_DIR / "sampledb-operator" / "catalog.yaml").read_text()
    bundles = [doc for doc in yaml.safe_load_all(catalog) if doc and doc["schema"] == "olm.bundle"]
    assert bundles
    for bundle in bundles:
        assert bundle["image"] == "", f"{bundle['name']} references image {bundle['image']!r}"
        objects = [p for p in bundle["properties"] if p["type"] == "olm.bundle.object"]
        kinds = sorted(json.loads(__import__("base64").b64decode(p["value"]["data"]))["kind"] for p in objects)
        assert "ClusterServiceVersion" in kinds and kinds.count("CustomResourceDefinition") == len(crds()), kinds


@pytest.mark.parametrize("field", gen.GENERATED_SPEC_FIELDS)
def test_csv_base_leaves_generated_fields_to_the_generator(field: str) -> None:
    base = yaml.safe_load(gen.CSV_BASE.read_text())
    assert field not in base["spec"]

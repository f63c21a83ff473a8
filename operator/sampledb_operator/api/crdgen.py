"""Generate the CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema with `$ref`s, `anyOf` for optionals and titles; Kubernetes wants a
*structural* OpenAPI v3 schema: everything inlined, one `type` per node, no nulls. This module does
that translation, so the models stay the single source of truth and `make generate` (or
`python -m sampledb_operator generate-crds`) rewrites `crds/` from them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from sampledb_operator.api import (
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    STORAGE_VERSION,
    backup,
    common,
    v1,
    v1beta1,
)

# Keywords that a structural schema may carry over from pydantic's output unchanged.
_KEPT_KEYWORDS = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "maxProperties",
    "format",
    "required",
}
# Child names add at most this many characters (`-final-snapshot`), and the StatefulSet's Pod
# names and revision labels must stay within 63 characters.
MAX_NAME_LENGTH = 40

SchemaDict = dict[str, Any]


def _resolve(node: SchemaDict, defs: SchemaDict) -> SchemaDict:
    """Inline `$ref`/`allOf` and drop the `null` branch of optionals, keeping the outer keywords."""
    outer = {k: v for k, v in node.items() if k not in ("$ref", "allOf", "anyOf")}
    if "$ref" in node:
        inner = defs[node["$ref"].rsplit("/", 1)[-1]]
    elif "allOf" in node and len(node["allOf"]) == 1:
        inner = node["allOf"][0]
    elif "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union of {branches} in a structural schema")
        inner = branches[0]
    else:
        return node
    return {**_resolve(inner, defs), **outer}


def structural(node: SchemaDict, defs: SchemaDict, *, default_objects: bool) -> SchemaDict:
    """Translate one pydantic JSON Schema node into a structural OpenAPI v3 node.

    With `default_objects`, optional nested objects that have defaulted fields and no required
    ones get `default: {}`, so that the API server applies those defaults even when the user leaves
    the whole object out (spec only: the status must stay empty until the operator writes it).
    """
    node = _resolve(node, defs)
    out: SchemaDict = {k: v for k, v in node.items() if k in _KEPT_KEYWORDS or k.startswith("x-kubernetes-")}
    if out.get("default", 0) is None:
        del out["default"]
    if "properties" in node:
        out["type"] = "object"
        required = set(node.get("required", []))
        out["properties"] = {}
        for name, prop in node["properties"].items():
            child = structural(prop, defs, default_objects=default_objects)
            optional_object = name not in required and "properties" in child and not child.get("required")
            fills_something = any("default" in prop for prop in child.get("properties", {}).values())
            if default_objects and optional_object and fills_something and "default" not in child:
                child["default"] = {}
            out["properties"][name] = child
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = structural(node["additionalProperties"], defs, default_objects=False)
    if "items" in node:
        out["items"] = structural(node["items"], defs, default_objects=False)
    return out


def version_schema(model: type[BaseModel], *, spec_default: bool = True) -> SchemaDict:
    """The `openAPIV3Schema` of one version of the kind."""
    raw = model.model_json_schema(mode="validation")
    defs = raw.get("$defs", {})
    spec = structural(raw["properties"]["spec"], defs, default_objects=True)
    spec.pop("default", None)
    status = structural(raw["properties"]["status"], defs, default_objects=False)
    status.pop("default", None)
    return {
        "type": "object",
        "description": raw.get("description", ""),
        "properties": {
            "apiVersion": {"type": "string", "description": "Versioned schema of this object."},
            "kind": {"type": "string", "description": "The REST resource this object represents."},
            "metadata": {"type": "object"},
            "spec": {**spec, "default": {}} if spec_default else spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            common.cel(
                f"self.metadata.name.size() <= {MAX_NAME_LENGTH} && "
                "self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')",
                f"metadata.name must be at most {MAX_NAME_LENGTH} characters of lower-case letters, digits and '-', "
                "starting with a letter (it names the Services and the StatefulSet)",
                reason="FieldValueInvalid",
            )
        ],
    }


def _printer_columns(version_path: str) -> list[SchemaDict]:
    return [
        {"name": "Version", "type": "integer", "jsonPath": version_path, "description": "PostgreSQL major version."},
        {"name": "Instances", "type": "integer", "jsonPath": ".spec.instances", "description": "Servers asked for."},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "description": "Lifecycle phase."},
        {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
        {"name": "Ready Instances", "type": "integer", "jsonPath": ".status.readyInstances", "priority": 1},
        {"name": "Primary", "type": "string", "jsonPath": ".status.currentPrimary", "priority": 1},
        {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]


# `kubectl scale sampledb/<name> --replicas=3` sets spec.instances (the same path in both versions).
_SUBRESOURCES: SchemaDict = {
    "status": {},
    "scale": {"specReplicasPath": ".spec.instances", "statusReplicasPath": ".status.readyInstances"},
}


def sampledb_crd() -> SchemaDict:
    """The SampleDB CRD: v1 (stored) and v1beta1 (deprecated), converted by our webhook."""
    versions = [
        {
            "name": v1.VERSION,
            "served": True,
            "storage": STORAGE_VERSION == v1.VERSION,
            "schema": {"openAPIV3Schema": version_schema(v1.SampleDB)},
            "subresources": _SUBRESOURCES,
            "additionalPrinterColumns": _printer_columns(".spec.postgres.version"),
        },
        {
            "name": v1beta1.VERSION,
            "served": True,
            "storage": STORAGE_VERSION == v1beta1.VERSION,
            "deprecated": True,
            "deprecationWarning": v1beta1.DEPRECATION_WARNING,
            "schema": {"openAPIV3Schema": version_schema(v1beta1.SampleDB)},
            "subresources": _SUBRESOURCES,
            "additionalPrinterColumns": _printer_columns(".spec.version"),
        },
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": SHORT_NAMES,
                "categories": ["all", "sampledbs-all"],
            },
            "scope": "Namespaced",
            "versions": versions,
            # The packaging (Helm chart, OLM bundle, test harness) fills in where the webhook is.
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {
                        "service": {
                            "namespace": "sampledb-system",
                            "name": "sampledb-webhook",
                            "path": "/convert",
                            "port": 443,
                        }
                    },
                },
            },
        },
    }


def sampledb_backup_crd() -> SchemaDict:
    """The SampleDBBackup CRD: one version, no conversion."""
    schema = version_schema(backup.SampleDBBackup, spec_default=False)
    schema["required"] = ["spec"]
    columns = [
        {"name": "Instance", "type": "string", "jsonPath": ".spec.instance"},
        {"name": "Method", "type": "string", "jsonPath": ".spec.method"},
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Bytes", "type": "integer", "jsonPath": ".status.bytes"},
        {"name": "Verified", "type": "boolean", "jsonPath": ".status.verified"},
        {"name": "Location", "type": "string", "jsonPath": ".status.location", "priority": 1},
        {"name": "Stop LSN", "type": "string", "jsonPath": ".status.stopLSN", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    version = {
        "name": backup.VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "subresources": {"status": {}},
        "additionalPrinterColumns": columns,
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{backup.PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": backup.KIND,
                "listKind": f"{backup.KIND}List",
                "plural": backup.PLURAL,
                "singular": backup.SINGULAR,
                "shortNames": backup.SHORT_NAMES,
                "categories": ["sampledbs-all"],
            },
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def all_crds() -> dict[str, SchemaDict]:
    """Every CRD this operator owns, keyed by the file name it is written to."""
    return {f"{GROUP}_{PLURAL}.yaml": sampledb_crd(), f"{GROUP}_{backup.PLURAL}.yaml": sampledb_backup_crd()}


def render(crd: SchemaDict) -> str:
    """Stable YAML text of a CRD (key order kept, so diffs stay readable)."""
    header = "# Generated from the pydantic models by `make generate`. Do not edit.\n"
    return header + yaml.safe_dump(crd, sort_keys=True, width=120)


def write_crds(out_dir: Path) -> list[Path]:
    """Write every CRD under `out_dir`; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, crd in all_crds().items():
        path = out_dir / filename
        path.write_text(render(crd))
        written.append(path)
    return written

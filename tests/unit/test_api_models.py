"""The pydantic models: defaults, constraints, and the CRDs generated from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from sampledb_operator.api import crdgen, v1, v1beta1
from tests.counter_examples import counter_examples

REPO = Path(__file__).resolve().parents[2]


def test_v1_defaults_are_safe() -> None:
    spec = v1.SampleDBSpec()
    assert spec.postgres.version == 17
    assert spec.deletionPolicy == "Snapshot"
    assert spec.storage.size == "10Gi"
    assert spec.database.name == "app"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"postgres": {"version": 14}}, "version"),
        ({"storage": {"size": "ten gigs"}}, "size"),
        ({"backup": {"retention": 0}}, "retention"),
        ({"backup": {"schedule": "every day"}}, "schedule"),
        ({"database": {"name": "Robert'); DROP TABLE students;--"}}, "name"),
        ({"deletionPolicy": "Shred"}, "deletionPolicy"),
        ({"unknownField": 1}, "unknownField"),
        (
            {"database": {"owner": "postgres"}},
            "database.owner must not be a reserved role name",
        ),
        (
            {"database": {"owner": "pg_read_all_data"}},
            "database.owner must not be a reserved role name",
        ),
        (
            {"database": {"name": "template1"}},
            "database.name must not be one of PostgreSQL's own databases",
        ),
    ],
)
def test_v1_rejects_invalid_fields(spec: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        v1.SampleDBSpec.model_validate(spec)
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("owner", "name"),
    [("postgres2", "postgresql"), ("app_pg_", "template"), ("pgx", "app")],
)
def test_names_close_to_reserved_ones_are_accepted(owner: str, name: str) -> None:
    assert v1.DatabaseSpec(owner=owner, name=name).owner == owner


def test_v1beta1_flat_shape() -> None:
    spec = v1beta1.SampleDBSpec.model_validate({"version": 15, "storageSize": "5Gi", "backupSchedule": "@daily"})
    assert (
        spec.version,
        spec.storageSize,
        spec.backupSchedule,
        spec.backupRetention,
    ) == (15, "5Gi", "@daily", 7)


def test_committed_crds_match_the_models() -> None:
    for filename, crd in crdgen.all_crds().items():
        committed = (REPO / "crds" / filename).read_text()
        assert committed == crdgen.render(crd), f"crds/{filename} is stale: run `make generate`"


def _walk(schema: dict[str, object], path: str = "") -> list[tuple[str, dict[str, object]]]:
    nodes = [(path, schema)]
    for name, child in (schema.get("properties") or {}).items():  # type: ignore[attr-defined]
        nodes += _walk(child, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            nodes += _walk(schema[key], f"{path}[]")  # type: ignore[arg-type]
    return nodes


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_generated_schema_is_structural_and_described(version: str) -> None:
    crd = crdgen.sampledb_crd()
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == version)["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "type" in node, f"{path} has no type"
        assert not {"$ref", "anyOf", "allOf", "title"} & node.keys(), f"{path} is not structural"
        if path.startswith((".spec", ".status")) and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description for kubectl explain"


def test_crd_versions_printer_columns_and_conversion() -> None:
    crd = crdgen.sampledb_crd()
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert versions["v1"]["storage"] and not versions["v1beta1"]["storage"]
    assert versions["v1beta1"]["deprecated"] is True
    columns = [c["name"] for c in versions["v1"]["additionalPrinterColumns"]]
    assert columns[:4] == ["Version", "Instances", "Phase", "Ready"] and "Age" in columns
    assert versions["v1"]["subresources"]["scale"]["specReplicasPath"] == ".spec.instances"
    assert crd["spec"]["conversion"]["strategy"] == "Webhook"
    assert crd["spec"]["names"]["shortNames"] == ["sdb"]


def test_cel_rules_present_for_transitions() -> None:
    text = yaml.safe_dump(crdgen.sampledb_crd())
    assert "self >= oldSelf" in text
    assert "quantity(self).compareTo(quantity(oldSelf)) >= 0" in text
    assert "self.storageClassName == oldSelf.storageClassName" in text


def test_crd_names_resolve_unambiguously_in_kubectl() -> None:
    """A category equal to a resource's name makes `kubectl get <name> <object>` ambiguous."""
    crds = crdgen.all_crds().values()
    names = {n.lower() for crd in crds for key in ("plural", "singular", "kind") for n in [crd["spec"]["names"][key]]}
    names |= {s for crd in crds for s in crd["spec"]["names"].get("shortNames", [])}
    categories = {c for crd in crds for c in crd["spec"]["names"].get("categories", [])}
    assert not categories & names


@pytest.mark.parametrize(("rule", "spec"), counter_examples(), ids=[rule for rule, _ in counter_examples()])
def test_every_counter_example_breaks_a_model_rule(rule: str, spec: dict[str, object]) -> None:
    """The generator's values do break the model (tests/integration sends each to the API server)."""
    with pytest.raises(ValidationError) as err:
        v1.SampleDBSpec.model_validate(spec)
    field = rule.split(":", 1)[0].removeprefix("spec.")
    assert field.rsplit(".", 1)[-1] in str(err.value)


def test_counter_examples_cover_every_constrained_field() -> None:
    fields = {rule.split(":", 1)[0] for rule, _ in counter_examples()}
    assert {"spec.postgres.version", "spec.storage.size", "spec.database.owner", "spec.restore.file"} <= fields
    assert len(counter_examples()) >= 30

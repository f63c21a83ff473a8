"""Conversion v1beta1 <-> v1 on generated objects that use every field of both versions.

The objects come from the models' JSON schemas (tests/model_strategies.py), so a field added to a
model is converted here the day it is added; `test_every_field_of_the_model_is_generated` fails
if one is not. Round trips in both directions are identities. A `v1beta1` object whose reserved
annotation is stale or hostile never crashes the conversion, and whatever it says is stored only
if the `v1` model accepts it: a write through `v1beta1` is validated as `v1`.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample
from pydantic import BaseModel, TypeAdapter, ValidationError

from sampledb_operator.api import crdgen, v1, v1beta1
from sampledb_operator.api.common import Quantity, SampleDBStatus
from sampledb_operator.conversion.convert import (
    RESERVED_ANNOTATION,
    V1,
    V1BETA1,
    ConversionError,
    convert,
    v1_to_v1beta1,
    v1beta1_to_v1,
)
from tests.counter_examples import counter_examples
from tests.model_strategies import (
    MAX_TEXT,
    TEXT,
    Obj,
    Path,
    cron_schedules,
    enum_values,
    field_paths,
    json_values,
    model_objects,
    present,
    quantities,
    sampledbs,
    values_at,
)

PROPERTY = settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
V1_SPECS = model_objects(v1.SampleDBSpec)
V1BETA1_SPECS = model_objects(v1beta1.SampleDBSpec)
STATUSES = model_objects(SampleDBStatus)
V1_OBJECTS = sampledbs(V1, V1_SPECS, STATUSES)
V1BETA1_OBJECTS = sampledbs(V1BETA1, V1BETA1_SPECS, STATUSES)

# Where each v1beta1 spec field lives in v1: the API's documented mapping, written out here rather
# than read from convert.FIELD_MAP, so that a field the conversion forgets is a failure, not a match.
HOMES: dict[str, Path] = {
    "version": ("postgres", "version"),
    "image": ("postgres", "image"),
    "parameters": ("postgres", "parameters"),
    "upgradeMethod": ("postgres", "upgrade", "method"),
    "instances": ("instances",),
    "storageSize": ("storage", "size"),
    "storageClassName": ("storage", "storageClassName"),
    "backupSchedule": ("backup", "schedule"),
    "backupRetention": ("backup", "retention"),
    "deletionPolicy": ("deletionPolicy",),
}
# The v1 spec fields v1beta1 cannot say: they ride in the reserved annotation.
V1_ONLY = sorted(
    p
    for p in field_paths(v1.SampleDBSpec)
    if p not in HOMES.values() and not any(home[: len(p)] == p for home in HOMES.values())
)


def copy_without_a_store(v1_spec: Any) -> bool:
    """The one rule across fields a v1beta1 spec alone can break: method Copy needs v1's objectStore."""
    method = list(values_at(v1_spec, ("postgres", "upgrade", "method")))
    return method == [v1.UpgradeMethod.COPY.value] and not present(v1_spec, ("backup", "objectStore"))


def annotations_of(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def model_accepts(model: type[BaseModel], value: Any) -> bool:
    try:
        model.model_validate(value)
    except ValidationError:
        return False
    return True


# -- round trips ---------------------------------------------------------------------------------------


@PROPERTY
@given(V1_OBJECTS)
def test_v1_to_v1beta1_and_back_is_identity(obj: Obj) -> None:
    """A v1 object read as v1beta1 and written back is stored exactly as it was: every field, status, metadata."""
    original = copy.deepcopy(obj)
    there = v1_to_v1beta1(obj)
    assert obj == original, "the input was changed"
    assert there["apiVersion"] == V1BETA1
    assert there.get("status") == obj.get("status")
    assert model_accepts(v1beta1.SampleDB, there), f"not a valid v1beta1 object: {there}"
    for field, home in HOMES.items():  # each field v1beta1 can say is said there, not in the annotation
        assert list(values_at(there.get("spec"), (field,))) == list(values_at(obj.get("spec"), home))
    assert v1beta1_to_v1(there) == original


@PROPERTY
@given(V1BETA1_OBJECTS)
def test_v1beta1_to_v1_and_back_is_identity(obj: Obj) -> None:
    """A v1beta1 client reads back exactly what it wrote, and what it wrote is stored as a valid v1 object."""
    original = copy.deepcopy(obj)
    if copy_without_a_store(v1beta1_to_v1(obj, check=False).get("spec")):
        with pytest.raises(ConversionError, match=r"upgrade\.method Copy"):
            v1beta1_to_v1(obj)
        return
    there = v1beta1_to_v1(obj)
    assert obj == original, "the input was changed"
    assert there["apiVersion"] == V1
    assert RESERVED_ANNOTATION not in annotations_of(there)
    assert annotations_of(there) == annotations_of(obj)
    assert model_accepts(v1.SampleDB, there), f"not a valid v1 object: {there}"
    for field, home in HOMES.items():
        assert list(values_at(there.get("spec"), home)) == list(values_at(obj.get("spec"), (field,)))
    assert v1_to_v1beta1(there) == original


@PROPERTY
@given(V1_OBJECTS, V1BETA1_SPECS)
def test_a_v1beta1_client_edit_keeps_every_v1_only_field(obj: Obj, edit: Obj) -> None:
    """Read as v1beta1, replace the whole flat spec, write back: the v1-only fields are as they were."""
    read = v1_to_v1beta1(obj)
    written = {**read, "spec": edit}
    if copy_without_a_store(v1beta1_to_v1(written, check=False)["spec"]):
        with pytest.raises(ConversionError, match=r"upgrade\.method Copy"):
            v1beta1_to_v1(written)
        return
    back = v1beta1_to_v1(written)
    assert model_accepts(v1.SampleDB, back), f"not a valid v1 object: {back}"
    for field, home in HOMES.items():
        assert list(values_at(back["spec"], home)) == list(values_at(edit, (field,))), field
    for path in V1_ONLY:
        assert list(values_at(back["spec"], path)) == list(values_at(obj.get("spec"), path)), path


# -- the reserved annotation, stale or hostile ---------------------------------------------------------------


@st.composite
def one_value_replaced(draw: st.DrawFn, specs: st.SearchStrategy[Obj]) -> Obj:
    """A valid v1 spec with one value (or a new, unknown key) replaced by any JSON value."""
    spec = draw(specs)
    target = draw(st.sampled_from([spec, *(v for v in spec.values() if isinstance(v, dict))]))
    key = draw(st.sampled_from(sorted(target)) | st.text(TEXT, min_size=1, max_size=10)) if target else "x"
    target[key] = draw(json_values())
    return spec


def stale_annotation(obj: Obj) -> str:
    """What the conversion kept for another object: an annotation a client copied from elsewhere."""
    return annotations_of(v1_to_v1beta1(obj)).get(RESERVED_ANNOTATION, "{}")


HOSTILE_ANNOTATIONS = st.one_of(
    st.text(TEXT, max_size=MAX_TEXT),  # mostly not JSON
    json_values().map(json.dumps),  # any JSON: scalars, lists, objects of anything
    V1_SPECS.map(json.dumps),  # a whole v1 spec, the fields v1beta1 has included
    one_value_replaced(V1_SPECS).map(json.dumps),  # almost valid
    V1_OBJECTS.map(stale_annotation),  # valid, but another object's
)


def expected_v1_spec(flat: Any, annotation: str) -> Obj | None:
    """The v1 spec a v1beta1 write with this annotation stands for; None when v1 must refuse it.

    The annotation's object, with each flat field put in its home (the flat field wins).
    """
    try:
        kept = json.loads(annotation)
    except ValueError:
        return None
    if not isinstance(kept, dict) or not isinstance(flat, dict):
        return None
    spec = copy.deepcopy(kept)
    for field, home in HOMES.items():
        if field not in flat:
            continue
        node = spec
        for key in home[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                return None
        node[home[-1]] = flat[field]
    return spec if model_accepts(v1.SampleDBSpec, spec) else None


def to_v1_or_refusal(obj: Obj) -> Obj | ConversionError:
    try:
        return convert(obj, V1)
    except ConversionError as err:
        return err


@settings(PROPERTY, max_examples=300)
@given(V1BETA1_OBJECTS.filter(lambda o: "spec" in o), HOSTILE_ANNOTATIONS)
def test_a_stale_or_hostile_annotation_never_crashes_and_is_validated_as_v1(obj: Obj, annotation: str) -> None:
    obj["metadata"]["annotations"] = {**annotations_of(obj), RESERVED_ANNOTATION: annotation}
    others = {k: v for k, v in annotations_of(obj).items() if k != RESERVED_ANNOTATION}
    expected = expected_v1_spec(obj["spec"], annotation)
    out = to_v1_or_refusal(obj)
    if isinstance(out, ConversionError):
        assert expected is None, f"refused although v1 accepts {expected}: {out}"
        assert RESERVED_ANNOTATION in str(out) or "spec." in str(out), f"the refusal names nothing: {out}"
        return
    assert expected is not None, f"accepted although v1 refuses it: {out.get('spec')}"
    assert out["spec"] == expected
    assert model_accepts(v1.SampleDB, out)
    assert annotations_of(out) == others  # the annotation is consumed, never stored in v1
    assert out.get("status") == obj.get("status")


@pytest.mark.parametrize(("rule", "spec"), counter_examples(), ids=[c[0] for c in counter_examples()])
def test_every_v1_rule_holds_for_what_rides_in_the_annotation(rule: str, spec: Obj) -> None:
    """Each rule of the v1 model, broken in the annotation of an otherwise empty v1beta1 write, is refused by name."""
    field = rule.split(":", 1)[0]
    beta = {
        "apiVersion": V1BETA1,
        "kind": "SampleDB",
        "metadata": {"name": "x", "annotations": {RESERVED_ANNOTATION: json.dumps(spec)}},
        "spec": {},
    }
    with pytest.raises(ConversionError) as refused:
        convert(beta, V1)
    assert f"{field}:" in str(refused.value) or f"{field}." in str(refused.value), str(refused.value)


@pytest.mark.parametrize(
    "annotation",
    [
        pytest.param('{"resources":' + '{"a":' * 1000 + "1" + "}" * 1001, id="objects-1000-deep-6KB"),
        pytest.param("[" * 100_000 + "]" * 100_000, id="lists-100000-deep-200KB"),
    ],
)
def test_a_deeply_nested_annotation_is_refused_with_a_reason(annotation: str) -> None:
    """Both fit in the 256 KiB annotations may hold; a RecursionError reaches the API server as an HTTP 500."""
    beta = {
        "apiVersion": V1BETA1,
        "kind": "SampleDB",
        "metadata": {"name": "deep", "annotations": {RESERVED_ANNOTATION: annotation}},
        "spec": {},
    }
    with pytest.raises(ConversionError, match=RESERVED_ANNOTATION):
        convert(beta, V1)


# -- the two versions agree on every field --------------------------------------------------------------------


def _leaf_schema(model: type[BaseModel], path: Path) -> dict[str, Any]:
    """The JSON schema of the field at `path`, Optional and $ref resolved, without prose."""
    schema = model.model_json_schema()
    defs = schema.get("$defs", {})
    node: dict[str, Any] = schema
    for key in path:
        node = node["properties"][key]
        node = defs[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node and key != path[-1] else node
    options = [o for o in node.get("anyOf", []) if o.get("type") != "null"]
    node = {**node, **options[0]} if options else node
    if "$ref" in node:
        node = {**defs[node["$ref"].rsplit("/", 1)[1]], **node}
    prose = ("description", "title", "anyOf", "$ref", "x-kubernetes-validations")
    return {k: v for k, v in node.items() if k not in prose}


def test_every_v1beta1_field_has_a_v1_home_with_the_same_value_rules() -> None:
    """So that any value a v1beta1 client may write is one v1 accepts, and the other way round."""
    assert set(v1beta1.SampleDBSpec.model_fields) == set(HOMES)
    for field, home in HOMES.items():
        assert _leaf_schema(v1beta1.SampleDBSpec, (field,)) == _leaf_schema(v1.SampleDBSpec, home), field


def _transition_rules(schema: dict[str, Any], path: Path) -> dict[Path, set[str]]:
    """The rules comparing with `oldSelf` of each field, by path (a rule with fieldPath counts for that field)."""
    found: dict[Path, set[str]] = {}
    for rule in schema.get("x-kubernetes-validations", []):
        if "oldSelf" in rule["rule"]:
            target = (*path, *filter(None, rule.get("fieldPath", "").split(".")))
            found.setdefault(target, set()).add(rule["message"])
    for name, child in (schema.get("properties") or {}).items():
        for target, rules in _transition_rules(child, (*path, name)).items():
            found.setdefault(target, set()).update(rules)
    return found


def test_every_transition_rule_of_a_v1_home_also_holds_for_its_v1beta1_field() -> None:
    """The webhook sees only the new object, so rules on changes (oldSelf) must be in the v1beta1 schema itself.

    The API server checks an update against the schema of the version it was sent in; without
    these, `kubectl edit sampledbs.v1beta1.sampledb.io` could shrink the volume or change its class.
    """
    crd = crdgen.all_crds()["sampledb.io_sampledbs.yaml"]
    specs = {v["name"]: v["schema"]["openAPIV3Schema"]["properties"]["spec"] for v in crd["spec"]["versions"]}
    v1_rules, beta_rules = _transition_rules(specs["v1"], ()), _transition_rules(specs["v1beta1"], ())
    missing = {
        field: sorted(v1_rules[home])
        for field, home in HOMES.items()
        if home in v1_rules and not beta_rules.get((field,))
    }
    assert not missing, f"v1beta1 fields without the transition rules of their v1 home: {missing}"


# -- the generators cover every field, every enum value, and the real grammars -----------------------------


def never_generated(strategy: st.SearchStrategy[Any], targets: dict[str, Callable[[Any], bool]]) -> list[str]:
    """The targets no example of `strategy` meets, out of up to 20,000 examples (it stops once all are met)."""
    remaining = dict(targets)

    def meets_the_rest(example: Any) -> bool:
        for name in [n for n, met in remaining.items() if met(example)]:
            del remaining[name]
        return not remaining

    with contextlib.suppress(NoSuchExample):
        find(strategy, meets_the_rest, settings=settings(max_examples=20000, phases=[Phase.generate], database=None))
    return sorted(remaining)


def has_path(path: Path) -> Callable[[Any], bool]:
    return lambda obj: present(obj, path)


def has_value(path: Path, wanted: Any) -> Callable[[Any], bool]:
    """A value at `path` equals `wanted`, or meets it when it is a predicate."""

    def meets(value: Any) -> bool:
        return bool(wanted(value)) if callable(wanted) else bool(value == wanted)

    return lambda obj: any(meets(v) for v in values_at(obj, path))


GENERATED = [
    pytest.param(V1_OBJECTS, v1.SampleDB, id="v1"),
    pytest.param(V1BETA1_OBJECTS, v1beta1.SampleDB, id="v1beta1"),
]


@pytest.mark.parametrize(("strategy", "model"), GENERATED)
def test_every_field_and_every_enum_value_of_the_model_is_generated(
    strategy: st.SearchStrategy[Obj], model: type[BaseModel]
) -> None:
    """Walks the pydantic fields (spec and status), not the schema the strategy came from.

    Enumerations include every Phase, UpgradePhase, DeletionPolicy, ... and every supported major version.
    """
    paths, choices = field_paths(model), enum_values(model)
    assert {("spec",), ("status", "upgrade", "phase")} <= paths  # the walk reaches nested models
    assert {("status", "phase"), ("status", "upgrade", "phase")} <= set(choices)
    targets = {".".join(p): has_path(p) for p in paths}
    for path, values in choices.items():
        for value in values:
            targets[f"{'.'.join(path)}={value}"] = has_value(path, value)
    missing = never_generated(strategy, targets)
    assert not missing, f"fields or values no generated object has: {missing}"


@settings(max_examples=500, deadline=None)
@given(quantities())
def test_quantities_from_the_grammar_are_what_the_model_accepts(quantity: str) -> None:
    TypeAdapter(Quantity).validate_python(quantity)


@settings(max_examples=500, deadline=None)
@given(cron_schedules())
def test_schedules_from_the_grammar_are_what_the_model_accepts(schedule: str) -> None:
    v1.BackupSpec(schedule=schedule)


SIZE, SCHEDULE = ("spec", "storage", "size"), ("spec", "backup", "schedule")
GRAMMAR_FEATURES: dict[str, tuple[Path, Callable[[str], bool]]] = {
    "binary suffix": (SIZE, lambda q: q.endswith(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))),
    "exponent": (SIZE, lambda q: "e" in q.lower() and not q.lower().endswith("e")),
    "sign and fraction": (SIZE, lambda q: q[0] in "+-" and "." in q),
    "step": (SCHEDULE, lambda s: "/" in s),
    "range": (SCHEDULE, lambda s: "-" in s),
    "list": (SCHEDULE, lambda s: "," in s),
    "name": (SCHEDULE, lambda s: any(n in s for n in ("MON", "TUE", "JAN", "FEB", "SUN", "SAT"))),
    "macro": (SCHEDULE, lambda s: s.startswith("@")),
}


def test_quantity_and_schedule_fields_draw_from_the_real_grammars() -> None:
    """The generator recognised the schema's quantity and cron patterns and used the grammars for them."""
    targets = {
        f"{'.'.join(path)}: {feature}": has_value(path, has) for feature, (path, has) in GRAMMAR_FEATURES.items()
    }
    assert not never_generated(V1_OBJECTS, targets)

"""A counter-example for every rule the operator's `v1` model holds, generated from the model itself.

The operator refuses a spec its pydantic model refuses (a Degraded condition); whatever it refuses
must never be admitted by the API server, or such an object would sit there unusable (and, before
the deletion fix, held by its finalizer forever). The rules are read from the model's own JSON
schema (pattern, length, range, enum, maxProperties), plus the checks that live in validators and
not in the schema (reserved names); each gets one value that breaks it, placed in an otherwise
valid spec. tests/unit checks the model refuses every one; tests/integration sends every one to
the real API server, in both API versions where the field has a `v1beta1` home.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sampledb_operator.api import v1
from sampledb_operator.api.common import RESERVED_DATABASES, RESERVED_ROLE_PREFIX, RESERVED_ROLES

# Rules kept in validators rather than in the schema: the values each refuses.
VALIDATOR_RULES: dict[tuple[str, ...], list[Any]] = {
    ("database", "owner"): [*RESERVED_ROLES, f"{RESERVED_ROLE_PREFIX}monitor"],
    ("database", "name"): list(RESERVED_DATABASES),
    ("restore", "file"): ["db1/../../etc/passwd"],
    ("postgres", "parameters"): [{"x" * 64: "1"}],
    ("restore",): [{"backup": "nightly", "persistentVolumeClaim": "dumps", "file": "db.dump"}, {}],
}
# Fields only valid together with others (the restore sources): a counter-example of one must keep
# the object's other rules satisfied, so its sibling is filled in.
COMPANIONS: dict[tuple[str, ...], dict[str, Any]] = {
    ("restore", "persistentVolumeClaim"): {"file": "dump.custom"},
    ("restore", "file"): {"persistentVolumeClaim": "dumps"},
}


def _resolve(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return defs[schema["$ref"].rsplit("/", 1)[1]]
    options = [s for s in schema.get("anyOf", []) if s.get("type") != "null"]
    if len(options) == 1:  # Optional[X]: the rule is X's
        return {**_resolve(options[0], defs), **{k: v for k, v in schema.items() if k != "anyOf"}}
    return schema


def _breaking(schema: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """(rule, a value that breaks it) for each constraint of one leaf."""
    if "enum" in schema:
        yield "enum", 14 if schema.get("type") == "integer" else "NotOneOfThem"
    if "pattern" in schema:
        yield "pattern", "/Not Valid!"  # a leading "/" and a space: no pattern of ours allows both
    if "maxLength" in schema:
        yield "maxLength", "a" * (schema["maxLength"] + 1)
    if schema.get("minLength", 0) > 0:
        yield "minLength", ""
    if "minimum" in schema:
        yield "minimum", schema["minimum"] - 1
    if "maximum" in schema:
        yield "maximum", schema["maximum"] + 1
    if "maxProperties" in schema:
        yield "maxProperties", {f"k{i}": "1" for i in range(schema["maxProperties"] + 1)}


def _walk(
    schema: dict[str, Any], defs: dict[str, Any], path: tuple[str, ...]
) -> Iterator[tuple[str, tuple[str, ...], Any]]:
    schema = _resolve(schema, defs)
    for rule, value in _breaking(schema):
        yield rule, path, value
    for name, child in (schema.get("properties") or {}).items():
        yield from _walk(child, defs, (*path, name))
    for value in VALIDATOR_RULES.get(path, []):
        yield "validator", path, value


def _placed(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    node.update(COMPANIONS.get(path, {}))
    return spec


def counter_examples() -> list[tuple[str, dict[str, Any]]]:
    """(id naming the field and the rule, a v1 spec breaking exactly that rule)."""
    schema = v1.SampleDBSpec.model_json_schema()
    found = []
    for rule, path, value in _walk(schema, schema.get("$defs", {}), ()):
        if not path:
            continue
        shown = value if isinstance(value, (int, str)) and len(str(value)) < 20 else type(value).__name__
        found.append((f"spec.{'.'.join(path)}:{rule}:{shown}", _placed(path, value)))
    return found

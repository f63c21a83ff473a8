"""Hypothesis strategies for SampleDB objects, generated from the API models' own JSON schemas.

Why generated: a strategy written by hand covers the fields its author thought of; one read from
the model's schema covers a field the day it is added, with its enum values, ranges and patterns.
`field_paths` walks the pydantic models themselves (not the schema), so a test can check that every
field, and every value of every enum, is actually generated (tests/unit/test_conversion_properties.py).

Where the schema is looser than the real grammar, values come from the grammar instead, recognised
from the schema: Kubernetes quantities (the schema's quantity pattern), five-field cron schedules
with ranges, steps, lists, names and macros (the cron pattern), RFC 3339 times (fields whose
description says so) and, for the status's integer versions (described as a "major version"),
mostly the PostgreSQL majors the model supports; the spec's version is the model's own enum.
Rules that live in validators rather than in the schema (reserved names, a restore needs exactly
one source, no `..` in a restore file) are honoured by validating every generated object with its
model: the strategies yield only what the model accepts.
"""

from __future__ import annotations

import enum
import json
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from sampledb_operator.api.common import CRON_PATTERN, QUANTITY_PATTERN, SupportedMajor

Path = tuple[str, ...]
Obj = dict[str, Any]
ITEM = "[]"  # a path step into every item of a list
ENTRY = "*"  # a path step into every value of a map

# Strings longer than this add nothing to a conversion, which moves values without reading them;
# a field's own maxLength still applies when it is shorter.
MAX_TEXT = 24
INT64 = (-(2**63), 2**63 - 1)
TEXT = st.characters(codec="utf-8")  # what JSON from the API server can hold (no lone surrogates)

# -- grammars --------------------------------------------------------------------------------------

_DIGITS = st.from_regex(r"[0-9]{1,6}", fullmatch=True)
_SIGN = st.sampled_from(["", "+", "-"])


def _numbers() -> st.SearchStrategy[str]:
    """<number> ::= <digits> | <digits>.<digits> | <digits>. | .<digits>."""
    return st.one_of(
        _DIGITS,
        st.tuples(_DIGITS, _DIGITS).map(".".join),
        _DIGITS.map(lambda d: d + "."),
        _DIGITS.map(lambda d: "." + d),
    )


def quantities() -> st.SearchStrategy[str]:
    """Kubernetes quantities, from the grammar in apimachinery's quantity.go (signs, exponents, n and u included).

    <quantity> ::= <signedNumber><suffix>; <suffix> ::= <binarySI> | <decimalExponent> | <decimalSI>.
    """
    binary_si = st.sampled_from(["Ki", "Mi", "Gi", "Ti", "Pi", "Ei"])
    decimal_si = st.sampled_from(["n", "u", "m", "", "k", "M", "G", "T", "P", "E"])
    exponent = st.tuples(st.sampled_from("eE"), _SIGN, _numbers()).map("".join)
    return st.tuples(_SIGN, _numbers(), st.one_of(binary_si, decimal_si, exponent)).map("".join)


MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (lowest, highest, names from the lowest on) of minute, hour, day of month, month, day of week.
CRON_FIELDS: tuple[tuple[int, int, tuple[str, ...]], ...] = (
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, MONTHS),
    (0, 6, DAYS),
)
CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _cron_value(low: int, names: tuple[str, ...], value: int, by_name: bool) -> str:
    return names[value - low] if by_name and names else str(value)


def _cron_element(low: int, high: int, names: tuple[str, ...]) -> st.SearchStrategy[str]:
    """One list element: *, a value, a range, or either with a step (*/15, 1-5/2, 5/10); names as values too."""
    values = st.integers(low, high)
    value = st.tuples(values, st.booleans()).map(lambda v: _cron_value(low, names, *v))
    ranges = st.tuples(values, values, st.booleans()).map(
        lambda r: f"{_cron_value(low, names, min(r[:2]), r[2])}-{_cron_value(low, names, max(r[:2]), r[2])}"
    )
    step = st.integers(1, high - low + 1).map(str)
    return st.one_of(
        st.just("*"),
        value,
        ranges,
        st.tuples(st.one_of(st.just("*"), value, ranges), step).map("/".join),
    )


def _cron_field(index: int) -> st.SearchStrategy[str]:
    low, high, names = CRON_FIELDS[index]
    field = st.lists(_cron_element(low, high, names), min_size=1, max_size=3).map(",".join)
    return st.one_of(field, st.just("?")) if index in (2, 4) else field


def cron_schedules() -> st.SearchStrategy[str]:
    """Schedules the CronJob controller parses: five fields separated by blanks, or a macro."""
    separators = st.lists(st.sampled_from([" ", "  ", "\t"]), min_size=4, max_size=4)
    fields = st.tuples(*(_cron_field(i) for i in range(5)))
    five = st.tuples(fields, separators).map(
        lambda fs: fs[0][0] + "".join(sep + field for sep, field in zip(fs[1], fs[0][1:], strict=True))
    )
    return st.one_of(five, st.sampled_from(CRON_MACROS))


def rfc3339_times() -> st.SearchStrategy[str]:
    """Times as Kubernetes writes them: metav1.Time (seconds) and metav1.MicroTime (microseconds)."""
    moments = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))
    return st.one_of(
        moments.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%SZ")),
        moments.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    )


def json_values(*, max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value: for input the model has to refuse."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(*INT64),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(TEXT, max_size=MAX_TEXT),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(TEXT, max_size=10), inner, max_size=3),
        max_leaves=max_leaves,
    )


# -- the models' fields --------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> Iterator[tuple[Path, Any]]:
    """(path suffix, type) of what a field annotation holds: Optional and Annotated removed, into lists and maps."""
    origin = get_origin(annotation)
    if origin is Annotated:
        yield from _unwrap(get_args(annotation)[0])
    elif origin in (Union, types.UnionType):
        for arg in get_args(annotation):
            if arg is not type(None):
                yield from _unwrap(arg)
    elif origin is list:
        yield from (((ITEM, *path), inner) for path, inner in _unwrap(get_args(annotation)[0]))
    elif origin is dict:
        yield from (((ENTRY, *path), inner) for path, inner in _unwrap(get_args(annotation)[1]))
    else:
        yield (), annotation


def _is_model(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _walk_fields(model: type[BaseModel], prefix: Path) -> Iterator[tuple[Path, Any]]:
    for name, field in model.model_fields.items():
        for suffix, kind in _unwrap(field.annotation):
            path = (*prefix, name, *suffix)
            if _is_model(kind):
                yield (*prefix, name), None
                yield from _walk_fields(kind, path)
            else:
                yield path, kind


def field_paths(model: type[BaseModel]) -> set[Path]:
    """Every field of `model` and of the models it nests, as paths (`[]`: any list item, `*`: any map value)."""
    paths = set()
    for path, _ in _walk_fields(model, ()):
        # A map's or a list's own path is the field; the `*`/`[]` step of a leaf adds nothing to cover.
        while path and path[-1] in (ITEM, ENTRY):
            path = path[:-1]
        paths.add(path)
    return paths


def enum_values(model: type[BaseModel]) -> dict[Path, list[Any]]:
    """Each field whose values are an enumeration (an Enum or a Literal), with every value it can take."""
    found: dict[Path, list[Any]] = {}
    for path, kind in _walk_fields(model, ()):
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            found[path] = [member.value for member in kind]
        elif get_origin(kind) is Literal:
            found[path] = list(get_args(kind))
    return found


def values_at(obj: Any, path: Path) -> Iterator[Any]:
    """Every value found at `path` in a JSON object (several when the path goes through lists or maps)."""
    if not path:
        yield obj
        return
    step, rest = path[0], path[1:]
    if step == ITEM and isinstance(obj, list):
        children: list[Any] = obj
    elif step == ENTRY and isinstance(obj, dict):
        children = list(obj.values())
    elif isinstance(obj, dict) and step in obj:
        children = [obj[step]]
    else:
        return
    for child in children:
        yield from values_at(child, rest)


def present(obj: Any, path: Path) -> bool:
    """True when some value exists at `path`."""
    return any(True for _ in values_at(obj, path))


# -- strategies from the schema ------------------------------------------------------------------------


SMALL_CHOICE = 3  # objects of at most this many fields, all optional, also come with one field alone


class UnsupportedSchema(ValueError):
    """A schema construct the generator does not know: extend it rather than let a field go ungenerated."""


def _accepted(model: type[BaseModel]) -> Callable[[Obj], bool]:
    def check(obj: Obj) -> bool:
        try:
            model.model_validate(obj)
        except ValidationError:
            return False
        return True

    return check


def _reachable_models(model: type[BaseModel]) -> dict[str, type[BaseModel]]:
    found = {model.__name__: model}
    for field in model.model_fields.values():
        for _, kind in _unwrap(field.annotation):
            if _is_model(kind) and kind.__name__ not in found:
                found.update(_reachable_models(kind))
    return found


@dataclass(frozen=True)
class _Generator:
    """Turns one model's JSON schema into a strategy; `models` are the classes its `$defs` name."""

    defs: dict[str, Any]
    models: dict[str, type[BaseModel]]

    def value(self, schema: dict[str, Any], path: Path) -> st.SearchStrategy[Any]:
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[1]
            target = {**self.defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
            return self.model(target, self.models[name], path) if name in self.models else self.value(target, path)
        if "anyOf" in schema:
            # Optional[X] is X whose key may be absent: the API server prunes nulls of non-nullable fields.
            outer = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
            options = [self.value({**outer, **o}, path) for o in schema["anyOf"] if o.get("type") != "null"]
            return st.one_of(options)
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "const" in schema:
            return st.just(schema["const"])
        kind = schema.get("type")
        if kind == "string":
            return self.string(schema)
        if kind == "integer":
            return self.integer(schema)
        if kind == "boolean":
            return st.booleans()
        if kind == "array":
            return self.array(schema, path)
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            values = self.value(schema["additionalProperties"], (*path, ENTRY))
            keys = st.text(TEXT, min_size=1, max_size=63)
            return st.dictionaries(keys, values, max_size=min(schema.get("maxProperties", 4), 4))
        raise UnsupportedSchema(f"{'.'.join(path)}: no strategy for {json.dumps(schema)[:300]}")

    def string(self, schema: dict[str, Any]) -> st.SearchStrategy[str]:
        low, high = schema.get("minLength", 0), schema.get("maxLength", 10**6)
        pattern = schema.get("pattern")
        if pattern == QUANTITY_PATTERN:
            strategy = quantities()
        elif pattern == CRON_PATTERN:
            strategy = cron_schedules()
        elif "RFC 3339" in schema.get("description", ""):
            strategy = rfc3339_times()
        elif pattern:
            # JSON Schema patterns are searched, not matched: an anchored end means the whole string.
            strategy = st.from_regex(pattern, fullmatch=pattern.endswith("$"), alphabet=TEXT)
        else:
            return st.text(TEXT, min_size=low, max_size=max(low, min(high, MAX_TEXT)))
        return strategy.filter(lambda s: low <= len(s) <= high)

    def integer(self, schema: dict[str, Any]) -> st.SearchStrategy[int]:
        low, high = schema.get("minimum", INT64[0]), schema.get("maximum", INT64[1])
        if "major version" in schema.get("description", "").lower():  # the status's versions: mostly real ones
            majors = [v for v in get_args(SupportedMajor) if low <= v <= high]
            return st.one_of(st.sampled_from(majors), st.integers(low, high))
        return st.integers(low, high)

    def array(self, schema: dict[str, Any], path: Path) -> st.SearchStrategy[list[Any]]:
        items = self.value(schema["items"], (*path, ITEM))
        keys = schema.get("x-kubernetes-list-map-keys")
        if keys:  # a list-type map: one item per key
            return st.lists(items, max_size=3, unique_by=lambda item: tuple(item.get(k) for k in keys))
        return st.lists(items, max_size=3)

    def model(self, schema: dict[str, Any], model: type[BaseModel], path: Path) -> st.SearchStrategy[Obj]:
        properties = schema.get("properties", {})
        unnamed = set(model.model_fields) - set(properties)
        if unnamed:
            raise UnsupportedSchema(f"{model.__name__}: fields {sorted(unnamed)} have no property in the schema")
        required = set(schema.get("required", []))
        fields = {name: self.value(sub, (*path, name)) for name, sub in properties.items()}
        any_subset = st.fixed_dictionaries(
            {k: v for k, v in fields.items() if k in required},
            optional={k: v for k, v in fields.items() if k not in required},
        )
        if required or not 1 < len(fields) <= SMALL_CHOICE:
            return any_subset.filter(_accepted(model))
        # A small object of optional fields is often a choice ("exactly one of", "at most one of"),
        # which refuses most subsets; half the time one field alone, so that each is generated.
        alone = [st.fixed_dictionaries({k: v}) for k, v in fields.items()]
        return st.one_of(any_subset, st.one_of(alone)).filter(_accepted(model))


def model_objects(model: type[BaseModel]) -> st.SearchStrategy[Obj]:
    """JSON objects (as the API server holds them) of `model`: any subset of its fields, each any valid value."""
    schema = model.model_json_schema()
    return _Generator(schema.get("$defs", {}), _reachable_models(model)).model(schema, model, ())


# -- whole objects -----------------------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?", fullmatch=True)
ANNOTATION_KEYS = st.one_of(
    st.from_regex(
        r"([a-z0-9]([-a-z0-9]{0,10}[a-z0-9])?\.)?[a-z]{1,10}(/[a-z0-9]([-a-z0-9_.]{0,10}[a-z0-9])?)?", fullmatch=True
    ),
    # Neighbours of the reserved annotation: only its exact key is the conversion's.
    st.sampled_from(["conversion.sampledb.io/v1-spec-old", "conversion.sampledb.io/other", "sampledb.io/v1-spec"]),
)


def metadata() -> st.SearchStrategy[Obj]:
    """Object metadata with what the API server keeps there (the conversion must keep all of it)."""
    return st.fixed_dictionaries(
        {"name": NAMES, "namespace": NAMES, "uid": st.uuids().map(str), "generation": st.integers(1, 10**6)},
        optional={
            "resourceVersion": st.integers(1, 10**9).map(str),
            "creationTimestamp": rfc3339_times(),
            "labels": st.dictionaries(NAMES, NAMES, max_size=3),
            "annotations": st.dictionaries(ANNOTATION_KEYS, st.text(TEXT, max_size=MAX_TEXT), min_size=1, max_size=3),
            "finalizers": st.lists(st.sampled_from(["sampledb.io/finalizer", "example.com/hold"]), unique=True),
            "deletionTimestamp": rfc3339_times(),
        },
    )


def sampledbs(
    api_version: str, specs: st.SearchStrategy[Obj], statuses: st.SearchStrategy[Obj]
) -> st.SearchStrategy[Obj]:
    """Whole SampleDB objects of one version; spec and status may be absent, as in the API server's requests."""
    return st.fixed_dictionaries(
        {"apiVersion": st.just(api_version), "kind": st.just("SampleDB"), "metadata": metadata()},
        optional={"spec": specs, "status": statuses},
    )

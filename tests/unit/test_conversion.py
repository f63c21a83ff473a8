"""Conversion v1beta1 <-> v1: round trips are identities, shown on thousands of generated objects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sampledb_operator.api import v1, v1beta1
from sampledb_operator.api.common import (
    RESERVED_DATABASES,
    RESERVED_ROLES,
    reserved_name_problem,
)
from sampledb_operator.conversion.convert import (
    RESERVED_ANNOTATION,
    V1,
    V1BETA1,
    ConversionError,
    convert,
    v1_to_v1beta1,
    v1beta1_to_v1,
)

PROPERTY = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])

names = st.from_regex(r"\A[a-z][a-z0-9-]{0,20}[a-z0-9]\Z")
quantities = st.sampled_from(["1Gi", "10Gi", "512Mi", "2T", "100G", "1.5Gi"])
short_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)
parameters = st.dictionaries(st.from_regex(r"\A[a-z_]{1,20}\Z"), short_text, max_size=4)
cron = st.sampled_from(["@daily", "0 3 * * *", "*/15 * * * *"])
policy = st.sampled_from(["Snapshot", "Retain", "Delete"])
version = st.sampled_from([15, 16, 17, 18])
# Valid names only: reserved ones are refused on the way to v1 (test_reserved_names_are_refused...).
database_names = st.from_regex(r"\A[a-z_][a-z0-9_]{0,20}\Z").filter(lambda n: not reserved_name_problem("name", n))
owner_names = st.from_regex(r"\A[a-z_]{1,10}\Z").filter(lambda n: not reserved_name_problem("owner", n))


def optional_keys(
    **fields: st.SearchStrategy[Any],
) -> st.SearchStrategy[dict[str, Any]]:
    """Objects where each field is independently present or absent."""
    return st.fixed_dictionaries({}, optional=fields)


quantity_map = st.dictionaries(st.sampled_from(["cpu", "memory", "ephemeral-storage"]), quantities, max_size=3)
v1_spec = optional_keys(
    postgres=optional_keys(version=version, image=names, parameters=parameters),
    storage=optional_keys(size=quantities, storageClassName=names),
    backup=optional_keys(schedule=cron, retention=st.integers(1, 1000)),
    resources=optional_keys(requests=quantity_map, limits=quantity_map),
    database=optional_keys(name=database_names, owner=owner_names),
    credentials=optional_keys(secretName=names),
    deletionPolicy=policy,
)
v1beta1_spec = optional_keys(
    version=version,
    image=names,
    parameters=parameters,
    storageSize=quantities,
    storageClassName=names,
    backupSchedule=cron,
    backupRetention=st.integers(1, 1000),
    deletionPolicy=policy,
)
condition = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["Ready", "Progressing", "Degraded"]),
        "status": st.sampled_from(["True", "False", "Unknown"]),
        "reason": st.from_regex(r"\A[A-Z][A-Za-z]{0,20}\Z"),
        "lastTransitionTime": st.just("2026-01-01T00:00:00Z"),
    },
    optional={"message": short_text, "observedGeneration": st.integers(0, 10**6)},
)
status = optional_keys(
    phase=st.sampled_from(["Pending", "Ready", "Degraded", "Deleting"]),
    observedGeneration=st.integers(0, 10**6),
    conditions=st.lists(condition, max_size=3, unique_by=lambda c: c["type"]),
    version=version,
    endpoint=short_text,
    initialization=optional_keys(job=names, completed=st.booleans()),
)
metadata = st.fixed_dictionaries(
    {
        "name": names,
        "namespace": names,
        "uid": st.uuids().map(str),
        "generation": st.integers(1, 10**6),
    },
    optional={
        "labels": st.dictionaries(names, names, min_size=1, max_size=3),
        "annotations": st.dictionaries(
            st.from_regex(r"\Aexample\.com/[a-z]{1,10}\Z"),
            short_text,
            min_size=1,
            max_size=3,
        ),
        "finalizers": st.just(["sampledb.io/finalizer"]),
    },
)


def objects(api_version: str, spec: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "apiVersion": st.just(api_version),
            "kind": st.just("SampleDB"),
            "metadata": metadata,
        },
        optional={"spec": spec, "status": status},
    )


@PROPERTY
@given(objects(V1, v1_spec))
def test_v1_to_v1beta1_and_back_is_identity(obj: dict[str, Any]) -> None:
    original = copy.deepcopy(obj)
    there = v1_to_v1beta1(obj)
    assert obj == original  # inputs are never mutated
    assert there["apiVersion"] == V1BETA1
    assert there.get("status") == obj.get("status")
    assert v1beta1_to_v1(there) == original


@PROPERTY
@given(objects(V1BETA1, v1beta1_spec))
def test_v1beta1_to_v1_and_back_is_identity(obj: dict[str, Any]) -> None:
    original = copy.deepcopy(obj)
    there = v1beta1_to_v1(obj)
    assert there["apiVersion"] == V1
    assert RESERVED_ANNOTATION not in (there["metadata"].get("annotations") or {})
    assert v1_to_v1beta1(there) == original


@settings(max_examples=200, deadline=None)
@given(objects(V1BETA1, v1beta1_spec))
def test_converted_v1beta1_is_a_valid_v1_object(obj: dict[str, Any]) -> None:
    v1.SampleDB.model_validate(v1beta1_to_v1(obj))


@settings(max_examples=200, deadline=None)
@given(objects(V1, v1_spec))
def test_converted_v1_is_a_valid_v1beta1_object(obj: dict[str, Any]) -> None:
    v1beta1.SampleDB.model_validate(v1_to_v1beta1(obj))


def test_field_mapping_example() -> None:
    beta = {
        "apiVersion": V1BETA1,
        "kind": "SampleDB",
        "metadata": {"name": "a", "namespace": "n"},
        "spec": {
            "version": 15,
            "storageSize": "5Gi",
            "backupSchedule": "@daily",
            "backupRetention": 3,
        },
    }
    assert v1beta1_to_v1(beta)["spec"] == {
        "postgres": {"version": 15},
        "storage": {"size": "5Gi"},
        "backup": {"schedule": "@daily", "retention": 3},
    }


def test_v1_only_fields_travel_in_the_reserved_annotation() -> None:
    obj = {
        "apiVersion": V1,
        "kind": "SampleDB",
        "metadata": {"name": "a", "namespace": "n", "annotations": {"team": "x"}},
        "spec": {
            "postgres": {"version": 16},
            "resources": {"limits": {"memory": "2Gi"}},
        },
    }
    beta = v1_to_v1beta1(obj)
    assert beta["spec"] == {"version": 16}
    kept = json.loads(beta["metadata"]["annotations"][RESERVED_ANNOTATION])
    assert kept == {"postgres": {}, "resources": {"limits": {"memory": "2Gi"}}}
    assert beta["metadata"]["annotations"]["team"] == "x"


@pytest.mark.parametrize(
    ("obj", "desired", "message"),
    [
        (
            {"apiVersion": "sampledb.io/v2", "kind": "SampleDB"},
            V1,
            "apiVersion 'sampledb.io/v2'",
        ),
        ({"apiVersion": V1, "kind": "Other"}, V1BETA1, "kind 'Other'"),
        (
            {"apiVersion": V1, "kind": "SampleDB"},
            "sampledb.io/v0",
            "desiredAPIVersion 'sampledb.io/v0'",
        ),
        (
            {
                "apiVersion": V1BETA1,
                "kind": "SampleDB",
                "metadata": {"annotations": {RESERVED_ANNOTATION: "{"}},
                "spec": {},
            },
            V1,
            "not valid JSON",
        ),
        ("not an object", V1, "not a JSON object"),
    ],
)
def test_bad_objects_are_refused_with_a_reason(obj: Any, desired: str, message: str) -> None:
    with pytest.raises(ConversionError, match=message):
        convert(obj, desired)


@pytest.mark.parametrize(
    ("database", "field"),
    [
        *(({"owner": role}, "spec.database.owner") for role in RESERVED_ROLES),
        ({"owner": "pg_monitor"}, "spec.database.owner"),
        *(({"name": name}, "spec.database.name") for name in RESERVED_DATABASES),
    ],
)
def test_reserved_names_are_refused_on_the_way_from_v1beta1(database: dict[str, str], field: str) -> None:
    """A v1beta1 write cannot smuggle a name the v1 schema refuses in the reserved annotation."""
    hostile = {
        "apiVersion": V1BETA1,
        "kind": "SampleDB",
        "metadata": {
            "name": "x",
            "annotations": {RESERVED_ANNOTATION: json.dumps({"database": database})},
        },
        "spec": {},
    }
    with pytest.raises(ConversionError, match=f"{RESERVED_ANNOTATION} included\\): {field}: .*must not be"):
        convert(hostile, V1)
    # Reads of a stored object never fail: the other direction carries the names as they are.
    stored = {
        "apiVersion": V1,
        "kind": "SampleDB",
        "metadata": {"name": "x"},
        "spec": {"database": database},
    }
    assert json.loads(convert(stored, V1BETA1)["metadata"]["annotations"][RESERVED_ANNOTATION]) == {
        "database": database
    }

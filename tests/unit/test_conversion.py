"""Conversion v1beta1 <-> v1 by example: the field mapping, the reserved annotation, refusals.

The properties (round trips on generated objects using every field) are in test_conversion_properties.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from sampledb_operator.api.common import RESERVED_DATABASES, RESERVED_ROLES
from sampledb_operator.conversion.convert import (
    RESERVED_ANNOTATION,
    V1,
    V1BETA1,
    ConversionError,
    convert,
    v1_to_v1beta1,
    v1beta1_to_v1,
)


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

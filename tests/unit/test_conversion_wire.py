"""The webhook's partial decoding (`conversion/wire.py`) answers exactly as a full decode would.

The answer to a review decoded by `wire.decode_review` (most values left as raw bytes) and encoded
by `wire.encode` must be the same JSON as the answer to the same review decoded whole by
`json.loads`: for generated objects of both versions, in both directions, with the hostile shapes
the webhook refuses, and for bodies that are not reviews at all.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sampledb_operator.conversion import wire
from sampledb_operator.conversion.convert import RESERVED_ANNOTATION, V1, V1BETA1
from sampledb_operator.conversion.webhook import convert_review
from tests.unit.test_conversion_properties import PROPERTY, V1_OBJECTS, V1BETA1_OBJECTS

Obj = dict[str, Any]


def review(objects: Any, desired: Any) -> bytes:
    request = {"uid": "u-1", "desiredAPIVersion": desired, "objects": objects}
    body = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview", "request": request}
    return json.dumps(body).encode()


def answers(body: bytes) -> tuple[Any, Any]:
    """(the answer from a partial decode, the answer from a whole decode), both as parsed JSON."""
    partial, partial_problem = convert_review(wire.decode_review(body))
    whole, whole_problem = convert_review(json.loads(body))
    assert partial_problem == whole_problem
    return json.loads(wire.encode(partial)), whole


@PROPERTY
@given(st.lists(st.one_of(V1_OBJECTS, V1BETA1_OBJECTS), max_size=4), st.sampled_from([V1, V1BETA1]))
def test_a_partly_decoded_review_gets_the_same_answer(objects: list[Obj], desired: str) -> None:
    partial, whole = answers(review(objects, desired))
    assert partial == whole


def test_raw_values_are_passed_through_not_decoded() -> None:
    """The guard on the property above: status and managedFields really stay raw, and still come back."""
    status = {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}
    obj = {
        "apiVersion": V1,
        "kind": "SampleDB",
        "metadata": {"name": "a", "managedFields": [{"manager": "m"}], "annotations": {"x": "y"}},
        "spec": {"postgres": {"version": 17}, "database": {"name": "app"}},
        "status": status,
    }
    decoded = wire.decode_review(review([obj], V1BETA1))["request"]["objects"][0]
    assert not isinstance(decoded["status"], dict)
    assert not isinstance(decoded["metadata"]["managedFields"], list)
    assert decoded["metadata"]["annotations"] == {"x": "y"}
    partial, whole = answers(review([obj], V1BETA1))
    assert partial == whole
    converted = partial["response"]["convertedObjects"][0]
    assert converted["status"] == status
    assert json.loads(converted["metadata"]["annotations"][RESERVED_ANNOTATION]) == {
        "database": {"name": "app"},
        "postgres": {},
    }


@pytest.mark.parametrize(
    "body",
    [
        b"[1, 2]",
        b'"review"',
        b'{"kind": "ConversionReview"}',
        b'{"request": []}',
        b'{"request": {}}',
        review("not a list", V1),
        review([1, "two", None], V1),
        review([{"apiVersion": V1BETA1, "kind": "SampleDB", "metadata": {"name": "a"}, "spec": 3}], V1),
        review([{"apiVersion": V1BETA1, "kind": "SampleDB", "spec": {"version": 15}}], V1),
        review([{"apiVersion": V1BETA1, "kind": "Other", "metadata": {"name": "a"}}], V1),
        review([{"apiVersion": V1BETA1, "kind": "SampleDB", "metadata": {"name": "a"}}], "sampledb.io/v7"),
        review(
            [{"apiVersion": V1BETA1, "kind": "SampleDB", "metadata": {"annotations": {RESERVED_ANNOTATION: "[]"}}}],
            V1,
        ),
    ],
)
def test_what_is_not_a_good_review_gets_the_same_answer(body: bytes) -> None:
    partial, whole = answers(body)
    assert partial == whole


def test_a_body_that_is_not_json_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="malformed"):
        wire.decode_review(b'{"request": {"objects": [1,}}')

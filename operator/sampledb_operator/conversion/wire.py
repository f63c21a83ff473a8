"""A ConversionReview off and onto the wire, decoding only what a conversion reads.

Why: in a 1,000-object review (a v1beta1 LIST, the storage-version migration) most of each object
is managedFields, status and metadata that a conversion passes through untouched. Decoding all of
it into Python objects and encoding it back cost several times the conversion itself (about 250 of
the 400 µs per object measured on 2026-11-27, issue #15). Here each object's apiVersion, kind,
spec, `metadata.name` and `metadata.annotations` are decoded; every other value stays a
`msgspec.Raw`, the exact bytes it came as, which `convert` moves like any other value and the
encoder writes back verbatim. A review decoded here and answered is the same JSON as one fully
decoded (a unit test compares both on generated objects).

A well-formed review is read in one scan of the body (`_Review`: the review, its request and each
object's top-level fields at once); the objects' metadata and spec are then decoded from their own
raw bytes. Anything not shaped like that (a body that is not an object, objects that are not a
list, an object that is not an object) takes the general path, level by level, and what cannot be
read partly is decoded whole, so `webhook.convert_review` refuses it with the same message as a
full decode would.
"""

from __future__ import annotations

from typing import Any

import msgspec


class _Request(msgspec.Struct):
    objects: list[dict[str, msgspec.Raw]]
    uid: Any = None
    desiredAPIVersion: Any = None


class _Review(msgspec.Struct):
    """What a conversion reads of a well-formed review; absent and null read alike (`dict.get`)."""

    request: _Request
    apiVersion: Any = None
    kind: Any = None


_REVIEW = msgspec.json.Decoder(_Review)
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
_ANY = msgspec.json.Decoder()
_ENCODER = msgspec.json.Encoder()

# What a conversion reads, per level: everything else stays raw.
_OBJECT_READ = ("apiVersion", "kind", "spec")
_METADATA_READ = ("name", "annotations")


def _fields(raw: bytes | msgspec.Raw, read: tuple[str, ...]) -> Any:
    """A JSON object as a dict whose values in `read` are decoded, the rest raw; anything else decoded whole."""
    try:
        fields = _FIELDS.decode(raw)
    except msgspec.ValidationError:  # not an object: the caller's checks name the problem
        return _ANY.decode(raw)
    for key in read:
        if key in fields:
            fields[key] = _ANY.decode(fields[key])
    return fields


def _read(obj: dict[str, Any]) -> dict[str, Any]:
    """An object's fields as a conversion reads them, from its top-level fields (all raw)."""
    for key in _OBJECT_READ:
        if key in obj:
            obj[key] = _ANY.decode(obj[key])
    if "metadata" in obj:
        obj["metadata"] = _fields(obj["metadata"], _METADATA_READ)
    return obj


def _object(raw: msgspec.Raw) -> Any:
    obj = _fields(raw, ())
    return _read(obj) if isinstance(obj, dict) else obj


def decode_review(body: bytes) -> Any:
    """The review in `body`, its objects decoded only as far as conversion reads; ValueError if not JSON."""
    try:
        typed = _REVIEW.decode(body)
    except msgspec.ValidationError:  # not a well-formed review: the general path below
        return _general(body)
    request = typed.request
    return {
        "apiVersion": typed.apiVersion,
        "kind": typed.kind,
        "request": {
            "uid": request.uid,
            "desiredAPIVersion": request.desiredAPIVersion,
            "objects": [_read(obj) for obj in request.objects],
        },
    }


def _general(body: bytes) -> Any:
    review = _fields(body, ("apiVersion", "kind"))
    if not isinstance(review, dict) or "request" not in review:
        return review
    request = _fields(review["request"], ("uid", "desiredAPIVersion"))
    review["request"] = request
    if isinstance(request, dict) and "objects" in request:
        try:
            request["objects"] = [_object(item) for item in _ITEMS.decode(request["objects"])]
        except msgspec.ValidationError:  # not a list
            request["objects"] = _ANY.decode(request["objects"])
    return review


def encode(document: Any) -> bytes:
    """JSON bytes of `document`, raw values written as they came."""
    return _ENCODER.encode(document)

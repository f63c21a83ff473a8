"""Pure, lossless conversion between `sampledb.io/v1beta1` and `sampledb.io/v1` (the hub).

Objects are converted as the raw dicts the API server sends, never through the pydantic models:
a model would fill in defaults, and a conversion must return exactly what it was given, moved.

`v1beta1` is flat; each of its spec fields has one place in `v1` (FIELD_MAP). What `v1` has and
`v1beta1` cannot say (resources, database, credentials, empty parent objects, fields of later
versions) is kept, as JSON, in the annotation `RESERVED_ANNOTATION` on the `v1beta1` object and put
back on the way to `v1`; the annotation is only written when it is needed. So both
`v1 -> v1beta1 -> v1` and `v1beta1 -> v1 -> v1beta1` are identities, status included (the status
has the same shape in both versions).

Nothing is deep-copied: a converted object shares every value it did not change (the status,
managedFields, each spec value) with its input, and only the dicts on a changed path are new. The
input is never changed; callers treat both as read-only. A 1,000-object review spent most of its
time copying what it then threw away (issue #15).
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from pydantic import ValidationError

from sampledb_operator.api import GROUP
from sampledb_operator.api.v1 import SampleDBSpec

V1 = f"{GROUP}/v1"
V1BETA1 = f"{GROUP}/v1beta1"
RESERVED_ANNOTATION = "conversion.sampledb.io/v1-spec"

# v1beta1 spec field -> its path in the v1 spec.
FIELD_MAP: dict[str, tuple[str, ...]] = {
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

Obj = dict[str, Any]


class ConversionError(ValueError):
    """An object that cannot be converted; the message names the object and the problem."""


def _tree(field_map: dict[str, tuple[str, ...]]) -> Obj:
    """FIELD_MAP as a tree of the v1 spec: each leaf is the v1beta1 field's name."""
    tree: Obj = {}
    for field, path in field_map.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = field
    return tree


_FIELD_TREE = _tree(FIELD_MAP)


def _split(spec: Obj) -> tuple[Obj, Obj]:
    """(the flat fields, the rest of `spec` without them, emptied parents left in place).

    `spec` is unchanged: only the objects a field is taken out of (`spec`, `postgres`,
    `postgres.upgrade`...) are copied, each once. One walk of the tree, not one per field: this
    runs for every object of a v1beta1 LIST (issue #15).
    """
    flat: Obj = {}
    return flat, _take(spec, _FIELD_TREE, flat)


def _take(node: Obj, tree: Obj, flat: Obj) -> Obj:
    """`node` without the fields of `tree`, which go into `flat`; `node` itself when nothing is taken."""
    out: Obj | None = None
    for key, sub in tree.items():
        if key not in node:
            continue
        if isinstance(sub, str):
            out = dict(node) if out is None else out
            flat[sub] = out.pop(key)
        elif isinstance(child := node[key], dict) and (taken := _take(child, sub, flat)) is not child:
            out = dict(node) if out is None else out
            out[key] = taken
    return node if out is None else out


def _set_path(tree: Obj, path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConversionError(f"spec.{'.'.join(path[:-1])} must be an object")
        node = child
    node[path[-1]] = value


def _flat_to_nested(flat: Obj, base: Obj) -> Obj:
    """The v1 spec: `base` (what the annotation kept, a fresh tree changed here) with the flat fields put in."""
    for field, path in FIELD_MAP.items():
        if field in flat:
            _set_path(base, path, flat[field])
    return base


def _parents(flat: Obj) -> Obj:
    """The empty parent objects the way back creates for the flat fields present (`{"postgres": {}}`...)."""
    tree: Obj = {}
    for field in flat:
        node = tree
        for key in FIELD_MAP[field][:-1]:
            node = node.setdefault(key, {})
    return tree


def _annotations(obj: Obj) -> Obj:
    annotations: Obj = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations


def _with_annotation(metadata: Obj, value: str | None) -> Obj:
    """Metadata with the reserved annotation set (or removed), dropping an emptied map."""
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != RESERVED_ANNOTATION}
    if value is not None:
        annotations[RESERVED_ANNOTATION] = value
    result = {k: v for k, v in metadata.items() if k != "annotations"}
    if annotations:
        result["annotations"] = annotations
    return result


def v1_to_v1beta1(obj: Obj) -> Obj:
    """Convert a v1 object to v1beta1, keeping in the annotation whatever v1beta1 cannot hold."""
    spec = obj.get("spec")
    flat, rest = _split(spec if isinstance(spec, dict) else {})
    out = {k: v for k, v in obj.items() if k not in ("spec", "metadata")}
    out["apiVersion"] = V1BETA1
    # Keep the remainder only if the way back would not rebuild the same spec without it: what is
    # left must be exactly the empty parents the way back creates.
    needed = isinstance(spec, dict) and rest != _parents(flat)
    out["metadata"] = _with_annotation(obj.get("metadata") or {}, _encode(rest) if needed else None)
    if "spec" in obj:
        out["spec"] = flat if isinstance(spec, dict) else spec
    return out


def v1beta1_to_v1(obj: Obj, *, check: bool = True) -> Obj:
    """Convert a v1beta1 object to v1, restoring what an earlier conversion kept aside.

    `check=False` skips the model's rules: for an object already stored, which may predate them.
    """
    spec = obj.get("spec")
    kept = _decode(obj)
    out = {k: v for k, v in obj.items() if k not in ("spec", "metadata")}
    out["apiVersion"] = V1
    out["metadata"] = _with_annotation(obj.get("metadata") or {}, None)
    if "spec" in obj:
        out["spec"] = _flat_to_nested(spec, kept) if isinstance(spec, dict) else spec
    if "spec" in obj and check:
        _refuse_what_v1_refuses(out["spec"])
    return out


def _refuse_what_v1_refuses(spec: Any) -> None:
    """Refuse a v1 spec the operator's model refuses, when it arrives through v1beta1.

    The API server validates a write against the schema of the version it was sent in: what
    `v1beta1` cannot say rides in the annotation, unchecked, and would be stored as `v1` without
    the `v1` rules (a reserved owner name, a restore file outside its volume...). Only this
    direction is checked: reads (v1 -> v1beta1) never fail on stored objects.
    """
    try:
        SampleDBSpec.model_validate(spec if isinstance(spec, dict) else {})
    except ValidationError as err:
        problems = "; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
        raise ConversionError(f"as v1 (annotation {RESERVED_ANNOTATION} included): {problems}") from err


_ENCODER = msgspec.json.Encoder(order="sorted")  # a stable annotation for a given spec


def _encode(rest: Obj) -> str:
    return _ENCODER.encode(rest).decode()


def _decode(obj: Obj) -> Obj:
    raw = _annotations(obj).get(RESERVED_ANNOTATION)
    if raw is None:
        return {}
    try:
        kept = json.loads(raw)
    except ValueError as err:
        raise ConversionError(f"annotation {RESERVED_ANNOTATION} is not valid JSON: {err}") from err
    except RecursionError as err:  # a hostile annotation: must be a refusal, never an HTTP 500
        raise ConversionError(f"annotation {RESERVED_ANNOTATION} is nested too deeply") from err
    if not isinstance(kept, dict):
        raise ConversionError(f"annotation {RESERVED_ANNOTATION} must hold a JSON object")
    if _depth(kept) > MAX_DEPTH:
        raise ConversionError(f"annotation {RESERVED_ANNOTATION} is nested deeper than {MAX_DEPTH} levels")
    return kept


# A v1 spec is a handful of levels deep; anything far deeper is hostile, and every later step
# (merging, validation, copies) recurses over it.
MAX_DEPTH = 32


def _depth(value: Any) -> int:
    """How deeply `value` nests, counted without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def convert(obj: Obj, desired_api_version: str, *, check: bool = True) -> Obj:
    """Convert one object to `desired_api_version` (a no-op when it is already there); see v1beta1_to_v1's `check`."""
    if not isinstance(obj, dict):
        raise ConversionError("object is not a JSON object")
    current = obj.get("apiVersion")
    if obj.get("kind") != "SampleDB":
        raise ConversionError(f"kind {obj.get('kind')!r} is not SampleDB")
    known = (V1, V1BETA1)
    if current not in known:
        raise ConversionError(f"apiVersion {current!r} is not one of {', '.join(known)}")
    if desired_api_version not in known:
        raise ConversionError(f"desiredAPIVersion {desired_api_version!r} is not one of {', '.join(known)}")
    if current == desired_api_version:
        return obj
    return v1beta1_to_v1(obj, check=check) if current == V1BETA1 else v1_to_v1beta1(obj)

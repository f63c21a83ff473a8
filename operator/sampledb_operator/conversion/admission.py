"""`POST /validate-v1beta1`: the rules on changes that `v1` holds and a `v1beta1` update escapes.

The API server checks an update against the schema of the version it arrives in, and the
conversion webhook sees one object, never the old one. So a transition rule (`oldSelf`) of the
`v1` schema does not hold for an update sent as `v1beta1`: `spec.restore`, which `v1beta1` can
only carry in the reserved annotation, could change after creation (`kubectl edit
sampledbs.v1beta1.sampledb.io`). The storage rules have `v1beta1` copies in its CRD (CEL reads no
annotation, so restore cannot).

This validating webhook is registered for UPDATEs of `sampledbs` in `v1beta1` only (matchPolicy
Exact), so writes through `v1`, the operator's included, never depend on it. It converts the old
and the new object to `v1` exactly as the conversion webhook does and refuses, with HTTP 422 and
the field's path, a change that the `v1` schema refuses. Pure: one AdmissionReview in, one out.
"""

from __future__ import annotations

from typing import Any

from sampledb_operator.api.v1 import RECOVERY_IMMUTABLE, RESTORE_IMMUTABLE
from sampledb_operator.conversion.convert import V1, V1BETA1, ConversionError, convert

REVIEW_API_VERSION = "admission.k8s.io/v1"
PATH = "/validate-v1beta1"

# (path in the v1 spec, the v1 schema's message): immutable once set, compared only when the old
# and the new object both have it, as `self == oldSelf` is evaluated by the API server.
IMMUTABLE_ONCE_SET: tuple[tuple[tuple[str, ...], str], ...] = (
    (("restore",), RESTORE_IMMUTABLE),
    (("recovery",), RECOVERY_IMMUTABLE),
)
# Fixed at creation: neither added nor removed later (as `has(self.x) == has(oldSelf.x)` says).
FIXED_AT_CREATION: tuple[tuple[tuple[str, ...], str], ...] = ((("recovery",), RECOVERY_IMMUTABLE),)


def _at(spec: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    node = spec
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False, None
        node = node[key]
    return True, node


def refusals(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What the v1 schema's transition rules refuse in this update (both objects as v1)."""
    problems = []
    for path, message in IMMUTABLE_ONCE_SET:
        (had, before), (has, after) = _at(old.get("spec"), path), _at(new.get("spec"), path)
        fixed = (path, message) in FIXED_AT_CREATION
        if (had and has and before != after) or (fixed and had != has):
            problems.append(f"spec.{'.'.join(path)}: Invalid value: {message}")
    return problems


def _response(uid: str, problems: list[str], code: int = 422) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": not problems}
    if problems:
        message = f"through {V1BETA1} as through {V1}: " + "; ".join(problems)
        response["status"] = {"code": code, "reason": "Invalid", "message": message}
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "response": response}


def request_of(body: Any, kind: str) -> tuple[dict[str, Any], str] | str:
    """(request, uid) of a parsed `kind` review (ConversionReview, AdmissionReview), or why there is none."""
    if not isinstance(body, dict) or not isinstance(body.get("request"), dict):
        return f"body is not an {kind} with a request" if kind[0] in "AEIOU" else f"body is not a {kind} with a request"
    request: dict[str, Any] = body["request"]
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return "request.uid is missing"
    return request, uid


def review(body: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Answer a parsed AdmissionReview; returns (response, None), or (None, why) when there is none."""
    found = request_of(body, "AdmissionReview")
    if isinstance(found, str):
        return None, found
    request, uid = found
    if body.get("apiVersion") != REVIEW_API_VERSION:
        return _response(uid, [f"unsupported AdmissionReview apiVersion {body.get('apiVersion')!r}"], 400), None
    old, new = request.get("oldObject"), request.get("object")
    if request.get("operation") != "UPDATE" or not isinstance(old, dict) or not isinstance(new, dict):
        return _response(uid, []), None  # nothing to compare: only updates have rules on changes
    try:
        # The stored object may predate a rule of the model: only the update is held to them all.
        problems = refusals(convert(old, V1, check=False), convert(new, V1))
    except ConversionError as err:
        problems = [str(err)]
    return _response(uid, problems), None

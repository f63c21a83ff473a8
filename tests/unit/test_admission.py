"""The v1beta1 update check (conversion/admission.py): what v1's rules on changes refuse, and only that."""

from __future__ import annotations

import json
from typing import Any

import pytest

from sampledb_operator.conversion import admission
from sampledb_operator.conversion.convert import RESERVED_ANNOTATION, V1, V1BETA1, convert
from tests.webhook_process import WebhookReplicas


def stored(**spec: Any) -> dict[str, Any]:
    """A v1 object as stored, read back as v1beta1 (the reserved annotation carries what v1beta1 cannot say)."""
    v1 = {"apiVersion": V1, "kind": "SampleDB", "metadata": {"name": "db", "namespace": "n"}, "spec": spec}
    return convert(v1, V1BETA1)


def with_kept(obj: dict[str, Any], **kept: Any) -> dict[str, Any]:
    """`obj` with the reserved annotation replaced, as `kubectl edit` on v1beta1 can."""
    annotations = {**obj["metadata"].get("annotations", {}), RESERVED_ANNOTATION: json.dumps(kept)}
    return {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}


def review(old: Any, new: Any, operation: str = "UPDATE", api_version: str = admission.REVIEW_API_VERSION) -> Any:
    request = {"uid": "u-1", "operation": operation, "oldObject": old, "object": new, "name": "db"}
    return {"apiVersion": api_version, "kind": "AdmissionReview", "request": request}


def answer(body: Any) -> dict[str, Any]:
    response, problem = admission.review(body)
    assert response is not None, problem
    assert response["apiVersion"] == admission.REVIEW_API_VERSION and response["response"]["uid"] == "u-1"
    result: dict[str, Any] = response["response"]
    return result


def test_a_restore_source_changed_through_the_annotation_is_refused_naming_the_field() -> None:
    old = stored(restore={"backup": "nightly"})
    result = answer(review(old, with_kept(old, restore={"backup": "other"})))
    assert result["allowed"] is False
    assert result["status"]["code"] == 422
    assert result["status"]["message"].count("spec.restore: Invalid value: restore is immutable") == 1


@pytest.mark.parametrize(
    ("old_spec", "kept"),
    [
        pytest.param({"restore": {"backup": "nightly"}}, {"restore": {"backup": "nightly"}}, id="restore unchanged"),
        pytest.param({}, {"restore": {"backup": "nightly"}}, id="restore added (v1 allows it too)"),
        pytest.param({"restore": {"backup": "nightly"}}, {}, id="restore removed (v1 allows it too)"),
        pytest.param({"restore": {"backup": "n"}, "database": {"name": "a"}}, {"restore": {"backup": "n"}}, id="other"),
    ],
)
def test_what_v1_allows_is_allowed(old_spec: dict[str, Any], kept: dict[str, Any]) -> None:
    old = stored(**old_spec)
    result = answer(review(old, with_kept(old, **kept)))
    assert result == {"uid": "u-1", "allowed": True}


def test_a_metadata_only_update_of_an_object_with_a_restore_is_allowed() -> None:
    old = stored(restore={"persistentVolumeClaim": "dumps", "file": "db.dump"})
    new = {**old, "metadata": {**old["metadata"], "labels": {"team": "a"}}}
    assert answer(review(old, new))["allowed"] is True


def test_an_annotation_v1_would_refuse_is_refused_with_the_conversions_reason() -> None:
    old = stored()
    new = with_kept(old)
    new["metadata"]["annotations"][RESERVED_ANNOTATION] = "{not json"
    result = answer(review(old, new))
    assert (
        result["allowed"] is False
        and f"annotation {RESERVED_ANNOTATION} is not valid JSON" in result["status"]["message"]
    )


def test_only_updates_are_compared() -> None:
    obj = stored(restore={"backup": "nightly"})
    assert answer(review(None, obj, operation="CREATE"))["allowed"] is True


@pytest.mark.parametrize(
    ("body", "why"),
    [(None, "not an AdmissionReview"), ({"request": {}}, "request.uid is missing"), ({"request": []}, "not an")],
)
def test_no_review_no_answer(body: Any, why: str) -> None:
    response, problem = admission.review(body)
    assert response is None and problem is not None and why in problem


def test_an_unknown_review_version_is_refused_with_400() -> None:
    result = answer(review(stored(), stored(), api_version="admission.k8s.io/v1beta1"))
    assert result["allowed"] is False and result["status"]["code"] == 400


def test_served_by_the_webhook_and_counted(webhook: WebhookReplicas) -> None:
    def denied() -> float:
        lines = webhook.get("/metrics").splitlines()
        key = 'sampledb_admission_reviews_total{result="Denied"}'
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(key))

    before = denied()
    old = stored(restore={"backup": "nightly"})
    changed = json.dumps(review(old, with_kept(old, restore={"backup": "x"}))).encode()
    status, body = webhook.post(changed, admission.PATH)
    assert status == 200 and body["response"]["allowed"] is False
    assert denied() == before + 1
    status, body = webhook.post(b"[]", admission.PATH)
    assert status == 400 and "not an AdmissionReview" in body["error"]


def test_a_stored_object_the_model_now_refuses_can_be_updated_to_a_valid_one() -> None:
    """Only the update is held to the model's rules: the stored object may predate one of them."""
    old = with_kept(stored(), database={"name": "app", "owner": "postgres"})  # a reserved role, refused today
    result = answer(review(old, with_kept(old, database={"name": "app", "owner": "app"})))
    assert result == {"uid": "u-1", "allowed": True}


def test_a_recovery_target_changed_through_the_annotation_is_refused_naming_the_field() -> None:
    old = stored(recovery={"repositoryPath": "/sampledb/a/b/c", "target": {"name": "x"}})
    result = answer(
        review(old, with_kept(old, recovery={"repositoryPath": "/sampledb/a/b/c", "target": {"name": "y"}}))
    )
    assert result["allowed"] is False
    assert result["status"]["message"].count("spec.recovery: Invalid value: recovery is immutable") == 1


def test_recovery_cannot_be_removed_or_added_after_creation() -> None:
    old = stored(recovery={"repositoryPath": "/sampledb/a/b/c"})
    removed = answer(review(old, with_kept(old)))
    assert (
        removed["allowed"] is False
        and "spec.recovery: Invalid value: recovery is immutable" in removed["status"]["message"]
    )
    plain = stored()
    added = answer(review(plain, with_kept(plain, recovery={"repositoryPath": "/sampledb/a/b/c"})))
    assert added["allowed"] is False

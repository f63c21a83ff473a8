"""The conversion webhook as a real process on loopback TLS: answers, refusals, certificate reload."""

from __future__ import annotations

import json
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.webhook_process import WebhookReplicas, issue_certificate

V1, V1BETA1 = "sampledb.io/v1", "sampledb.io/v1beta1"


def review(objects: list[Any], desired: str = V1, api_version: str = "apiextensions.k8s.io/v1") -> bytes:
    body = {
        "apiVersion": api_version,
        "kind": "ConversionReview",
        "request": {"uid": "u-1", "desiredAPIVersion": desired, "objects": objects},
    }
    return json.dumps(body).encode()


def beta(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V1BETA1, "kind": "SampleDB", "metadata": {"name": name, "namespace": "n"}, "spec": spec}


def test_converts_a_batch_in_order(webhook: WebhookReplicas) -> None:
    status, body = webhook.post(review([beta("a", version=15), beta("b", storageSize="2Gi"), beta("c")]))
    assert status == 200
    response = body["response"]
    assert response["uid"] == "u-1"
    assert response["result"] == {"status": "Success"}
    converted = response["convertedObjects"]
    assert [o["metadata"]["name"] for o in converted] == ["a", "b", "c"]
    assert converted[0]["spec"] == {"postgres": {"version": 15}}
    assert converted[1]["spec"] == {"storage": {"size": "2Gi"}}
    assert all(o["apiVersion"] == V1 for o in converted)


def test_one_bad_object_fails_the_whole_batch_naming_it(webhook: WebhookReplicas) -> None:
    bad = {"apiVersion": "sampledb.io/v9", "kind": "SampleDB", "metadata": {"name": "odd"}}
    status, body = webhook.post(review([beta("a"), bad]))
    assert status == 200
    result = body["response"]["result"]
    assert result["status"] == "Failure"
    assert "object 1 (odd)" in result["message"]
    assert "apiVersion 'sampledb.io/v9'" in result["message"]
    assert "convertedObjects" not in body["response"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (review([beta("a")], desired="sampledb.io/v7"), "desiredAPIVersion 'sampledb.io/v7'"),
        (review([beta("a")], api_version="apiextensions.k8s.io/v1beta1"), "unsupported ConversionReview apiVersion"),
    ],
)
def test_wrong_review_gets_a_clean_failure(webhook: WebhookReplicas, payload: bytes, expected: str) -> None:
    status, body = webhook.post(payload)
    assert status == 200
    assert body["response"]["result"]["status"] == "Failure"
    assert expected in body["response"]["result"]["message"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "body is not JSON"),
        (b'{"kind": "ConversionReview"}', "not a ConversionReview"),
        (b'{"request": {}}', "uid is missing"),
    ],
)
def test_unanswerable_requests_get_400(webhook: WebhookReplicas, payload: bytes, expected: str) -> None:
    status, body = webhook.post(payload)
    assert status == 400
    assert expected in body["error"]
    assert webhook.get("/healthz") == "ok\n"  # and it keeps serving


def served_serial(webhook: WebhookReplicas) -> int:
    import socket

    context = webhook.ssl_context()
    with (
        socket.create_connection(("127.0.0.1", webhook.port)) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_rotated_certificate_is_served_without_restart(webhook: WebhookReplicas, tmp_path: Path) -> None:
    before = served_serial(webhook)
    pid = webhook.processes[0].pid
    new_cert, new_key = issue_certificate(
        tmp_path, webhook.ca_cert, webhook.ca_cert.with_name("ca.key"), name="rotated"
    )
    webhook.key.write_bytes(new_key.read_bytes())
    webhook.cert.write_bytes(new_cert.read_bytes())
    deadline = time.monotonic() + 10
    while served_serial(webhook) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served_serial(webhook) != before
    assert webhook.processes[0].pid == pid
    assert webhook.processes[0].poll() is None
    status, _ = webhook.post(review([beta("after-rotation")]))
    assert status == 200


def test_plain_http_is_refused(webhook: WebhookReplicas) -> None:
    import urllib.request

    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"http://127.0.0.1:{webhook.port}/healthz", timeout=5)


def conversion_counts(webhook: WebhookReplicas) -> dict[str, float]:
    """The webhook's own request counters, as Prometheus would scrape them."""
    counts = {}
    for line in webhook.get("/metrics").splitlines():
        if line.startswith(("sampledb_conversion_requests_total{", "sampledb_conversion_objects_total ")):
            name, value = line.rsplit(" ", 1)
            counts[name] = float(value)
    return counts


def test_metrics_count_requests_by_result(webhook: WebhookReplicas) -> None:
    before = conversion_counts(webhook)
    webhook.post(review([beta("a"), beta("b")]))
    webhook.post(review([{"apiVersion": "sampledb.io/v9", "kind": "SampleDB"}]))
    after = conversion_counts(webhook)

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert grew('sampledb_conversion_requests_total{result="Success"}') == 1
    assert grew('sampledb_conversion_requests_total{result="Failure"}') == 1
    assert grew("sampledb_conversion_objects_total") == 2

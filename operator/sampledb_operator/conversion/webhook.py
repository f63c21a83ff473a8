"""The conversion webhook: `POST /convert` answers `apiextensions.k8s.io/v1` ConversionReviews.

It also answers `admission.k8s.io/v1` AdmissionReviews at `POST /validate-v1beta1` (see
`conversion/admission.py`): the `v1` rules on changes, for updates sent as `v1beta1`.

It runs as its own process (`python -m sampledb_operator webhook`), separate from the operator,
so an operator crash never makes SampleDBs unreadable. Design points:
- TLS only; the certificate and key are re-read when their files change (rotation by cert-manager,
  OLM or the chart needs no restart): the same SSLContext is reloaded in place, so every new
  connection gets the new certificate.
- A bad request never crashes it: it answers a ConversionReview with `result.status: Failure`
  and a message naming the problem (and the object, for a batch), or HTTP 400 when there is no
  review to answer. A batch is converted whole or not at all: no object is silently dropped.
- Graceful restart: on SIGTERM it first keeps accepting for `linger_seconds`, answering every
  request with `Connection: close` and /readyz with 503: behind a Service, the API server's new
  connections still reach this Pod until kube-proxy has dropped its endpoint (the deletion and the
  rule update are asynchronous; closing the listener at once refused them, seen as failed v1beta1
  requests on the real node). Then it stops accepting, answers what is in flight for
  `drain_seconds`, and exits. With two replicas, readers see no failed request.
- `GET /metrics` (Prometheus text) counts conversion requests by result and times them, so an
  operator of the cluster can see that the API server calls it, and how often it refuses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from sampledb_operator.conversion import admission, wire
from sampledb_operator.conversion.convert import ConversionError, convert

logger = logging.getLogger(__name__)
REVIEW_API_VERSION = "apiextensions.k8s.io/v1"
DRAINING = web.AppKey("draining", asyncio.Event)
CONVERSIONS = Counter(
    "sampledb_conversion_requests_total",
    "ConversionReviews answered, by result (Success, Failure, BadRequest).",
    ["result"],
)
ADMISSIONS = Counter(
    "sampledb_admission_reviews_total",
    "AdmissionReviews of v1beta1 updates answered, by result (Allowed, Denied, BadRequest).",
    ["result"],
)
CONVERTED_OBJECTS = Counter("sampledb_conversion_objects_total", "Objects converted successfully.")
CONVERSION_SECONDS = Histogram(
    "sampledb_conversion_duration_seconds",
    "Time to answer one ConversionReview.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)


@dataclass(frozen=True)
class WebhookConfig:
    """Where to listen and which certificate to serve."""

    cert_file: Path
    key_file: Path
    host: str = "0.0.0.0"  # noqa: S104 - in a Pod; tests pass 127.0.0.1
    port: int = 9443
    drain_seconds: float = 3.0
    linger_seconds: float = 5.0
    reload_interval: float = 5.0


class CertificateReloader:
    """Keeps one server SSLContext loaded with the newest certificate and key on disk."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp: tuple[float, float] | None = None
        self.reload_if_changed()

    def _current_stamp(self) -> tuple[float, float]:
        return (self.cert_file.stat().st_mtime, self.key_file.stat().st_mtime)

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed; a half-written pair keeps the old certificate."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return False
        try:
            self.context.load_cert_chain(self.cert_file, self.key_file)
        except (ssl.SSLError, OSError) as err:
            logger.warning("certificate not reloaded (keeping the previous one): %s", err)
            return False
        self._stamp = stamp
        logger.info("serving certificate loaded from %s", self.cert_file)
        return True


def review_response(uid: str, converted: list[Any] | None, failure: str | None) -> dict[str, Any]:
    """A ConversionReview response: Success with every object, or Failure with a message."""
    result: dict[str, Any] = {"status": "Success"} if failure is None else {"status": "Failure", "message": failure}
    response: dict[str, Any] = {"uid": uid, "result": result}
    if failure is None:
        response["convertedObjects"] = converted
    return {"apiVersion": REVIEW_API_VERSION, "kind": "ConversionReview", "response": response}


def convert_review(review: Any) -> tuple[dict[str, Any] | None, str | None]:
    """Answer a parsed review; returns (response, None), or (None, why) when there is no review."""
    found = admission.request_of(review, "ConversionReview")
    if isinstance(found, str):
        return None, found
    request, uid = found
    if review.get("apiVersion") != REVIEW_API_VERSION:
        return review_response(uid, None, f"unsupported ConversionReview apiVersion {review.get('apiVersion')!r}"), None
    desired = request.get("desiredAPIVersion")
    objects = request.get("objects")
    if not isinstance(objects, list):
        return review_response(uid, None, "request.objects must be a list"), None
    converted = []
    for index, obj in enumerate(objects):
        try:
            converted.append(convert(obj, str(desired)))
        except ConversionError as err:
            name = obj.get("metadata", {}).get("name", "?") if isinstance(obj, dict) else "?"
            return review_response(uid, None, f"object {index} ({name}): {err}"), None
    return review_response(uid, converted, None), None


async def handle_convert(request: web.Request) -> web.Response:
    """POST /convert."""
    body = await request.read()
    started = time.perf_counter()
    try:
        review = wire.decode_review(body)
    except ValueError as err:
        return web.json_response({"error": f"body is not JSON: {err}"}, status=400)
    response, problem = convert_review(review)
    if response is None:
        CONVERSIONS.labels("BadRequest").inc()
        return web.json_response({"error": problem}, status=400)
    result = response["response"]["result"]
    CONVERSIONS.labels(result["status"]).inc()
    if result["status"] != "Success":
        logger.warning("conversion failed: %s", result["message"])
    else:
        CONVERTED_OBJECTS.inc(len(response["response"]["convertedObjects"]))
    elapsed = time.perf_counter() - started
    CONVERSION_SECONDS.observe(elapsed)
    logger.debug("converted %d object(s) in %.2f ms", len(review["request"].get("objects") or []), elapsed * 1e3)
    reply = web.Response(body=wire.encode(response), content_type="application/json")
    if request.app[DRAINING].is_set():
        reply.force_close()
    return reply


async def handle_validate(request: web.Request) -> web.Response:
    """POST /validate-v1beta1."""
    try:
        body = await request.json(loads=json.loads)
    except ValueError as err:
        ADMISSIONS.labels("BadRequest").inc()
        return web.json_response({"error": f"body is not JSON: {err}"}, status=400)
    response, problem = admission.review(body)
    if response is None:
        ADMISSIONS.labels("BadRequest").inc()
        return web.json_response({"error": problem}, status=400)
    answer = response["response"]
    ADMISSIONS.labels("Allowed" if answer["allowed"] else "Denied").inc()
    if not answer["allowed"]:
        logger.info("refused an update of %s: %s", body["request"].get("name", "?"), answer["status"]["message"])
    reply = web.json_response(response)
    if request.app[DRAINING].is_set():
        reply.force_close()
    return reply


async def handle_health(request: web.Request) -> web.Response:
    """GET /healthz and /readyz: ready until draining starts."""
    if request.path == "/readyz" and request.app[DRAINING].is_set():
        return web.Response(status=503, text="draining\n")
    return web.Response(text="ok\n")


async def handle_metrics(request: web.Request) -> web.Response:
    """GET /metrics: the Prometheus text of this process's counters."""
    reply = web.Response(body=generate_latest())
    reply.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    return reply


def make_app() -> web.Application:
    """The aiohttp application (also used by tests and benchmarks without TLS)."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[DRAINING] = asyncio.Event()
    app.router.add_post("/convert", handle_convert)
    app.router.add_post(admission.PATH, handle_validate)
    app.router.add_get("/healthz", handle_health)
    app.router.add_get("/readyz", handle_health)
    app.router.add_get("/metrics", handle_metrics)
    return app


def _listening_socket(host: str, port: int) -> socket.socket:
    """SO_REUSEPORT lets a second replica (or the restarted one) share the port on one host."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def serve(config: WebhookConfig) -> None:
    """Run until SIGTERM/SIGINT, then drain and stop."""
    reloader = CertificateReloader(config.cert_file, config.key_file)
    app = make_app()
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.drain_seconds)
    await runner.setup()
    site = web.SockSite(runner, _listening_socket(config.host, config.port), ssl_context=reloader.context)
    await site.start()
    logger.info("conversion webhook listening on https://%s:%d/convert (pid %d)", config.host, config.port, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=config.reload_interval)
        except TimeoutError:
            reloader.reload_if_changed()
    logger.info("draining: serving %.1f s more while the endpoint goes, then %.1f s for in-flight requests",
                config.linger_seconds, config.drain_seconds)  # fmt: skip
    app[DRAINING].set()  # /readyz 503; every answer carries Connection: close
    await asyncio.sleep(config.linger_seconds)
    await site.stop()  # no new connections
    await asyncio.sleep(config.drain_seconds)
    await runner.cleanup()

"""The only code that calls the Kubernetes API.

Objects travel as plain dicts (the builders' output and the server's JSON), through the official
client's authenticated transport, so the same manifests are built, compared and sent without
conversion to and from generated model classes. Every write goes through `KubeApi` and is counted,
which is how tests and benchmarks check that a no-op reconcile writes nothing; reads are counted by
verb too, so they can check that the reconcile reads from the watch caches, not from the server.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import msgspec
import urllib3
from kubernetes import client, config, stream
from kubernetes.client.exceptions import ApiException
from websocket import WebSocketException

from sampledb_operator.api import GROUP, PLURAL, STORAGE_VERSION

REPORTING_CONTROLLER = f"{GROUP}/operator"
REPORTING_INSTANCE = os.environ.get("HOSTNAME", "sampledb-operator")
logger = logging.getLogger(__name__)
# Every response and watch event is decoded here: msgspec's decoder is about twice as fast as json's.
_DECODER = msgspec.json.Decoder()
Decode = Callable[[bytes], Any]  # a JSON document as the caller reads it (e.g. only what a cache keeps)


def _unread(_: bytes) -> dict[str, Any]:
    """For an answer nobody reads (a recorded event)."""
    return {}


_ENCODER = msgspec.json.Encoder()
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


@dataclass(frozen=True)
class Resource:
    """Where a kind lives in the REST API."""

    prefix: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        """The URL path of a collection (no name) or of one object."""
        parts = [self.prefix]
        if self.namespaced and namespace:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


RESOURCES: dict[str, Resource] = {
    "Secret": Resource("/api/v1", "secrets"),
    "ConfigMap": Resource("/api/v1", "configmaps"),
    "Service": Resource("/api/v1", "services"),
    "PersistentVolumeClaim": Resource("/api/v1", "persistentvolumeclaims"),
    "Pod": Resource("/api/v1", "pods"),
    "StatefulSet": Resource("/apis/apps/v1", "statefulsets"),
    "Job": Resource("/apis/batch/v1", "jobs"),
    "CronJob": Resource("/apis/batch/v1", "cronjobs"),
    "PodDisruptionBudget": Resource("/apis/policy/v1", "poddisruptionbudgets"),
    "Event": Resource("/apis/events.k8s.io/v1", "events"),
    "Lease": Resource("/apis/coordination.k8s.io/v1", "leases"),
    "StorageClass": Resource("/apis/storage.k8s.io/v1", "storageclasses", namespaced=False),
    "PersistentVolume": Resource("/api/v1", "persistentvolumes", namespaced=False),
    "Node": Resource("/api/v1", "nodes", namespaced=False),
    "SampleDB": Resource(f"/apis/{GROUP}/{STORAGE_VERSION}", PLURAL),
    "SampleDBBackup": Resource(f"/apis/{GROUP}/v1", "sampledbbackups"),
    "CustomResourceDefinition": Resource(
        "/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", namespaced=False
    ),
}


class ApiError(Exception):
    """A non-2xx answer from the API server, with the server's own message."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status
        self.message = message

    @property
    def not_found(self) -> bool:  # noqa: D102
        return self.status == 404

    @property
    def namespace_terminating(self) -> bool:
        """403 because nothing new may be created in a namespace that is being deleted."""
        return self.status == 403 and "being terminated" in self.message

    @property
    def conflict(self) -> bool:
        """409: already exists, or a stale resourceVersion."""
        return self.status == 409


def load_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An authenticated client: the kubeconfig when given or found, else the in-cluster identity."""
    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except config.ConfigException:
        if kubeconfig:
            raise
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)


def _selectors(labels: Mapping[str, str] | None, fields: str | None) -> dict[str, str]:
    """Query parameters for a label selector (every label equal) and a field selector."""
    query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else {}
    return {**query, "fieldSelector": fields} if fields else query


class KubeApi:
    """Typed-by-kind access to the API with dict bodies; thread-safe, counts its writes."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self._client = api_client
        self._exec_client = client.ApiClient(api_client.configuration)
        self._exec_lock = threading.Lock()
        self._lock = threading.Lock()
        self.writes: Counter[str] = Counter()
        self.reads: Counter[str] = Counter()
        self._target: tuple[urllib3.PoolManager | urllib3.HTTPConnectionPool, str] | None = None

    # -- transport ---------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, str] | None = None,
        content_type: str = "application/json",
        decode: Decode = _DECODER.decode,
    ) -> dict[str, Any]:
        if method != "GET":
            with self._lock:
                self.writes[method] += 1
        data = body if body is None else _ENCODER.encode(body)
        response = self._send(method, path, query, data, content_type, timeout=60)
        try:
            payload = response.data
        finally:
            response.release_conn()
        if response.status >= 400:
            decoded: dict[str, Any] = _DECODER.decode(payload) if payload else {}
            raise ApiError(response.status, method, path, str(decoded.get("message", payload[:500])))
        answer: dict[str, Any] = decode(payload) if payload else {}
        return answer

    def _send(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None,
        body: bytes | None,
        content_type: str = "application/json",
        *,
        timeout: float,
    ) -> urllib3.BaseHTTPResponse:
        """One request on the official client's connection pool (its TLS, proxy and credentials).

        Why not `ApiClient.call_api`: it walks every body twice (`sanitize_for_serialization`, then
        `json.dumps`) and builds the URL and headers through generic layers. Here the body is
        encoded once, by msgspec, and the bearer token (when there is one) is asked for on every
        request, so a rotated in-cluster token is picked up as the client itself would. (Issue #15:
        one run each at N = 500 gave 62.9 -> 56.6 ms of CPU per instance, but 3 runs at N = 1,000
        gave 64.7 ± 4.3 ms, against 62.7 ± 3.2 before: no difference beyond the spread.)
        """
        configuration = self._client.configuration
        headers = {**self._client.default_headers, "Accept": "application/json", "Content-Type": content_type}
        token = configuration.auth_settings().get("BearerToken")
        if token:
            headers["authorization"] = token["value"]
        target = path + (f"?{urlencode(query)}" if query else "")
        pool, prefix = self._pool()
        return pool.urlopen(
            method,
            prefix + target,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=10, read=timeout),
            preload_content=False,
        )

    def _pool(self) -> tuple[urllib3.PoolManager | urllib3.HTTPConnectionPool, str]:
        """Where requests go, and what precedes each path (a host URL may carry a path prefix).

        The API server's own connection pool, looked up once: `PoolManager.request` parses the URL,
        normalises a pool key and finds the pool again on every request, about a quarter of the
        CPU a request spent in urllib3 in a profile (issue #15). Behind a proxy the manager itself,
        which adds the proxy's headers.
        """
        if self._target is None:
            host = self._client.configuration.host
            manager: urllib3.PoolManager = self._client.rest_client.pool_manager
            if isinstance(manager, urllib3.ProxyManager):
                self._target = (manager, host.rstrip("/"))
            else:
                self._target = (
                    manager.connection_from_url(host),
                    (urllib3.util.parse_url(host).path or "").rstrip("/"),
                )
        return self._target

    def _count_read(self, verb: str) -> None:
        with self._lock:
            self.reads[verb] += 1

    @property
    def write_count(self) -> int:
        """How many write requests this client has sent."""
        with self._lock:
            return sum(self.writes.values())

    # -- verbs -------------------------------------------------------------------------------
    def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        self._count_read("get")
        try:
            return self._request("GET", RESOURCES[kind].path(namespace, name))
        except ApiError as err:
            if err.not_found:
                return None
            raise

    def list_objects(
        self, kind: str, namespace: str | None, *, labels: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        """Objects of a kind, optionally filtered by labels."""
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        self._count_read("list")
        items: list[dict[str, Any]] = self._request("GET", RESOURCES[kind].path(namespace), query=query).get(
            "items", []
        )
        return items

    def iterate(self, kind: str, namespace: str | None = None, *, page_size: int = 500) -> Iterator[dict[str, Any]]:
        """Every object of a kind, fetched in pages so a large collection never arrives in one response."""
        token = ""
        while True:
            query = {"limit": str(page_size), **({"continue": token} if token else {})}
            self._count_read("list")
            page = self._request("GET", RESOURCES[kind].path(namespace), query=query)
            yield from page.get("items", [])
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def list_page(
        self,
        kind: str,
        namespace: str | None,
        *,
        labels: Mapping[str, str] | None = None,
        fields: str | None = None,
        limit: int = 250,
        cont: str = "",
        decode: Decode = _DECODER.decode,
    ) -> dict[str, Any]:
        """One page of a LIST, as the server sent it: a watch starts from its `metadata.resourceVersion`.

        Pages, not a whole listing, so a watch cache can keep only the projection of each page's
        objects; a `continue` token expires (410) once its snapshot has been compacted away.
        `decode` reads the page's JSON (a cache decodes only what it keeps).
        """
        query = {"limit": str(limit), **_selectors(labels, fields), **({"continue": cont} if cont else {})}
        self._count_read("list")
        return self._request("GET", RESOURCES[kind].path(namespace), query=query, decode=decode)

    def watch(
        self,
        kind: str,
        namespace: str | None,
        *,
        resource_version: str,
        labels: Mapping[str, str] | None = None,
        fields: str | None = None,
        timeout_seconds: int = 300,
        decode: Decode = _DECODER.decode,
    ) -> Iterator[dict[str, Any]]:
        """The events after `resource_version`, each `{"type": ..., "object": ...}`, until the server ends the stream.

        `decode` reads each event's JSON line (a cache decodes only what it keeps).

        Bookmarks are asked for, so a quiet watch still advances its resourceVersion and can resume
        after a reconnect instead of relisting. The read timeout exceeds `timeout_seconds`, which is
        when the server ends the stream normally; the connection is closed however the caller stops.
        """
        path = RESOURCES[kind].path(namespace)
        query = {
            "watch": "1",
            "allowWatchBookmarks": "true",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            **_selectors(labels, fields),
        }
        self._count_read("watch")
        raw = self._send("GET", path, query, None, timeout=timeout_seconds + 30)  # streamed, never preloaded
        try:
            if not 200 <= raw.status < 300:
                data = raw.read()
                try:
                    message = str(json.loads(data).get("message", data[:500]))
                except (ValueError, AttributeError):
                    message = str(data[:500])
                raise ApiError(raw.status, "GET", path, message)
            buffer = bytearray()
            # amt=None: each chunk as the server flushes it (one or more events), not a fixed size;
            # one event per line, and a large object may span many chunks.
            for chunk in raw.stream(None):
                buffer += chunk
                start = 0
                while (end := buffer.find(b"\n", start)) != -1:
                    if buffer[start:end].strip():
                        yield decode(bytes(buffer[start:end]))
                    start = end + 1
                del buffer[:start]
            if buffer.strip():
                yield decode(bytes(buffer))
        finally:
            raw.close()
            raw.release_conn()

    # The writes answer with the object written; `decode` reads as much of it as the caller needs
    # (the executor: what its caches keep).
    def create(self, manifest: dict[str, Any], *, decode: Decode = _DECODER.decode) -> dict[str, Any]:
        """Create an object from a full manifest."""
        path = RESOURCES[manifest["kind"]].path(manifest["metadata"].get("namespace"))
        return self._request("POST", path, body=manifest, decode=decode)

    def merge_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        patch: dict[str, Any],
        *,
        status: bool = False,
        decode: Decode = _DECODER.decode,
    ) -> dict[str, Any]:
        """An RFC 7386 merge patch (maps merge, lists are replaced whole)."""
        path = RESOURCES[kind].path(namespace, name, "status" if status else None)
        return self._request("PATCH", path, body=patch, content_type=MERGE_PATCH, decode=decode)

    def json_patch(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        ops: list[dict[str, Any]],
        *,
        decode: Decode = _DECODER.decode,
    ) -> dict[str, Any]:
        """An RFC 6902 JSON patch; `test` operations make it conditional."""
        path = RESOURCES[kind].path(namespace, name)
        return self._request("PATCH", path, body=ops, content_type=JSON_PATCH, decode=decode)

    def delete(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        *,
        propagation: str = "Background",
        grace_seconds: int | None = None,
    ) -> dict[str, Any] | None:
        """Delete an object (a Pod within `grace_seconds` when given); None when it was already gone.

        The server's answer is the object, with its deletionTimestamp, while it is still there (a
        Pod stopping, an object with finalizers), or a Status once it is gone.
        """
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            return self._request("DELETE", RESOURCES[kind].path(namespace, name), body=body)
        except ApiError as err:
            if err.not_found:
                return None
            raise

    def exec(self, namespace: str, pod: str, container: str, command: list[str], *, timeout: float = 90.0) -> str:
        """Run `command` in a container (pods/exec, over a WebSocket) and return its standard output.

        Raises ApiError when the command cannot run or exits non-zero (with its standard error).
        The official client's `stream` swaps the request function of the ApiClient it is given while
        it connects, so it gets a client of its own, and one exec connects at a time.
        """
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/exec"
        with self._lock:
            self.writes["EXEC"] += 1
        try:
            with self._exec_lock:
                session = stream.stream(
                    client.CoreV1Api(self._exec_client).connect_get_namespaced_pod_exec,
                    pod,
                    namespace,
                    container=container,
                    command=command,
                    stdin=False,
                    stdout=True,
                    stderr=True,
                    tty=False,
                    _preload_content=False,
                )
            try:
                session.run_forever(timeout=timeout)
                out, err, code = session.read_stdout(), session.read_stderr(), session.returncode
            finally:
                session.close()
        except ApiException as failed:
            raise ApiError(failed.status or 0, "EXEC", path, str(failed.reason)) from failed
        except (OSError, WebSocketException) as failed:
            raise ApiError(0, "EXEC", path, str(failed)) from failed
        if code != 0:
            raise ApiError(500, "EXEC", path, f"{command[0]} exited with {code}: {err.strip()[:300]}")
        return str(out)

    def wait_deleted(self, kind: str, namespace: str | None, name: str, *, timeout: float = 30.0) -> bool:
        """Poll until the object is gone (an orphan cascade takes the garbage collector a moment)."""
        deadline = time.monotonic() + timeout
        while self.get(kind, namespace, name) is not None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def emit_event(self, regarding: dict[str, Any], *, type_: str, reason: str, note: str, action: str) -> None:
        """Record a Kubernetes Event about `regarding` (never put a secret in `note`).

        Best effort, as client-go's recorder: a lost event must not fail the reconcile that
        already did the work it reports.
        """
        meta = regarding["metadata"]
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        event = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{secrets.token_hex(8)}", "namespace": meta["namespace"]},
            "eventTime": now,
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": REPORTING_INSTANCE,
            "action": action,
            "reason": reason,
            "note": note[:1024],
            "type": type_,
            "regarding": {
                "apiVersion": regarding.get("apiVersion", f"{GROUP}/{STORAGE_VERSION}"),
                "kind": regarding.get("kind", "SampleDB"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
        }
        try:
            self.create(event, decode=_unread)
        except ApiError as err:
            logger.warning("could not record event %s on %s/%s: %s", reason, meta["namespace"], meta["name"], err)

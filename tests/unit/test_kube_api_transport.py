"""`KubeApi`'s own transport (issue #15): what the API server receives and how its answers are read.

A loopback HTTP server stands in for the API server: the request line, headers and body it got are
compared with what the official client would have sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from kubernetes import client

from sampledb_operator.k8s.api import MERGE_PATCH, ApiError, KubeApi

Seen = dict[str, Any]


class _Server(ThreadingHTTPServer):
    seen: list[Seen]
    reply: tuple[int, list[bytes]]  # status, body chunks


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        url = urlsplit(self.path)
        self.server.seen.append(
            {
                "method": self.command,
                "path": url.path,
                "query": parse_qs(url.query),
                "headers": dict(self.headers),
                "body": self.rfile.read(length),
            }
        )
        status, chunks = self.server.reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")

    do_GET = do_POST = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[_Server]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.seen, httpd.reply = [], (200, [b"{}"])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _api(server: _Server, tokens: list[str], prefix: str = "") -> KubeApi:
    configuration = client.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}{prefix}")
    configuration.api_key_prefix["BearerToken"] = "Bearer"
    configuration.api_key["BearerToken"] = "stale"  # as loaded at start; the hook refreshes it

    def refresh(config: client.Configuration) -> None:  # as an in-cluster token file being rotated
        config.api_key["BearerToken"] = tokens.pop(0)

    configuration.refresh_api_key_hook = refresh
    return KubeApi(client.ApiClient(configuration))


def test_a_write_sends_its_json_body_once_with_the_current_token(server: _Server) -> None:
    api = _api(server, ["first", "rotated"])
    server.reply = (200, [b'{"metadata": {"name": "db"}}'])

    answer = api.merge_patch("SampleDB", "ns", "db", {"spec": {"instances": 2, "name": "é"}}, status=True)
    api.get("Secret", "ns", "creds")

    patch, get = server.seen
    assert answer == {"metadata": {"name": "db"}}
    assert (patch["method"], patch["path"]) == ("PATCH", "/apis/sampledb.io/v1/namespaces/ns/sampledbs/db/status")
    assert patch["headers"]["Content-Type"] == MERGE_PATCH
    assert patch["headers"]["Accept"] == "application/json"
    assert json.loads(patch["body"]) == {"spec": {"instances": 2, "name": "é"}}
    assert patch["headers"]["authorization"] == "Bearer first"
    assert get["headers"]["authorization"] == "Bearer rotated"  # asked for again on every request
    assert get["headers"]["User-Agent"] == client.ApiClient().user_agent
    assert api.writes == {"PATCH": 1}


def test_a_host_with_a_path_prefix_keeps_it_on_every_request(server: _Server) -> None:
    """A kubeconfig may name an API server behind a path (a cluster manager's proxy)."""
    api = _api(server, ["t"] * 3, prefix="/k8s/clusters/c-1/")
    api.get("Secret", "ns", "creds")
    list(api.watch("Pod", "ns", resource_version="7"))
    assert [seen["path"] for seen in server.seen] == [
        "/k8s/clusters/c-1/api/v1/namespaces/ns/secrets/creds",
        "/k8s/clusters/c-1/api/v1/namespaces/ns/pods",
    ]


def test_a_refusal_is_an_api_error_with_the_server_message(server: _Server) -> None:
    api = _api(server, ["t"] * 2)
    server.reply = (409, [b'{"kind": "Status", "message": "the object has been modified"}'])

    with pytest.raises(ApiError) as raised:
        api.create({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}})

    assert raised.value.conflict
    assert "the object has been modified" in str(raised.value)


def test_a_watch_sends_its_selectors_and_reads_events_across_chunks(server: _Server) -> None:
    api = _api(server, ["t"])
    first = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "a"}}}).encode()
    second = json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}).encode()
    third = json.dumps({"type": "DELETED", "object": {"metadata": {"name": "a"}}}).encode()
    server.reply = (200, [first[:10], first[10:] + b"\n" + second + b"\n\n" + third[:5], third[5:] + b"\n"])

    events = list(
        api.watch("Pod", "ns", resource_version="7", labels={"a": "b", "c": "d e"}, fields="status.phase=Running")
    )

    assert [event["type"] for event in events] == ["ADDED", "BOOKMARK", "DELETED"]
    query = server.seen[0]["query"]
    assert query["labelSelector"] == ["a=b,c=d e"]
    assert query["fieldSelector"] == ["status.phase=Running"]
    assert (query["watch"], query["resourceVersion"]) == (["1"], ["7"])

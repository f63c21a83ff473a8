"""Run the conversion webhook as the real process, on loopback with a certificate from a test CA.

Shared by the webhook's own tests, the integration tests (which point the CRD at it) and the
benchmarks, so all of them exercise exactly what the image runs.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sampledb_localcluster import pki

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def issue_certificate(directory: Path, ca_cert: Path, ca_key: Path, name: str = "webhook") -> tuple[Path, Path]:
    """A serving certificate for 127.0.0.1 signed by the given CA."""
    return pki.issue_serving_cert(
        "sampledb-webhook", ["127.0.0.1"], ["localhost"], directory, ca_cert=ca_cert, ca_key=ca_key, name=name
    )


@dataclass
class WebhookReplicas:
    """One or more webhook processes sharing one loopback port (SO_REUSEPORT), like replicas behind a Service."""

    directory: Path
    ca_cert: Path
    cert: Path
    key: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}/convert"

    def start_replica(self, *, reload_seconds: float = 5.0) -> subprocess.Popen[bytes]:
        log = (self.directory / f"webhook-{len(self.processes)}.log").open("ab")
        env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sampledb_operator",
                "webhook",
                f"--cert={self.cert}",
                f"--key={self.key}",
                "--host=127.0.0.1",
                f"--port={self.port}",
                "--drain-seconds=2",
                "--linger-seconds=1",
                f"--reload-seconds={reload_seconds}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        self.wait_healthy(process)
        return process

    def wait_healthy(self, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"webhook exited with {process.returncode}; see {self.directory}")
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"webhook not healthy in {timeout} s; see {self.directory}")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_cert))

    def get(self, path: str) -> str:
        with urllib.request.urlopen(
            f"https://127.0.0.1:{self.port}{path}", context=self.ssl_context(), timeout=5
        ) as response:
            return str(response.read().decode())

    def post(self, body: bytes, path: str = "/convert") -> tuple[int, dict[str, Any]]:
        url = f"https://127.0.0.1:{self.port}{path}"
        request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, context=self.ssl_context(), timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def stop_replica(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        self.processes.remove(process)

    def stop(self) -> None:
        for process in list(self.processes):
            process.send_signal(signal.SIGTERM)
        for process in list(self.processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        self.processes.clear()


def start_webhook(
    directory: Path, *, ca: tuple[Path, Path] | None = None, replicas: int = 1, reload_seconds: float = 5.0
) -> WebhookReplicas:
    """Start `replicas` webhook processes; a fresh CA is made when none is given."""
    directory.mkdir(parents=True, exist_ok=True)
    if ca is None:
        pair = pki.create_ca(directory / "ca")
        ca = (pair.cert, pair.key)
    cert, key = issue_certificate(directory, *ca)
    hooks = WebhookReplicas(directory, ca[0], cert, key)
    try:
        for _ in range(replicas):
            hooks.start_replica(reload_seconds=reload_seconds)
    except BaseException:
        hooks.stop()
        raise
    return hooks

"""A real S3-compatible object store for the tests: versitygw over a folder, TLS from a throwaway CA.

Never a mock of S3: pgBackRest talks to it exactly as to a cloud store (signed requests, TLS with
host-name verification, path-style buckets). The folder is the store: a bucket is a sub-folder,
an object a file, so a test can read what was archived without another client. The keys reach
the server in its environment, never its arguments. It listens on loopback, or inside a network
namespace (the real node's, at the node's address) when `netns` is given: traffic never leaves
the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sampledb_localcluster.pki import create_ca, issue_serving_cert
from sampledb_localcluster.tools import tool_path
from tests.webhook_process import free_port

BUCKET = "pg-archive"


@dataclass
class ObjectStore:
    """One running store; `stop` and `start` take it away and bring it back (same keys, data, address)."""

    root: Path  # buckets are its sub-folders
    host: str  # the DNS name its certificate carries (pgBackRest checks names, not addresses)
    address: str  # where it listens
    port: int
    ca: Path
    netns: str | None = None
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"https://{self.host}:{self.port}"

    def bucket(self, name: str = BUCKET) -> Path:
        return self.root / "data" / name

    def objects(self, prefix: str, bucket: str = BUCKET) -> list[str]:
        """Keys under `prefix` (relative to it), sorted."""
        base = self.bucket(bucket) / prefix.strip("/")
        return sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file()) if base.exists() else []

    def start(self) -> None:
        cert, key = self.root / "tls" / "store.crt", self.root / "tls" / "store.key"
        env = {**os.environ, "ROOT_ACCESS_KEY_ID": self.access_key, "ROOT_SECRET_ACCESS_KEY": self.secret_key}
        argv = [str(tool_path("versitygw")), "--port", f"{self.address}:{self.port}", "--cert", str(cert)]
        argv += ["--key", str(key), "posix", str(self.root / "data")]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        with (self.root / "store.log").open("ab") as log:
            self.process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self._listening():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the object store did not start:\n{(self.root / 'store.log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def _listening(self) -> bool:
        ss = ["ss", "-Hltn", f"sport = :{self.port}"]
        if self.netns:
            ss = ["ip", "netns", "exec", self.netns, *ss]
        return bool(subprocess.run(ss, capture_output=True, text=True, check=False).stdout.strip())


def start_object_store(
    root: Path, *, host: str = "localhost", address: str = "127.0.0.1", netns: str | None = None
) -> ObjectStore:
    """A store in `root` (emptied first) with the bucket BUCKET, serving TLS for `host` at `address`."""
    shutil.rmtree(root, ignore_errors=True)
    (root / "tls").mkdir(parents=True)
    ca = create_ca(root / "tls", cn="sampledb-test-object-store-ca")
    cn = host.split(".")[0]  # a Common Name has at most 64 characters; the full name is a SAN
    issue_serving_cert(cn, [], [host], root / "tls", ca_cert=ca.cert, ca_key=ca.key, name="store")
    store = ObjectStore(root, host, address, free_port(), ca.cert, netns)
    store.bucket().mkdir(parents=True)
    store.start()
    return store

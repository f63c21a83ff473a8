"""The fault suite's eyes inside PostgreSQL on a real node: psql in Pods, writers that count, dumps read back.

The scenarios that touch data run on a local cluster with ONE real node (its own network
namespace slot, so it runs beside the `tests/node` tier's). What they check goes through
PostgreSQL itself, never through the operator's status:

- :class:`Writer`: a Pod that connects like an application (the client Service's DNS name, the
  generated Secret) and inserts one row per connection, printing `committed <id>` only once the
  server acknowledged the commit. Its log is the list of rows that must never be lost;
- :func:`psql`: SQL as the superuser, in the primary's container, over its local socket;
- :class:`DumpReader`: a Pod of our own that mounts a backup or snapshot volume and reads a
  custom-format dump's rows back with `pg_restore` (not the operator's Job: a second opinion).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from sampledb_localcluster import LocalCluster
from sampledb_localcluster.tools import tool_path
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.settings import DEFAULT_IMAGES
from tests.integration.conftest import wait_for
from tests.node.conftest import SOCKET_DIR, client_pod, ids, restricted_pod

WRITER = """
until psql -XAtqc "create table if not exists load (id int primary key)" >/dev/null 2>&1; do sleep 1; done
i=0
while [ "$i" -lt "$LIMIT" ]; do
  i=$((i + 1))
  if psql -XAtqc "insert into load values ($i)" >/dev/null 2>&1; then echo "committed $i"; fi
  sleep "$PAUSE"
done
echo "writer done"
exec sleep infinity
"""


def start_real_cluster(state_dir: Path) -> LocalCluster:
    """A started local cluster with one real node, in the first free network slot (the harness
    skips a slot another tier's cluster takes at the same moment: `network.claim`)."""
    cluster = LocalCluster(state_dir=state_dir, node="real", timeout=120)
    cluster.start()
    return cluster


@dataclass(frozen=True)
class Kubectl:
    """The pinned kubectl against one cluster."""

    kubeconfig: str

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        argv = [str(tool_path("kubectl")), "--kubeconfig", self.kubeconfig, *args]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout


def psql(kubectl: Kubectl, namespace: str, instance: str, sql: str, *, db: str = "app", check: bool = True) -> str:
    """SQL as the superuser in the primary's container (`status.currentPrimary`), over its socket; the output."""
    primary = kubectl("get", "sampledb", "-n", namespace, instance, "-o", "jsonpath={.status.currentPrimary}",
                      check=False).strip()  # fmt: skip
    exec_ = ["exec", "-n", namespace, primary or f"{instance}-0", "-c", "postgres", "--"]
    client = ["psql", "-h", SOCKET_DIR, "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-XAtc", sql]
    return kubectl(*exec_, *client, check=check).strip()


def running(admin: KubeApi, namespace: str, pod: str) -> bool:
    return bool(((admin.get("Pod", namespace, pod) or {}).get("status") or {}).get("phase") == "Running")


@dataclass
class Writer:
    """An application writing rows into table `load` of one instance, one connection per row.

    Attributes:
        instance: The SampleDB it writes to.
        pod: Its Pod's name.
    """

    kubectl: Kubectl
    namespace: str
    instance: str
    pod: str
    limit: int

    @classmethod
    def start(
        cls,
        admin: KubeApi,
        kubectl: Kubectl,
        namespace: str,
        instance: str,
        *,
        version: int = 17,
        limit: int = 100_000,
        pause: float = 0.2,
    ) -> Writer:
        """Start the writer Pod (it waits for the database and its Secret on its own)."""
        pod = client_pod(namespace, instance, DEFAULT_IMAGES[version], database="app")
        name = f"writer-{instance}"
        pod["metadata"]["name"] = name
        pod["spec"]["restartPolicy"] = "Never"  # its counter must never start again at 1
        container = pod["spec"]["containers"][0]
        container["command"] = ["sh", "-c", WRITER]
        container["env"] += [{"name": "LIMIT", "value": str(limit)}, {"name": "PAUSE", "value": str(pause)}]
        admin.create(pod)
        return cls(kubectl, namespace, instance, name, limit)

    def log(self) -> str:
        return self.kubectl("logs", "-n", self.namespace, self.pod, check=False)

    def acked(self) -> set[int]:
        """Every row whose commit the server has acknowledged so far."""
        return {int(line.split()[1]) for line in self.log().splitlines() if line.startswith("committed ")}

    def wait_acked(self, count: int, timeout: float = 180) -> set[int]:
        """Until at least `count` rows are acknowledged (the writer is connected and writing)."""

        def enough() -> set[int] | None:
            rows = self.acked()
            return rows if len(rows) >= count else None

        return wait_for(enough, timeout=timeout, what=f"{self.pod} to commit {count} rows", interval=2)

    def wait_done(self, timeout: float = 300) -> set[int]:
        """Until the writer has tried all its rows; the acknowledged ones."""
        wait_for(lambda: "writer done" in self.log(), timeout=timeout, what=f"{self.pod} to finish", interval=2)
        return self.acked()

    def stored(self) -> set[int]:
        """The rows of `load` in the server now."""
        return ids(psql(self.kubectl, self.namespace, self.instance, "select id from load"))


@dataclass
class DumpReader:
    """A Pod of our own mounting a claim read-only, reading custom-format dumps with pg_restore."""

    kubectl: Kubectl
    namespace: str
    claim: str
    pod: str = field(init=False)

    def __post_init__(self) -> None:
        self.pod = f"reader-{self.claim}"[:63]

    def start(self, admin: KubeApi, timeout: float = 120) -> DumpReader:
        pod = restricted_pod(self.namespace, self.pod, DEFAULT_IMAGES[18])  # reads the dumps of every major
        pod["spec"]["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/v", "readOnly": True}]
        pod["spec"]["volumes"] = [{"name": "v", "persistentVolumeClaim": {"claimName": self.claim, "readOnly": True}}]
        admin.create(pod)
        wait_for(lambda: running(admin, self.namespace, self.pod), timeout=timeout, what=f"reader Pod {self.pod}")
        return self

    def run(self, *argv: str) -> str:
        return self.kubectl("exec", "-n", self.namespace, self.pod, "--", *argv)

    def files(self) -> list[str]:
        """Every file on the volume, relative to its root."""
        return sorted(self.run("find", "/v", "-type", "f", "-printf", "%P\\n").split())

    def rows(self, path: str, table: str = "load") -> list[str]:
        """The data rows of `table` in the dump at `path` (relative to the volume), as COPY text lines."""
        script = self.run("pg_restore", "--data-only", f"--table={table}", "--file=-", f"/v/{path}")
        lines = script.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith(f"COPY public.{table} ")), None)
        assert start is not None, f"the dump {path} holds no data of table {table}"
        end = lines.index("\\.", start)
        return lines[start + 1 : end]


def dump_rows(reader: DumpReader, path: str, table: str = "load") -> set[int]:
    """The first column of `table`'s rows in a dump, as integers."""
    return {int(line.split("\t")[0]) for line in reader.rows(path, table)}

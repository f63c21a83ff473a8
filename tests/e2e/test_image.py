"""The operator image, built with `make docker-build` and run for real with podman (no mocks).

Every container runs the way the Deployment runs it: as 65532, with a read-only root filesystem and
no tmpfs either (`--read-only --read-only-tmpfs=false`: nothing at all is writable), no
capabilities, no privilege escalation. Host networking: the test traffic stays on loopback.

Run this module in its own pytest invocation (`make test-e2e`): the operator started here acts on
the whole local cluster, and the integration tests' operator must not share it.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from sampledb_localcluster import LocalCluster, pki
from sampledb_operator.k8s.api import KubeApi
from tests.integration.conftest import wait_for
from tests.webhook_process import free_port, issue_certificate

REPO = Path(__file__).resolve().parents[2]
UID = 65532
# What these hosts need: runc (crun fails on hybrid cgroups), limits they accept, host network.
PODMAN_RUN = [
    "podman",
    "run",
    "--runtime=runc",
    "--ulimit=nofile=20000:20000",
    "--ulimit=nproc=4000:4000",
    "--network=host",
]
HARDENED = ["--read-only", "--read-only-tmpfs=false", "--cap-drop=ALL", "--security-opt=no-new-privileges"]
V1, V1BETA1 = "sampledb.io/v1", "sampledb.io/v1beta1"

# The first test also pays for the image build (about a minute cold, seconds when cached).
pytestmark = pytest.mark.timeout(900)


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def image(operator_image: str) -> str:
    """The image of tests/e2e/conftest.py (`make docker-build`), which podman runs here."""
    if shutil.which("podman") is None:
        pytest.fail(
            "podman is not installed: the e2e tests build and run the operator image with it. "
            ".ci/run installs it (apt-get install podman runc debootstrap ...); by hand: "
            "apt-get install -y podman runc debootstrap uidmap fuse-overlayfs slirp4netns",
            pytrace=False,
        )
    return operator_image


@dataclass
class Container:
    """A detached container; `podman rm -f` always runs when its `running` block ends."""

    name: str

    def inspect(self, template: str) -> str:
        return podman("inspect", "--format", template, self.name).stdout.strip()

    def is_running(self) -> bool:
        return self.inspect("{{.State.Running}}") == "true"

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return (result.stdout + result.stderr)[-4000:]

    def process_uids(self) -> list[int]:
        """Real, effective, saved and filesystem uid of the container's main process, seen from the host."""
        pid = self.inspect("{{.State.Pid}}")
        status = Path(f"/proc/{pid}/status").read_text()
        line = next(line for line in status.splitlines() if line.startswith("Uid:"))
        return [int(uid) for uid in line.split()[1:]]

    def stop(self, timeout: int = 20) -> int:
        """SIGTERM (as PID 1!), wait for the exit; the exit code (137 means it had to be killed)."""
        podman("stop", f"--time={timeout}", self.name, timeout=timeout + 30)
        return int(self.inspect("{{.State.ExitCode}}"))

    def wait_until(self, probe: Any, *, timeout: float, what: str) -> Any:
        def checked() -> Any:
            if not self.is_running():
                raise AssertionError(f"the container exited while waiting for {what}:\n{self.logs()}")
            return probe()

        try:
            return wait_for(checked, timeout=timeout, what=what, interval=0.3)
        except AssertionError as err:
            raise AssertionError(f"{err}\ncontainer log:\n{self.logs()}") from None


@contextmanager
def running(image: str, purpose: str, *args: str) -> Iterator[Container]:
    """`podman run -d` hardened, with `args` (run options, then the image's arguments after `--`)."""
    name = f"sampledb-e2e-{purpose}-{secrets.token_hex(3)}"
    options, command = (args[: args.index("--")], args[args.index("--") + 1 :]) if "--" in args else (args, ())
    podman(
        *PODMAN_RUN[1:], "--detach", f"--name={name}", "--label=sampledb.test=e2e", *HARDENED, *options, image, *command
    )
    container = Container(name)
    try:
        yield container
    finally:
        podman("rm", "--force", "--time=5", name, check=False)


def readable_by_the_image(path: Path, mode: int) -> None:
    """Files mounted into the container must be readable by 65532 (a Secret volume with fsGroup, in a Pod)."""
    if os.geteuid() == 0:
        os.chown(path, UID, UID)
        path.chmod(mode)
    else:
        path.chmod(mode | 0o044)


def get(url: str, context: ssl.SSLContext | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            return response.status, response.read().decode()
    except OSError as err:  # not up yet
        return 0, str(err)


# -- the image itself ------------------------------------------------------------------------------


def test_help_runs_read_only_as_nonroot(image: str) -> None:
    config = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["/opt/sampledb/bin/sampledb-operator"]
    assert config["Cmd"] == ["run"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp", "9443/tcp"}
    labels = config["Labels"]
    for key in ("title", "description", "version", "source", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"label org.opencontainers.image.{key} missing"
    assert labels["org.opencontainers.image.version"] != "0.0.0-dev", "make docker-build passes VERSION"

    result = subprocess.run(
        [*PODMAN_RUN, "--rm", *HARDENED, image, "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    for command in ("run", "webhook", "generate-crds"):
        assert command in result.stdout

    result = subprocess.run(
        [*PODMAN_RUN, "--rm", *HARDENED, "--entrypoint=id", image], capture_output=True, text=True, check=False
    )
    assert result.stdout.split()[:2] == [f"uid={UID}(nonroot)", f"gid={UID}(nonroot)"], result.stdout


def test_image_ships_only_the_operator_and_root_owned_files(image: str) -> None:
    script = (
        "find / -xdev -path '*sampledb_localcluster*' -print;"
        "echo ---;"
        "find / -xdev ! -user root -printf '%u %p\\n';"
        "echo ---;"
        "find / -xdev -name '*.py' -path '/opt/sampledb/*' | wc -l;"
        "find / -xdev -name '*.pyc' -path '/opt/sampledb/*' | wc -l;"
        "/opt/sampledb/bin/python -c 'import importlib.util as u; print(u.find_spec(\"sampledb_localcluster\"))'"
    )
    result = subprocess.run(
        [*PODMAN_RUN, "--rm", *HARDENED, "--user=0", "--entrypoint=sh", image, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    localcluster, not_root_owned, counts = result.stdout.split("---\n")
    assert localcluster.strip() == "", f"sampledb_localcluster ships in the image:\n{localcluster}"
    assert not_root_owned.strip() == "", (
        f"files not owned by root (the runtime user must own nothing):\n{not_root_owned}"
    )
    sources, compiled, spec = counts.split()
    assert spec == "None"
    # Every module precompiled at build time: at run time Python cannot (and must not) write.
    assert int(compiled) >= int(sources) > 0


# -- the conversion webhook ------------------------------------------------------------------------


def review(objects: list[dict[str, Any]]) -> bytes:
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {"uid": "e2e-1", "desiredAPIVersion": V1, "objects": objects},
    }
    return json.dumps(body).encode()


def beta(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": V1BETA1, "kind": "SampleDB", "metadata": {"name": name, "namespace": "n"}, "spec": spec}


def test_webhook_serves_tls_and_converts_in_the_container(image: str, tmp_path: Path) -> None:
    ca = pki.create_ca(tmp_path / "ca")
    cert, key = issue_certificate(tmp_path, ca.cert, ca.key)
    tls = tmp_path / "tls"
    tls.mkdir()
    shutil.copyfile(cert, tls / "tls.crt")
    shutil.copyfile(key, tls / "tls.key")
    readable_by_the_image(tls / "tls.crt", 0o444)
    readable_by_the_image(tls / "tls.key", 0o400)
    port = free_port()
    context = ssl.create_default_context(cafile=str(ca.cert))
    base = f"https://127.0.0.1:{port}"

    with running(
        image, "webhook", f"--volume={tls}:/tls:ro", "--", "webhook", "--host=127.0.0.1", f"--port={port}"
    ) as hook:
        hook.wait_until(lambda: get(f"{base}/healthz", context)[0] == 200, timeout=60, what="the webhook's /healthz")
        assert get(f"{base}/readyz", context)[0] == 200
        assert hook.process_uids() == [UID] * 4

        request = urllib.request.Request(
            f"{base}/convert",
            data=review([beta("a", version=15), beta("b", storageSize="2Gi")]),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, context=context, timeout=10) as answer:
            assert answer.status == 200
            response = json.loads(answer.read())["response"]
        assert response["uid"] == "e2e-1"
        assert response["result"] == {"status": "Success"}
        converted = response["convertedObjects"]
        assert [o["apiVersion"] for o in converted] == [V1, V1]
        assert [o["metadata"]["name"] for o in converted] == ["a", "b"]
        assert converted[0]["spec"] == {"postgres": {"version": 15}}
        assert converted[1]["spec"] == {"storage": {"size": "2Gi"}}

        code = hook.stop()
        assert code == 0, f"the webhook did not stop cleanly on SIGTERM (exit {code}):\n{hook.logs()}"


# -- the operator on the local cluster -------------------------------------------------------------


def kubeconfig_for_the_image(source: Path, directory: Path, mount: str) -> Path:
    """The operator kubeconfig with its embedded certificates as files under `mount`.

    The `kubernetes` client writes embedded `*-data` to temporary files, which a read-only root
    filesystem forbids; in a Pod the identity is files too (the ServiceAccount token and CA).
    """
    config = yaml.safe_load(source.read_text())
    directory.mkdir()
    files = {
        "ca.crt": ("clusters", "cluster", "certificate-authority"),
        "tls.crt": ("users", "user", "client-certificate"),
        "tls.key": ("users", "user", "client-key"),
    }
    for filename, (section, entry, field) in files.items():
        (item,) = config[section]
        data = item[entry].pop(f"{field}-data")
        (directory / filename).write_bytes(base64.b64decode(data))
        item[entry][field] = f"{mount}/{filename}"
        readable_by_the_image(directory / filename, 0o400)
    (directory / "kubeconfig").write_text(yaml.safe_dump(config, sort_keys=False))
    readable_by_the_image(directory / "kubeconfig", 0o400)
    return directory / "kubeconfig"


def phase(admin: KubeApi, namespace: str, name: str) -> str | None:
    obj = admin.get("SampleDB", namespace, name)
    return ((obj or {}).get("status") or {}).get("phase")


@pytest.mark.usefixtures("crds", "operator_rbac")
def test_operator_in_the_container_reconciles_a_sampledb(
    image: str, local_cluster: LocalCluster, admin: KubeApi, namespace: str, tmp_path: Path
) -> None:
    mount = "/var/run/sampledb/kube"
    kubeconfig_for_the_image(Path(local_cluster.operator_kubeconfig), tmp_path / "kube", mount)
    metrics_port, health_port = free_port(), free_port()

    with running(
        image,
        "operator",
        f"--volume={tmp_path / 'kube'}:{mount}:ro",
        f"--env=KUBECONFIG={mount}/kubeconfig",
        f"--env=SAMPLEDB_METRICS_PORT={metrics_port}",
        f"--env=SAMPLEDB_HEALTH_PORT={health_port}",
    ) as operator:
        operator.wait_until(
            lambda: get(f"http://127.0.0.1:{health_port}/healthz")[0] == 200, timeout=60, what="the operator's /healthz"
        )
        assert operator.process_uids() == [UID] * 4

        admin.create(
            {
                "apiVersion": V1,
                "kind": "SampleDB",
                "metadata": {"name": "img", "namespace": namespace},
                "spec": {"storage": {"size": "1Gi"}, "deletionPolicy": "Delete"},
            }
        )
        operator.wait_until(
            lambda: phase(admin, namespace, "img") == "Ready", timeout=120, what=f"SampleDB {namespace}/img to be Ready"
        )
        status, metrics = get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert status == 200
        assert "sampledb_reconcile_total" in metrics

        # The finalizer path too, while the operator still runs: deleting lets the namespace go.
        admin.delete("SampleDB", namespace, "img")
        operator.wait_until(
            lambda: admin.get("SampleDB", namespace, "img") is None, timeout=60, what=f"SampleDB {namespace}/img to go"
        )

        code = operator.stop()
        assert code == 0, f"the operator did not stop cleanly on SIGTERM (exit {code}):\n{operator.logs()}"

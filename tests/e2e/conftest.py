"""E2E fixtures: the operator image, a cluster whose node runs it for real, and the integration fixtures.

Installs are tested the way users install: Helm and OLM put the operator and its webhook in real
Pods, which run the image `make docker-build` made, and the SampleDBs they reconcile run real
PostgreSQL. The session's cluster is the local cluster with a real node (as in tests/node); given
an existing cluster (``--kubeconfig`` or ``$KUBECONFIG``, e.g. kind from `make test-kind`), the
same tests run there unchanged.

Images reach the node one way, :class:`sampledb_localcluster.images.ImageLoader`, with two
implementations: the real node's containerd (:class:`ContainerdLoader`, when the cluster starts)
and kind (:class:`KindLoader`, when ``$KIND_CLUSTER`` names the kind cluster behind
``$KUBECONFIG``). Nothing is pulled: every name a manifest uses is loaded first.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampledb_localcluster import LocalCluster, images
from tests.conftest import external_kubeconfig
from tests.integration.conftest import (  # noqa: F401
    admin,
    apply,
    conversion_webhook,
    crds,
    operator_rbac,
    wait_for,
)

REPO = Path(__file__).resolve().parents[2]
OPERATOR_REPOSITORY = "localhost/sampledb-operator"
OPERATOR_IMAGE = f"{OPERATOR_REPOSITORY}:0.1.0"
"""The chart's default image (its appVersion) and the committed bundle's."""
NEXT_OPERATOR_IMAGE = f"{OPERATOR_REPOSITORY}:0.1.1"
"""The image of the next bundle version, which tests/e2e/test_olm.py upgrades to."""
POSTGRES_MAJOR = 17
CONTAINER_TOOL = os.environ.get("CONTAINER_TOOL", "podman")
"""What builds and holds the images: podman here; `make test-kind` passes its provider (docker)."""


def e2e_images(*, operand: bool = True) -> dict[str, str]:
    """``{name in manifests: local image}``: both operator versions (one build) and PostgreSQL 17.

    Without ``operand`` only the operator: kind's nodes have their own pause image and pull the
    operator's default PostgreSQL image themselves (a Docker user's machine has a registry).
    """
    wanted = images.node_images((POSTGRES_MAJOR,)) if operand else {}
    wanted.update({OPERATOR_IMAGE: OPERATOR_IMAGE, NEXT_OPERATOR_IMAGE: OPERATOR_IMAGE})
    return wanted


@pytest.fixture(scope="session")
def operator_image() -> str:
    """The image, built once per session by `make docker-build` (the same command users run)."""
    # A clean make environment: this may run under `make test-e2e`, whose jobserver is not ours.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    started = time.monotonic()
    result = subprocess.run(
        ["make", "--no-print-directory", "docker-build", f"IMG={OPERATOR_IMAGE}", f"CONTAINER_TOOL={CONTAINER_TOOL}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"make docker-build failed ({result.returncode}):\n{(result.stdout + result.stderr)[-5000:]}")
    print(f"\nmake docker-build IMG={OPERATOR_IMAGE}: {time.monotonic() - started:.1f} s")
    return OPERATOR_IMAGE


@pytest.fixture(scope="session")
def local_cluster(operator_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """The session's cluster with a real node, the operator image loaded (overrides tests/conftest.py)."""
    state_dir = tmp_path_factory.mktemp("e2e-cluster")
    with LocalCluster(state_dir=state_dir, node="real", timeout=120, images=e2e_images()) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def kube_config(request: pytest.FixtureRequest, operator_image: str) -> str:
    """The admin kubeconfig, with every image the tests' manifests name already on the node(s)."""
    external = external_kubeconfig(request.config)
    if not external:
        cluster: LocalCluster = request.getfixturevalue("local_cluster")
        return str(cluster.kubeconfig)
    kind = os.environ.get("KIND_CLUSTER")
    if not kind:
        pytest.fail(
            f"tests/e2e run against {external} but cannot load the images into its nodes: set KIND_CLUSTER "
            "to the kind cluster's name (make test-kind does), or run without KUBECONFIG to use a local real node",
            pytrace=False,
        )
    images.KindLoader(kind, container_tool=CONTAINER_TOOL).load(e2e_images(operand=False))
    return external

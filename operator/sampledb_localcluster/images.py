"""Put locally built images on a node under the names the manifests use; nothing is ever pulled.

No registry is reachable on our machines, so every image a Pod runs is built here (podman) and
loaded into the node's container runtime under the exact name its manifest says; with
``imagePullPolicy: IfNotPresent`` the kubelet then never pulls. One code path, two
implementations of "load an image into the node":

- :class:`ContainerdLoader`, the local real node: ``podman save`` (kept in a cache by image id, so
  a new cluster does not save again), ``ctr images import``, then ``ctr images tag`` to the name
  the manifest uses;
- :class:`KindLoader`, a kind cluster for users with Docker or podman: ``kind load
  image-archive`` of the same archive, tagged before saving.

Which images: :func:`node_images` maps the operator's default operand images to our Debian-built
PostgreSQL images (``make base-images``), so that a ``SampleDB`` without ``spec.postgres.image``
runs unchanged; the sandbox (pause) image and, when built, the operator image come along.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Protocol

from sampledb_localcluster.node import PAUSE_IMAGE

CONTAINERD_NAMESPACE = "k8s.io"
"""The containerd namespace the CRI plugin (and so the kubelet) uses."""
LOCAL_POSTGRES = "localhost/sampledb-postgres:{major}"
OPERATOR_IMAGE = "localhost/sampledb-operator:0.1.0"


class ImageLoadError(RuntimeError):
    """An image is missing locally or could not be loaded; the message says which and how to build it."""


class ImageLoader(Protocol):
    """Loads local images into a node under the names manifests use."""

    def load(self, images: Mapping[str, str]) -> None:
        """Load each ``source`` image as ``target`` (``{target: source}``)."""


BUILT_MAJORS = (15, 17, 18)
"""The PostgreSQL majors `make base-images` builds (no Debian release carries 16)."""


def node_images(majors: Iterable[int] = BUILT_MAJORS, container_tool: str = "podman") -> dict[str, str]:
    """``{name in manifests: local image}`` for the operator's default images of ``majors``, and the rest.

    Each default operand image is served by our own build of the same major, so a SampleDB without
    ``spec.postgres.image`` runs unchanged; the pause image and (when built) the operator image
    come along.

    Raises:
        ValueError: A major we do not build (16).
    """
    from sampledb_operator.settings import DEFAULT_IMAGES  # the operator's defaults are the contract

    majors = tuple(majors)
    unknown = set(majors) - set(BUILT_MAJORS)
    if unknown:
        raise ValueError(f"no local PostgreSQL image for {sorted(unknown)}; `make base-images` builds {BUILT_MAJORS}")
    wanted = {DEFAULT_IMAGES[major]: LOCAL_POSTGRES.format(major=major) for major in majors}
    wanted[PAUSE_IMAGE] = PAUSE_IMAGE
    if _exists(container_tool, OPERATOR_IMAGE):
        wanted[OPERATOR_IMAGE] = OPERATOR_IMAGE
    return wanted


def _exists(tool: str, image: str) -> bool:
    return subprocess.run([tool, "image", "exists", image], check=False, capture_output=True).returncode == 0


def _run(argv: list[str]) -> str:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise ImageLoadError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def cache_dir() -> Path:
    """Where saved image archives are kept, by image id (``rm -rf`` it freely)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sampledb-operator" / "node-images"


def saved_archive(source: str, container_tool: str = "podman") -> Path:
    """A docker-archive of ``source``, saved once per image id.

    Raises:
        ImageLoadError: The image does not exist locally.
    """
    if not _exists(container_tool, source):
        raise ImageLoadError(
            f"image {source} is not built; run `make base-images` (PostgreSQL and pause images) "
            "or `make docker-build` (the operator image) first"
        )
    image_id = _run([container_tool, "image", "inspect", "--format", "{{.Id}}", source]).strip()
    archive = cache_dir() / f"{image_id}.tar"
    if not archive.exists():
        archive.parent.mkdir(parents=True, exist_ok=True)
        # Each process (thread) saves to a file of its own: two test tiers may need a new image at once, and
        # `podman save` refuses a file that exists (one left by a killed save, too). The rename is
        # atomic; the last one wins with the same bytes.
        partial = archive.with_name(f"{image_id}.{os.getpid()}.{threading.get_ident()}.partial")
        partial.unlink(missing_ok=True)
        _run([container_tool, "save", "--format", "docker-archive", "-o", str(partial), source])
        partial.rename(archive)
    return archive


class ContainerdLoader:
    """Loads images into the real node's containerd through its socket."""

    def __init__(self, socket: Path, *, container_tool: str = "podman", quiet: bool = False) -> None:
        """Load into the containerd listening on ``socket``."""
        self._ctr = ["ctr", "--address", str(socket), "--namespace", CONTAINERD_NAMESPACE]
        self._tool = container_tool
        self._quiet = quiet

    def load(self, images: Mapping[str, str]) -> None:
        """Import each source once, then give it every target name.

        Raises:
            ImageLoadError: A source image is missing or containerd refused it.
        """
        for source in sorted(set(images.values())):
            begin = time.monotonic()
            archive = saved_archive(source, self._tool)
            _run([*self._ctr, "images", "import", "--digests", "--snapshotter=overlayfs", str(archive)])
            for target in sorted(t for t, s in images.items() if s == source and t != source):
                _run([*self._ctr, "images", "tag", "--force", source, target])
            self._say(f"  image {source} loaded in {time.monotonic() - begin:.1f} s")

    def tag(self, existing: str, name: str) -> None:
        """Give an image the node has a further name (a second tag of the same content).

        Raises:
            ImageLoadError: The node has no image ``existing``.
        """
        _run([*self._ctr, "images", "tag", "--force", existing, name])

    def names(self) -> set[str]:
        """Every image name the node has."""
        return set(_run([*self._ctr, "images", "list", "--quiet"]).split())

    def _say(self, message: str) -> None:
        if not self._quiet:
            print(message, file=sys.stderr, flush=True)


class KindLoader:
    """Loads images into a kind cluster's nodes (`make test-kind`; needs kind and Docker or podman)."""

    def __init__(self, cluster: str, *, container_tool: str = "podman") -> None:
        """Load into kind cluster ``cluster``."""
        self._cluster = cluster
        self._tool = container_tool

    def load(self, images: Mapping[str, str]) -> None:
        """Tag each source with its target name and load that into every node of the cluster."""
        for target, source in sorted(images.items()):
            if target != source:
                _run([self._tool, "tag", source, target])
            archive = cache_dir() / f"kind-{target.replace('/', '_').replace(':', '_')}.tar"
            archive.parent.mkdir(parents=True, exist_ok=True)
            _run([self._tool, "save", "--format", "docker-archive", "-o", str(archive), target])
            _run(["kind", "load", "image-archive", str(archive), "--name", self._cluster])

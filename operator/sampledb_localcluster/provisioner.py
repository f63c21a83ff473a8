"""A stand-in volume provisioner for the local cluster: binds every claim of its StorageClass.

No CSI driver runs in the local cluster, so a StatefulSet's PersistentVolumeClaims would stay
Pending and the scheduler would never place its Pods. This loop plays the external
provisioner's part of the real protocol: it watches claims of every StorageClass whose
provisioner is `sampledb.io/local-provisioner` (the default class `standard` among them) and
creates a matching PersistentVolume pre-bound to each; the controller manager's PV binder then
binds them, exactly as with a real provisioner. It also deletes the volume of a claim that is gone
(reclaim policy Delete).

Expansion follows the two steps of the real protocol, so the operator's waits are exercised: as
the external resizer does for a volume whose file system the node must grow, it grows the PV and
marks the claim `FileSystemResizePending`; a few seconds later it plays the kubelet's part and
records the new capacity on the claim. Whether a claim may grow at all is the API server's
decision (its PersistentVolumeClaimResize admission reads the class's `allowVolumeExpansion`).

With simulated nodes the volume is a hostPath nothing ever mounts. With the real node
(``--volume-root``, ``--node``) each volume is a real folder under the volume root, served as a
`local` PersistentVolume pinned to the node: unlike hostPath, the kubelet applies the Pod's
``fsGroup`` to a local volume on its first mount, so a Pod running as a non-root user can write
it, as with any CSI volume. Deleting the claim deletes the folder. Expansion changes the recorded
capacity only: the folders share the machine's filesystem and have no quota (a size limit, if a
test ever needs one, would be a loop-mounted image per volume, grown with ``resize2fs``).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

STORAGE_CLASS = "standard"
PROVISIONER = "sampledb.io/local-provisioner"
logger = logging.getLogger(__name__)


SELECTED_NODE = "volume.kubernetes.io/selected-node"
FILE_SYSTEM_PENDING = "FileSystemResizePending"
# How long "the node" takes to grow a file system: long enough for a reconcile to see the wait.
FILE_SYSTEM_RESIZE_SECONDS = 3.0


def storage_class(*, wait_for_consumer: bool = False) -> dict[str, Any]:
    """The cluster's default StorageClass, served by this provisioner.

    The real node's class binds when the first Pod is scheduled (as local volumes do): the
    scheduler then waits for the claim to be bound before it hands the Pod to the kubelet. With
    immediate binding it could hand over a Pod whose claim the PV controller had not bound yet, and
    the kubelet then backed off for 10 s or more ("PVC is not bound"), seen on the real node.
    """
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": True,
        "volumeBindingMode": "WaitForFirstConsumer" if wait_for_consumer else "Immediate",
    }


def _source(uid: str, volume_root: Path | None, node: str | None) -> dict[str, Any]:
    """Where the volume's data is: a hostPath nothing mounts (kwok), or a local folder on the real node."""
    if volume_root is None or node is None:
        return {"hostPath": {"path": f"/var/lib/kwok-volumes/{uid}", "type": "DirectoryOrCreate"}}
    selector = {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
    return {
        "local": {"path": str(volume_root / uid)},
        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [selector]}]}},
    }


def volume_for(claim: dict[str, Any], volume_root: Path | None = None, node: str | None = None) -> dict[str, Any]:
    """A PersistentVolume pre-bound to `claim`, as large as it asks for."""
    meta = claim["metadata"]
    size = claim["spec"]["resources"]["requests"]["storage"]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": f"pv-{meta['uid']}", "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": claim["spec"].get("accessModes") or ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": claim["spec"].get("storageClassName") or STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            **_source(meta["uid"], volume_root, node),
        },
    }


class FakeProvisioner:
    """Runs the provisioning loop in a daemon thread until `stop()`."""

    def __init__(self, api_client: client.ApiClient, volume_root: Path | None = None, node: str | None = None) -> None:
        self._volume_root = volume_root
        self._node = node
        self._core = client.CoreV1Api(api_client)
        self._storage = client.StorageV1Api(api_client)
        self._stop = threading.Event()
        self._classes: dict[str, bool] = {}  # StorageClass name -> served by this provisioner
        self._thread = threading.Thread(target=self._run, name="fake-provisioner", daemon=True)

    def start(self) -> None:
        """Install the StorageClass (if missing) and start watching claims."""
        try:
            body = storage_class(wait_for_consumer=self._volume_root is not None)
            self._storage.create_storage_class(body)  # type: ignore[arg-type]  # dicts are accepted
        except ApiException as err:
            if err.status != 409:
                raise
        self._thread.start()

    def stop(self) -> None:  # noqa: D102
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._watch_once()
            except Exception:  # the API server may be restarting: keep trying until stopped
                logger.debug("provisioner watch interrupted", exc_info=True)
                self._stop.wait(1)

    def _watch_once(self) -> None:
        stream = watch.Watch()
        for event in stream.stream(
            self._core.list_persistent_volume_claim_for_all_namespaces, timeout_seconds=30, _request_timeout=40
        ):
            if self._stop.is_set():
                stream.stop()
                return
            claim = self._core.api_client.sanitize_for_serialization(event["object"])
            if event["type"] == "DELETED":
                self._release(claim)
            else:
                self._provision(claim)

    def _serves(self, class_name: str) -> bool:
        if class_name not in self._classes:
            try:
                found = self._storage.read_storage_class(class_name).provisioner == PROVISIONER
            except ApiException as err:
                if err.status != 404:
                    raise
                return False  # not yet created: the claim's next event asks again
            self._classes[class_name] = found
        return self._classes[class_name]

    def _provision(self, claim: dict[str, Any]) -> None:
        class_name = claim["spec"].get("storageClassName") or STORAGE_CLASS
        if not self._serves(class_name):
            return
        if claim["spec"].get("volumeName"):
            self._grow(claim)
            return
        if self._volume_root is not None and SELECTED_NODE not in (claim["metadata"].get("annotations") or {}):
            return  # not yet: the scheduler names the node when the claim's first Pod is placed
        if self._volume_root is not None:
            # Root-owned 0755: the kubelet hands it to the Pod's fsGroup on the first mount.
            (self._volume_root / claim["metadata"]["uid"]).mkdir(parents=True, exist_ok=True)
        try:
            self._core.create_persistent_volume(volume_for(claim, self._volume_root, self._node))  # type: ignore[arg-type]
        except ApiException as err:
            if err.status != 409:
                raise

    def _grow(self, claim: dict[str, Any]) -> None:
        """The resizer's step (grow the PV, file system pending), then the node's (record the capacity)."""
        wanted = claim["spec"]["resources"]["requests"]["storage"]
        status = claim.get("status") or {}
        if status.get("capacity", {}).get("storage") == wanted:
            return
        meta = claim["metadata"]
        if any(c.get("type") == FILE_SYSTEM_PENDING for c in status.get("conditions") or []):
            return  # the node's step is scheduled
        self._core.patch_persistent_volume(claim["spec"]["volumeName"], {"spec": {"capacity": {"storage": wanted}}})
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {"type": FILE_SYSTEM_PENDING, "status": "True", "lastTransitionTime": now}
        body = {"status": {"conditions": [condition]}}
        self._core.patch_namespaced_persistent_volume_claim_status(meta["name"], meta["namespace"], body)
        timer = threading.Timer(FILE_SYSTEM_RESIZE_SECONDS, self._file_system_grown, (meta, wanted))
        timer.daemon = True
        timer.start()

    def _file_system_grown(self, meta: dict[str, Any], wanted: str) -> None:
        body = {"status": {"capacity": {"storage": wanted}, "conditions": None}}
        try:
            self._core.patch_namespaced_persistent_volume_claim_status(meta["name"], meta["namespace"], body)
        except ApiException as err:
            if err.status != 404:
                raise

    def _release(self, claim: dict[str, Any]) -> None:
        uid = claim["metadata"]["uid"]
        try:
            self._core.delete_persistent_volume(f"pv-{uid}")
        except ApiException as err:
            if err.status != 404:
                raise
        if self._volume_root is not None:
            shutil.rmtree(self._volume_root / uid, ignore_errors=True)


def _serve_health(port: int) -> ThreadingHTTPServer:
    class Health(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main(argv: Sequence[str] | None = None) -> int:
    """Run as a cluster component: provision until SIGTERM; /healthz once the StorageClass exists."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--health-port", type=int, required=True)
    parser.add_argument("--volume-root", type=Path, help="real node: create each volume as a folder here")
    parser.add_argument("--node", help="real node: the node that holds --volume-root")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    api_client = config.new_client_from_config(config_file=args.kubeconfig)
    provisioner = FakeProvisioner(api_client, args.volume_root, args.node)
    provisioner.start()
    server = _serve_health(args.health_port)
    logger.info("provisioning claims of StorageClass %s", STORAGE_CLASS)
    done.wait()
    server.shutdown()
    provisioner.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

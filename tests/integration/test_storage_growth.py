"""Growing spec.storage.size on a real API server: the claims grow, the StatefulSet is re-created
with the new template (orphan cascade), its Pod is adopted without a restart, and a StorageClass
that forbids expansion is named in the status.

The local cluster's provisioner plays the storage provider and the node's file-system step
(`sampledb_localcluster/provisioner.py`); the real node's test (`tests/node`) checks that the
database keeps serving throughout.
"""

from __future__ import annotations

from typing import Any

import pytest

from sampledb_operator.k8s.api import KubeApi
from tests.integration.conftest import wait_for
from tests.integration.test_operator import condition, events_for, get_db, sampledb, wait_ready

pytestmark = pytest.mark.usefixtures("operator")
GROWTH_EVENTS = ["Expanding", "RecreatingStatefulSet", "WaitingForFileSystem", "VolumeExpanded"]


def storage(admin: KubeApi, namespace: str, name: str) -> dict[str, Any]:
    return dict((get_db(admin, namespace, name).get("status") or {}).get("storage") or {})


def resized(admin: KubeApi, namespace: str, name: str, size: str) -> dict[str, Any] | None:
    current = storage(admin, namespace, name)
    return current if current == {"size": size, "capacity": size, "phase": "Resized"} else None


def template_size(sts: dict[str, Any]) -> str:
    size: str = sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    return size


def test_growing_the_size_grows_the_volume_and_keeps_the_pod(admin: KubeApi, namespace: str) -> None:
    admin.create(sampledb("pg", namespace, {"storage": {"size": "1Gi"}, "deletionPolicy": "Delete"}))
    wait_ready(admin, namespace, "pg")
    assert storage(admin, namespace, "pg") == {"size": "1Gi", "capacity": "1Gi"}
    sts_before = admin.get("StatefulSet", namespace, "pg")
    pod_before = admin.get("Pod", namespace, "pg-0")
    assert sts_before is not None and pod_before is not None
    phase_events = len([e for e in events_for(admin, namespace, "pg") if e["note"].startswith("phase ")])

    admin.merge_patch("SampleDB", namespace, "pg", {"spec": {"storage": {"size": "2Gi"}}})
    wait_for(lambda: resized(admin, namespace, "pg", "2Gi"), timeout=90, what="the volume to be resized to 2Gi")

    claim = admin.get("PersistentVolumeClaim", namespace, "data-pg-0")
    assert claim is not None
    assert (claim["spec"]["resources"]["requests"]["storage"], claim["status"]["capacity"]["storage"]) == ("2Gi", "2Gi")
    volume = admin.get("PersistentVolume", None, claim["spec"]["volumeName"])
    assert volume is not None and volume["spec"]["capacity"]["storage"] == "2Gi"
    sts = admin.get("StatefulSet", namespace, "pg")
    assert sts is not None and template_size(sts) == "2Gi"
    assert sts["metadata"]["uid"] != sts_before["metadata"]["uid"], "the StatefulSet was not re-created"
    pod = admin.get("Pod", namespace, "pg-0")
    assert pod is not None and pod["metadata"]["uid"] == pod_before["metadata"]["uid"], "the Pod was replaced"
    assert [r["uid"] for r in pod["metadata"]["ownerReferences"]] == [sts["metadata"]["uid"]], "not adopted"
    reasons = [e["reason"] for e in events_for(admin, namespace, "pg")]
    assert [r for r in GROWTH_EVENTS if r not in reasons] == []
    db = get_db(admin, namespace, "pg")
    assert db["status"]["phase"] == "Ready" and condition(db, "Progressing")["reason"] == "UpToDate"
    after = [e for e in events_for(admin, namespace, "pg") if e["note"].startswith("phase ")]
    assert len(after) == phase_events, f"the phase changed while resizing: {[e['note'] for e in after]}"


def test_a_storage_class_without_expansion_is_named_until_it_allows_it(admin: KubeApi, namespace: str) -> None:
    class_name = f"fixed-{namespace}"
    admin.create(
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": class_name},
            "provisioner": "sampledb.io/local-provisioner",
            "allowVolumeExpansion": False,
        }
    )
    try:
        spec = {"storage": {"size": "1Gi", "storageClassName": class_name}, "deletionPolicy": "Delete"}
        admin.create(sampledb("fixed", namespace, spec))
        wait_ready(admin, namespace, "fixed")
        admin.merge_patch("SampleDB", namespace, "fixed", {"spec": {"storage": {"size": "2Gi"}}})

        def refused() -> dict[str, Any] | None:
            db = get_db(admin, namespace, "fixed")
            degraded = condition(db, "Degraded") if db.get("status") else {}
            return db if degraded.get("reason") == "StorageExpansionUnsupported" else None

        db = wait_for(refused, timeout=60, what="StorageExpansionUnsupported")
        message = condition(db, "Degraded")["message"]
        assert f"StorageClass {class_name}" in message and "spec.storage.size" in message, message
        assert storage(admin, namespace, "fixed")["phase"] == "ExpansionUnsupported"
        claim = admin.get("PersistentVolumeClaim", namespace, "data-fixed-0")
        assert claim is not None and claim["spec"]["resources"]["requests"]["storage"] == "1Gi"

        # The administrator allows expansion; the next look (here hastened by a touch) grows it.
        admin.merge_patch("StorageClass", None, class_name, {"allowVolumeExpansion": True})
        admin.merge_patch("SampleDB", namespace, "fixed", {"metadata": {"annotations": {"touch": "1"}}})
        wait_for(lambda: resized(admin, namespace, "fixed", "2Gi"), timeout=90, what="the volume to grow")
        wait_ready(admin, namespace, "fixed")
    finally:
        admin.delete("StorageClass", None, class_name)

"""Growing the data volumes: each step of `reconcile/storage.py` decided from what is observed.

The children's plan never touches the StatefulSet for a new size (its volumeClaimTemplates are
immutable); the storage plan does, step by step, until every claim reports the new capacity.
"""

from __future__ import annotations

import copy
from typing import Any

from sampledb_operator.api.common import StoragePhase
from sampledb_operator.reconcile import children, storage
from sampledb_operator.reconcile.children import Verb
from sampledb_operator.reconcile.status import Observation, compute_status
from sampledb_operator.resources.instance import Instance
from tests.unit.conftest import make_instance

STS_CHILD = next(c for c in children.CHILDREN if c.kind == "StatefulSet")
EXPANDABLE = {"standard": {"metadata": {"name": "standard"}, "allowVolumeExpansion": True}}


def statefulset(instance: Instance) -> dict[str, Any]:
    created = children.plan_child(STS_CHILD, instance, None)
    assert created is not None
    return copy.deepcopy(created.body)


def claim(request: str, capacity: str, *, conditions: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {"name": "data-db1-0"},
        "spec": {"storageClassName": "standard", "resources": {"requests": {"storage": request}}},
        "status": {
            "capacity": {"storage": capacity},
            "conditions": [{"type": c, "status": "True"} for c in conditions],
        },
    }


def plan(
    size: str,
    sts_size: str,
    pvc: dict[str, Any] | None,
    *,
    classes: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
    hold: bool = False,
) -> storage.StoragePlan:
    instance = make_instance({"storage": {"size": size}})
    sts = statefulset(make_instance({"storage": {"size": sts_size}}))
    claims = dict.fromkeys(instance.data_pvcs, pvc)
    return storage.plan_storage(
        instance, sts, claims, EXPANDABLE if classes is None else classes, previous or {}, hold_statefulset=hold
    )


def test_the_childrens_plan_leaves_the_volume_template_to_the_storage_plan() -> None:
    sts = statefulset(make_instance())
    assert children.plan_child(STS_CHILD, make_instance({"storage": {"size": "20Gi"}}), sts) is None


def test_an_unchanged_size_needs_nothing_and_reports_the_capacity() -> None:
    decided = plan("10Gi", "10Gi", claim("10Gi", "10Gi"))
    assert (decided.actions, decided.progress, decided.problem, decided.event) == ((), None, None, None)
    assert decided.status == {"size": "10Gi", "capacity": "10Gi"}


def test_a_larger_size_grows_every_claim_first() -> None:
    decided = plan("20Gi", "10Gi", claim("10Gi", "10Gi"))
    assert [(a.verb, a.kind, a.name, a.body) for a in decided.actions] == [
        (Verb.PATCH, "PersistentVolumeClaim", "data-db1-0", {"spec": {"resources": {"requests": {"storage": "20Gi"}}}})
    ]
    assert decided.status["phase"] == StoragePhase.EXPANDING
    assert decided.event is not None and decided.event[1] == "Expanding"
    assert decided.requeue_after


def test_then_the_statefulset_is_recreated_with_the_new_template() -> None:
    decided = plan("20Gi", "10Gi", claim("20Gi", "10Gi", conditions=("Resizing",)))
    [action] = decided.actions
    assert (action.verb, action.kind) == (Verb.RECREATE, "StatefulSet")
    assert action.body["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "20Gi"
    # The same template as a StatefulSet made for the new size: the adopted Pod's revision matches.
    made_for_new_size = statefulset(make_instance({"storage": {"size": "20Gi"}}))
    assert action.body["spec"]["template"] == made_for_new_size["spec"]["template"]
    assert decided.status["phase"] == StoragePhase.RECREATING_STATEFULSET


def test_no_recreation_while_the_statefulset_is_held() -> None:
    decided = plan("20Gi", "10Gi", claim("20Gi", "10Gi"), hold=True)
    assert decided.actions == () and decided.status["phase"] == StoragePhase.EXPANDING


def test_then_it_waits_for_the_provider_and_the_file_system() -> None:
    provider = plan("20Gi", "20Gi", claim("20Gi", "10Gi", conditions=("Resizing",)))
    assert (provider.actions, provider.status["phase"]) == ((), StoragePhase.EXPANDING)
    assert provider.progress is not None and "storage provider" in provider.progress
    fs = plan("20Gi", "20Gi", claim("20Gi", "10Gi", conditions=("FileSystemResizePending",)))
    assert fs.status["phase"] == StoragePhase.WAITING_FOR_FILE_SYSTEM
    assert fs.progress is not None and "file system" in fs.progress


def test_resized_once_every_claim_reports_the_size_with_one_event() -> None:
    done = plan("20Gi", "20Gi", claim("20Gi", "20Gi"), previous={"phase": "WaitingForFileSystem"})
    assert done.status == {"size": "20Gi", "capacity": "20Gi", "phase": "Resized"}
    assert done.event is not None and done.event[1] == "VolumeExpanded"
    again = plan("20Gi", "20Gi", claim("20Gi", "20Gi"), previous=done.status)
    assert (again.status, again.event) == (done.status, None)


def test_a_class_without_expansion_is_named_and_nothing_changes() -> None:
    fixed = {"standard": {"metadata": {"name": "standard"}, "allowVolumeExpansion": False}}
    for classes in (fixed, {}):
        decided = plan("20Gi", "10Gi", claim("10Gi", "10Gi"), classes=classes)
        assert decided.actions == ()
        assert decided.problem is not None and decided.problem.reason == "StorageExpansionUnsupported"
        assert "spec.storage.size" in decided.problem.message and "StorageClass standard" in decided.problem.message
        assert "allowVolumeExpansion: true" in decided.problem.message
        assert decided.status["phase"] == StoragePhase.EXPANSION_UNSUPPORTED


def test_quantities_compare_by_value_not_text() -> None:
    assert plan("1024Mi", "1Gi", claim("1Gi", "1Gi")).actions == ()
    assert plan("1.5Gi", "1Gi", claim("1Gi", "1Gi")).actions


def test_while_resizing_the_instance_stays_ready_on_the_pods_it_counts() -> None:
    instance = make_instance({"storage": {"size": "20Gi"}})
    done = {"initialization": {"completed": True}, "phase": "Ready", "image": "img", "version": 17}
    resizing = Observation(None, None, resizing="re-creating StatefulSet db1", ready_pods=1, storage={"size": "20Gi"})
    status = compute_status(instance, done, resizing, "t1")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
    assert (status["phase"], ready["status"], progressing["reason"]) == ("Ready", "True", "Resizing")
    assert (status["readyInstances"], status["image"], status["storage"]) == (1, "img", {"size": "20Gi"})


def test_a_claim_being_provisioned_is_not_a_growth() -> None:
    unbound = claim("10Gi", "10Gi")
    del unbound["status"]
    decided = plan("10Gi", "10Gi", unbound)
    assert (decided.actions, decided.progress, decided.status) == ((), None, {"size": "10Gi", "capacity": None})


def test_the_storage_status_is_kept_while_it_is_not_looked_at() -> None:
    """During a major upgrade the volumes are not planned: the status must not change (no write)."""
    instance = make_instance()
    previous = compute_status(instance, {}, Observation(None, None, storage={"size": "10Gi"}), "t1")
    assert compute_status(instance, previous, Observation(None, None), "t2") == previous

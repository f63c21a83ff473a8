"""Projections (observe/projections.py): every reader answers the same on an object and on its projection.

A `World` is one instance and everything the reconcile may observe about it, built by the
operator's own builders and dressed as the API server hands objects back (uid, resourceVersion,
managedFields, status, defaulted Pod specs, unrelated annotations). Each of its cases runs one pure
reader through a *view*: the full objects, or their projections. The answers must be equal, for
hand-picked specs and for every spec the model's schema allows (hypothesis, tests/model_strategies).

The converse is checked too: removing any kept path from a projection changes some answer, so a
projection keeps nothing that is not read (`test_every_kept_path_is_read`).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sampledb_operator.api import v1
from sampledb_operator.jobs import upgrade as upgrade_jobs
from sampledb_operator.jobs.backup import backup_job
from sampledb_operator.jobs.config_check import config_check_job
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.jobs.migrate import migration_job
from sampledb_operator.observe import projections
from sampledb_operator.observe.projections import KEPT, PROJECTIONS, Each, Keep, project, projector
from sampledb_operator.reconcile import (
    children,
    config_check,
    deletion,
    failover,
    migrations,
    recovery,
    schedule,
    storage,
    upgrade,
)
from sampledb_operator.reconcile.backup import BackupReconciler, outcome_status
from sampledb_operator.reconcile.restore import plan_restore
from sampledb_operator.reconcile.status import (
    Observation,
    compute_status,
    init_completed,
    job_failure_message,
    job_state,
    pod_ready,
    ready_replicas,
    rolled_out,
    termination_summary,
)
from sampledb_operator.resources import secret
from sampledb_operator.resources.instance import SWITCHOVER_ANNOTATION, Instance
from sampledb_operator.settings import Settings
from tests.model_strategies import json_values, model_objects

Obj = dict[str, Any]
View = Callable[[str, Obj | None], Obj | None]
Case = tuple[str, Callable[[View], Any]]

SETTINGS = Settings()
NS = "team-a"
FINALIZER = "sampledb.io/finalizer"
T0, T1 = "2026-11-20T10:00:00Z", "2026-11-20T10:05:00Z"
NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
STAMP = "2026-11-22T12:00:00Z"
STS = next(c for c in children.CHILDREN if c.kind == "StatefulSet")
KINDS = {
    "SampleDB",
    "SampleDBBackup",
    "StatefulSet",
    "Job",
    "Pod",
    "Service",
    "PodDisruptionBudget",
    "CronJob",
    "ConfigMap",
    "Secret",
    "PersistentVolumeClaim",
    "StorageClass",
    "Node",
}
# A spec that calls for every child and every flow (restore, migrations, a user's Secret, growth).
FULL_SPEC: Obj = {
    "postgres": {"version": 17, "parameters": {"work_mem": "8MB", "max_connections": "200"}},
    "storage": {"size": "20Gi", "storageClassName": "standard"},
    "backup": {
        "schedule": "0 3 * * *",
        "retention": 5,
        "verify": True,
        "objectStore": {
            "endpoint": "https://s3.example.com",
            "bucket": "pg-archive",
            "credentials": {"secretName": "s3-keys"},
            "retention": {"fullBackups": 2},
            "schedule": "0 2 * * *",
        },
    },
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    "database": {"name": "shop", "owner": "shop_owner"},
    "credentials": {"secretName": "shop-credentials"},
    "migrations": {"configMap": "schema"},
    "restore": {"backup": "nightly"},
    "deletionPolicy": "Retain",
}
# What the "outdated" children were built from: differs from FULL_SPEC and from the default spec.
OTHER_SPEC: Obj = {
    "postgres": {"version": 16, "parameters": {"work_mem": "4MB"}},
    "storage": {"size": "10Gi"},
    "backup": {"schedule": "@daily"},
}
LOREM = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20


# -- views ---------------------------------------------------------------------------------------


def as_is(kind: str, obj: Obj | None) -> Obj | None:
    return obj  # readers do not change what they read (test_readers_change_nothing_they_read)


def projected(kind: str, obj: Obj | None) -> Obj | None:
    return None if obj is None else project(kind, obj)


# -- objects as the API server returns them ---------------------------------------------------------


def uid_of(kind: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}/{name}"))


def fields_v1(value: Any) -> Any:
    """managedFields' FieldsV1 shape of a value (f:key per key, one entry per list item)."""
    if isinstance(value, dict):
        return {f"f:{k}": fields_v1(v) for k, v in value.items()}
    if isinstance(value, list):
        return {f"i:{i}": fields_v1(item) for i, item in enumerate(value)}
    return {}


def served(
    manifest: Obj,
    *,
    status: Obj | None = None,
    generation: int | None = 1,
    created: str = T0,
    noise: bool = True,
    applied: bool = False,
    namespaced: bool = True,
) -> Obj:
    """`manifest` as a GET returns it: identity, managedFields, status; `noise`: a large unrelated
    annotation; `applied`: created with `kubectl apply` (the last-applied annotation repeats it)."""
    obj = copy.deepcopy(manifest)
    meta = obj.setdefault("metadata", {})
    kind, name = obj["kind"], meta["name"]
    if namespaced:
        meta.setdefault("namespace", NS)
    meta.update(
        uid=uid_of(kind, name), resourceVersion=str(100000 + len(json.dumps(manifest))), creationTimestamp=created
    )
    if generation is not None:
        meta["generation"] = generation
    annotations = dict(meta.get("annotations") or {})
    if applied:
        annotations["kubectl.kubernetes.io/last-applied-configuration"] = json.dumps(manifest, sort_keys=True)
    if noise:
        annotations["example.com/notes"] = LOREM
        annotations["example.com/owner-team"] = "payments"
    if annotations:
        meta["annotations"] = annotations
    written = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "status")}
    written["metadata"] = {k: v for k, v in meta.items() if k in ("labels", "annotations", "ownerReferences")}
    managed = [
        {
            "manager": "kubectl-client-side-apply" if applied else "sampledb-operator",
            "operation": "Update",
            "apiVersion": obj.get("apiVersion"),
            "time": created,
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(written),
        }
    ]
    if status is not None:
        obj["status"] = status
        managed.append(
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "apiVersion": obj.get("apiVersion"),
                "time": T1,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1({"status": status}),
                "subresource": "status",
            }
        )
    meta["managedFields"] = managed
    return obj


def defaulted_pod_spec(spec: Obj) -> Obj:
    """A Pod spec with what the API server defaults in it."""
    spec = copy.deepcopy(spec)
    spec.setdefault("restartPolicy", "Always")
    spec.update(dnsPolicy="ClusterFirst", schedulerName="default-scheduler", terminationGracePeriodSeconds=30)
    spec.setdefault("securityContext", {})
    for container in spec.get("containers", []):
        container.update(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File")
        container.setdefault("imagePullPolicy", "IfNotPresent")
    return spec


def sampledb_obj(spec: Any, status: Obj | None = None, *, deleting: bool = False, noise: bool = True) -> Obj:
    manifest = {
        "apiVersion": "sampledb.io/v1",
        "kind": "SampleDB",
        "metadata": {"name": "db1", "namespace": NS, "labels": {"team": "payments"}},
        "spec": spec,
    }
    obj = served(manifest, status=status, generation=3, noise=noise, applied=True)
    obj["metadata"]["finalizers"] = [FINALIZER]
    if deleting:
        obj["metadata"]["deletionTimestamp"] = T1
    return obj


def statefulset_obj(
    inst: Instance,
    *,
    ready: int = 1,
    rolled: bool = True,
    lag: bool = False,
    replicas: int | None = None,
    pods: int | None = None,
    noise: bool = True,
) -> Obj:
    created = children.plan_child(STS, inst, None)
    assert created is not None
    body = copy.deepcopy(created.body)
    spec = body["spec"]
    if replicas is not None:
        spec["replicas"] = replicas
    spec.update(revisionHistoryLimit=10, minReadySeconds=0)
    spec["template"]["spec"] = defaulted_pod_spec(spec["template"]["spec"])
    for template in spec["volumeClaimTemplates"]:
        template.update(apiVersion="v1", kind="PersistentVolumeClaim", status={"phase": "Pending"})
        template["spec"]["volumeMode"] = "Filesystem"
    revision = f"{inst.name}-5d8f7c9b4"
    status = {
        "observedGeneration": 3 if lag else 4,
        "replicas": spec["replicas"] if pods is None else pods,
        "currentReplicas": 1,
        "updatedReplicas": 1,
        "availableReplicas": ready,
        "currentRevision": revision,
        "updateRevision": revision if rolled else f"{inst.name}-7f6b9d8c5",
        "collisionCount": 0,
    }
    if ready:
        status["readyReplicas"] = ready  # the API server omits a zero
    return served(body, status=status, generation=4, noise=noise)


def child_obj(child: children.ChildSpec, inst: Instance, *, noise: bool = True) -> Obj | None:
    """A child as the operator created it for `inst`, with what the cluster adds; None when not called for."""
    if child.kind == "StatefulSet":
        return statefulset_obj(inst, noise=noise)
    created = children.plan_child(child, inst, None)
    if created is None:
        return None
    body = copy.deepcopy(created.body)
    status: Obj | None = None
    if child.kind == "Service":
        if body["spec"].get("clusterIP") != "None":
            body["spec"].update(clusterIP="10.96.14.7", clusterIPs=["10.96.14.7"])
        body["spec"].update(
            ipFamilies=["IPv4"], ipFamilyPolicy="SingleStack", sessionAffinity="None", internalTrafficPolicy="Cluster"
        )
        status = {"loadBalancer": {}}
    elif child.kind == "PodDisruptionBudget":
        status = {
            "currentHealthy": 1,
            "desiredHealthy": 1,
            "disruptionsAllowed": 0,
            "expectedPods": 1,
            "observedGeneration": 1,
            "conditions": [
                {
                    "type": "DisruptionAllowed",
                    "status": "False",
                    "reason": "InsufficientPods",
                    "message": "",
                    "lastTransitionTime": T1,
                    "observedGeneration": 1,
                }
            ],
        }
    elif child.kind == "CronJob":
        body["spec"].update(suspend=False)
        template = body["spec"]["jobTemplate"]["spec"]["template"]
        template["spec"] = defaulted_pod_spec(template["spec"])
        status = {"lastScheduleTime": T0, "lastSuccessfulTime": T1}
    elif child.kind == "PersistentVolumeClaim":
        return claim_obj(body, capacity=body["spec"]["resources"]["requests"]["storage"], noise=noise)
    return served(body, status=status, generation=1, noise=noise)


def claim_obj(
    manifest: Obj, *, capacity: str | None, conditions: tuple[str, ...] = (), noise: bool = True, applied: bool = False
) -> Obj:
    body = copy.deepcopy(manifest)
    body["metadata"].setdefault("annotations", {}).update(
        {
            "pv.kubernetes.io/bind-completed": "yes",
            "pv.kubernetes.io/bound-by-controller": "yes",
            "volume.beta.kubernetes.io/storage-provisioner": "rancher.io/local-path",
            "volume.kubernetes.io/selected-node": "node-1",
            "volume.kubernetes.io/storage-provisioner": "rancher.io/local-path",
        }
    )
    body["spec"].update(volumeMode="Filesystem", volumeName=f"pvc-{uid_of('PV', body['metadata']['name'])}")
    status: Obj = {"phase": "Pending"}
    if capacity is not None:
        status = {
            "phase": "Bound",
            "accessModes": ["ReadWriteOnce"],
            "capacity": {"storage": capacity},
            "allocatedResources": {"storage": body["spec"]["resources"]["requests"]["storage"]},
            "conditions": [
                {"type": "Resizing", "status": "False", "lastProbeTime": None, "lastTransitionTime": T0},
                *(
                    {"type": c, "status": "True", "lastProbeTime": None, "lastTransitionTime": T1, "message": "waiting"}
                    for c in conditions
                ),
            ],
        }
    obj = served(body, status=status, generation=None, noise=noise, applied=applied)
    obj["metadata"]["finalizers"] = ["kubernetes.io/pvc-protection"]
    return obj


def data_claim(
    inst: Instance,
    request: str,
    capacity: str | None,
    *,
    conditions: tuple[str, ...] = (),
    cls: str | None = "standard",
) -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": request}}}
    if cls:
        spec["storageClassName"] = cls
    manifest = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": inst.data_pvcs[0], "labels": inst.labels("data")},
        "spec": spec,
    }
    return claim_obj(manifest, capacity=capacity, conditions=conditions)


def node_obj(name: str, *, cordoned: bool | None) -> Obj:
    """A Node as the API server serves it: labels, taints, addresses, capacity, images (none of it kept)."""
    manifest: Obj = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
        "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "example", "effect": "PreferNoSchedule"}]},
        "status": {
            "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
            "capacity": {"cpu": "2", "memory": "24Gi", "pods": "110"},
            "conditions": [condition("Ready", "KubeletReady", "kubelet is posting ready status")],
            "images": [{"names": [f"localhost/pg:{i}"], "sizeBytes": 10**8} for i in range(20)],
            "nodeInfo": {"kubeletVersion": "v1.34.1", "containerRuntimeVersion": "containerd://1.6"},
        },
    }
    if cordoned is not None:
        manifest["spec"]["unschedulable"] = cordoned
    return served(manifest, generation=None, namespaced=False)


def storage_class_obj(name: str = "standard", *, expandable: bool | None = True) -> Obj:
    manifest: Obj = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path",
        "parameters": {"nodePath": "/opt/local-path-provisioner"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }
    if expandable is not None:
        manifest["allowVolumeExpansion"] = expandable
    return served(manifest, generation=None, namespaced=False)


def condition(type_: str, reason: str, message: str, status: str = "True") -> Obj:
    return {
        "type": type_,
        "status": status,
        "lastProbeTime": T1,
        "lastTransitionTime": T1,
        "reason": reason,
        "message": message,
    }


BACKOFF = "Job has reached the specified backoff limit"
JOB_STATUSES: dict[str, Obj | None] = {
    "new": None,
    "running": {"active": 1, "ready": 0, "terminating": 0, "startTime": T0, "uncountedTerminatedPods": {}},
    "suspended": {"conditions": [condition("Suspended", "JobSuspended", "Job suspended")]},
    "complete": {
        "conditions": [
            condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
            condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
        ],
        "startTime": T0,
        "completionTime": T1,
        "succeeded": 1,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    },
    "failed": {
        "conditions": [
            condition("FailureTarget", "BackoffLimitExceeded", BACKOFF),
            condition("Failed", "BackoffLimitExceeded", BACKOFF),
        ],
        "startTime": T0,
        "failed": 3,
        "ready": 0,
        "terminating": 0,
        "uncountedTerminatedPods": {},
    },
    "deadline": {
        "conditions": [condition("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")],
        "startTime": T0,
        "failed": 1,
    },
    "odd": {
        "conditions": [
            condition("Failed", "Nope", "not failed", status="False"),
            {"type": "Complete", "status": "True"},
        ]
    },
}


def job_obj(manifest: Obj, state: str, *, noise: bool = True) -> Obj:
    body = copy.deepcopy(manifest)
    name = body["metadata"]["name"]
    controller = uid_of("Job", name)
    spec = body["spec"]
    spec.update(
        completionMode="NonIndexed",
        completions=1,
        parallelism=1,
        suspend=state == "suspended",
        podReplacementPolicy="TerminatingOrFailed",
        manualSelector=False,
        selector={"matchLabels": {"batch.kubernetes.io/controller-uid": controller}},
    )
    template = spec["template"]
    template["metadata"]["labels"].update(
        {"batch.kubernetes.io/controller-uid": controller, "batch.kubernetes.io/job-name": name, "job-name": name}
    )
    template["spec"] = defaulted_pod_spec(template["spec"])
    return served(body, status=JOB_STATUSES[state] or {}, generation=1, noise=noise)


def job_pod(job: Obj, suffix: str, *, created: str, message: str | None, exit_code: int = 1, noise: bool = True) -> Obj:
    """A Pod the Job controller made for `job`, its container terminated (with `message` in its log)."""
    name = job["metadata"]["name"]
    template = job["spec"]["template"]
    container = template["spec"]["containers"][0]
    terminated: Obj = {
        "exitCode": exit_code,
        "reason": "Error" if exit_code else "Completed",
        "startedAt": created,
        "finishedAt": created,
        "containerID": f"containerd://{uid_of('c', name + suffix).replace('-', '')}",
    }
    if message is not None:
        terminated["message"] = message
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{name}-{suffix}",
            # The Job controller adds job-name (and controller-uid) to the template's labels.
            "labels": {**template["metadata"]["labels"], "job-name": name, "controller-uid": job["metadata"]["uid"]},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                }
            ],
            "finalizers": ["batch.kubernetes.io/job-tracking"],
        },
        "spec": {**defaulted_pod_spec(template["spec"]), "nodeName": "node-1", "priority": 0},
    }
    status = {
        "phase": "Failed" if exit_code else "Succeeded",
        "conditions": [
            condition("PodReadyToStartContainers", "", "", status="False"),
            condition("Initialized", "PodCompleted", ""),
            condition("Ready", "PodCompleted", "", status="False"),
            condition("ContainersReady", "PodCompleted", "", status="False"),
            condition("PodScheduled", "", ""),
        ],
        "containerStatuses": [
            {
                "name": container["name"],
                "image": container["image"],
                "imageID": f"{container['image']}@sha256:{'ab' * 32}",
                "containerID": terminated["containerID"],
                "ready": False,
                "restartCount": 0,
                "started": False,
                "lastState": {},
                "state": {"terminated": terminated},
            }
        ],
        "hostIP": "10.0.0.5",
        "hostIPs": [{"ip": "10.0.0.5"}],
        "podIP": "10.244.0.17",
        "podIPs": [{"ip": "10.244.0.17"}],
        "qosClass": "Burstable",
        "startTime": created,
    }
    return served(manifest, status=status, generation=None, created=created, noise=noise)


def database_pod(inst: Instance, *, ready: bool, noise: bool = True) -> Obj:
    """The StatefulSet's Pod: its template, the controller's labels, a running server (restarted once)."""
    sts = statefulset_obj(inst, noise=False)
    template = sts["spec"]["template"]
    name = f"{inst.statefulset}-0"
    labels = {
        **template["metadata"]["labels"],
        "controller-revision-hash": sts["status"]["currentRevision"],
        "statefulset.kubernetes.io/pod-name": name,
        "apps.kubernetes.io/pod-index": "0",
    }
    spec = {**template["spec"], "hostname": name, "subdomain": inst.headless_service, "nodeName": "node-1"}
    spec["volumes"] = [{"name": "data", "persistentVolumeClaim": {"claimName": inst.data_pvcs[0]}}, *spec["volumes"]]
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": dict(template["metadata"]["annotations"]),
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": inst.statefulset,
                    "uid": sts["metadata"]["uid"],
                }
            ],
        },
        "spec": spec,
    }
    flag = "True" if ready else "False"
    status = {
        "phase": "Running",
        "conditions": [
            condition("PodReadyToStartContainers", "", ""),
            condition("Initialized", "", ""),
            condition("Ready", "" if ready else "ContainersNotReady", "", status=flag),
            condition("ContainersReady", "" if ready else "ContainersNotReady", "", status=flag),
            condition("PodScheduled", "", ""),
        ],
        "containerStatuses": [
            {
                "name": "postgres",
                "image": inst.image,
                "imageID": f"{inst.image}@sha256:{'cd' * 32}",
                "containerID": "containerd://0123",
                "ready": ready,
                "restartCount": 1,
                "started": True,
                # A previous run's termination message: termination_summary reads `state` only.
                "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "message": '{"error": "old"}'}},
                "state": {"running": {"startedAt": T1}},
            }
        ],
        "hostIP": "10.0.0.5",
        "podIP": "10.244.0.9",
        "qosClass": "Burstable",
        "startTime": T0,
    }
    return served(manifest, status=status, generation=None, noise=noise)


def secret_obj(name: str, values: Mapping[str, str], *, labels: Mapping[str, str] | None = None) -> Obj:
    """A Secret as a GET returns it (data base64), created with `kubectl apply` (the annotation repeats it)."""
    manifest = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, **({"labels": dict(labels)} if labels else {})},
        "type": "Opaque",
        "stringData": dict(values),
    }
    obj = served(manifest, generation=None, applied=True)
    del obj["stringData"]
    obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in values.items()}
    return obj


def generated_secret(inst: Instance) -> Obj:
    manifest = secret.credentials_secret(inst, password="app-pass-0123456789", superuser_password="su-pass-9876543210")
    return secret_obj(manifest["metadata"]["name"], manifest["stringData"], labels=manifest["metadata"]["labels"])


def config_map_obj(name: str, data: Mapping[str, str] | None, *, binary: Mapping[str, str] | None = None) -> Obj:
    manifest: Obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    if data is not None:
        manifest["data"] = dict(data)
    if binary is not None:
        manifest["binaryData"] = dict(binary)
    return served(manifest, generation=None, applied=True)


SQL = {
    "001_init.sql": "CREATE TABLE customers (id bigint PRIMARY KEY, name text NOT NULL);\n" * 3,
    "002_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY, customer bigint REFERENCES customers);\n",
}


def backup_record(name: str, instance: str, status: Obj | None, *, physical: bool = False) -> Obj:
    spec = {"instance": instance, "method": "Physical"} if physical else {"instance": instance, "verify": True}
    manifest = {"apiVersion": "sampledb.io/v1", "kind": "SampleDBBackup", "metadata": {"name": name}, "spec": spec}
    return served(manifest, status=status, generation=1, applied=True)


BACKUP_STATUSES: dict[str, Obj | None] = {
    "new": None,
    "pending": {"phase": "Pending"},
    "running": {"phase": "Running", "job": "nightly", "startTime": T0},
    "failed": {"phase": "Failed", "job": "nightly", "message": "backup nightly does not restore; it was removed"},
    "succeeded": {
        "phase": "Succeeded",
        "job": "nightly",
        "startTime": T0,
        "completionTime": T1,
        "location": "src-backups:/backups/src/20261120T100000Z-nightly.dump",
        "bytes": 4096,
        "sha256": "ab" * 32,
        "verified": True,
    },
    "no-location": {"phase": "Succeeded", "job": "nightly", "message": "no summary"},
}
# A base backup: not started, started on the primary (Pod 0, or a Pod gone since), finished.
PHYSICAL_STATUSES: dict[str, Obj | None] = {
    "new": None,
    "running": {"phase": "Running", "pod": "db1-0", "startTime": T0, "message": "P00 INFO: backup start"},
    "running-elsewhere": {"phase": "Running", "pod": "db1-1", "startTime": T0},
    "succeeded": {"phase": "Succeeded", "pod": "db1-0", "backupLabel": "20261120-100000F"},
}
# What `backup-status` answers, by state.
BACKUP_ANSWERS = {
    "running": "running\nP00 INFO: backup start archive = 000000010000000000000003",
    "succeeded": "succeeded\n"
    + json.dumps(
        [
            {
                "name": "db",
                "backup": [
                    {
                        "annotation": {"sampledb.io/backup": "uid-nightly"},
                        "label": "20261120-100000F",
                        "lsn": {"start": "0/3000028", "stop": "0/3000100"},
                        "archive": {"start": "000000010000000000000003", "stop": "000000010000000000000003"},
                        "timestamp": {"start": 1795000000, "stop": 1795000042},
                        "info": {"size": 23000000, "repository": {"size": 3000000}},
                    }
                ],
            }
        ]
    ),
    "failed": "failed\nERROR: [082]: WAL segment 000000010000000000000003 was not archived before the 60000ms timeout",
}


# -- a fake API for the one driver whose reads are tested whole ------------------------------------


class RecordingApi:
    """What `BackupReconciler` reads, served through a view; what it writes, recorded."""

    def __init__(self, view: View, objects: Mapping[tuple[str, str], Obj], pods: list[Obj], answer: str = "") -> None:
        self.view = view
        self.objects = dict(objects)
        self.pods = pods
        self.answer = answer  # of every exec
        self.calls: list[Any] = []

    def exec(self, namespace: str, pod: str, container: str, command: list[str], *, timeout: float) -> str:
        self.calls.append(("exec", pod, container, command))
        return self.answer

    def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        return self.view(kind, self.objects.get((kind, name)))

    def job_pods(self, namespace: str, instance: str, job: str) -> list[Obj]:
        viewed = [self.view("Pod", p) for p in self.pods]
        return [p for p in viewed if p and (p["metadata"].get("labels") or {}).get("job-name") == job]

    def remember(self, kind: str, obj: Obj) -> None:
        self.calls.append(("remember", kind))

    def create(self, manifest: Obj) -> Obj:
        self.calls.append(("create", manifest))
        key = (manifest["kind"], manifest["metadata"]["name"])
        self.objects.setdefault(key, served(manifest, status={}, noise=False))
        return manifest

    def merge_patch(self, kind: str, namespace: str, name: str, patch: Obj, *, status: bool = False) -> Obj:
        self.calls.append(("patch", kind, namespace, name, patch, status))
        return patch

    def emit_event(self, regarding: Obj, *, type_: str, reason: str, note: str, action: str) -> None:
        meta = regarding["metadata"]
        about = (regarding.get("apiVersion"), regarding.get("kind"), meta["name"], meta["namespace"], meta.get("uid"))
        self.calls.append(("event", about, type_, reason, note, action))


# -- worlds and their cases ----------------------------------------------------------------------------


def instance_from(spec: Any) -> Instance:
    return Instance.from_object(sampledb_obj(spec), SETTINGS)


def with_spec(inst: Instance, **changes: Any) -> Instance:
    spec = inst.spec.model_dump(mode="json", exclude_none=True)
    return instance_from({**spec, **changes})


def outcome(case: Callable[[View], Any], view: View) -> Any:
    try:
        return ("ok", case(view))
    except Exception as err:  # the same failure on both sides is the same answer
        return ("raised", type(err).__name__, str(err))


class World:
    """One instance (from `spec`) and the objects observed about it in many states."""

    def __init__(self, spec: Obj, *, noise: bool = True) -> None:
        self.spec = spec
        self.noise = noise
        self.inst = instance_from(spec)
        self.other = instance_from(OTHER_SPEC if spec != OTHER_SPEC else {})
        self.cases: list[Case] = []
        self._pods: dict[str, dict[str, list[Obj]]] = {}
        self._labels: set[str] = set()
        for add in (
            self._sampledb,
            self._children,
            self._secrets,
            self._jobs_and_pods,
            self._statefulsets,
            self._storage,
            self._upgrade,
            self._config_check,
            self._migrations,
            self._restore,
            self._backups,
            self._recovery,
            self._schedule,
        ):
            add()

    def add(self, label: str, case: Callable[[View], Any]) -> None:
        assert label not in self._labels, f"two cases named {label}"
        self._labels.add(label)
        self.cases.append((label, case))

    def outcomes(self, view: View) -> dict[str, Any]:
        return {label: outcome(case, view) for label, case in self.cases}

    # -- the SampleDB ------------------------------------------------------------------------------
    def _sampledb(self) -> None:
        statuses: list[Obj | None] = [None, {"phase": "Ready", "initialization": {"completed": True}, "version": 17}]
        variants = [sampledb_obj(self.spec, s) for s in statuses]
        variants.append(sampledb_obj(self.spec, deleting=True))
        variants.append(sampledb_obj({**self.spec, "unknown": 1}))  # refused by the model: the same error
        for i, obj in enumerate(variants):
            self.add(f"parse[{i}]", lambda v, o=obj: Instance.from_object(v("SampleDB", o), SETTINGS))
            self.add(f"policy[{i}]", lambda v, o=obj: deletion.readable_policy(v("SampleDB", o).get("spec")))
            # What the driver reads of the metadata (instance.py reconcile/_ensure_finalizer, decide.py _finalizer).
            self.add(
                f"sampledb-metadata[{i}]",
                lambda v, o=obj: {
                    k: v("SampleDB", o)["metadata"].get(k)
                    for k in ("name", "namespace", "deletionTimestamp", "finalizers", "resourceVersion", "generation")
                },
            )
        annotated = sampledb_obj(self.spec)
        annotated["metadata"]["annotations"] = {SWITCHOVER_ANNOTATION: "db-1", "kubectl.kubernetes.io/x": "{}"}
        for i, obj in enumerate([*variants, annotated]):
            self.add(f"switchover[{i}]", lambda v, o=obj: failover.switchover_request(v("SampleDB", o)))

    # -- children ------------------------------------------------------------------------------------
    def _children(self) -> None:
        for i, child in enumerate(children.CHILDREN):
            current = child_obj(child, self.inst, noise=self.noise)
            outdated = child_obj(child, self.other, noise=self.noise)
            observed: list[Obj | None] = [None, current, outdated]
            if current is not None:
                by_hand = copy.deepcopy(current)
                by_hand["metadata"].pop("annotations", None)  # made by someone else: no fingerprint
                observed.append(by_hand)
                for path in child.drift_paths:
                    drifted = copy.deepcopy(current)
                    drifted[path[0]][path[1]] = 0  # e.g. `kubectl scale --replicas=0`
                    observed.append(drifted)
            for j, obj in enumerate(observed):
                self.add(
                    f"plan_child[{i}:{child.kind}][{j}]",
                    lambda v, c=child, o=obj: children.plan_child(c, self.inst, v(c.kind, o)),
                )

    def _secrets(self) -> None:
        users = with_spec(self.inst, credentials={"secretName": "mine"})
        full = {
            "username": "app",
            "password": "s3cr3t-value",
            "superuser-password": "root-value",
            "uri": "postgres://x",
        }
        observed = [
            None,
            generated_secret(self.inst),
            secret_obj("mine", full),
            secret_obj("mine", {"username": "app"}),
            secret_obj("mine", {}),
        ]
        for j, obj in enumerate(observed):
            for k, inst in enumerate((self.inst, users)):
                self.add(f"plan_secret[{j}][{k}]", lambda v, i=inst, o=obj: children.plan_secret(i, v("Secret", o)))
                self.add(
                    f"user_secret_problem[{j}][{k}]",
                    lambda v, i=inst, o=obj: children.user_secret_problem(i, v("Secret", o)),
                )

    # -- Jobs and their Pods -----------------------------------------------------------------------
    @functools.cached_property
    def job_builders(self) -> dict[str, Obj]:
        inst = self.inst
        return {
            "init": init_job(inst),
            "backup": backup_job(inst, name="nightly", label="nightly", verify=True),
            "check": config_check_job(inst, config_check.job_name(inst)),
            "migrate": migration_job(inst, name=f"{inst.name}-migrate-x", config_map="schema"),
            "upgrade": upgrade_jobs.upgrade_job(
                inst,
                upgrade_jobs.Step.BACKUP,
                from_version=15,
                to_version=17,
                attempt=1,
                images=(inst.image, inst.image),
            ),
        }

    def pods_of(self, job: Obj) -> dict[str, list[Obj]]:
        name = job["metadata"]["name"]
        if name not in self._pods:
            self._pods[name] = self._make_pods(job)
        return self._pods[name]

    def _make_pods(self, job: Obj) -> dict[str, list[Obj]]:
        older = job_pod(job, "a1", created=T0, message=json.dumps({"error": "first try failed"}), noise=self.noise)
        newer = job_pod(
            job,
            "b2",
            created=T1,
            message=json.dumps({"file": "db1/x.dump", "bytes": 12, "lastApplied": "002", "error": "late"}),
            exit_code=0,
            noise=self.noise,
        )
        garbled = job_pod(job, "c3", created=T1, message="Error: not JSON", noise=self.noise)
        silent = job_pod(job, "d4", created=T1, message=None, noise=self.noise)
        listed = json.dumps(["a", "list"])
        a_list = job_pod(job, "e5", created=T1, message=listed, noise=self.noise)
        return {
            "none": [],
            "older-first": [older, newer],
            "newer-first": [newer, older],
            "unreadable": [garbled, silent, a_list],
            "one-error": [older],
            "database": [database_pod(self.inst, ready=True, noise=self.noise)],
        }

    def _jobs_and_pods(self) -> None:
        summaries = [{}, {"file": "db1/x.dump", "bytes": 4096, "sha256": "ab" * 32, "verified": True}, {"error": "no"}]
        for name, manifest in self.job_builders.items():
            for state in JOB_STATUSES:
                obj = job_obj(manifest, state, noise=self.noise)
                label = f"{name}:{state}"
                self.add(f"job_state[{label}]", lambda v, o=obj: job_state(v("Job", o)))
                self.add(f"job_failure_message[{label}]", lambda v, o=obj: job_failure_message(v("Job", o) or {}))
                for k, previous in enumerate(({}, {"initialization": {"completed": True}})):
                    self.add(
                        f"init_completed[{label}][{k}]", lambda v, o=obj, p=previous: init_completed(p, v("Job", o))
                    )
                for k, summary in enumerate(summaries):
                    self.add(
                        f"outcome_status[{label}][{k}]",
                        lambda v, o=obj, s=summary: outcome_status(self.inst, v("Job", o) or {}, s),
                    )
        job = job_obj(self.job_builders["backup"], "failed", noise=self.noise)
        for name, pods in self.pods_of(job).items():
            self.add(f"termination_summary[{name}]", lambda v, ps=pods: termination_summary([v("Pod", p) for p in ps]))
            for k, pod in enumerate(pods):
                self.add(f"pod_ready[{name}][{k}]", lambda v, p=pod: pod_ready(v("Pod", p)))
        for ready in (True, False):
            pod = database_pod(self.inst, ready=ready, noise=self.noise)
            self.add(f"pod_ready[database:{ready}]", lambda v, p=pod: pod_ready(v("Pod", p)))
        # A drain of the primary's node (failover.cordoned): the Pod's node, and whether it is cordoned.
        pod = database_pod(self.inst, ready=True, noise=self.noise)
        for cordoned in (True, False, None):
            nodes = {"node-1": node_obj("node-1", cordoned=cordoned), "node-2": node_obj("node-2", cordoned=True)}
            self.add(
                f"cordoned[{cordoned}]",
                lambda v, p=pod, ns=nodes: failover.cordoned([v("Pod", p)], lambda n: v("Node", ns.get(n))),
            )

    # -- the StatefulSet and the status ------------------------------------------------------------
    @functools.cached_property
    def statefulsets(self) -> dict[str, Obj | None]:
        inst, noise = self.inst, self.noise
        return {
            "none": None,
            "ready": statefulset_obj(inst, noise=noise),
            "not-ready": statefulset_obj(inst, ready=0, noise=noise),
            "rolling": statefulset_obj(inst, rolled=False, noise=noise),
            "lagging": statefulset_obj(inst, lag=True, noise=noise),
            "other": statefulset_obj(self.other, noise=noise),
            "scaled-down": statefulset_obj(inst, replicas=0, pods=0, ready=0, noise=noise),
            "scaling-down": statefulset_obj(inst, replicas=0, pods=1, ready=0, noise=noise),
            "scaled-lagging": statefulset_obj(inst, replicas=0, pods=0, ready=0, lag=True, noise=noise),
        }

    def _statefulsets(self) -> None:
        init = self.job_builders["init"]
        jobs: dict[str, Obj | None] = {"absent": None}
        jobs.update(
            {state: job_obj(init, state, noise=self.noise) for state in ("new", "running", "complete", "failed")}
        )
        previous = [
            sampledb_obj(self.spec, None, noise=self.noise),
            sampledb_obj(
                self.spec,
                {"phase": "Ready", "initialization": {"completed": True}, "version": 16, "image": "example/pg:16"},
                noise=self.noise,
            ),
        ]
        for name, sts in self.statefulsets.items():
            self.add(f"ready_replicas[{name}]", lambda v, s=sts: ready_replicas(v("StatefulSet", s)))
            if sts is not None:
                self.add(f"rolled_out[{name}]", lambda v, s=sts: rolled_out(v("StatefulSet", s)))
                self.add(f"running_hash[{name}]", lambda v, s=sts: config_check.running_hash(v("StatefulSet", s)))
            for state, job in jobs.items():
                for k, sdb in enumerate(previous):
                    self.add(
                        f"compute_status[{name}][{state}][{k}]",
                        lambda v, s=sts, j=job, d=sdb: compute_status(
                            self.inst,
                            v("SampleDB", d).get("status") or {},
                            Observation(v("StatefulSet", s), v("Job", j), ready_pods=None),
                            STAMP,
                        ),
                    )

    # -- volume growth -------------------------------------------------------------------------------
    def _storage(self) -> None:
        grown = with_spec(self.inst, storage={"size": "20Gi", "storageClassName": "standard"})
        for n, inst in enumerate((self.inst, grown)):
            size = inst.spec.storage.size
            stses = {
                "small-template": statefulset_obj(with_spec(inst, storage={"size": "1Gi"}), noise=self.noise),
                "template": statefulset_obj(inst, noise=self.noise),
            }
            claims: dict[str, Obj | None] = {
                "none": None,
                "small": data_claim(inst, "1Gi", "1Gi"),
                "asked": data_claim(inst, size, "1Gi"),
                "fs-pending": data_claim(inst, size, "1Gi", conditions=(storage.FILE_SYSTEM_PENDING,)),
                "unbound": data_claim(inst, size, None),
                "done": data_claim(inst, size, size),
                "no-class": data_claim(inst, "1Gi", "1Gi", cls=None),
            }
            classes = {
                "expandable": storage_class_obj(),
                "fixed": storage_class_obj(expandable=False),
                "unset": storage_class_obj(expandable=None),
            }
            for sname, sts in stses.items():
                for cname, claim in claims.items():
                    for kname, cls in classes.items():
                        for previous in ({}, {"phase": "Expanding"}):
                            self.add(
                                f"plan_storage[{n}][{sname}][{cname}][{kname}][{previous}]",
                                lambda v, i=inst, s=sts, c=claim, k=cls, p=previous: storage.plan_storage(
                                    i,
                                    v("StatefulSet", s),
                                    {n: v("PersistentVolumeClaim", c) for n in i.data_pvcs},
                                    {"standard": v("StorageClass", k)},
                                    p,
                                    hold_statefulset=False,
                                ),
                            )

    # -- the major upgrade ---------------------------------------------------------------------------
    def _upgrade(self) -> None:
        inst = self.inst
        to = inst.spec.postgres.version
        old_image = "example.com/postgres:old"
        running_old = {"version": to - 1, "image": old_image, "initialization": {"completed": True}}
        base = {
            "fromVersion": to - 1,
            "toVersion": to,
            "fromImage": old_image,
            "toImage": inst.desired_image,
            "attempt": 1,
            "backup": f"{inst.backup_pvc}:/backups/{inst.name}/upgrade.sql",
            "startTime": T0,
        }
        statuses = [running_old, {**running_old, "version": to}]
        for phase in upgrade.Phase:
            statuses.append({**running_old, "upgrade": {**base, "phase": phase.value, "phaseTime": STAMP}})
        statuses.append({**running_old, "upgrade": {**base, "phase": "Switching", "phaseTime": T0}})  # timed out
        statuses.append({**running_old, "upgrade": {**base, "phase": "Failed", "failedJob": "x", "message": "m"}})
        step = upgrade_jobs.upgrade_job(
            inst,
            upgrade_jobs.Step.BACKUP,
            from_version=to - 1,
            to_version=to,
            attempt=1,
            images=(old_image, inst.image),
        )
        jobs: dict[str, Obj | None] = {"absent": None}
        jobs.update({state: job_obj(step, state, noise=self.noise) for state in ("running", "complete", "failed")})
        failed = jobs["failed"]
        assert failed is not None
        pods = self.pods_of(failed)["older-first"]
        new_image = statefulset_obj(with_spec(inst), noise=self.noise)
        old = with_spec(inst, postgres={**inst.spec.postgres.model_dump(exclude_none=True), "image": old_image})
        stses = {**self.statefulsets, "old-image": statefulset_obj(old, noise=self.noise), "new-image": new_image}
        for k, status in enumerate(statuses):
            sdb = sampledb_obj(self.spec, status, noise=self.noise)
            self.add(f"upgrade.concerned[{k}]", lambda v, d=sdb: upgrade.concerned(inst, v("SampleDB", d)["status"]))
            self.add(
                f"upgrade.watched_job[{k}]", lambda v, d=sdb: upgrade.watched_job(inst, v("SampleDB", d)["status"])
            )
            for jname, job in jobs.items():
                for sname, sts in stses.items():
                    self.add(
                        f"plan_upgrade[{k}][{jname}][{sname}]",
                        lambda v, d=sdb, j=job, s=sts: upgrade.plan_upgrade(
                            inst,
                            upgrade.Observed(
                                v("SampleDB", d)["status"],
                                v("StatefulSet", s),
                                v("Job", j),
                                termination_summary([v("Pod", p) for p in pods]),
                                now=NOW,
                            ),
                        ),
                    )

    # -- configuration check, migrations, restore, backups -----------------------------------------------
    def _config_check(self) -> None:
        name = config_check.job_name(self.inst)
        check = config_check_job(self.inst, name)
        jobs: dict[str, Obj | None] = {"absent": None}
        jobs.update({state: job_obj(check, state, noise=self.noise) for state in ("running", "complete", "failed")})
        failed = jobs["failed"]
        assert failed is not None
        for pname, pods in self.pods_of(failed).items():
            for jname, job in jobs.items():
                for sname, sts in self.statefulsets.items():
                    self.add(
                        f"plan_config_check[{pname}][{jname}][{sname}]",
                        lambda v, s=sts, j=job, ps=pods: config_check.plan_config_check(
                            self.inst, v("StatefulSet", s), v("Job", j), [v("Pod", p) for p in ps]
                        ),
                    )

    def _migrations(self) -> None:
        inst = self.inst if self.inst.spec.migrations else with_spec(self.inst, migrations={"configMap": "schema"})
        assert inst.spec.migrations is not None
        source = inst.spec.migrations.configMap
        maps: dict[str, Obj | None] = {
            "absent": None,
            "sql": config_map_obj(source, SQL),
            "edited": config_map_obj(source, {**SQL, "003_more.sql": "ALTER TABLE orders ADD note text;"}),
            "empty": config_map_obj(source, {}),
            "no-data": config_map_obj(source, None, binary={"x.bin": "AAEC"}),
            "own": child_obj(children.CHILDREN[0], inst, noise=self.noise),  # the instance's own ConfigMap
        }
        migrate = migration_job(inst, name=f"{inst.name}-migrate-x", config_map=source)
        jobs: dict[str, Obj | None] = {"absent": None}
        jobs.update({state: job_obj(migrate, state, noise=self.noise) for state in ("running", "complete", "failed")})
        failed = jobs["failed"]
        assert failed is not None
        pods = self.pods_of(failed)
        for mname, cm in maps.items():
            if cm is not None:
                self.add(f"migrations.job_name[{mname}]", lambda v, c=cm: migrations.job_name(inst, v("ConfigMap", c)))
            for jname, job in jobs.items():
                for pname in ("none", "newer-first", "one-error"):
                    for ready in (True, False):
                        self.add(
                            f"plan_migrations[{mname}][{jname}][{pname}][{ready}]",
                            lambda v, c=cm, j=job, ps=pods[pname], r=ready: migrations.plan_migrations(
                                inst, v("ConfigMap", c), v("Job", j), [v("Pod", p) for p in ps], database_ready=r
                            ),
                        )

    def _restore(self) -> None:
        by_backup = with_spec(self.inst, restore={"backup": "nightly"})
        by_claim = with_spec(self.inst, restore={"persistentVolumeClaim": "old", "file": "src/a.dump"})
        claim_manifest = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "old"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}},
        }
        claims: list[Obj | None] = [None, claim_obj(claim_manifest, capacity="5Gi", applied=True)]
        for sname, status in BACKUP_STATUSES.items():
            record = backup_record("nightly", "src", status)
            for k, claim in enumerate(claims):
                for m, inst in enumerate((by_backup, by_claim)):
                    self.add(
                        f"plan_restore[{sname}][{k}][{m}]",
                        lambda v, i=inst, b=record, c=claim: plan_restore(
                            i, v("SampleDBBackup", b), v("PersistentVolumeClaim", c)
                        ),
                    )
        if self.inst.spec.restore is not None:
            self.add("plan_restore[spec]", lambda v: plan_restore(self.inst, None, None))

    def _backups(self) -> None:
        """BackupReconciler whole, through a fake API: its pure part (outcome_status) and what it reads."""
        sdb = sampledb_obj(self.spec, noise=self.noise)
        invalid = sampledb_obj({**self.spec, "postgres": {"version": 3}}, noise=self.noise)
        for sname, status in BACKUP_STATUSES.items():
            record = backup_record("nightly", "db1", status)
            self.add(
                f"owned_job[{sname}]",
                lambda v, b=record: BackupReconciler._owned_job(v("SampleDBBackup", b), self.inst, verify=True),
            )
        job = self.job_builders["backup"]
        for jstate in ("absent", "running", "complete", "failed"):
            for dname, db in (("db", sdb), ("missing", None), ("invalid", invalid)):
                for sname in ("new", "running", "succeeded"):
                    objects: dict[tuple[str, str], Obj] = {
                        ("SampleDBBackup", "nightly"): backup_record("nightly", "db1", BACKUP_STATUSES[sname])
                    }
                    if db is not None:
                        objects[("SampleDB", "db1")] = db
                    if jstate != "absent":
                        objects[("Job", "nightly")] = job_obj(job, jstate, noise=self.noise)
                    # The backup Job is named after its SampleDBBackup; its Pods carry that job-name.
                    named = {**job, "metadata": {**job["metadata"], "name": "nightly"}}
                    pods = self.pods_of(job_obj(named, "failed", noise=False))["older-first"]
                    self.add(
                        f"BackupReconciler[{jstate}][{dname}][{sname}]",
                        lambda v, o=objects, ps=pods: backup_run(v, o, ps),
                    )
        for pname, pod in (
            ("ready", database_pod(self.inst, ready=True, noise=self.noise)),
            ("unready", database_pod(self.inst, ready=False, noise=self.noise)),
            ("absent", None),
        ):
            for sname, status in PHYSICAL_STATUSES.items():
                for aname, answer in BACKUP_ANSWERS.items():
                    record = backup_record("nightly", "db1", status, physical=True)
                    record["metadata"]["uid"] = "uid-nightly"
                    objects = {("SampleDBBackup", "nightly"): record, ("SampleDB", "db1"): sdb}
                    if pod is not None:
                        objects[("Pod", pod["metadata"]["name"])] = pod
                    self.add(
                        f"BackupReconciler[physical][{pname}][{sname}][{aname}]",
                        lambda v, o=objects, a=answer: backup_run(v, o, [], a),
                    )

    def _recovery(self) -> None:
        """spec.recovery: a physical backup as its source in every state, a recovering primary's failure."""
        targets = ({"time": T0}, {"lsn": "0/3000000"}, {"time": "2030-01-01T00:00:00Z"})
        insts = [with_spec(self.inst, restore=None, recovery={"backup": "base", "target": t}) for t in targets]
        stored = {
            "phase": "Succeeded",
            "backupLabel": "20261120-100000F",
            "stopLSN": "0/3000100",
            "completionTime": T1,
            "location": "s3://pg-archive/sampledb/team-a/src/uid-src/backup/db/20261120-100000F",
        }
        statuses = {**PHYSICAL_STATUSES, "stored": stored, **BACKUP_STATUSES}
        for sname, status in statuses.items():
            for physical in (True, False):
                record = backup_record("base", "src", status, physical=physical)
                for m, inst in enumerate(insts):
                    self.add(
                        f"plan_recovery[{sname}][{physical}][{m}]",
                        lambda v, i=inst, b=record: recovery.plan_recovery(i, v("SampleDBBackup", b)),
                    )
        message = {"message": f"{recovery.FAILURE_PREFIX}PostgreSQL stopped recovering: FATAL: ...", "exitCode": 1}
        for state in ("state", "lastState"):
            for running in (True, False):
                pod = database_pod(insts[0], ready=False, noise=self.noise)
                pod["status"]["containerStatuses"][0][state] = {"terminated": message}
                if state == "lastState" and not running:
                    pod["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
                self.add(
                    f"recovery.failure[{state}][{running}]",
                    lambda v, p=pod: recovery.failure(insts[0], [v("Pod", p)]),
                )

    def _schedule(self) -> None:
        """Scheduled base backups: which records to create (none while one runs) and which to prune."""

        def scheduled(when: str, status: Obj | None) -> Obj:
            record = backup_record(f"db1-{when}", "db1", status, physical=True)
            record["metadata"]["labels"] = {"sampledb.io/instance": "db1", schedule.SCHEDULED_LABEL: when}
            return record

        kept = [
            scheduled("202611200200", {"phase": "Succeeded", "backupLabel": "20261120-020000F"}),
            scheduled("202611210200", {"phase": "Succeeded", "backupLabel": "20261121-020000F"}),
            scheduled("202611220100", {"phase": "Failed", "message": "pgBackRest: ERROR: [039]"}),
        ]
        newest = {"phase": "Succeeded", "backupLabel": "20261122-000000F", "oldestBackupLabel": "20261121-020000F"}
        cases = {
            "prune": [*kept, scheduled("202611220000", newest)],
            "due": kept,
            "busy": [*kept, backup_record("mine", "db1", PHYSICAL_STATUSES["running"], physical=True)],
        }
        for name, records in cases.items():
            self.add(
                f"plan_schedule[{name}]",
                lambda v, bs=records: schedule.plan_schedule(
                    self.inst, [v("SampleDBBackup", b) for b in bs], ready=True, now=NOW
                ),
            )


def backup_run(view: View, objects: Mapping[tuple[str, str], Obj], pods: list[Obj], answer: str = "") -> Any:
    api = RecordingApi(view, objects, pods, answer)
    reconciler = BackupReconciler(api, api, SETTINGS, clock=lambda: STAMP)  # type: ignore[arg-type]
    return reconciler.reconcile(NS, "nightly"), api.calls


def assert_same_answers(world: World) -> None:
    full, kept = world.outcomes(as_is), world.outcomes(projected)
    differing = [label for label in full if full[label] != kept[label]]
    assert not differing, f"{len(differing)} readers answer differently on projections, e.g. {differing[:5]}"


# -- the same answers ------------------------------------------------------------------------------------

SPECS = {"default": {}, "full": FULL_SPEC, "other": OTHER_SPEC}


@pytest.fixture(scope="module")
def worlds() -> dict[str, World]:
    return {name: World(spec) for name, spec in SPECS.items()}


def test_every_kind_the_reconcile_reads_has_a_projection() -> None:
    assert set(PROJECTIONS) == set(KEPT) == KINDS
    assert {c.kind for c in children.CHILDREN} <= KINDS
    with pytest.raises(ValueError, match="no projection for kind 'Deployment'"):
        project("Deployment", {"metadata": {"name": "x"}})


def test_readers_change_nothing_they_read(worlds: dict[str, World]) -> None:
    """Else a full object changed by one reader would feed the next one, and projections taken later."""
    before: dict[int, str] = {}
    objects: list[Obj] = []

    def watching(kind: str, obj: Obj | None) -> Obj | None:
        if obj is not None and id(obj) not in before:
            before[id(obj)] = json.dumps(obj, sort_keys=True)
            objects.append(obj)
        return obj

    worlds["full"].outcomes(watching)
    assert len(objects) > 100
    assert all(json.dumps(obj, sort_keys=True) == before[id(obj)] for obj in objects)


@pytest.mark.parametrize("name", SPECS)
def test_readers_answer_the_same_on_projections(worlds: dict[str, World], name: str) -> None:
    world = worlds[name]
    assert len(world.cases) > 1000
    assert_same_answers(world)


PROPERTY = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@PROPERTY
@given(model_objects(v1.SampleDBSpec))
def test_readers_answer_the_same_for_any_spec(spec: Obj) -> None:
    """Every spec field the model has (restore, migrations, a user's Secret, schedules, quantities...)."""
    assert_same_answers(World(spec, noise=False))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(model_objects(v1.SampleDBSpec), json_values()), st.one_of(st.none(), json_values()))
def test_instance_parses_the_same_from_a_projection(spec: Any, status: Any) -> None:
    """Instance.from_object (and readable_policy) on a projected SampleDB, whatever the spec holds."""
    obj = sampledb_obj(spec, status)
    kept = project("SampleDB", obj)
    assert outcome(lambda v: Instance.from_object(v("SampleDB", obj), SETTINGS), lambda k, o: o) == outcome(
        lambda v: Instance.from_object(v("SampleDB", kept), SETTINGS), lambda k, o: o
    )
    assert deletion.readable_policy(obj.get("spec")) == deletion.readable_policy(kept.get("spec"))
    assert kept.get("status") == obj.get("status")


def test_migration_job_names_are_unchanged(worlds: dict[str, World]) -> None:
    """The digest moved into content_digest: the Job names of existing ConfigMaps stay byte-identical."""
    inst = worlds["full"].inst
    cm = {"metadata": {"name": "schema"}, "data": {"001_a.sql": "CREATE TABLE a (x int);"}}
    content = json.dumps(sorted(cm["data"].items()), separators=(",", ":"))
    assert migrations.job_name(inst, cm) == f"db1-migrate-{hashlib.sha256(content.encode()).hexdigest()[:10]}"
    kept = project("ConfigMap", config_map_obj("schema", cm["data"]))
    assert "data" not in kept
    assert migrations.job_name(inst, kept) == migrations.job_name(inst, cm)
    assert migrations.content_digest(kept) == migrations.content_digest(cm) == kept[migrations.CONTENT_DIGEST_KEY]


# -- what a projection is ----------------------------------------------------------------------------------


def every_object(world: World) -> Iterator[tuple[str, Obj]]:
    """Every full object a world's cases observe, by kind (found by running them through a recording view)."""
    seen: dict[int, tuple[str, Obj]] = {}

    def record(kind: str, obj: Obj | None) -> Obj | None:
        if obj is not None:
            seen.setdefault(id(obj), (kind, obj))
        return obj

    world.outcomes(record)
    yield from seen.values()


def is_within(kept: Any, full: Any, path: str = "") -> None:
    """`kept` holds only paths of `full`, with its values (list items in order, some left out)."""
    if isinstance(kept, dict):
        assert isinstance(full, dict), path
        for key, value in kept.items():
            if key == migrations.CONTENT_DIGEST_KEY and path == "":
                continue  # the projection's own key
            assert key in full, f"{path}.{key}"
            if path == ".data" and value == "":
                continue  # a Secret's value, left out
            is_within(value, full[key], f"{path}.{key}")
    elif isinstance(kept, list):
        assert isinstance(full, list), path
        rest = iter(full)
        for item in kept:
            assert any(_fits(item, candidate) for candidate in rest), f"{path}[]"
    else:
        assert kept == full, path


def _fits(kept: Any, full: Any) -> bool:
    try:
        is_within(kept, full)
    except AssertionError:
        return False
    return True


def test_a_projection_keeps_the_objects_paths_and_is_idempotent(worlds: dict[str, World]) -> None:
    kinds = set()
    for kind, obj in every_object(worlds["full"]):
        kinds.add(kind)
        kept = project(kind, obj)
        is_within(kept, obj)
        assert project(kind, kept) == kept
        assert "managedFields" not in kept["metadata"]
        # Only our own annotations (a fingerprint, a Pod name): others may hold a Secret's values.
        assert set(kept["metadata"].get("annotations") or {}) <= {children.HASH_ANNOTATION, SWITCHOVER_ANNOTATION}
    assert kinds == KINDS


def test_reading_only_what_is_kept_projects_the_same(worlds: dict[str, World]) -> None:
    """The caches decode events and listings with `reader`: its projection must be the full decode's."""
    read_paths = 0
    for kind, obj in every_object(worlds["full"]):
        raw = json.dumps(obj).encode()
        read = projections.READERS[kind](raw)
        assert project(kind, read) == project(kind, json.loads(raw)), kind
        assert read["metadata"].get("resourceVersion") == obj["metadata"].get("resourceVersion")
        assert "managedFields" not in read["metadata"]  # skipped, never decoded
        read_paths += read != obj
    assert read_paths  # objects hold what no projection keeps, and the reader left it out
    # Values of another shape than the projection expects are decoded whole, as `keep` reads them.
    odd = {"metadata": {"name": "x", "labels": None, "annotations": "x"}, "spec": None, "status": {"conditions": "x"}}
    for kind in KEPT:
        assert project(kind, projections.READERS[kind](json.dumps(odd).encode())) == project(kind, odd), kind


def test_a_projection_shares_nothing_with_the_object() -> None:
    obj = sampledb_obj(FULL_SPEC, {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]})
    kept = project("SampleDB", obj)
    kept["spec"]["postgres"]["parameters"]["work_mem"] = "1MB"
    kept["status"]["conditions"][0]["status"] = "False"
    kept["metadata"]["labels"]["x"] = "y"
    assert obj["spec"]["postgres"]["parameters"]["work_mem"] == "8MB"
    assert obj["status"]["conditions"][0]["status"] == "True"
    assert "x" not in obj["metadata"]["labels"]


def test_a_secret_projection_holds_no_value(worlds: dict[str, World]) -> None:
    values = {
        "username": "app",
        "password": "pa55-w0rd-xyz",
        "superuser-password": "r00t-pa55",
        "uri": "postgres://a:b@h",
    }
    for obj in (secret_obj("mine", values), generated_secret(worlds["full"].inst)):
        kept = project("Secret", obj)
        assert set(kept["data"]) == set(obj["data"])
        assert set(kept["data"].values()) == {""}
        assert set(kept) == {"apiVersion", "kind", "metadata", "data"}
        text = json.dumps(kept)
        secrets = [base64.b64decode(obj["data"][k]).decode() for k in ("password", "superuser-password", "uri")]
        for value in [*obj["data"].values(), *secrets]:
            assert value not in text  # neither in data nor in the last-applied annotation
    assert project("Secret", {"metadata": {"name": "s"}}) == {"metadata": {"name": "s"}}


def test_a_user_config_map_keeps_a_digest_not_its_files() -> None:
    obj = config_map_obj("schema", SQL)
    kept = project("ConfigMap", obj)
    assert "data" not in kept
    assert "CREATE TABLE" not in json.dumps(kept)
    assert len(kept[migrations.CONTENT_DIGEST_KEY]) == 64


def test_projection_module_is_pure() -> None:
    code = (
        "import sys; import sampledb_operator.observe.projections; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'kopf', 'kubernetes', 'urllib3', 'threading'}"
        " and m != 'threading'))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(projections.__file__).parents[2])}
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "[]"
    assert projections.FILE_SYSTEM_PENDING == storage.FILE_SYSTEM_PENDING


# -- sizes ---------------------------------------------------------------------------------------------------


def typical_objects() -> dict[str, tuple[str, Obj]]:
    """One instance's objects as they typically are: converged, initialised, no unrelated annotations."""
    inst = instance_from(
        {"backup": {"schedule": "@daily"}, "postgres": {"parameters": {"work_mem": "8MB"}}, "instances": 2}
    )
    found: dict[str, tuple[str, Obj]] = {
        "SampleDB": ("SampleDB", sampledb_obj(inst.spec.model_dump(mode="json", exclude_none=True), noise=False)),
        "SampleDBBackup": ("SampleDBBackup", backup_record("nightly", "db1", BACKUP_STATUSES["succeeded"])),
        "Secret": ("Secret", generated_secret(inst)),
        "Pod (database)": ("Pod", database_pod(inst, ready=True, noise=False)),
        "StorageClass": ("StorageClass", storage_class_obj()),
        "PersistentVolumeClaim (data)": ("PersistentVolumeClaim", data_claim(inst, "10Gi", "10Gi")),
    }
    found["SampleDB"][1]["status"] = compute_status(inst, {}, Observation(None, None), STAMP)
    for child in children.CHILDREN:
        obj = child_obj(child, inst, noise=False)
        assert obj is not None
        found.setdefault(child.kind, (child.kind, obj))
    init = job_obj(init_job(inst), "complete", noise=False)
    found["Job (init, complete)"] = ("Job", init)
    found["Pod (of a Job)"] = (
        "Pod",
        job_pod(init, "x1", created=T1, message='{"file": "a"}', exit_code=0, noise=False),
    )
    return found


def sizes() -> dict[str, tuple[int, int]]:
    """Bytes of compact JSON, full and projected, per object of a typical instance."""
    compact = {"separators": (",", ":")}
    return {
        name: (len(json.dumps(obj, **compact)), len(json.dumps(project(kind, obj), **compact)))  # type: ignore[arg-type]
        for name, (kind, obj) in typical_objects().items()
    }


def test_projections_are_much_smaller() -> None:
    measured = sizes()
    for name in ("StatefulSet", "Pod (database)", "Pod (of a Job)", "Job (init, complete)"):
        full, kept = measured[name]
        assert kept < full / 5, (name, full, kept)
    total_full = sum(f for f, _ in measured.values())
    total_kept = sum(k for _, k in measured.values())
    assert total_kept < total_full / 4, (total_full, total_kept)


# -- nothing unread is kept ----------------------------------------------------------------------------------


def leaves(what: Keep, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(what, Mapping):
        for key, sub in what.items():
            yield from leaves(sub, (*prefix, key))
    elif isinstance(what, Each):
        yield from leaves(what.keep, (*prefix, "[]"))
    else:
        yield prefix


def without(what: Keep, path: tuple[str, ...]) -> Keep:
    if isinstance(what, Each):
        return dataclasses.replace(what, keep=without(what.keep, path[1:]))
    assert isinstance(what, Mapping)
    head, rest = path[0], path[1:]
    if not rest:
        return {k: v for k, v in what.items() if k != head}
    return {k: (without(v, rest) if k == head else v) for k, v in what.items()}


IDENTITY = {("apiVersion",), ("kind",), *((("metadata", key)) for key in projections.IDENTITY)}
# Identity paths that a tested reader reads (the others serve the caches: resourceVersion, indexes).
IDENTITY_READ = {
    ("SampleDB", ("metadata", "uid")),
    ("SampleDB", ("metadata", "generation")),
    ("SampleDB", ("metadata", "deletionTimestamp")),
    ("SampleDB", ("metadata", "finalizers")),
    ("SampleDB", ("metadata", "resourceVersion")),
    ("SampleDBBackup", ("apiVersion",)),
    ("SampleDBBackup", ("kind",)),
    ("SampleDBBackup", ("metadata", "uid")),
    ("StatefulSet", ("metadata", "generation")),
    ("Job", ("metadata", "name")),
    ("Pod", ("metadata", "labels")),
    ("PersistentVolumeClaim", ("metadata", "name")),
}
KEPT_PATHS = sorted(
    {(kind, path) for kind, what in KEPT.items() for path in leaves(what) if path not in IDENTITY} | IDENTITY_READ
)


@pytest.fixture(scope="module")
def reference(worlds: dict[str, World]) -> dict[str, dict[str, Any]]:
    return {name: world.outcomes(as_is) for name, world in worlds.items()}


@pytest.mark.parametrize(("kind", "path"), KEPT_PATHS, ids=[f"{k}:{'.'.join(p)}" for k, p in KEPT_PATHS])
def test_every_kept_path_is_read(
    worlds: dict[str, World],
    reference: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    path: tuple[str, ...],
) -> None:
    """With `path` left out of the projection of `kind`, some reader answers differently."""
    monkeypatch.setitem(PROJECTIONS, kind, projector(without(KEPT[kind], path)))  # type: ignore[arg-type]
    for name in ("full", "default"):
        answers = worlds[name].outcomes(projected)
        if any(answers[label] != expected for label, expected in reference[name].items()):
            return
    pytest.fail(f"no reader needs {kind} {'.'.join(path)}: drop it from observe/projections.py")

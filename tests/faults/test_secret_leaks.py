"""Passwords never leave their Secrets: not in logs, Events, request bodies, nor other objects.

On the real node, so that the Jobs really run and write their logs: instances with a generated
Secret and with a user-provided one are created (the init Jobs), backed up with verification (the
backup Jobs), restored into a new instance (a restore Job), reconfigured and read through the
conversion webhook. Then every password (and its base64 form, as stored in the Secret's data) is
searched for in the operator's log (DEBUG level), the webhook replicas' logs, every Event of the
namespace, every log of the cluster (the control plane's, containerd's and the kubelet's, and
every container's log on the node: the servers and each Job's Pods), the API server's audit log
and every non-Secret object of the namespace (a password in a Job's or StatefulSet's manifest is
readable by anyone allowed to read those).

The namespace has a fixed name that the local cluster's audit policy (`AUDIT_POLICY`) logs at
Request level: every request body sent for it (Jobs, StatefulSets, status patches, Events) is in
the audit log, Secrets' bodies excepted (they hold the passwords by design). Each search is also
shown to find what is there: the Jobs' logs hold their own progress lines, the audit log holds a
Job's body (naming the Secret's keys) and a canary value written in a ConfigMap, and the Secret's
own URI holds the password the search looks for.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampledb_localcluster import LocalCluster
from sampledb_localcluster.components import AUDIT_POLICY
from sampledb_operator.k8s.api import KubeApi, Resource
from tests.faults.checks import backup_object, not_ready, sampledb
from tests.faults.conftest import KillableOperator, node_namespace
from tests.integration.conftest import wait_for
from tests.webhook_process import WebhookReplicas

AUDITED_NAMESPACE = "sampledb-audit-bodies"  # logged with request bodies by AUDIT_POLICY
V1BETA1 = Resource("/apis/sampledb.io/v1beta1", "sampledbs")
CORE_EVENTS = Resource("/api/v1", "events")
# Everything in the namespace but Secrets, by kind as KubeApi names them.
OTHER_KINDS = [
    "SampleDB",
    "SampleDBBackup",
    "ConfigMap",
    "Service",
    "StatefulSet",
    "Job",
    "CronJob",
    "Pod",
    "PersistentVolumeClaim",
    "PodDisruptionBudget",
]
PASSWORD_KEYS = ("password", "superuser-password")
# What each Job's Pod logs when it did its work: its log is then really among the haystacks.
JOB_LOG_LINES = {
    "gen-init": "sampledb: application database and role are in place",
    "own-init": "sampledb: application database and role are in place",
    "gen-backup": "sampledb: backup written",
    "own-backup": "sampledb: backup written",
    "copy-init": "sampledb: restoring",
}


def _needles(admin: KubeApi, namespace: str, secret_names: list[str]) -> dict[str, str]:
    """Each secret value to look for -> where it comes from (never the value itself, in messages)."""
    needles = {}
    for name in secret_names:
        secret = admin.get("Secret", namespace, name)
        assert secret is not None, f"Secret {name} is missing"
        for key in PASSWORD_KEYS:
            encoded = secret["data"][key]
            password = base64.b64decode(encoded).decode()
            assert len(password) >= 12, f"{name}.{key} is too short to search for reliably"
            needles[password] = f"{name}.{key}"
            needles[encoded] = f"{name}.{key} (base64)"
    return needles


def _backup_succeeded(admin: KubeApi, namespace: str, name: str) -> bool:
    return ((admin.get("SampleDBBackup", namespace, name) or {}).get("status") or {}).get("phase") == "Succeeded"


def _leaks(haystacks: dict[str, str], needles: dict[str, str]) -> list[str]:
    return [
        f"{what} in {where}" for where, text in haystacks.items() for needle, what in needles.items() if needle in text
    ]


def _job_pod_logs(log_dir: Path, namespace: str) -> dict[str, str]:
    """Each Job's container log on the node (`<namespace>_<pod>_<uid>/<container>/<n>.log`), by Job name."""
    found: dict[str, str] = {}
    for folder in sorted((log_dir / "pods").glob(f"{namespace}_*")):
        pod = folder.name.split("_")[1]
        job = pod.rsplit("-", 1)[0]  # the Job controller's Pods: <job>-<5 random characters>
        if job in JOB_LOG_LINES:
            found[job] = found.get(job, "") + "".join(f.read_text(errors="replace") for f in folder.rglob("*.log"))
    return found


def _request_bodies(audit_log: Path, namespace: str) -> dict[tuple[str, str, str], list[dict[str, object]]]:
    """The audit events of `namespace`, by (verb, resource, name), in order."""
    events: dict[tuple[str, str, str], list[dict[str, object]]] = {}
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if ref.get("namespace") == namespace and event.get("stage") == "ResponseComplete":
            events.setdefault((event["verb"], ref.get("resource", ""), ref.get("name", "")), []).append(event)
    return events


@pytest.fixture
def audited(node_admin: KubeApi, node_operator: KillableOperator) -> Iterator[str]:
    """The namespace whose request bodies the audit policy logs; released and deleted afterwards."""
    assert f'namespaces: ["{AUDITED_NAMESPACE}"]' in AUDIT_POLICY, "the audit policy no longer logs its bodies"
    with node_namespace(node_admin, node_operator, AUDITED_NAMESPACE) as name:
        yield name


@pytest.mark.timeout(900)
def test_passwords_never_reach_logs_events_request_bodies_or_other_objects(
    node_admin: KubeApi,
    audited: str,
    node_operator: KillableOperator,
    node_cluster: LocalCluster,
    node_webhook: WebhookReplicas,
) -> None:
    admin, namespace = node_admin, audited
    own = {
        "username": "owner",
        "password": "own-" + secrets.token_urlsafe(24),
        "superuser-password": "own-su-" + secrets.token_urlsafe(24),
    }
    admin.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "own-credentials", "namespace": namespace},
            "stringData": own,
        }
    )
    canary = "canary-" + secrets.token_urlsafe(24)  # written in a request body: the audit search must find it
    admin.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "canary", "namespace": namespace},
                  "data": {"value": canary}})  # fmt: skip
    admin.create(sampledb("gen", namespace, backup={"schedule": "0 3 * * *", "verify": True}))
    admin.create(sampledb("own", namespace, credentials={"secretName": "own-credentials"}))
    wait_for(lambda: not not_ready(admin, namespace, ["gen", "own"]), timeout=300, what="both instances to be Ready")
    for instance in ("gen", "own"):
        admin.create(backup_object(f"{instance}-backup", namespace, instance, verify=True))
    backups = ["gen-backup", "own-backup"]
    wait_for(lambda: all(_backup_succeeded(admin, namespace, b) for b in backups), timeout=180, what="the backups")
    admin.create(sampledb("copy", namespace, restore={"backup": "gen-backup"}))
    # A spec change (a reconcile that rewrites the config and rolls the StatefulSet) and reads
    # through the conversion webhook, so that every component has had the chance to log something.
    admin.merge_patch("SampleDB", namespace, "gen", {"spec": {"postgres": {"parameters": {"work_mem": "8MB"}}}})
    admin.merge_patch("SampleDB", namespace, "own", {"spec": {"postgres": {"parameters": {"bad_param": "1"}}}})
    wait_for(
        lambda: ((admin.get("SampleDB", namespace, "own") or {}).get("status") or {}).get("phase") == "Degraded",
        what="own to report its bad parameter",
    )
    beta = admin._request("GET", V1BETA1.path(namespace))["items"]
    assert sorted(i["metadata"]["name"] for i in beta) == ["copy", "gen", "own"]
    wait_for(lambda: not not_ready(admin, namespace, ["gen", "copy"]), timeout=300, what="gen and copy to be Ready")

    needles = _needles(admin, namespace, ["gen-credentials", "own-credentials", "copy-credentials"])
    assert needles.keys() >= {own["password"], own["superuser-password"]}
    uri = base64.b64decode(admin.get("Secret", namespace, "gen-credentials")["data"]["uri"]).decode()  # type: ignore[index]
    # The search itself works: the connection URI in the Secret does carry the generated password.
    assert _leaks({"the Secret's uri": uri}, needles) == ["gen-credentials.password in the Secret's uri"]

    haystacks: dict[str, str] = {"the operator log": node_operator.log()}
    for log in sorted(node_webhook.directory.glob("webhook-*.log")):
        haystacks[f"webhook log {log.name}"] = log.read_text(errors="replace")
    haystacks["Events (events.k8s.io/v1)"] = json.dumps(admin.list_objects("Event", namespace))
    haystacks["Events (core/v1)"] = json.dumps(admin._request("GET", CORE_EVENTS.path(namespace)))
    log_dir = Path(node_cluster.log_dir)
    for path in sorted(p for p in log_dir.rglob("*") if p.is_file()):
        haystacks[f"cluster log {path.relative_to(log_dir)}"] = path.read_text(errors="replace")
    for kind in OTHER_KINDS:
        haystacks[f"{kind} objects"] = json.dumps(admin.list_objects(kind, namespace))

    # The haystacks are the real ones: the objects, the operator's log, every Job's own log on the
    # node, and the audit log with this namespace's request bodies (not the Secrets').
    assert "own-credentials" in haystacks["SampleDB objects"]
    assert f"{namespace}/gen" in haystacks["the operator log"]
    job_logs = _job_pod_logs(log_dir, namespace)
    unseen = [job for job, line in JOB_LOG_LINES.items() if line not in job_logs.get(job, "")]
    assert unseen == [], f"no log of these Jobs' Pods on the node: {unseen} (found {sorted(job_logs)})"
    assert any(f"{namespace}_gen-0_" in name and "/postgres/" in name for name in haystacks), "no server log"
    audit = haystacks["cluster log audit.log"]
    assert _leaks({"the audit log": audit}, {canary: "the canary"}) == ["the canary in the audit log"]
    events = _request_bodies(log_dir / "audit.log", namespace)
    job_body = json.dumps(events[("create", "jobs", "gen-init")][0].get("requestObject"))
    assert '"superuser-password"' in job_body and '"gen-credentials"' in job_body, "no Job body in the audit log"
    secret_create = events[("create", "secrets", "gen-credentials")][0]
    assert secret_create["level"] == "Metadata" and "requestObject" not in secret_create

    assert _leaks(haystacks, needles) == []

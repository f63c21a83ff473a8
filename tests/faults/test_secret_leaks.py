"""Passwords never leave their Secrets: not in logs, Events, the audit log, nor other objects.

Instances with a generated Secret and with a user-provided one are created, reconciled, backed up
and read through the conversion webhook; then every password (and its base64 form, as stored in
the Secret's data) is searched for in the operator's log (DEBUG level), the webhook replicas'
logs, every Event of the namespace, the API server's audit log and the other components' logs,
and every non-Secret object of the namespace (a password in a Job's or StatefulSet's manifest is
readable by anyone allowed to read those).
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from sampledb_localcluster import LocalCluster
from sampledb_operator.k8s.api import KubeApi, Resource
from tests.faults.checks import backup_object, not_ready, sampledb
from tests.faults.conftest import KillableOperator
from tests.integration.conftest import wait_for
from tests.webhook_process import WebhookReplicas

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


def test_passwords_never_reach_logs_events_or_other_objects(
    admin: KubeApi,
    released: str,
    killable_operator: KillableOperator,
    cluster: LocalCluster,
    conversion_webhook: WebhookReplicas | None,
) -> None:
    assert conversion_webhook is not None
    namespace = released
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
    admin.create(sampledb("gen", namespace, backup={"schedule": "0 3 * * *", "verify": True}))
    admin.create(sampledb("own", namespace, credentials={"secretName": "own-credentials"}))
    wait_for(lambda: not not_ready(admin, namespace, ["gen", "own"]), timeout=90, what="both instances to be Ready")
    for instance in ("gen", "own"):
        admin.create(backup_object(f"{instance}-backup", namespace, instance, verify=True))
    backups = ["gen-backup", "own-backup"]
    wait_for(lambda: all(_backup_succeeded(admin, namespace, b) for b in backups), timeout=90, what="the backups")
    # A spec change (a reconcile that rewrites the config and rolls the StatefulSet) and reads
    # through the conversion webhook, so that every component has had the chance to log something.
    admin.merge_patch("SampleDB", namespace, "gen", {"spec": {"postgres": {"parameters": {"work_mem": "8MB"}}}})
    admin.merge_patch("SampleDB", namespace, "own", {"spec": {"postgres": {"parameters": {"bad_param": "1"}}}})
    wait_for(
        lambda: ((admin.get("SampleDB", namespace, "own") or {}).get("status") or {}).get("phase") == "Degraded",
        what="own to report its bad parameter",
    )
    beta = admin._request("GET", V1BETA1.path(namespace))["items"]
    assert sorted(i["metadata"]["name"] for i in beta) == ["gen", "own"]
    wait_for(lambda: not not_ready(admin, namespace, ["gen"]), timeout=90, what="gen to be Ready again")

    needles = _needles(admin, namespace, ["gen-credentials", "own-credentials"])
    assert needles.keys() >= {own["password"], own["superuser-password"]}
    uri = base64.b64decode(admin.get("Secret", namespace, "gen-credentials")["data"]["uri"]).decode()  # type: ignore[index]
    # The search itself works: the connection URI in the Secret does carry the generated password.
    assert _leaks({"the Secret's uri": uri}, needles) == ["gen-credentials.password in the Secret's uri"]

    haystacks: dict[str, str] = {"the operator log": killable_operator.log()}
    for log in sorted(conversion_webhook.directory.glob("webhook-*.log")):
        haystacks[f"webhook log {log.name}"] = log.read_text(errors="replace")
    haystacks["Events (events.k8s.io/v1)"] = json.dumps(admin.list_objects("Event", namespace))
    haystacks["Events (core/v1)"] = json.dumps(admin._request("GET", CORE_EVENTS.path(namespace)))
    for path in sorted(Path(cluster.log_dir).iterdir()):
        haystacks[f"cluster log {path.name}"] = path.read_text(errors="replace")
    for kind in OTHER_KINDS:
        haystacks[f"{kind} objects"] = json.dumps(admin.list_objects(kind, namespace))
    assert "own-credentials" in haystacks["SampleDB objects"]  # the haystacks are the real ones
    assert f"{namespace}/gen" in haystacks["the operator log"]
    assert "audit.log" in " ".join(haystacks)
    assert _leaks(haystacks, needles) == []

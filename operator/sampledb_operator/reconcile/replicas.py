"""Standbys: which Pod is the primary, the role label of every database Pod, volumes of removed standbys.

Pure, like the rest of `reconcile`. The primary is the Pod `status.currentPrimary` names (Pod 0 for
a new instance); the read-write Service selects it by Pod name, so it needs no label. With
`spec.instances > 1`, every database Pod carries `sampledb.io/role` (`primary` or `replica`): the
read-only Service selects the replicas by it, and `kubectl get pods -L sampledb.io/role` shows
who is who. With one server no Pod is labelled (nothing selects by it: one write fewer per
instance).

Scaling down: the StatefulSet removes the highest ordinals (never the primary: `Instance.replicas`),
and keeps their claims (`whenScaled: Retain`, so that an upgrade scaling to
zero never loses the primary's volume). A removed standby's claim is deleted here once its Pod is
gone and the StatefulSet has counted it out: a standby scaled back later clones afresh instead of
starting from data the primary's WAL may no longer reach. The primary's claim, and while the
primary changes the old one's too, are never deleted here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sampledb_operator.reconcile.children import Action, Verb
from sampledb_operator.resources.instance import ROLE_LABEL, Instance, Role


def role(instance: Instance, pod: str) -> Role:
    """What the Pod named `pod` is."""
    return Role.PRIMARY if pod == instance.primary else Role.REPLICA


def role_labels(instance: Instance, pods: Iterable[dict[str, Any]]) -> list[Action]:
    """A label patch for each database Pod whose role label is missing or wrong (several servers only)."""
    if not instance.has_standbys:
        return []
    actions = []
    for pod in pods:
        meta = pod["metadata"]
        wanted = role(instance, meta["name"])
        if meta.get("deletionTimestamp") or (meta.get("labels") or {}).get(ROLE_LABEL) == wanted:
            continue
        body = {"metadata": {"labels": {ROLE_LABEL: wanted.value}}}
        actions.append(Action(Verb.PATCH, "Pod", meta["name"], f"Role{wanted.value.capitalize()}", body))
    return actions


def data_claims(instance: Instance, claims: Iterable[str]) -> dict[str, int]:
    """The claims among `claims` made from the StatefulSet's volumeClaimTemplate, with their ordinals."""
    pattern = re.compile(rf"^{re.escape(instance.data_volume)}-{re.escape(instance.statefulset)}-(\d+)$")
    return {claim: int(match.group(1)) for claim in claims if (match := pattern.match(claim))}


def removed_standby_claims(
    instance: Instance, sts: dict[str, Any] | None, pods: Iterable[dict[str, Any]], claims: Iterable[str]
) -> list[Action]:
    """Deletes of the data claims of standbys scaled away, once their Pods are gone."""
    if sts is None:
        return []
    running = {p["metadata"]["name"] for p in pods}
    counted = max(int(sts["spec"].get("replicas") or 0), int((sts.get("status") or {}).get("replicas") or 0))
    return [
        Action(Verb.DELETE, "PersistentVolumeClaim", claim, "StandbyRemoved", {})
        for claim, ordinal in sorted(data_claims(instance, claims).items())
        if ordinal >= max(instance.spec.instances, counted)
        and instance.pod(ordinal) not in (instance.primary, instance.serving_primary)
        and instance.pod(ordinal) not in running
    ]

"""Decide, for each child object, whether to create it, update it or leave it alone.

The decision is made by comparing a fingerprint of the desired manifest, stored on the child as
an annotation when it was last written, with the fingerprint of the manifest built now. That makes
the no-op case cheap and certain: an unchanged SampleDB produces zero writes. Each decision carries
a named reason (`ConfigMapMissing`, `StatefulSetOutdated`, ...) that logs and events repeat.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from sampledb_operator.jobs import backup
from sampledb_operator.resources import config, pdb, secret, services, statefulset
from sampledb_operator.resources.instance import Instance

HASH_ANNOTATION = "sampledb.io/desired-hash"


class Verb(StrEnum):
    """What to do with a child."""

    CREATE = "Create"
    PATCH = "Patch"
    DELETE = "Delete"
    # Delete with the orphan cascade (dependents keep running), then create from the body: the
    # only way to change a StatefulSet's immutable fields without restarting its Pods.
    RECREATE = "Recreate"
    # An RFC 6902 patch whose `test` operations make it conditional (finalizers): the body is
    # {"ops": [...]}; a failed test means the observation was stale, and the next pass decides again.
    GUARDED = "GuardedPatch"
    # Run a command in a Pod's container through pods/exec (body: container, command, and the
    # output `expect`ed, if any): promoting a standby. As a probe (`Plan.probes`), its output is
    # read into the snapshot for a second decision.
    EXEC = "Exec"


@dataclass(frozen=True)
class Action:
    """One write to make, and why."""

    verb: Verb
    kind: str
    name: str
    reason: str
    body: dict[str, Any] = field(repr=False)
    # A body that holds generated passwords is built by the executor just before it is sent, so
    # no password is ever part of a plan (its repr, a log, a test's expected value).
    fill: Callable[[Callable[[], str]], dict[str, Any]] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class ChildSpec:
    """How one kind of child is named and built, and which of its fields may be updated in place."""

    kind: str
    name: Callable[[Instance], str]
    # The desired manifest; None when the spec does not call for this child (e.g. no schedule).
    build: Callable[[Instance], dict[str, Any] | None]
    mutable_spec_keys: tuple[str, ...]
    # Fields that are immutable once created (volumeClaimTemplates) stay out of the fingerprint.
    unhashed_spec_keys: tuple[str, ...] = ()
    # Delete the child when it is no longer called for (never for volumes: they hold data).
    prune: bool = False
    # Fields someone else may change by hand, compared with the live object (the fingerprint only
    # says what the operator last wrote): a StatefulSet scaled to 0 is scaled back.
    drift_paths: tuple[tuple[str, ...], ...] = ()
    # Immutable fields whose change re-creates the child (Verb.RECREATE): the StatefulSet's Pod
    # management policy, OrderedReady before failover existed.
    replace_paths: tuple[tuple[str, ...], ...] = ()


def _when_scheduled(build: Callable[[Instance], dict[str, Any] | None]) -> Callable[[Instance], dict[str, Any] | None]:
    return lambda instance: build(instance) if instance.spec.backup.schedule else None


CHILDREN: tuple[ChildSpec, ...] = (
    ChildSpec("ConfigMap", lambda i: i.config_map, config.config_map, mutable_spec_keys=("data",)),
    ChildSpec("Service", lambda i: i.headless_service, services.headless_service, mutable_spec_keys=("spec",)),
    ChildSpec("Service", lambda i: i.client_service, services.client_service, mutable_spec_keys=("spec",)),
    ChildSpec(
        "Service", lambda i: i.read_only_service, services.read_only_service, mutable_spec_keys=("spec",), prune=True
    ),
    ChildSpec("Service", lambda i: i.any_service, services.any_service, mutable_spec_keys=("spec",), prune=True),
    ChildSpec(
        "StatefulSet",
        lambda i: i.statefulset,
        statefulset.statefulset,
        mutable_spec_keys=("spec",),
        unhashed_spec_keys=("volumeClaimTemplates",),
        drift_paths=(("spec", "replicas"),),
        replace_paths=(("spec", "podManagementPolicy"),),
    ),
    ChildSpec("PodDisruptionBudget", lambda i: i.pdb, pdb.pod_disruption_budget, mutable_spec_keys=("spec",)),
    ChildSpec(
        "PodDisruptionBudget", lambda i: i.standbys_pdb, pdb.standbys_budget, mutable_spec_keys=("spec",), prune=True
    ),
    # Scheduled backups: the volume is created on first need and kept; the CronJob follows the schedule.
    ChildSpec(
        "PersistentVolumeClaim", lambda i: i.backup_pvc, _when_scheduled(backup.backup_pvc), mutable_spec_keys=()
    ),
    ChildSpec("CronJob", lambda i: i.backup_cronjob, backup.backup_cronjob, mutable_spec_keys=("spec",), prune=True),
)


def fingerprint(manifest: dict[str, Any], *, unhashed_spec_keys: tuple[str, ...] = ()) -> str:
    """A stable hash of what the operator wants a child to look like."""
    content = {k: v for k, v in manifest.items() if k != "metadata"}
    if "spec" in content and unhashed_spec_keys:
        content["spec"] = {k: v for k, v in content["spec"].items() if k not in unhashed_spec_keys}
    content["labels"] = manifest["metadata"].get("labels", {})
    return hashlib.sha256(canonical_json(content)).hexdigest()[:20]


_SORTED = msgspec.json.Encoder(order="sorted")


def canonical_json(value: Any) -> bytes:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"))`, byte for byte, several times faster.

    Every child's fingerprint is computed on every pass, and a StatefulSet's template holds
    kilobytes of scripts (issue #15: the stdlib encoder was about 5 % of the operator's CPU). The
    digests must not change, or every child in every cluster would be patched once after an
    upgrade of the operator. msgspec writes the same bytes for ASCII text but DEL, integers,
    booleans and null; for non-ASCII text and DEL, which `json` escapes, the stdlib encoder is
    used. Floats, which the two spell differently in exponent form (`1e+16`), are in no manifest:
    the API models have none (test_builders checks the equality on every child of random specs).
    """
    encoded = _SORTED.encode(value)
    if encoded.isascii() and b"\x7f" not in encoded:
        return encoded
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def with_fingerprint(manifest: dict[str, Any], digest: str) -> dict[str, Any]:
    """The manifest with its fingerprint annotation added."""
    meta = manifest["metadata"]
    return {**manifest, "metadata": {**meta, "annotations": {**meta.get("annotations", {}), HASH_ANNOTATION: digest}}}


def _update_body(child: ChildSpec, desired: dict[str, Any], digest: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"labels": desired["metadata"]["labels"], "annotations": {HASH_ANNOTATION: digest}},
    }
    for key in child.mutable_spec_keys:
        value = desired[key]
        if key == "spec" and child.unhashed_spec_keys:
            value = {k: v for k, v in value.items() if k not in child.unhashed_spec_keys}
        if key == "spec" and child.kind == "Service":
            value = {k: v for k, v in value.items() if k != "clusterIP"}  # immutable once allocated
        body[key] = value
    return body


def create(body: dict[str, Any], reason: str) -> Action:
    """Create an object built elsewhere (a Job of an operation), named by its manifest."""
    return Action(Verb.CREATE, body["kind"], body["metadata"]["name"], reason, body)


def plan_child(child: ChildSpec, instance: Instance, observed: dict[str, Any] | None) -> Action | None:
    """The write needed to bring one child to its desired state, or None when it is up to date."""
    desired = child.build(instance)
    name = child.name(instance)
    if desired is None:
        if observed is not None and child.prune:
            return Action(Verb.DELETE, child.kind, name, f"{child.kind}NotNeeded", {})
        return None
    digest = fingerprint(desired, unhashed_spec_keys=child.unhashed_spec_keys)
    if observed is None:
        return Action(Verb.CREATE, child.kind, name, f"{child.kind}Missing", with_fingerprint(desired, digest))
    if any(_at(desired, path) != _at(observed, path) for path in child.replace_paths):
        return Action(Verb.RECREATE, child.kind, name, f"{child.kind}Immutable", with_fingerprint(desired, digest))
    current = (observed["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)
    if current != digest:
        return Action(Verb.PATCH, child.kind, name, f"{child.kind}Outdated", _update_body(child, desired, digest))
    if any(_at(desired, path) != _at(observed, path) for path in child.drift_paths):
        return Action(Verb.PATCH, child.kind, name, f"{child.kind}Drifted", _update_body(child, desired, digest))
    return None


def _at(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None  # type: ignore[assignment]
    return obj


def plan_secret(instance: Instance, observed: dict[str, Any] | None) -> Action | None:
    """Create the generated Secret once; never rewrite it, never touch a user-supplied one."""
    if observed is not None or not instance.generates_secret:
        return None

    def fill(password: Callable[[], str]) -> dict[str, Any]:
        return secret.credentials_secret(instance, password=password(), superuser_password=password())

    return Action(Verb.CREATE, "Secret", instance.credentials_secret, "SecretMissing", {}, fill=fill)


def user_secret_problem(instance: Instance, observed: dict[str, Any] | None) -> str | None:
    """Why a user-supplied Secret cannot be used (missing, or lacking a key), or None."""
    if instance.generates_secret:
        return None
    field_ref = f"spec.credentials.secretName ({instance.credentials_secret})"
    if observed is None:
        return f"{field_ref}: Secret not found; create it or unset the field to have one generated"
    return referenced_secret_problem(field_ref, observed, list(secret.REQUIRED_KEYS))


def referenced_secret_problem(field_ref: str, observed: dict[str, Any] | None, keys: list[str]) -> str | None:
    """Why a Secret a field names cannot be mounted (missing, or lacking a key), or None."""
    if observed is None:
        return f"{field_ref}: Secret not found; create it"
    missing = [k for k in keys if k not in (observed.get("data") or {})]
    return f"{field_ref}: Secret lacks the key(s) {', '.join(missing)}; add them" if missing else None

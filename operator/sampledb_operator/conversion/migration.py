"""Storage-version migration: every stored SampleDB rewritten as `v1`, then only `v1` recorded.

Needed after an upgrade from a release that stored `v1beta1`.

Steps:
1. read the CRD's `status.storedVersions`; if it is already `["v1"]` there is nothing to do;
2. rewrite every SampleDB, page by page, with an empty merge patch: the API server decodes the
   object, re-encodes it in the storage version and writes it back (objects deleted meanwhile are
   skipped; a conflict is retried);
3. set `status.storedVersions` to `["v1"]`, so `v1beta1` can be dropped from the CRD one day.
Idempotent, hence resumable: an interrupted run leaves storedVersions as it was and the next one
(the operator runs it at every start, as the leader, in the background) starts again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sampledb_operator.api import GROUP, PLURAL, STORAGE_VERSION
from sampledb_operator.k8s.api import ApiError, KubeApi

CRD_NAME = f"{PLURAL}.{GROUP}"
_CONFLICT_RETRIES = 5
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationReport:
    """What a run did."""

    stored_before: tuple[str, ...]
    rewritten: int
    skipped: int

    @property
    def needed(self) -> bool:  # noqa: D102
        return self.stored_before != (STORAGE_VERSION,)


def stored_versions(api: KubeApi) -> tuple[str, ...]:
    """The versions objects may still be stored in, as the API server records them."""
    crd = api.get("CustomResourceDefinition", None, CRD_NAME)
    if crd is None:
        raise RuntimeError(f"CRD {CRD_NAME} is not installed")
    return tuple((crd.get("status") or {}).get("storedVersions") or ())


def _rewrite(api: KubeApi, namespace: str, name: str) -> bool:
    """Rewrite one object in the storage version; False when it is gone."""
    for _ in range(_CONFLICT_RETRIES):
        try:
            api.merge_patch("SampleDB", namespace, name, {})
        except ApiError as err:
            if err.not_found:
                return False
            if err.conflict:
                continue
            raise
        return True
    raise RuntimeError(f"SampleDB {namespace}/{name} kept changing; migration will be retried")


def migrate_storage(api: KubeApi) -> MigrationReport:
    """Run the migration (see the module docstring); safe to run any number of times."""
    before = stored_versions(api)
    if before == (STORAGE_VERSION,):
        return MigrationReport(before, 0, 0)
    logger.info("storage migration: stored versions %s; rewriting every SampleDB as %s", list(before), STORAGE_VERSION)
    rewritten = skipped = 0
    for obj in api.iterate("SampleDB"):
        meta = obj["metadata"]
        if _rewrite(api, meta["namespace"], meta["name"]):
            rewritten += 1
        else:
            skipped += 1
    api.merge_patch(
        "CustomResourceDefinition", None, CRD_NAME, {"status": {"storedVersions": [STORAGE_VERSION]}}, status=True
    )
    logger.info(
        "storage migration done: %d rewritten, %d gone meanwhile; storedVersions = [%s]",
        rewritten,
        skipped,
        STORAGE_VERSION,
    )
    return MigrationReport(before, rewritten, skipped)

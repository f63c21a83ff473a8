"""The scale benchmark's audit-log counts: a rotated log and impossible counts stop the run (issue #14)."""

from __future__ import annotations

import inspect
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import audit
from benchmarks.audit import (
    MAX_REQUESTS_PER_PASS,
    ApiCount,
    AuditLog,
    AuditRotatedError,
    ImplausibleCountError,
    Lower,
    Upper,
    cadence_bound,
    check_lower,
    check_upper,
)
from sampledb_operator.k8s.leader import LeaderElector
from sampledb_operator.observe import cache
from sampledb_operator.reconcile import children
from sampledb_operator.reconcile.crds import maintain_crds
from sampledb_operator.settings import Settings

REPO = Path(__file__).resolve().parents[2]
USER = "system:serviceaccount:sampledb-system:sampledb-operator"


def event(verb: str, user: str = USER, code: int = 200, stage: str = "ResponseComplete", uri: str = "") -> str:
    return json.dumps({"user": {"username": user}, "verb": verb, "stage": stage, "requestURI": uri or f"/x/{verb}",
                       "responseStatus": {"code": code}}, separators=(",", ":")) + "\n"  # fmt: skip


def count(**verbs: int) -> ApiCount:
    return ApiCount(verbs=Counter(verbs))


# -- the log rotating under the benchmark -----------------------------------------------------------


def test_a_rotated_file_next_to_the_log_stops_the_run(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log", USER)
    (tmp_path / "audit.log").write_text(event("get"))
    assert log.offset() > 0
    (tmp_path / "audit-2026-11-27T10-00-00.000.log").write_text(event("get"))
    with pytest.raises(AuditRotatedError, match=r"audit-2026-11-27T10-00-00\.000\.log"):
        log.offset()
    with pytest.raises(AuditRotatedError):
        log.requests(0, 10)


def test_a_replaced_or_shrunk_log_stops_the_run(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(event("get") * 3)
    log = AuditLog(path, USER)
    log.offset()
    path.write_text(event("get"))  # same inode, fewer bytes: truncated
    with pytest.raises(AuditRotatedError, match="shrank"):
        log.offset()
    fresh = AuditLog(path, USER)
    fresh.offset()
    path.unlink()
    path.write_text(event("patch") * 5)  # a new file under the same name (maybe even the same inode)
    with pytest.raises(AuditRotatedError, match=r"replaced|disappeared"):
        fresh.offset()


def test_windows_count_the_operators_requests_and_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text(event("create") + event("get", code=404) + event("get", user="admin"))
    log = AuditLog(path, USER)
    middle = log.offset()
    with path.open("a") as out:
        out.write(event("watch", stage="ResponseStarted") + event("watch") + event("patch"))
    end = log.offset()
    first, second = log.requests(0, middle), log.requests(middle, end)
    assert (first.verbs, first.failed()) == (Counter(create=1, get=1), "get 404: 1")
    assert second.verbs == Counter(watch=1, patch=1)  # a watch counts when it starts, once
    assert second.write_count == 1


def test_gets_of_objects_leave_the_crd_and_lease_upkeep_apart(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    upkeep = [
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/sampledbs.sampledb.io",
        "/apis/coordination.k8s.io/v1/namespaces/sampledb-system/leases/sampledb-operator",
        "/api",
        "/api/v1",
        "/apis",
        "/apis/admissionregistration.k8s.io/v1?timeout=32s",
    ]
    objects = ["/api/v1/namespaces/a/secrets/b", "/apis/apps/v1/namespaces/a/statefulsets/b", "/api/v1/nodes"]
    path.write_text("".join(event("get", uri=uri) for uri in [*upkeep, *objects]) + event("list"))
    counted = AuditLog(path, USER).requests(0, path.stat().st_size)
    assert (counted.verbs["get"], counted.object_gets) == (9, 3)


# -- lower bounds: what the run must have sent ------------------------------------------------------


def test_the_reported_impossible_convergence_counts_stop_the_run() -> None:
    # 1,000 instances converged; the rotated log gave 5.03 requests and 0.07 creates per instance.
    seen = Lower(child_objects=7 * 1000, ready=1000)
    counted = count(get=4190, create=70, patch=770)
    with pytest.raises(ImplausibleCountError, match=r"convergence: creates = 70, but it must be >= 7,000"):
        check_lower("convergence", counted, seen)


def test_plausible_convergence_counts_pass() -> None:
    # The N = 1,000 run of results/scale.md: per instance get 20.42, create 9.00, patch 3.00.
    check_lower("convergence", count(get=20420, create=9000, patch=3000, watch=10), Lower(7000, 1000))


@pytest.mark.parametrize(
    ("counted", "named"),
    [
        (count(get=2110, create=6999, patch=1000), "creates = 6,999, but it must be >= 7,000"),
        (count(get=2110, create=7000, patch=999), "patches = 999, but it must be >= 1,000"),
    ],
)
def test_each_lower_bound_names_the_count_and_the_bound(counted: ApiCount, named: str) -> None:
    with pytest.raises(ImplausibleCountError, match=named):
        check_lower("convergence", counted, Lower(7000, 1000))


def test_requests_cannot_be_fewer_than_creates() -> None:
    broken = ApiCount(verbs=Counter(create=5))
    broken.verbs["get"] = -3  # a counting bug: the total below its own creates
    with pytest.raises(ImplausibleCountError, match="requests = 2, but it must be >= 5"):
        check_lower("restart", broken, Lower())


# -- upper bounds: what the operator's cadence and passes explain ----------------------------------


def test_the_reported_idle_burst_stops_the_run() -> None:
    # 1,271 requests in an idle 30 s with no reconcile pass: watches reopen every 300 s.
    with pytest.raises(ImplausibleCountError, match=r"idle: requests = 1,271, but it must be <= 56 \(30 s"):
        check_upper("idle", count(get=1266, watch=5), Upper(30))


def test_the_measured_idle_periods_pass() -> None:
    check_upper("idle", count(watch=5), Upper(300))  # results/scale.md: 5 watches in 300 s
    check_upper("idle", count(watch=71), Upper(3600))  # results/scale-n1000-idle-hour.md: 71 in an hour


def test_passes_and_start_ups_raise_the_bound() -> None:
    # results/scale.md: a restart with 1,000 objects, 1,000 passes, 10,032 requests in 41 s.
    check_upper("restart", count(get=10010, list=17, watch=5), Upper(41, passes=1000, starts=1, objects=1000))
    with pytest.raises(ImplausibleCountError):
        check_upper("restart", count(get=10010, list=17, watch=5), Upper(41, passes=100, starts=1, objects=1000))
    busy = Upper(30, passes=0, busy_edges=1)
    assert busy.bound() == cadence_bound(30) + audit.RECONCILE_THREADS * MAX_REQUESTS_PER_PASS


def test_the_lease_and_crd_upkeep_count_only_when_enabled() -> None:
    plain = cadence_bound(60, Settings())
    assert cadence_bound(60, Settings(leader_election=True)) > plain
    assert cadence_bound(60, Settings(manage_crds=True)) > plain


# -- the bounds follow the operator's code ---------------------------------------------------------


def handlers_source() -> str:
    return (REPO / "operator/sampledb_operator/handlers/__init__.py").read_text(encoding="utf-8")


def test_watch_cadence_and_page_size_are_the_operators() -> None:
    source = handlers_source()
    assert f"settings.watching.server_timeout = {audit.WATCH_SECONDS}\n" in source
    assert f"settings.watching.chunk_size = {audit.LIST_CHUNK}\n" in source


def test_watched_resources_are_the_informers_the_handlers_and_kopfs_crd_observer() -> None:
    registered = re.findall(r"kopf\.on\.event\(([^,]+),\s*([^,]+),\s*([^,)]+)", handlers_source())
    assert len(set(registered)) + 1 == audit.KOPF_WATCHES, registered
    assert audit.INFORMERS == len(cache.ORDER) == 13


def test_the_lease_and_the_crd_upkeep_are_the_operators() -> None:
    assert inspect.signature(LeaderElector).parameters["lease_seconds"].default == 15
    assert inspect.signature(maintain_crds).parameters["interval"].default == audit.CRD_INTERVAL


def test_a_pass_is_bounded_by_the_executors_own_calls() -> None:
    source = audit.RECONCILE_SOURCE.read_text(encoding="utf-8")
    assert "class Executor" in source and "self.api.get(" not in source  # a pass reads from the caches
    calls = "self.api.get(a)\nself.api.merge_patch(b)\nx = self.api.list_objects(c)\napi.get(d)\n"
    assert audit.max_requests_per_pass(calls) == 3 + 2 * len(children.CHILDREN)
    # A new instance's first pass (tests/unit/test_act.py): a write per child, its Secret, init Job,
    # finalizer, status and event, within the bound.
    assert 1 + 1 + len(children.CHILDREN) + 1 + 2 < MAX_REQUESTS_PER_PASS

"""The operator's requests, counted from the API server's audit log, and checked before they are reported.

Why the checks: a scale run once reported 5.03 requests and 0.07 creates per instance converged (each
instance needs at least 7 creates) and 1,271 requests in an idle 30 s. The API server's log had
rotated at 100 MB (lumberjack's default) while the benchmark read one file by byte offsets, so the
windows held the wrong lines. The cluster no longer rotates (`--audit-log-maxsize`), and here:

- `AuditLog.offset` fails as soon as a rotated file (`audit-*.log` next to the log) appears, or the
  log is replaced or shrinks, so no window is ever read across a rotation;
- every count is checked against what the run must have done, and an impossible one raises
  `ImplausibleCountError` naming the count and the bound, before anything is reported: lower bounds
  (`check_lower`) from what the watches saw and the operator's code does (a create per child object
  that exists, a status PATCH per Ready instance, requests >= creates), and upper bounds
  (`check_upper`) from the operator's cadence (watches reopened every `server_timeout`, the Lease
  and CRD upkeep when enabled, the start-up LISTs) plus at most `MAX_REQUESTS_PER_PASS` per
  reconcile pass the operator counted itself.

The constants below are read off the operator's code; `tests/unit/test_bench_audit.py` fails when
that code changes them.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sampledb_operator.act import executor
from sampledb_operator.k8s.leader import LeaderElector
from sampledb_operator.observe import cache
from sampledb_operator.reconcile import children
from sampledb_operator.settings import Settings

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
# Reads that are upkeep, not observation: the CRDs (kopf's start-up check, reconcile/crds.py's
# maintain_crds) and the leader Lease; discovery (`/api`, `/apis/<group>/<version>`: kopf's scan of
# the served resources at start-up) is upkeep too. A GET of anything else is a read of an object.
UPKEEP_READS = ("/apis/apiextensions.k8s.io/", "/apis/coordination.k8s.io/")


def reads_an_object(uri: str) -> bool:
    """Whether a GET of `uri` reads an object (or a collection), rather than discovery or upkeep."""
    parts = uri.split("?", 1)[0].strip("/").split("/")
    discovery = len(parts) <= {"api": 2, "apis": 3}.get(parts[0], 0)
    return not discovery and not uri.startswith(UPKEEP_READS)


# Resources the operator watches: one informer per kind the reconciles read (observe/cache.py,
# cluster-wide) and kopf's own observer of CustomResourceDefinitions (kopf handles no resource).
INFORMERS = len(cache.ORDER)
KOPF_WATCHES = 1
WATCHED_RESOURCES = INFORMERS + KOPF_WATCHES
# handlers.configure: settings.watching.server_timeout, and the informers' watch_timeout: the API
# server ends each watch after this long, and it is opened again (a WATCH, or a LIST and a WATCH
# after "410 Gone").
WATCH_SECONDS = 300
REQUESTS_PER_REOPEN = 2
# handlers.configure: settings.watching.chunk_size, the smaller of kopf's page and the informers'
# (250): a start-up LIST reads at least this many objects per page.
LIST_CHUNK = 200
# reconcile/crds.py maintain_crds: with manage_crds, a GET per CRD every `interval` seconds.
CRD_INTERVAL = 30.0
CRDS = 2
# At start-up: maintain_crds's storage migration reads the SampleDB CRD once (and writes nothing
# when storedVersions is already ["v1"], as on a fresh cluster).
STARTUP_REQUESTS = 1
# The most one reconcile pass can send, read off act/executor.py (where every request of a pass is
# made; the pass observes from the caches and reads nothing): each `self.api.` call site at most
# once, plus a write per child kind, counted twice (a pass may decide twice, act/reconciler.py).
# Counted from the source, so it follows the code.
RECONCILE_SOURCE = Path(executor.__file__)
API_CALL = re.compile(r"self\.api\.\w+\(")


def max_requests_per_pass(source: str) -> int:
    """Call sites of the API in a reconcile pass's source, plus two writes per child kind."""
    return len(API_CALL.findall(source)) + 2 * len(children.CHILDREN)


MAX_REQUESTS_PER_PASS = max_requests_per_pass(RECONCILE_SOURCE.read_text(encoding="utf-8"))
# handlers: KeyedRunner runs passes on the event loop's default executor, Python's
# ThreadPoolExecutor default of min(32, cores + 4) threads: at most that many passes in flight, whose
# requests a window may hold without the operator having counted them yet (or any more).
RECONCILE_THREADS = min(32, (os.cpu_count() or 1) + 4)


HEAD_BYTES = 512  # of the log's first event: its auditID and timestamp make it unique


class AuditRotatedError(RuntimeError):
    """The audit log rotated or was replaced: byte offsets no longer delimit the windows."""


class ImplausibleCountError(RuntimeError):
    """A count the run cannot have produced: it names the count and the bound it broke."""


@dataclass
class ApiCount:
    """The operator's requests in one window of the audit log."""

    verbs: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    writes: list[str] = field(default_factory=list)
    object_gets: int = 0  # GETs that `reads_an_object`

    @property
    def total(self) -> int:  # noqa: D102
        return sum(self.verbs.values())

    @property
    def write_count(self) -> int:  # noqa: D102
        return sum(self.verbs[verb] for verb in WRITE_VERBS)

    def per(self, divisor: float) -> str:
        """Requests per `divisor`, in total and by verb."""
        if not self.total:
            return "0"
        detail = ", ".join(f"{verb} {n / divisor:.2f}" for verb, n in self.verbs.most_common())
        return f"{self.total / divisor:.2f} ({detail})"

    def by_verb(self) -> str:
        """Counts by verb."""
        return ", ".join(f"{verb} {n:,}" for verb, n in self.verbs.most_common()) or "none"

    def failed(self) -> str:
        """Responses >= 400 by verb and code."""
        return ", ".join(f"{key}: {n:,}" for key, n in self.failures.most_common()) or "none"


def audit_lines(path: Path, start: int, end: int) -> Iterator[bytes]:
    """The complete lines that begin in [start, end): adjacent windows never share or lose a line."""
    with path.open("rb") as log:
        if start > 0:
            log.seek(start - 1)
            if log.read(1) != b"\n":
                log.readline()  # the rest of a line that began before the window
        while log.tell() < end:
            line = log.readline()
            if not line.endswith(b"\n"):
                return
            yield line


def user_requests(path: Path, user: str, start: int, end: int) -> ApiCount:
    """`user`'s requests whose audit events were written between two offsets.

    The policy logs every request at Metadata level without the RequestReceived stage: a request is
    counted at ResponseComplete, a watch (long-running) at ResponseStarted.
    """
    needle = f'"username":"{user}"'.encode()
    result = ApiCount()
    for line in audit_lines(path, start, end):
        if needle not in line:
            continue
        event = json.loads(line)
        if event["user"]["username"] != user:
            continue
        verb, stage = event["verb"], event["stage"]
        if stage != ("ResponseStarted" if verb == "watch" else "ResponseComplete"):
            continue
        result.verbs[verb] += 1
        code = int((event.get("responseStatus") or {}).get("code") or 0)
        if code >= 400:
            result.failures[f"{verb} {code}"] += 1
        if verb == "get" and reads_an_object(event["requestURI"]):
            result.object_gets += 1
        if verb in WRITE_VERBS and len(result.writes) < 10:
            result.writes.append(f"{verb} {event['requestURI']} -> {code}")
    return result


class AuditLog:
    """The API server's audit log, read by byte offsets, refusing to go on once it has rotated."""

    def __init__(self, path: Path, user: str) -> None:
        self.path = path
        self.user = user
        self._inode: int | None = None
        self._size = 0
        self._head = b""  # the log's first bytes: a new file under the same name (and inode) differs

    def rotated(self) -> list[Path]:
        """Rotated files next to the log (lumberjack names them `audit-<time>.log`)."""
        return sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))

    def offset(self) -> int:
        """The log's size now, a window boundary; raises if it rotated, was replaced or shrank."""
        rotated = self.rotated()
        if rotated:
            raise AuditRotatedError(
                f"the audit log rotated during the run ({', '.join(p.name for p in rotated)} next to "
                f"{self.path}): counts read by byte offsets would be wrong, so the run stops"
            )
        if not self.path.exists():
            if self._inode is not None:
                raise AuditRotatedError(f"the audit log {self.path} disappeared during the run")
            return 0
        stat = self.path.stat()
        if self._inode is not None and stat.st_ino != self._inode:
            raise AuditRotatedError(f"the audit log {self.path} was replaced during the run (new inode)")
        if stat.st_size < self._size:
            raise AuditRotatedError(f"the audit log {self.path} shrank from {self._size:,} to {stat.st_size:,} bytes")
        with self.path.open("rb") as log:
            head = log.read(HEAD_BYTES)
        if not head.startswith(self._head):
            raise AuditRotatedError(f"the audit log {self.path} was replaced during the run (its first line changed)")
        self._inode, self._size, self._head = stat.st_ino, stat.st_size, head
        return stat.st_size

    def requests(self, start: int, end: int) -> ApiCount:
        """The user's requests in [start, end), after checking once more that nothing rotated."""
        self.offset()
        return user_requests(self.path, self.user, start, end)


# -- what a window's counts must respect ------------------------------------------------------------


def _require(what: str, value: float, relation: str, bound: float, why: str) -> None:
    broken = value < bound if relation == ">=" else value > bound
    if broken:
        raise ImplausibleCountError(f"{what} = {value:,.0f}, but it must be {relation} {bound:,.0f} ({why})")


@dataclass(frozen=True)
class Lower:
    """What the run is known to have caused in a window (from the watches and the operator's metric)."""

    child_objects: int = 0  # children seen to exist, all created by the operator in the window
    ready: int = 0  # instances seen Ready: each had its status written


def check_lower(window: str, count: ApiCount, lower: Lower) -> None:
    """Raise if `count` is below what the run must have sent in the window."""
    creates = count.verbs["create"]
    _require(f"{window}: creates", creates, ">=", lower.child_objects, "one create per child object the watches saw")
    _require(f"{window}: requests", count.total, ">=", creates, "every create is a request")
    _require(
        f"{window}: patches", count.verbs["patch"], ">=", lower.ready, "a status PATCH for every instance seen Ready"
    )


def cadence_bound(seconds: float, settings: Settings | None = None) -> int:
    """The most requests an operator with nothing to reconcile sends in `seconds` (see the module docstring)."""
    settings = settings or Settings()
    periods = math.ceil(seconds / WATCH_SECONDS) + 1  # a partial period at each end
    bound = WATCHED_RESOURCES * REQUESTS_PER_REOPEN * periods
    if settings.leader_election:
        lease = int(inspect.signature(LeaderElector).parameters["lease_seconds"].default)
        bound += 2 * (math.ceil(seconds / max(1.0, lease / 3)) + 1)  # hold_leadership: GET + PATCH per renewal
    if settings.manage_crds:
        bound += CRDS * (math.ceil(seconds / CRD_INTERVAL) + 1)
    return bound


def startup_bound(objects: int) -> int:
    """The most requests an operator start sends before any pass: paged LISTs, the first WATCHes, the CRD read."""
    pages = math.ceil(objects / LIST_CHUNK) + 1
    return WATCHED_RESOURCES * (pages + 1) + STARTUP_REQUESTS


@dataclass(frozen=True)
class Upper:
    """What can explain the requests of a window: its length, the passes counted, starts, busy edges."""

    seconds: float
    passes: float = 0  # reconcile passes the operator counted in the window
    busy_edges: int = 0  # window edges (0-2) where passes may have been in flight
    starts: int = 0  # operator starts in the window
    objects: int = 0  # objects present at those starts

    def bound(self) -> int:
        """The most requests these allow."""
        passes = math.ceil(self.passes) + self.busy_edges * RECONCILE_THREADS
        return cadence_bound(self.seconds) + passes * MAX_REQUESTS_PER_PASS + self.starts * startup_bound(self.objects)

    def why(self) -> str:
        """The bound's parts, for the error message."""
        return (
            f"{self.seconds:.0f} s of watch/lease/CRD cadence, {self.passes:,.0f} reconcile passes counted "
            f"+ {self.busy_edges * RECONCILE_THREADS} in flight at the edges, x {MAX_REQUESTS_PER_PASS} requests "
            f"each, {self.starts} operator start(s) with {self.objects:,} objects"
        )


def check_upper(window: str, count: ApiCount, upper: Upper) -> None:
    """Raise if `count` exceeds what the operator's cadence and its counted passes can explain."""
    _require(f"{window}: requests", count.total, "<=", upper.bound(), upper.why())

"""Benchmark of the SampleDB conversion webhook: its own latency, and what it costs reads through the API server.

Why: `sampledb.io/v1` is stored, so every `sampledb.io/v1beta1` read (old clients,
`kubectl get sampledbs.v1beta1.sampledb.io`, the storage-version migration) needs the webhook, and
the API server calls it synchronously. This measures, and only measures (nothing asserts on time):

1. The webhook itself: the real process (`python -m sampledb_operator webhook`, two replicas on one
   loopback port), over TLS, on one keep-alive connection as the API server keeps one. Reviews
   convert stored `v1` objects (server metadata and managedFields, defaults, a status with three
   conditions) to `v1beta1`, the direction a `v1beta1` read takes. One object per review, in
   `single_runs` runs (target: p99 under 5 ms, the p99 of each run judged by the rule of
   `benchmarks/report.py`), then batches of 100 and 1,000 objects (per-review and per-object cost).
2. Reads through the API server of a local control plane (`sampledb_localcluster`): N realistic
   objects created in one namespace (create + status write, 8 creators), then the whole LIST via
   `v1` (no conversion) and via `v1beta1`, interleaved in the same run, N = 1,000 then 10,000
   (target: v1beta1/v1 ratio under 1.5, one ratio per interleaved pair), with the same
   JSON-decoding client call for both.
   The API server keeps one watch cache per served version and serves LISTs from it; the v1beta1
   cache converts each write event through the webhook (one object per review) as it arrives, so
   the webhook's cost shows up after writes rather than in the LIST. The table therefore also gives
   how far the v1beta1 cache was behind at the last write and when each cache had caught up (the
   LISTs are timed after that), and GETs of single objects, which are read from etcd and so call
   the webhook on every v1beta1 read: `get_runs` runs of interleaved GETs, one ratio of the
   medians per run (target: v1beta1 at most 1.2 times v1).

Every target gets a verdict only when the runs' spread is smaller than the median's distance to
the target (`benchmarks/report.py`); otherwise the table says "inconclusive" and gives the spread.

The table (with the machine it ran on) goes to stdout and to a new file per run,
`benchmarks/results/conversion-<date>-<commit>.md` (`--results-dir` elsewhere for smoke runs);
progress goes to stderr. Everything started here (webhook replicas, cluster) is stopped at the end,
on an exception, on Ctrl-C and on SIGTERM.

Run from the repository root: `make bench`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_conversion.py [--quick]`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import http.client
import json
import math
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import result_files
from benchmarks.report import (
    Row,
    Target,
    exit_on_sigterm,
    judge,
    machine_rows,
    markdown_table,
    pair_ratios,
    progress,
    spread_text,
    wait_until,
)
from sampledb_localcluster import LocalCluster
from sampledb_operator.api import crdgen
from sampledb_operator.k8s.api import ApiError, KubeApi, load_client
from tests.integration.conftest import wired_crd
from tests.webhook_process import WebhookReplicas, start_webhook

NAMESPACE = "bench-conversion"
V1 = "sampledb.io/v1"
V1BETA1 = "sampledb.io/v1beta1"
REVIEW_API_VERSION = "apiextensions.k8s.io/v1"
WEBHOOK_P99_TARGET_MS = 5.0
LIST_RATIO_TARGET = 1.5
BATCH_PER_OBJECT_TARGET_US = 50.0  # issue #15: per object, in a 1,000-object review
BATCH_RUNS = 5
GET_RATIO_TARGET = 1.2  # issue #14: a single-object read through v1beta1 at most 1.2 times the v1 read
CREATORS = 8
PROGRESS_EVERY = 1000
CREATED_AT = "2026-01-05T10:00:00Z"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or a quick smoke run."""

    single_warmup: int
    single_requests: int  # per run
    single_runs: int
    batches: tuple[tuple[int, int, int], ...]  # (objects per review, warm-up reviews, measured reviews)
    sizes: tuple[int, ...]  # cumulative object counts for the LIST figures
    list_repetitions: int
    get_repetitions: int  # interleaved pairs per run
    get_runs: int


FULL = Plan(
    single_warmup=200,
    single_requests=400,
    single_runs=5,
    batches=((100, 50, 500), (1000, 10, 150)),
    sizes=(1000, 10000),
    list_repetitions=7,
    get_repetitions=40,
    get_runs=5,
)
QUICK = Plan(
    single_warmup=50,
    single_requests=100,
    single_runs=3,
    batches=((100, 10, 50), (1000, 3, 20)),
    sizes=(200, 1000),
    list_repetitions=5,
    get_repetitions=10,
    get_runs=3,
)


# -- output ----------------------------------------------------------------------------------------


def write_results(path: Path, table: str, command: str) -> None:
    """Keep the table in the run's own results file."""
    path.write_text(result_files.header("Conversion benchmark", path, command) + table + NOTES, encoding="utf-8")


NOTES = """
Notes: a figure over runs reads "median ± spread (n = runs: each run)", the spread being the
largest distance from the median to a run; a target gets a verdict only when that spread is
smaller than the median's distance to the target (`benchmarks/report.py`), else "inconclusive".
"""


def byte_size(count: int) -> str:
    """A response size in bytes or MB."""
    return f"{count:,} B" if count < 100_000 else f"{count / 1e6:.2f} MB"


def ms(seconds: float) -> str:
    """Seconds as milliseconds with a precision that suits the size."""
    value = seconds * 1e3
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


# -- machine ---------------------------------------------------------------------------------------


# -- objects ---------------------------------------------------------------------------------------


def sample_v1(index: int, namespace: str) -> Obj:
    """A realistic v1 SampleDB manifest, as a user writes it."""
    name = f"db-{index:05d}"
    return {
        "apiVersion": V1,
        "kind": "SampleDB",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/name": "sampledb",
                "app.kubernetes.io/instance": name,
                "team": ("payments", "search", "catalog", "identity")[index % 4],
            },
        },
        "spec": {
            "postgres": {
                "version": (15, 16, 17)[index % 3],
                "parameters": {
                    "max_connections": "200",
                    "shared_buffers": "512MB",
                    "work_mem": "8MB",
                    "log_min_duration_statement": "500",
                },
            },
            "storage": {"size": f"{10 + index % 90}Gi", "storageClassName": "fast-ssd"},
            "backup": {"schedule": "0 3 * * *", "retention": 14},
            "deletionPolicy": "Snapshot",
        },
    }


def _condition(kind: str, status: str, reason: str, message: str) -> Obj:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-05T10:02:31Z",
        "observedGeneration": 1,
    }


def sample_status(manifest: Obj) -> Obj:
    """The status the operator writes for a Ready instance: three conditions and the details."""
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    version = manifest["spec"]["postgres"]["version"]
    return {
        "phase": "Ready",
        "observedGeneration": 1,
        "conditions": [
            _condition("Ready", "True", "DatabaseReady", "The database accepts connections."),
            _condition("Progressing", "False", "UpToDate", "The workload matches the spec."),
            _condition("Degraded", "False", "AsExpected", "No problem found."),
        ],
        "version": version,
        "image": f"postgres:{version}.4",
        "endpoint": f"{name}.{namespace}.svc:5432",
        "secretName": f"{name}-credentials",
        "readyInstances": 1,
        "initialization": {"job": f"{name}-init", "completed": True, "completionTime": "2026-01-05T10:02:20Z"},
    }


def _fields_v1(node: Any, *, root: bool = True) -> Obj:
    """A managedFields `fieldsV1` set for a tree, in the API server's notation ("." marks a set parent)."""
    if isinstance(node, dict):
        children = {f"f:{key}": _fields_v1(value, root=key == "metadata") for key, value in node.items()}
    elif isinstance(node, list):
        children = {
            "k:" + json.dumps({"type": item["type"]}, separators=(",", ":")): _fields_v1(item, root=False)
            for item in node
            if isinstance(item, dict) and "type" in item
        }
    else:
        return {}
    return children if root or not children else {".": {}, **children}


def _managed(manager: str, operation: str, fields: Obj, subresource: str | None = None) -> Obj:
    entry = {
        "manager": manager,
        "operation": operation,
        "apiVersion": V1,
        "time": CREATED_AT,
        "fieldsType": "FieldsV1",
        "fieldsV1": _fields_v1(fields),
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def apply_defaults(node: Any, schema: Obj) -> Any:
    """Fill in a structural schema's defaults top-down, as the API server does when it stores an object."""
    if isinstance(node, dict):
        for key, prop in (schema.get("properties") or {}).items():
            if key not in node and "default" in prop:
                node[key] = copy.deepcopy(prop["default"])
            if key in node:
                apply_defaults(node[key], prop)
    elif isinstance(node, list) and "items" in schema:
        for item in node:
            apply_defaults(item, schema["items"])
    return node


@functools.cache
def v1_schema() -> Obj:
    """The v1 openAPIV3Schema of the generated CRD."""
    versions = crdgen.sampledb_crd()["spec"]["versions"]
    schema: Obj = next(v for v in versions if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    return schema


def stored_v1(index: int, namespace: str) -> Obj:
    """The object as the API server stores and sends it to the webhook: defaults, server metadata, status."""
    obj: Obj = apply_defaults(sample_v1(index, namespace), v1_schema())
    created = {"metadata": {"labels": obj["metadata"]["labels"]}, "spec": obj["spec"]}
    obj["status"] = sample_status(obj)
    obj["metadata"] |= {
        "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{namespace}.{index}")),
        "resourceVersion": str(100000 + index),
        "generation": 1,
        "creationTimestamp": CREATED_AT,
        "managedFields": [
            _managed("OpenAPI-Generator", "Update", created),
            _managed("OpenAPI-Generator", "Update", {"status": obj["status"]}, "status"),
        ],
    }
    return obj


def review_body(objects: list[Obj], desired: str) -> bytes:
    """A ConversionReview request, serialised as the API server sends it."""
    review = {
        "apiVersion": REVIEW_API_VERSION,
        "kind": "ConversionReview",
        "request": {"uid": str(uuid.uuid4()), "desiredAPIVersion": desired, "objects": objects},
    }
    return json.dumps(review, separators=(",", ":")).encode()


# -- 1. the webhook --------------------------------------------------------------------------------


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _round_trip(connection: http.client.HTTPSConnection, body: bytes) -> bytes:
    connection.request("POST", "/convert", body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"webhook answered HTTP {response.status}: {data[:300]!r}")
    return data


def _check_review(data: bytes, expected: int) -> None:
    response = json.loads(data)["response"]
    if response["result"]["status"] != "Success" or len(response["convertedObjects"]) != expected:
        raise RuntimeError(f"conversion did not succeed: {response['result']}")


def time_reviews(hooks: WebhookReplicas, body: bytes, expected: int, warmup: int, count: int) -> list[float]:
    """Seconds per review (request sent to response read), on one keep-alive TLS connection."""
    connection = http.client.HTTPSConnection("127.0.0.1", hooks.port, context=hooks.ssl_context(), timeout=60)
    try:
        for _ in range(warmup):
            _check_review(_round_trip(connection, body), expected)
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            data = _round_trip(connection, body)
            samples.append(time.perf_counter() - started)
            _check_review(data, expected)  # outside the timed part
        return samples
    finally:
        connection.close()


def single_object_rows(hooks: WebhookReplicas, plan: Plan) -> list[Row]:
    """One object per review, in runs: every run's p99 against the target (rule 1), the whole distribution."""
    body = review_body([stored_v1(0, NAMESPACE)], V1BETA1)
    progress(
        f"webhook: 1 object per review, {plan.single_warmup} warm-up + {plan.single_runs} runs of "
        f"{plan.single_requests} measured"
    )
    time_reviews(hooks, body, 1, plan.single_warmup, 0)  # warm-up only
    runs = [time_reviews(hooks, body, 1, 0, plan.single_requests) for _ in range(plan.single_runs)]
    samples = [sample for run in runs for sample in run]
    section = f"Webhook, 1 object/review ({plan.single_runs} runs of {plan.single_requests}, {byte_size(len(body))})"
    p99 = judge(
        [percentile(run, 99) * 1e3 for run in runs], Target(WEBHOOK_P99_TARGET_MS, f"< {WEBHOOK_P99_TARGET_MS:g} ms")
    )
    return [
        Row(section, "p50, all runs", ms(percentile(samples, 50))),
        Row(section, "p90, all runs", ms(percentile(samples, 90))),
        Row(section, "p99 of each run (ms)", p99.value(3, " ms"), p99.cell(3)),
        Row(section, "max, all runs", ms(max(samples))),
    ]


def batch_rows(hooks: WebhookReplicas, size: int, warmup: int, count: int) -> list[Row]:
    """`size` objects per review, in BATCH_RUNS runs: per-review latency and the cost of one object.

    The per-object cost is each run's p50 divided by `size`; at 1,000 objects it is judged against
    BATCH_PER_OBJECT_TARGET_US by the rule of `benchmarks/report.py`.
    """
    body = review_body([stored_v1(i, NAMESPACE) for i in range(size)], V1BETA1)
    per_run = max(1, count // BATCH_RUNS)
    progress(f"webhook: {size} objects per review, {warmup} warm-up + {BATCH_RUNS} runs of {per_run} measured")
    time_reviews(hooks, body, size, warmup, 0)
    runs = [time_reviews(hooks, body, size, 0, per_run) for _ in range(BATCH_RUNS)]
    samples = [sample for run in runs for sample in run]
    section = f"Webhook, {size} objects/review ({BATCH_RUNS} runs of {per_run}, {byte_size(len(body))})"
    per_object = [percentile(run, 50) / size * 1e6 for run in runs]
    if size == 1000:
        judged = judge(per_object, Target(BATCH_PER_OBJECT_TARGET_US, f"<= {BATCH_PER_OBJECT_TARGET_US:g} µs"))
        per_object_row = Row(section, "per object (p50 of each run / objects)", judged.value(1, " µs"), judged.cell(1))
    else:
        per_object_row = Row(section, "per object (p50 of each run / objects)", spread_text(per_object, 1, " µs"))
    return [
        Row(section, "p50 per review, all runs", ms(percentile(samples, 50))),
        Row(section, "p99 per review, all runs", ms(percentile(samples, 99))),
        per_object_row,
    ]


def webhook_rows(hooks: WebhookReplicas, plan: Plan) -> list[Row]:
    """Every webhook figure."""
    rows = single_object_rows(hooks, plan)
    for size, warmup, count in plan.batches:
        rows += batch_rows(hooks, size, warmup, count)
    return rows


# -- 2. LIST through the API server ----------------------------------------------------------------


def list_path(version: str) -> str:
    """The namespaced collection of SampleDBs in one API version."""
    return f"/apis/{version}/namespaces/{NAMESPACE}/sampledbs"


def _established(api: KubeApi, name: str) -> bool:
    crd = api.get("CustomResourceDefinition", None, name) or {}
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _served(api: KubeApi, path: str) -> bool:
    try:
        api._request("GET", path)
    except (ApiError, ValueError):  # ValueError: the plain-text 404 of a group not served yet
        return False
    return True


def install(api: KubeApi, hooks: WebhookReplicas) -> None:
    """The SampleDB CRD wired to the loopback webhook replicas, and the benchmark's namespace."""
    crd = wired_crd(crdgen.sampledb_crd(), hooks)
    api.create(crd)
    wait_until(lambda: _established(api, crd["metadata"]["name"]), "the CRD to be established")
    api._request(
        "POST", "/api/v1/namespaces", body={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    )
    for version in (V1, V1BETA1):
        wait_until(lambda v=version: _served(api, list_path(v)), f"{version} to be served")  # type: ignore[misc]


def create_one(api: KubeApi, index: int) -> int:
    """Create one object and write its status (a separate subresource) as the operator would.

    Returns the resourceVersion of the status write.
    """
    manifest = sample_v1(index, NAMESPACE)
    api.create(manifest)
    written = api.merge_patch(
        "SampleDB", NAMESPACE, manifest["metadata"]["name"], {"status": sample_status(manifest)}, status=True
    )
    return int(written["metadata"]["resourceVersion"])


def create_objects(api: KubeApi, start: int, stop: int) -> tuple[float, int]:
    """Create objects start..stop-1 with a pool of creators; returns the seconds and the last resourceVersion."""
    pool = ThreadPoolExecutor(max_workers=CREATORS, thread_name_prefix="creator")
    started = time.perf_counter()
    last = 0
    try:
        futures = [pool.submit(create_one, api, index) for index in range(start, stop)]
        for done, future in enumerate(as_completed(futures), start=1):
            last = max(last, future.result())
            if done % PROGRESS_EVERY == 0 or done == len(futures):
                rate = done / (time.perf_counter() - started)
                progress(f"created {start + done}/{stop} objects ({rate:.0f}/s)")
        return time.perf_counter() - started, last
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class Sample:
    """One timed read: seconds to the decoded JSON, response bytes, and how many objects a LIST returned."""

    seconds: float
    size: int
    items: int


def timed_get(api: KubeApi, path: str) -> Sample:
    """GET and decode the JSON, as `KubeApi._request` does: the same client work for either version."""
    client: Any = api._client  # the official client is untyped
    started = time.perf_counter()
    params = client.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = client.call_api(*params, _request_timeout=(10, 300))
    data = response.read()
    body = json.loads(data)
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}: {data[:300]!r}")
    return Sample(elapsed, len(data), len(body.get("items") or []))


def cache_version(api: KubeApi, version: str) -> int:
    """The resourceVersion a version's watch cache has reached.

    `resourceVersion=0` reads the cache as it is (and ignores `limit`); a selector that matches
    nothing keeps the answer small.
    """
    query = {"resourceVersion": "0", "labelSelector": "sampledb.io/bench-probe=none"}
    body = api._request("GET", list_path(version), query=query)
    return int(body["metadata"]["resourceVersion"])


@dataclass(frozen=True)
class CatchUp:
    """How far the v1beta1 watch cache was behind at the last write, and when each cache had it."""

    behind: int  # etcd revisions (about one per write)
    seconds: dict[str, float]


def catch_up(api: KubeApi, last_write: int) -> CatchUp:
    """Wait until each version's watch cache has seen the last write; a LIST then needs no waiting.

    The API server keeps one watch cache per served version; the v1beta1 one converts every write
    event through the webhook, one object per review, as it arrives, so a burst of writes can leave
    it behind. A consistent LIST via v1beta1 meanwhile waits for it, and then reads etcd instead,
    converting every object (which for 10,000 objects can exceed the API server's 60 s timeout).
    """
    written = time.perf_counter()
    behind = max(0, last_write - cache_version(api, V1BETA1))
    seconds = {}
    for version in (V1, V1BETA1):
        wait_until(
            lambda v=version: cache_version(api, v) >= last_write,  # type: ignore[misc]
            f"the {version} watch cache to reach resourceVersion {last_write}",
            timeout=1800,
        )
        seconds[version] = time.perf_counter() - written
    return CatchUp(behind, seconds)


def time_reads(api: KubeApi, paths: dict[str, str], repetitions: int) -> dict[str, list[Sample]]:
    """The same read via v1 and via v1beta1, interleaved (alternating which goes first)."""
    samples: dict[str, list[Sample]] = {version: [] for version in paths}
    for rep in range(repetitions):
        order = list(paths) if rep % 2 == 0 else list(reversed(paths))
        for version in order:
            samples[version].append(timed_get(api, paths[version]))
    return samples


def _short(version: str) -> str:
    return version.split("/")[1]


def version_rows(section: str, samples: dict[str, list[Sample]]) -> list[Row]:
    """Median / min and response size of each version's read."""
    rows = []
    for version, runs in samples.items():
        median, fastest = statistics.median(s.seconds for s in runs), min(s.seconds for s in runs)
        rows.append(Row(section, f"{_short(version)} median / min", f"{ms(median)} / {ms(fastest)}"))
        rows.append(Row(section, f"{_short(version)} response", byte_size(runs[0].size)))
    return rows


def ratio_row(section: str, what: str, ratios: list[float], target: Target) -> Row:
    """The v1beta1/v1 ratios of the runs against their target, by the rule of `benchmarks/report.py`."""
    judged = judge(ratios, target)
    return Row(section, what, judged.value(), judged.cell())


def list_size_rows(api: KubeApi, count: int, created: int, written: tuple[float, int], repetitions: int) -> list[Row]:
    """Creation rate, watch-cache catch-up and the v1 / v1beta1 LIST figures for `count` objects."""
    section = f"LIST of {count:,} objects ({repetitions} reps each, interleaved)"
    seconds, last_write = written
    lag = catch_up(api, last_write)
    progress(
        f"LIST of {count}: v1beta1 cache {lag.behind} revisions behind at the last write; caught up after "
        f"{lag.seconds[V1BETA1]:.1f} s"
    )
    paths = {version: list_path(version) for version in (V1, V1BETA1)}
    samples = time_reads(api, paths, repetitions)
    for version, runs in samples.items():
        if any(s.items != count for s in runs):
            raise RuntimeError(f"a LIST via {version} did not return {count} objects")
    creation = f"{created / seconds:.0f} objects/s"
    return [
        Row(section, f"creation rate ({created:,} added by {CREATORS} creators: create + status write)", creation),
        Row(section, "v1beta1 watch cache behind at the last write", f"{lag.behind:,} revisions"),
        Row(
            section,
            "watch cache has the last write, after it: v1 / v1beta1",
            " / ".join(f"{lag.seconds[v]:.1f} s" for v in (V1, V1BETA1)),
        ),
        *version_rows(section, samples),
        ratio_row(
            section,
            "ratio v1beta1/v1, one per interleaved pair",
            pair_ratios([s.seconds for s in samples[V1BETA1]], [s.seconds for s in samples[V1]]),
            Target(LIST_RATIO_TARGET, f"< {LIST_RATIO_TARGET:g}"),
        ),
    ]


def median_seconds(samples: list[Sample]) -> float:
    """The median time of some reads."""
    return statistics.median(s.seconds for s in samples)


def get_run(api: KubeApi, count: int, repetitions: int, first: int) -> dict[str, list[Sample]]:
    """One run of GETs of single objects, v1 and v1beta1 interleaved (alternating which goes first)."""
    samples: dict[str, list[Sample]] = {V1: [], V1BETA1: []}
    for rep in range(first, first + repetitions):
        name = f"db-{rep * 7919 % count:05d}"
        order = (V1, V1BETA1) if rep % 2 == 0 else (V1BETA1, V1)
        paths = {version: f"{list_path(version)}/{name}" for version in order}
        for version, runs in time_reads(api, paths, 1).items():
            samples[version] += runs
    return samples


def get_rows(api: KubeApi, count: int, plan: Plan) -> list[Row]:
    """GET of single objects: not served from the watch cache, so v1beta1 calls the webhook each time.

    The ratio is taken per run (of the medians of its interleaved GETs), so that its spread over
    the runs says how far one run's answer can be trusted.
    """
    before = webhook_calls(api)
    runs = [get_run(api, count, plan.get_repetitions, run * plan.get_repetitions) for run in range(plan.get_runs)]
    calls = webhook_calls(api) - before
    every = {version: [s for run in runs for s in run[version]] for version in (V1, V1BETA1)}
    ratios = [median_seconds(run[V1BETA1]) / median_seconds(run[V1]) for run in runs]
    section = f"GET one object ({plan.get_runs} runs of {plan.get_repetitions} interleaved pairs)"
    target = Target(GET_RATIO_TARGET, f"<= {GET_RATIO_TARGET:g}")
    return [
        *version_rows(section, every),
        ratio_row(section, "ratio v1beta1/v1, medians of each run", ratios, target),
        Row(section, "the API server's webhook calls meanwhile (its histogram): count / mean / median", calls.text()),
    ]


WEBHOOK_HISTOGRAM = "apiserver_crd_conversion_webhook_duration_seconds"


@dataclass(frozen=True)
class Calls:
    """The API server's conversion-webhook calls to v1beta1 as its histogram counts them (cumulative buckets)."""

    buckets: dict[float, float]  # upper bound in seconds -> calls at most that long
    total: float  # seconds

    def __sub__(self, other: Calls) -> Calls:
        return Calls({le: n - other.buckets.get(le, 0) for le, n in self.buckets.items()}, self.total - other.total)

    def text(self) -> str:
        """'count / mean / median bucket': the time the API server spends per call, wire and Go included."""
        count = self.buckets.get(math.inf, 0)
        if not count:
            return "no calls counted"
        median = min(le for le, n in self.buckets.items() if n >= count / 2)
        return f"{count:.0f} / {ms(self.total / count)} / <= {ms(median)}"


def webhook_calls(api: KubeApi) -> Calls:
    """The API server's histogram of its conversion-webhook calls to v1beta1, from its /metrics.

    Why: the webhook answers a one-object review in well under a millisecond to a client of its own
    (section 1), yet a v1beta1 GET costs several more; this says how much of that the API server
    itself counts as time in the webhook call (wire, its client and its own decoding included).
    """
    params = api._client.param_serialize(
        "GET", "/metrics", header_params={"Accept": "text/plain"}, auth_settings=["BearerToken"]
    )
    text = api._client.call_api(*params).read().decode()
    buckets: dict[float, float] = {}
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(WEBHOOK_HISTOGRAM) or 'to_version="v1beta1"' not in line:
            continue
        value = float(line.rsplit(" ", 1)[1])
        if line.startswith(f"{WEBHOOK_HISTOGRAM}_bucket"):
            bound = float(line.split('le="', 1)[1].split('"', 1)[0])  # float() reads "+Inf" too
            buckets[bound] = buckets.get(bound, 0) + value
        elif line.startswith(f"{WEBHOOK_HISTOGRAM}_sum"):
            total += value
    return Calls(buckets, total)


def _comparable(obj: Obj) -> Obj:
    meta = obj["metadata"]
    return {
        "spec": obj["spec"],
        "status": obj["status"],
        "labels": meta.get("labels"),
        "managedFields": [entry["fieldsV1"] for entry in meta.get("managedFields") or []],
    }


def payload_row(api: KubeApi) -> Row:
    """Whether the webhook figures used what the API server really stores (spec, status, managedFields)."""
    stored = api._request("GET", f"{list_path(V1)}/db-00000")
    same = _comparable(stored) == _comparable(stored_v1(0, NAMESPACE))
    if not same:
        progress("warning: the webhook payload differs from the object the API server stored")
    return Row(
        "Webhook payload", "same spec, status and managedFields as the API server stores", "yes" if same else "NO"
    )


def list_rows(cluster: LocalCluster, hooks: WebhookReplicas, plan: Plan) -> list[Row]:
    """Every API-server figure, growing the collection to each size in turn."""
    api = KubeApi(load_client(str(cluster.kubeconfig)))
    install(api, hooks)
    rows: list[Row] = []
    existing = 0
    for count in plan.sizes:
        progress(f"creating objects {existing}..{count - 1} with {CREATORS} creators")
        written = create_objects(api, existing, count)
        rows += list_size_rows(api, count, count - existing, written, plan.list_repetitions)
        existing = count
    progress(f"GET of single objects, {plan.get_runs} runs of {plan.get_repetitions} each")
    return [payload_row(api), *rows, *get_rows(api, existing, plan)]


# -- orchestration ---------------------------------------------------------------------------------


def run(plan: Plan, workdir: Path) -> list[Row]:
    """Start the webhook and the cluster, measure, and stop both whatever happens."""
    rows = machine_rows()
    with contextlib.ExitStack() as stack:
        progress("starting two webhook replicas on one loopback port")
        hooks = start_webhook(workdir / "webhook", replicas=2)
        stack.callback(hooks.stop)
        rows += webhook_rows(hooks, plan)
        cluster = LocalCluster(state_dir=workdir / "cluster")
        stack.callback(cluster.stop)
        progress("starting the local control plane")
        cluster.start()
        rows += list_rows(cluster, hooks, plan)
        progress("stopping the cluster and the webhook replicas")
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Command line: --quick for a smoke run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 and 1,000 objects, fewer requests")
    result_files.add_results_dir(parser)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and keep it in a results file of its own."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, exit_on_sigterm)  # so the cleanup below also runs on SIGTERM
    path = result_files.new_file("conversion", args.results_dir)
    workdir = Path(tempfile.mkdtemp(prefix="sampledb-bench-"))
    try:
        rows = run(QUICK if args.quick else FULL, workdir)
    except BaseException:
        progress(f"failed; logs of the webhook and the cluster are kept in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    table = markdown_table(rows)
    print(table, end="")
    given = list(sys.argv[1:] if argv is None else argv)
    command = " ".join(["PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_conversion.py", *given])
    write_results(path, table, command if given else "make bench-conversion")
    progress(f"table written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

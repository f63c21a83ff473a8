"""Benchmark of the SampleDB conversion webhook: its own latency, and what it adds to a LIST.

Why: every read of `sampledb.io/v1beta1` (old clients, `kubectl get sampledbs.v1beta1...`, the
storage-version migration) goes through the webhook, which the API server calls synchronously,
with a whole LIST in one ConversionReview. So this measures, and only measures (nothing here
asserts on time):

1. The webhook itself: the real process (`python -m sampledb_operator webhook`, two replicas on one
   loopback port), over TLS, on one keep-alive connection as the API server keeps one. Reviews
   convert stored `v1` objects (server metadata, managedFields, defaults and a status with three
   conditions) to `v1beta1`, the direction a `v1beta1` read takes. One object per review
   (target: p99 under 5 ms), then batches of 100 and 1,000 objects (per-review and per-object cost).
2. A LIST through the API server of a local control plane (`sampledb_localcluster`): N realistic
   objects in one namespace, read whole via `v1` (the stored version, no conversion) and via
   `v1beta1` (every object converted), interleaved in the same run, N = 1,000 then 10,000
   (target: v1beta1/v1 median ratio under 1.5). Both reads use the same JSON-decoding client call.

The table (with the machine it ran on) goes to stdout and to `benchmarks/results/conversion.md`;
progress goes to stderr. Everything started here (webhook replicas, cluster) is stopped at the end,
on an exception, on Ctrl-C and on SIGTERM.

Run from the repository root: `make bench`, or
`PYTHONPATH=.:operator .venv/bin/python benchmarks/bench_conversion.py [--quick]`.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import http.client
import json
import math
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sampledb_localcluster import LocalCluster
from sampledb_operator.api import crdgen
from sampledb_operator.k8s.api import ApiError, KubeApi, load_client
from tests.integration.conftest import wired_crd
from tests.webhook_process import WebhookReplicas, start_webhook

REPO = Path(__file__).resolve().parents[1]
RESULTS_FILE = REPO / "benchmarks" / "results" / "conversion.md"
NAMESPACE = "bench-conversion"
V1 = "sampledb.io/v1"
V1BETA1 = "sampledb.io/v1beta1"
REVIEW_API_VERSION = "apiextensions.k8s.io/v1"
WEBHOOK_P99_TARGET_MS = 5.0
LIST_RATIO_TARGET = 1.5
CREATORS = 8
PROGRESS_EVERY = 1000
CREATED_AT = "2026-01-05T10:00:00Z"

Obj = dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full run, or a quick smoke run."""

    single_warmup: int
    single_requests: int
    batches: tuple[tuple[int, int, int], ...]  # (objects per review, warm-up reviews, measured reviews)
    sizes: tuple[int, ...]  # cumulative object counts for the LIST figures
    list_repetitions: int


FULL = Plan(
    single_warmup=200,
    single_requests=2000,
    batches=((100, 50, 500), (1000, 10, 150)),
    sizes=(1000, 10000),
    list_repetitions=7,
)
QUICK = Plan(
    single_warmup=50, single_requests=300, batches=((100, 10, 50), (1000, 3, 20)), sizes=(200, 1000), list_repetitions=5
)


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    section: str
    figure: str
    value: str
    target: str = ""


# -- output ----------------------------------------------------------------------------------------


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the table)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as one markdown table."""
    lines = ["| Section | Figure | Value | Target |", "|---|---|---|---|"]
    lines += [f"| {r.section} | {r.figure} | {r.value} | {r.target} |" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(table: str, command: str) -> None:
    """Keep the table in benchmarks/results/ so a run's result can be committed."""
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(f"# Conversion benchmark\n\nCommand: `{command}`\n\n{table}", encoding="utf-8")


def verdict(met: bool, target: str) -> str:
    """The target and whether this run met it (reported, never asserted)."""
    return f"{target}: {'met' if met else 'MISSED'}"


def ms(seconds: float) -> str:
    """Seconds as milliseconds with a precision that suits the size."""
    value = seconds * 1e3
    return f"{value:.3f} ms" if value < 10 else f"{value:.1f} ms"


# -- machine ---------------------------------------------------------------------------------------


def _proc_field(path: str, key: str) -> str:
    """The first `key: value` of a /proc file, or '?' off Linux."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return "?"


def machine_rows() -> list[Row]:
    """What the figures were measured on, and how busy it was at the start."""
    mem_kib = _proc_field("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(mem_kib) / 1024**2:.1f} GiB" if mem_kib.isdigit() else "?"
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return [
        Row("Machine", "CPU model", _proc_field("/proc/cpuinfo", "model name")),
        Row("Machine", "cores", str(os.cpu_count())),
        Row("Machine", "RAM", ram),
        Row("Machine", "Python", f"{platform.python_implementation()} {platform.python_version()}"),
        Row("Machine", "OS", f"{platform.system()} {platform.release()}"),
        Row("Machine", "date", now),
        Row("Machine", "load average 1/5/15 min at start", load),
    ]


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


def _fields_v1(node: Any) -> Obj:
    """A managedFields `fieldsV1` set for a tree, in the API server's notation."""
    if isinstance(node, dict):
        return {f"f:{key}": _fields_v1(value) for key, value in node.items()}
    if isinstance(node, list):
        return {"k:" + json.dumps({"type": item["type"]}): _fields_v1(item) for item in node if "type" in item}
    return {}


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


def stored_v1(index: int, namespace: str) -> Obj:
    """The object as the API server stores and sends it to the webhook: defaults, server metadata, status."""
    obj = sample_v1(index, namespace)
    created = {"metadata": {"labels": obj["metadata"]["labels"]}, "spec": copy.deepcopy(obj["spec"])}
    obj["spec"] |= {"resources": {}, "database": {"name": "app", "owner": "app"}, "credentials": {}}
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
    """One object per review: the latency distribution against the p99 target."""
    body = review_body([stored_v1(0, NAMESPACE)], V1BETA1)
    progress(f"webhook: 1 object per review, {plan.single_warmup} warm-up + {plan.single_requests} measured")
    samples = time_reviews(hooks, body, 1, plan.single_warmup, plan.single_requests)
    section = f"Webhook, 1 object/review ({len(samples)} requests, {len(body)} B)"
    p99 = percentile(samples, 99)
    return [
        Row(section, "p50", ms(percentile(samples, 50))),
        Row(section, "p90", ms(percentile(samples, 90))),
        Row(section, "p99", ms(p99), verdict(p99 * 1e3 < WEBHOOK_P99_TARGET_MS, f"< {WEBHOOK_P99_TARGET_MS:g} ms")),
        Row(section, "max", ms(max(samples))),
    ]


def batch_rows(hooks: WebhookReplicas, size: int, warmup: int, count: int) -> list[Row]:
    """`size` objects per review: per-review latency and the cost of one object."""
    body = review_body([stored_v1(i, NAMESPACE) for i in range(size)], V1BETA1)
    progress(f"webhook: {size} objects per review, {warmup} warm-up + {count} measured")
    samples = time_reviews(hooks, body, size, warmup, count)
    section = f"Webhook, {size} objects/review ({count} reviews, {len(body) / 1e6:.2f} MB)"
    p50 = percentile(samples, 50)
    return [
        Row(section, "p50 per review", ms(p50)),
        Row(section, "p99 per review", ms(percentile(samples, 99))),
        Row(section, "per object (p50 / objects)", f"{p50 / size * 1e6:.1f} µs"),
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


def wait_until(probe: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll `probe` until it is true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


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


def create_one(api: KubeApi, index: int) -> None:
    """Create one object and write its status (a separate subresource) as the operator would."""
    manifest = sample_v1(index, NAMESPACE)
    api.create(manifest)
    api.merge_patch(
        "SampleDB", NAMESPACE, manifest["metadata"]["name"], {"status": sample_status(manifest)}, status=True
    )


def create_objects(api: KubeApi, start: int, stop: int) -> float:
    """Create objects start..stop-1 with a pool of creators; returns the seconds it took."""
    pool = ThreadPoolExecutor(max_workers=CREATORS, thread_name_prefix="creator")
    started = time.perf_counter()
    try:
        futures = [pool.submit(create_one, api, index) for index in range(start, stop)]
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()
            if done % PROGRESS_EVERY == 0 or done == len(futures):
                rate = done / (time.perf_counter() - started)
                progress(f"created {start + done}/{stop} objects ({rate:.0f}/s)")
        return time.perf_counter() - started
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class ListSample:
    """One timed LIST: seconds to the decoded JSON, response bytes, and how many items came back."""

    seconds: float
    size: int
    items: int


def timed_list(api: KubeApi, path: str) -> ListSample:
    """GET the whole collection and decode the JSON: the same client work for either version."""
    client: Any = api._client  # the official client is untyped
    started = time.perf_counter()
    params = client.param_serialize(
        "GET", path, header_params={"Accept": "application/json"}, auth_settings=["BearerToken"]
    )
    response = client.call_api(*params, _request_timeout=(10, 300))
    data = response.read()
    payload = json.loads(data)
    elapsed = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {response.status}: {data[:300]!r}")
    return ListSample(elapsed, len(data), len(payload["items"]))


def time_lists(api: KubeApi, count: int, repetitions: int) -> dict[str, list[ListSample]]:
    """Interleaved LISTs via v1 and v1beta1 (alternating which goes first), after one warm-up each."""
    samples: dict[str, list[ListSample]] = {V1: [], V1BETA1: []}
    for version in (V1, V1BETA1):
        timed_list(api, list_path(version))
    for rep in range(repetitions):
        order = (V1, V1BETA1) if rep % 2 == 0 else (V1BETA1, V1)
        for version in order:
            sample = timed_list(api, list_path(version))
            if sample.items != count:
                raise RuntimeError(f"LIST via {version} returned {sample.items} objects, expected {count}")
            samples[version].append(sample)
        progress(f"LIST of {count}: repetition {rep + 1}/{repetitions} done")
    return samples


def list_size_rows(api: KubeApi, count: int, created: int, seconds: float, repetitions: int) -> list[Row]:
    """Creation rate and the v1 / v1beta1 LIST figures for `count` objects."""
    samples = time_lists(api, count, repetitions)
    section = f"LIST of {count:,} objects ({repetitions} reps each, interleaved)"
    medians = {v: statistics.median(s.seconds for s in samples[v]) for v in samples}
    ratio = medians[V1BETA1] / medians[V1]
    rows = [
        Row(
            section,
            f"creation rate ({created:,} added, {CREATORS} creators, create + status)",
            f"{created / seconds:.0f} objects/s",
        )
    ]
    for version in (V1, V1BETA1):
        fastest = min(s.seconds for s in samples[version])
        rows.append(Row(section, f"{version.split('/')[1]} median / min", f"{ms(medians[version])} / {ms(fastest)}"))
        rows.append(Row(section, f"{version.split('/')[1]} response", f"{samples[version][0].size / 1e6:.2f} MB"))
    rows.append(
        Row(
            section,
            "ratio v1beta1/v1 (median)",
            f"{ratio:.2f}",
            verdict(ratio < LIST_RATIO_TARGET, f"< {LIST_RATIO_TARGET:g}"),
        )
    )
    return rows


def list_rows(cluster: LocalCluster, hooks: WebhookReplicas, plan: Plan) -> list[Row]:
    """Every LIST figure, growing the collection to each size in turn."""
    api = KubeApi(load_client(str(cluster.kubeconfig)))
    install(api, hooks)
    rows: list[Row] = []
    existing = 0
    for count in plan.sizes:
        progress(f"creating objects {existing}..{count - 1} with {CREATORS} creators")
        seconds = create_objects(api, existing, count)
        rows += list_size_rows(api, count, count - existing, seconds, plan.list_repetitions)
        existing = count
    return rows


# -- orchestration ---------------------------------------------------------------------------------


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table and keep it in benchmarks/results/."""
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # so the cleanup below also runs on SIGTERM
    workdir = Path(tempfile.mkdtemp(prefix="sampledb-bench-"))
    try:
        rows = run(QUICK if args.quick else FULL, workdir)
    except BaseException:
        progress(f"failed; logs of the webhook and the cluster are kept in {workdir}")
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    table = markdown_table(rows)
    print(table, end="")
    command = "make bench" + (" (--quick)" if args.quick else "")
    write_results(table, command)
    progress(f"table written to {RESULTS_FILE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

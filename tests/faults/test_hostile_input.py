"""Hostile input: hundreds of generated invalid SampleDBs, none of which may crash or stall the operator.

Every generated object is invalid in some way: wrong types, out-of-range values, bad names, bad
cron, oversized maps, unknown fields, parameters that pass the schema but the operator refuses
(unknown, managed, dangerous, multi-line), references to things that do not exist, resources the
API server refuses in a Pod. Each must be either refused at admission (422 naming the offending field's path, e.g.
`spec.storage.size`, the one its category names; 400 for unknown fields, which the API server's
strict field validation reports as a decoding error naming the unknown field, the way `kubectl`
sends requests by default) or, once accepted, reported by the operator with phase Degraded and a
Degraded condition saying why. Updates that the transition rules forbid (major
version downgrades, shrinking storage, changing the storage class) must all be refused.

Afterwards the same operator process (same PID, no Traceback in its log) makes a valid SampleDB
created last Ready promptly. Inputs come from hypothesis, seeded with the run's fault seed: a
failure names the seed (SAMPLEDB_FAULT_SEED replays the run), the category and the object sent.
Writes sent as `v1beta1` must meet the same rules (`test_writes_through_v1beta1_...`).
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from sampledb_operator.api.common import CRON_PATTERN, DNS_LABEL_PATTERN, QUANTITY_PATTERN, SQL_IDENTIFIER_PATTERN
from sampledb_operator.conversion.convert import RESERVED_ANNOTATION
from sampledb_operator.k8s.api import MERGE_PATCH, ApiError, KubeApi, Resource
from sampledb_operator.resources.config import DANGEROUS_PARAMETERS, MANAGED_PARAMETERS, known_parameters
from tests.faults.checks import condition, not_ready, sampledb
from tests.faults.conftest import KillableOperator
from tests.integration.conftest import wait_for

# Examples per category (one with few distinct inputs, e.g. a fixed list, stops earlier): about 600
# creates and 80 updates in all.
CREATE_EXAMPLES = 15
UPDATE_EXAMPLES = 15
# Accepted invalid objects must be reported Degraded this soon after the batch (they take ~5 s).
REPORT_SECONDS = 60.0
SAMPLEDBS = Resource("/apis/sampledb.io/v1", "sampledbs")
STRICT = {"fieldValidation": "Strict"}  # what kubectl sends by default: unknown fields are errors
STORAGE_CLASS = "standard"  # the local cluster's default class

# -- building blocks -----------------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=40)
ONE_LINE = st.text(st.characters(codec="utf-8", exclude_characters="\n\r\0"), max_size=60)
LISTS = st.lists(st.integers(0, 9), max_size=3)
MAPS = st.dictionaries(st.text(max_size=5), st.integers(0, 9), max_size=2)
FRACTIONS = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
NOT_STRING = st.one_of(INT64, st.booleans(), FRACTIONS, LISTS, MAPS)
NOT_INT = st.one_of(TEXT, st.booleans(), FRACTIONS, LISTS, MAPS)
NOT_BOOL = st.one_of(TEXT, INT64, FRACTIONS, LISTS, MAPS)
NOT_OBJECT = st.one_of(TEXT, INT64, st.booleans(), LISTS)
DNS_LABEL = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)


def not_matching(pattern: str, strategy: st.SearchStrategy[str] = TEXT) -> st.SearchStrategy[str]:
    return strategy.filter(lambda s: re.fullmatch(pattern, s) is None)


def at(*path: str) -> Any:
    """A function putting a value at `path` of a spec override."""

    def build(value: Any) -> dict[str, Any]:
        for key in reversed(path):
            value = {key: value}
        return dict(value)

    return build


def varied_case(names: frozenset[str]) -> st.SearchStrategy[str]:
    """One of `names`, in lower case or with some letters upper-cased (the operator compares lower-cased)."""
    return st.tuples(st.sampled_from(sorted(names)), st.randoms(use_true_random=False)).map(
        lambda pair: "".join(c.upper() if pair[1].random() < 0.3 else c for c in pair[0])
    )


KNOWN = known_parameters()
UNKNOWN_PARAMETER = st.from_regex(r"[a-z_][a-z0-9_]{2,30}", fullmatch=True).filter(lambda k: k not in KNOWN)
BAD_VALUE = st.one_of(
    st.tuples(ONE_LINE, st.sampled_from(["\n", "\r", "\0"]), ONE_LINE).map("".join),
    st.integers(1025, 4000).map(lambda n: "x" * n),
)
OUT_OF_RANGE_CRON = st.one_of(
    st.integers(60, 999).map(lambda m: f"{m} * * * *"),
    st.integers(24, 999).map(lambda h: f"0 {h} * * *"),
    st.integers(32, 999).map(lambda d: f"0 0 {d} * *"),
    st.integers(13, 999).map(lambda m: f"0 0 1 {m} *"),
    st.integers(8, 999).map(lambda w: f"0 0 * * {w}"),
    st.sampled_from(["* * * * * *x", "a b c d e", "*/0 * * * *", "5-1 * * * *", "TZ=UTC 0 * * *"]),
)
NON_POSITIVE_QUANTITY = st.one_of(
    st.sampled_from(["0", "0Gi", "-0.5Mi"]),
    st.integers(1, 10**6).map(lambda n: f"-{n}"),
    st.tuples(st.integers(1, 999), st.sampled_from(["Ki", "Mi", "Gi", "Ti", "k", "M", "G", "m"])).map(
        lambda p: f"-{p[0]}{p[1]}"
    ),
)
SPEC_FIELDS = {"postgres", "storage", "backup", "resources", "database", "credentials", "migrations", "restore"}

# (category, strategy of a spec override). Names say what is wrong; the outcome is not predicted:
# whether admission or the operator catches each is exactly what the test reports.
SPEC_CATEGORIES: list[tuple[str, st.SearchStrategy[Any]]] = [
    ("spec: not an object", NOT_OBJECT.map(lambda v: {"__spec__": v})),
    ("postgres.version: wrong type", NOT_INT.map(at("postgres", "version"))),
    ("postgres.version: unsupported", INT64.filter(lambda v: v not in (15, 16, 17, 18)).map(at("postgres", "version"))),
    ("postgres.image: wrong type", NOT_STRING.map(at("postgres", "image"))),
    (
        "postgres.image: empty or too long",
        st.one_of(st.just(""), st.integers(513, 4096).map(lambda n: "i" * n)).map(at("postgres", "image")),
    ),
    ("postgres.parameters: wrong type", st.one_of(TEXT, INT64, LISTS).map(at("postgres", "parameters"))),
    (
        "postgres.parameters: value of a wrong type",
        st.dictionaries(st.sampled_from(["work_mem", "max_connections"]), NOT_STRING, min_size=1).map(
            at("postgres", "parameters")
        ),
    ),
    (
        "postgres.parameters: huge map",
        st.integers(201, 400).map(lambda n: {f"p{i}": "1" for i in range(n)}).map(at("postgres", "parameters")),
    ),
    (
        "postgres.parameters: dangerous or managed",
        st.dictionaries(varied_case(DANGEROUS_PARAMETERS | MANAGED_PARAMETERS), ONE_LINE, min_size=1, max_size=3).map(
            at("postgres", "parameters")
        ),
    ),
    (
        "postgres.parameters: unknown name",
        st.dictionaries(UNKNOWN_PARAMETER, ONE_LINE, min_size=1, max_size=3).map(at("postgres", "parameters")),
    ),
    (
        # Parameter names have no length limit in the schema; the operator names each refused one
        # in its Degraded condition, whose message the status schema caps at 32768 bytes.
        "postgres.parameters: unknown names of 9-20 KiB",
        st.lists(st.integers(9000, 20000), min_size=4, max_size=5)
        .map(lambda sizes: {f"p{i}_" + "x" * n: "1" for i, n in enumerate(sizes)})
        .map(at("postgres", "parameters")),
    ),
    (
        "postgres.parameters: multi-line or oversized value",
        st.dictionaries(st.sampled_from(["work_mem", "application_name", "search_path"]), BAD_VALUE, min_size=1).map(
            at("postgres", "parameters")
        ),
    ),
    ("storage: not an object", NOT_OBJECT.map(at("storage"))),
    ("storage.size: wrong type", NOT_STRING.map(at("storage", "size"))),
    ("storage.size: not a quantity", not_matching(QUANTITY_PATTERN).map(at("storage", "size"))),
    ("storage.size: zero or negative", NON_POSITIVE_QUANTITY.map(at("storage", "size"))),
    (
        "storage.storageClassName: empty or too long",
        st.one_of(st.just(""), st.integers(254, 1000).map(lambda n: "c" * n)).map(at("storage", "storageClassName")),
    ),
    ("backup.schedule: not cron", not_matching(CRON_PATTERN).map(at("backup", "schedule"))),
    ("backup.schedule: out-of-range fields", OUT_OF_RANGE_CRON.map(at("backup", "schedule"))),
    (
        "backup.schedule: too long",
        st.integers(129, 400).map(lambda n: "* * * * " + "*" * n).map(at("backup", "schedule")),
    ),
    ("backup.retention: out of range", INT64.filter(lambda v: not 1 <= v <= 1000).map(at("backup", "retention"))),
    ("backup.retention: wrong type", NOT_INT.map(at("backup", "retention"))),
    ("backup.verify: wrong type", NOT_BOOL.map(at("backup", "verify"))),
    (
        "resources.requests: too many entries",
        st.integers(9, 30).map(lambda n: {f"example.com/r{i}": "1" for i in range(n)}).map(at("resources", "requests")),
    ),
    (
        "resources.limits: not a quantity",
        st.dictionaries(st.sampled_from(["cpu", "memory"]), not_matching(QUANTITY_PATTERN), min_size=1).map(
            at("resources", "limits")
        ),
    ),
    (
        "resources.requests: negative",
        st.dictionaries(
            st.sampled_from(["cpu", "memory"]), NON_POSITIVE_QUANTITY.filter(lambda q: q.startswith("-")), min_size=1
        ).map(at("resources", "requests")),
    ),
    (
        "resources: requests above limits",
        st.integers(2, 64)
        .map(lambda n: {"requests": {"memory": f"{n}Gi"}, "limits": {"memory": "1Gi"}})
        .map(at("resources")),
    ),
    ("database.name: not an identifier", not_matching(SQL_IDENTIFIER_PATTERN).map(at("database", "name"))),
    ("database.owner: not an identifier", not_matching(SQL_IDENTIFIER_PATTERN).map(at("database", "owner"))),
    ("credentials.secretName: not a name", not_matching(DNS_LABEL_PATTERN).map(at("credentials", "secretName"))),
    ("credentials.secretName: no such Secret", DNS_LABEL.map(at("credentials", "secretName"))),
    ("migrations: no configMap", st.just({}).map(at("migrations"))),
    ("migrations.configMap: not a name", not_matching(DNS_LABEL_PATTERN).map(at("migrations", "configMap"))),
    ("migrations.configMap: no such ConfigMap", DNS_LABEL.map(at("migrations", "configMap"))),
    (
        "restore: both or neither source",
        st.sampled_from(
            [
                {},
                {"backup": "b", "persistentVolumeClaim": "c", "file": "f"},
                {"persistentVolumeClaim": "c"},
                {"file": "f"},
            ]
        ).map(at("restore")),
    ),
    (
        "restore.file: escapes the volume",
        st.one_of(
            st.sampled_from(["../x", "a/../../etc/passwd", "/etc/passwd", ".hidden", "a/..", "..", "./x"]),
            st.tuples(DNS_LABEL, DNS_LABEL).map(lambda p: f"{p[0]}/../{p[1]}"),
            st.tuples(st.sampled_from(["/", "."]), ONE_LINE).map("".join),
        ).map(lambda f: {"restore": {"persistentVolumeClaim": "c", "file": f}}),
    ),
    ("restore.backup: no such backup", DNS_LABEL.map(at("restore", "backup"))),
    (
        "restore.persistentVolumeClaim: no such claim",
        DNS_LABEL.map(lambda c: {"restore": {"persistentVolumeClaim": c, "file": "db/x.dump"}}),
    ),
    (
        "deletionPolicy: unknown",
        TEXT.filter(lambda v: v not in ("Snapshot", "Retain", "Delete")).map(at("deletionPolicy")),
    ),
    (
        "unknown fields",
        st.tuples(
            st.sampled_from([(), ("postgres",), ("storage",), ("backup",), ("database",)]),
            st.dictionaries(
                st.text(min_size=1, max_size=12).filter(lambda k: k not in SPEC_FIELDS), INT64, min_size=1, max_size=3
            ),
        ).map(lambda p: at(*p[0])(p[1]) if p[0] else p[1]),
    ),
]
BAD_NAMES = st.one_of(
    st.integers(41, 253).map(lambda n: "n" * n),
    st.from_regex(r"[0-9-][a-z0-9-]{0,10}", fullmatch=True),
    st.from_regex(r"[a-z]{1,5}[A-Z_.][a-z]{1,5}", fullmatch=True),
    st.from_regex(r"[a-z][a-z0-9]{0,5}-", fullmatch=True),
)


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` merged in (maps merge, anything else replaces)."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


@dataclass(frozen=True)
class HostileCreate:
    """A SampleDB to create: a spec override, and a name to use instead of a fresh valid one."""

    spec_override: dict[str, Any]
    name: str | None = None
    metadata: dict[str, Any] | None = None


CREATE_CATEGORIES: list[tuple[str, st.SearchStrategy[HostileCreate]]] = [
    *[(category, strategy.map(HostileCreate)) for category, strategy in SPEC_CATEGORIES],
    ("metadata.name: invalid", BAD_NAMES.map(lambda name: HostileCreate({}, name))),
    (
        "metadata.annotations: huge",
        st.integers(257, 400).map(lambda kib: HostileCreate({}, metadata={"annotations": {"big": "x" * kib * 1024}})),
    ),
]

# Updates of valid instances that the transition rules must refuse: (pool instance, category, patch).
POOL = {
    "pool-a": {"postgres": {"version": 17}, "storage": {"size": "2Gi", "storageClassName": STORAGE_CLASS}},
    "pool-b": {"postgres": {"version": 16}, "storage": {"size": "2Gi"}},
}
SMALLER = st.one_of(
    st.integers(0, 2047).map(lambda n: f"{n}Mi"), st.integers(0, 2 * 1024**3 - 1).map(str), st.just("1Gi")
)
UPDATE_CATEGORIES: list[tuple[str, st.SearchStrategy[tuple[str, dict[str, Any]]]]] = [
    (
        "postgres.version: downgrade",
        st.sampled_from([("pool-a", 15), ("pool-a", 16), ("pool-b", 15)]).map(
            lambda p: (p[0], {"spec": {"postgres": {"version": p[1]}}})
        ),
    ),
    (
        "storage.size: shrink",
        st.tuples(st.sampled_from(sorted(POOL)), SMALLER).map(lambda p: (p[0], at("spec", "storage", "size")(p[1]))),
    ),
    (
        "storage.storageClassName: change",
        DNS_LABEL.filter(lambda n: n != STORAGE_CLASS).map(
            lambda n: ("pool-a", at("spec", "storage", "storageClassName")(n))
        ),
    ),
    ("storage.storageClassName: removal", st.just(("pool-a", at("spec", "storage", "storageClassName")(None)))),
    (
        "storage.storageClassName: added",
        DNS_LABEL.map(lambda n: ("pool-b", at("spec", "storage", "storageClassName")(n))),
    ),
    (
        "postgres.version: wrong type (update)",
        st.tuples(st.sampled_from(sorted(POOL)), NOT_INT).map(
            lambda p: (p[0], at("spec", "postgres", "version")(p[1]))
        ),
    ),
]


# -- the test ----------------------------------------------------------------------------------------------


@dataclass
class Tally:
    """What became of the generated input, by category."""

    rejected: Counter[str]
    accepted: dict[str, str]  # object name -> category

    def summary(self) -> str:
        categories = sorted(set(self.rejected) | set(self.accepted.values()))
        reported = Counter(self.accepted.values())
        rows = [f"  {c}: {self.rejected[c]} rejected, {reported[c]} accepted" for c in categories]
        return "\n".join(rows)


def field_of(category: str) -> str:
    """The path of the field a category breaks, as the API server names it: the category's name up to its colon."""
    field = category.split(":", 1)[0]
    return field if field.split(".")[0] in ("spec", "metadata") else f"spec.{field}"


def _leaf_paths(tree: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(tree, dict) or not tree:
        return [path]
    return [leaf for key, value in tree.items() for leaf in _leaf_paths(value, (*path, key))]


def names_field(message: str, field: str) -> bool:
    """`message` names `field` itself or a field inside it (`spec.storage` is not `spec.storage.size`)."""
    return re.search(rf"(?<![\w.]){re.escape(field)}(?=[:.\[\s\"]|$)", message) is not None


def _names_an_unknown_field(message: str, override: dict[str, Any]) -> bool:
    """A strict-decoding error quoting one of the unknown fields sent (its parent, when Go would escape the key)."""
    for path in _leaf_paths(override):
        key = path[-1]
        plain = key.isprintable() and '"' not in key and "\\" not in key
        shown = f'"spec.{".".join(path)}"' if plain else f'"{".".join(("spec", *path[:-1]))}.'
        if f"unknown field {shown}" in message:
            return True
    return False


def refusal_problem(err: ApiError, category: str, override: dict[str, Any]) -> str | None:
    """Why a refusal does not name what was wrong; None when it does.

    422 must name the category's field path (for unknown fields, one of those sent). 400 is strict
    field validation refusing unknown fields: those sent, or the keys of a map sent where the
    category's field takes a scalar (named as fields inside it).
    """
    unknown = category == "unknown fields"
    if err.status == 400 and "strict decoding error: unknown field" in err.message:
        if unknown:
            return None if _names_an_unknown_field(err.message, override) else "names none of the unknown fields sent"
        return None if names_field(err.message, field_of(category)) else f"does not name {field_of(category)}"
    if err.status != 422:
        return f"HTTP {err.status}, not 422"
    fields = [f"spec.{'.'.join(p)}" for p in _leaf_paths(override)] if unknown else [field_of(category)]
    if any(names_field(err.message, f) for f in fields):
        return None
    return f"does not name {' or '.join(fields)}"


def _abridged(value: Any) -> Any:
    """`value` with long strings (map keys too) shortened, for readable failure messages."""
    if isinstance(value, str) and len(value) > 40:
        return f"{value[:20]}...({len(value)} characters)"
    if isinstance(value, dict):
        return {_abridged(k): _abridged(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_abridged(v) for v in value]
    return value


def _one_example(check: Callable[[str, Any], None], category: str) -> Callable[[Any], None]:
    """The property for one category (hypothesis refuses functions with default arguments)."""

    def run(value: Any) -> None:
        check(category, value)

    return run


@pytest.fixture
def pool(admin: KubeApi, released: str) -> list[str]:
    for name, spec in POOL.items():
        admin.create(sampledb(name, released, **spec))
    wait_for(lambda: not not_ready(admin, released, list(POOL)), timeout=90, what="the pool instances to be Ready")
    return list(POOL)


@pytest.mark.timeout(900)
def test_hostile_input_is_refused_or_reported_and_never_hurts_the_operator(
    admin: KubeApi, released: str, killable_operator: KillableOperator, pool: list[str], fault_seed: int
) -> None:
    namespace, pid = released, killable_operator.pid
    names = (f"h{i}" for i in itertools.count())
    tally = Tally(Counter(), {})
    started = time.monotonic()

    def create(category: str, hostile: HostileCreate) -> None:
        name = hostile.name or next(names)
        override = hostile.spec_override
        body = sampledb(name, namespace)
        body["spec"] = override["__spec__"] if "__spec__" in override else merged(body["spec"], override)
        body["metadata"].update(hostile.metadata or {})
        refusal: ApiError | None = None
        try:
            admin._request("POST", SAMPLEDBS.path(namespace), body=body, query=STRICT)
        except ApiError as err:
            refusal = err
        if refusal is not None:
            problem = refusal_problem(refusal, category, override)
            assert problem is None, replay(category, f"refused, but {problem}: {refusal.message[:2000]}", body)
            tally.rejected[category] += 1
            return
        assert hostile.name is None and hostile.metadata is None, replay(category, "accepted", body)
        tally.accepted[name] = category

    def update(category: str, case: tuple[str, dict[str, Any]]) -> None:
        target, patch = case
        before = admin.get("SampleDB", namespace, target)
        assert before is not None
        path = SAMPLEDBS.path(namespace, target)
        refusal: ApiError | None = None
        try:
            admin._request("PATCH", path, body=patch, query=STRICT, content_type=MERGE_PATCH)
        except ApiError as err:
            refusal = err
        assert refusal is not None, replay(category, "accepted", patch, target)
        problem = refusal_problem(refusal, category, patch.get("spec") or {})
        assert problem is None, replay(category, f"refused, but {problem}: {refusal.message[:2000]}", patch, target)
        tally.rejected[f"update: {category}"] += 1
        after = admin.get("SampleDB", namespace, target)
        assert after is not None and after["spec"] == before["spec"]

    def replay(category: str, outcome: str, sent: dict[str, Any], target: str | None = None) -> str:
        """A failure message with what it takes to see it again."""
        what = f"patch of {target}" if target else "object"
        return (
            f"{category}: {outcome}\n{what}: {json.dumps(_abridged(sent))[:3000]}\n"
            f"replay: SAMPLEDB_FAULT_SEED={fault_seed} (hypothesis is seeded with it per category)"
        )

    checks: list[tuple[int, Callable[[str, Any], None], str, st.SearchStrategy[Any]]] = [
        *[(CREATE_EXAMPLES, create, c, s) for c, s in CREATE_CATEGORIES],
        *[(UPDATE_EXAMPLES, update, c, s) for c, s in UPDATE_CATEGORIES],
    ]
    for examples, check, category, strategy in checks:
        run_one = given(strategy)(_one_example(check, category))
        configured = settings(
            max_examples=examples,
            deadline=None,
            database=None,
            # No shrinking: each example is a live object, and the one that failed is the one to report.
            phases=[Phase.explicit, Phase.generate],
            print_blob=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        )
        seed(fault_seed)(configured(run_one))()
    print(f"\nhostile input ({time.monotonic() - started:.0f} s, seed {fault_seed}):\n{tally.summary()}")
    print(f"rejected at admission: {sum(tally.rejected.values())}; accepted (must be reported): {len(tally.accepted)}")

    # Everything below is checked, and every failure reported together: each is evidence.
    problems: list[str] = []

    def unreported() -> dict[str, str]:
        missing = {}
        for obj in admin.list_objects("SampleDB", namespace):
            name = obj["metadata"]["name"]
            if name not in tally.accepted:
                continue
            degraded, ready = condition(obj, "Degraded"), condition(obj, "Ready")
            if not (
                (obj.get("status") or {}).get("phase") == "Degraded"
                and degraded is not None
                and degraded["status"] == "True"
                and degraded["message"]
                and ready is not None
                and ready["status"] == "False"
            ):
                missing[name] = f"{tally.accepted[name]}: phase {(obj.get('status') or {}).get('phase')}"
        return missing

    began = time.monotonic()
    missing = unreported()
    while missing and time.monotonic() - began < REPORT_SECONDS:
        time.sleep(2)
        missing = unreported()
    if missing:
        shown = [
            f"{n} ({m}), spec {_abridged((admin.get('SampleDB', namespace, n) or {}).get('spec'))}"
            for n, m in missing.items()
        ]
        problems.append(
            f"{len(missing)} accepted invalid objects not reported Degraded in {REPORT_SECONDS:.0f} s: {shown[:3]}"
        )
    reasons = Counter(
        (condition(o, "Degraded") or {}).get("reason")
        for o in admin.list_objects("SampleDB", namespace)
        if o["metadata"]["name"] in tally.accepted
    )
    print(f"Degraded reasons after {time.monotonic() - began:.0f} s: {dict(reasons)}")
    warned = {e["regarding"]["name"] for e in admin.list_objects("Event", namespace) if e["type"] == "Warning"}
    silent = sorted(set(tally.accepted) - warned)
    if silent:
        problems.append(f"no Warning event for {len(silent)} accepted invalid objects, e.g. {silent[:5]}")

    admin.create(sampledb("last", namespace))
    created = time.monotonic()
    try:
        wait_for(lambda: not not_ready(admin, namespace, ["last"]), timeout=60, what="the valid SampleDB created last")
        print(f"the valid SampleDB created last was Ready in {time.monotonic() - created:.1f} s")
    except AssertionError as err:
        problems.append(str(err))
    if not (killable_operator.pid == pid and killable_operator.alive() and len(killable_operator.incarnations) == 1):
        problems.append("the operator process died or was replaced")
    elif not killable_operator.healthy():
        problems.append("the operator no longer reports healthy")
    else:
        errors = killable_operator.metrics().get('sampledb_reconcile_total{result="error"}', 0.0)
        if errors:
            problems.append(f"{errors:.0f} reconciles failed")
    log = killable_operator.log()
    if "Traceback" in log:
        first = log.index("Traceback")
        before = log[:first].splitlines()[-1]
        error = next((line for line in log[first:].splitlines()[1:] if line and not line.startswith(" ")), "?")
        count = log.count("Traceback")
        problems.append(f"{count} Tracebacks in the operator log, the first after:\n  {before[:300]}\n  {error[:800]}")
    if problems:
        pytest.fail(f"seed {fault_seed}:\n" + "\n".join(problems), pytrace=False)


# -- writes through v1beta1 ------------------------------------------------------------------------------

V1BETA1_SAMPLEDBS = Resource("/apis/sampledb.io/v1beta1", "sampledbs")
# (what, the v1 spec created first, a merge patch sent as v1beta1, the field its refusal must name).
# Each update is one v1 refuses (test_hostile_input_... above sends the same through v1).
BETA_UPDATES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("storage shrink", {"storage": {"size": "2Gi"}}, {"spec": {"storageSize": "1Gi"}}, "spec.storageSize"),
    (
        "storageClassName change",
        {"storage": {"size": "1Gi", "storageClassName": STORAGE_CLASS}},
        {"spec": {"storageClassName": "other"}},
        "spec.storageClassName",
    ),
    (
        "storageClassName removal",
        {"storage": {"size": "1Gi", "storageClassName": STORAGE_CLASS}},
        {"spec": {"storageClassName": None}},
        "spec.storageClassName",
    ),
    (
        "restore change through the reserved annotation",
        {"storage": {"size": "1Gi"}, "restore": {"backup": "nightly"}},
        {"metadata": {"annotations": {RESERVED_ANNOTATION: json.dumps({"restore": {"backup": "other"}})}}},
        "spec.restore",
    ),
]


@pytest.mark.parametrize(
    ("what", "spec", "patch", "field"),
    [pytest.param(*u, id=u[0]) for u in BETA_UPDATES],
)
def test_updates_through_v1beta1_meet_the_transition_rules_of_v1(
    admin: KubeApi, namespace: str, crds: list[str], what: str, spec: dict[str, Any], patch: dict[str, Any], field: str
) -> None:
    """The API server checks an update against the schema of the version it arrives in; the webhook sees no old object.

    So a rule on changes (`oldSelf`) that only the v1 schema has does not hold for `kubectl edit
    sampledbs.v1beta1.sampledb.io`: the volume could shrink, its class change, the restore source
    change after creation. The v1beta1 schema's own CEL copies refuse the storage changes; the
    restore source, which v1beta1 carries in the reserved annotation CEL cannot read, is refused
    by the validating webhook (conversion/admission.py). The refusal must name the field, as the
    same update through v1 does.
    """
    admin.create({**sampledb("beta", namespace), "spec": spec})
    before = admin.get("SampleDB", namespace, "beta")
    assert before is not None
    refusal: ApiError | None = None
    try:
        admin._request(
            "PATCH", V1BETA1_SAMPLEDBS.path(namespace, "beta"), body=patch, query=STRICT, content_type=MERGE_PATCH
        )
    except ApiError as err:
        refusal = err
    after = admin.get("SampleDB", namespace, "beta")
    assert after is not None
    changed = {
        k: (before["spec"].get(k), after["spec"].get(k)) for k in spec if before["spec"].get(k) != after["spec"].get(k)
    }
    assert refusal is not None, f"{what}: accepted through v1beta1; the stored v1 spec changed: {changed}"
    assert refusal.status == 422 and names_field(refusal.message, field), f"{what}: {refusal.status} {refusal.message}"
    assert after["spec"] == before["spec"]


def test_a_deeply_nested_reserved_annotation_is_refused_with_a_reason(
    admin: KubeApi, namespace: str, crds: list[str]
) -> None:
    """6 KB of nesting, far below the 256 KiB annotations may hold: refused with the webhook's reason.

    The API server reports every conversion refusal as a 500 carrying the webhook's message (as for
    the counter-examples sent through v1beta1 in tests/integration/test_conversion.py); what matters
    is that the message names the annotation and why, not "Server got itself in trouble".
    """
    body = {**sampledb("deep", namespace), "apiVersion": "sampledb.io/v1beta1", "spec": {"storageSize": "1Gi"}}
    body["metadata"]["annotations"] = {RESERVED_ANNOTATION: '{"resources":' + '{"a":' * 1000 + "1" + "}" * 1001}
    refusal: ApiError | None = None
    try:
        admin._request("POST", V1BETA1_SAMPLEDBS.path(namespace), body=body, query=STRICT)
    except ApiError as err:
        refusal = err
    assert refusal is not None, "accepted"
    reason = f"{RESERVED_ANNOTATION} is nested"
    assert refusal.status in (400, 422, 500) and reason in refusal.message, f"{refusal.status} {refusal.message[:1000]}"

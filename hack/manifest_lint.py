#!/usr/bin/env python3
"""Lint every Kubernetes manifest the project ships or creates with checkov; fail on anything new.

    hack/manifest_lint.py [--exceptions hack/manifest-lint-exceptions.yaml]

Two sources of manifests, each render written to its own temporary folder and checked on its own
(`checkov --framework kubernetes -d <folder>`), so that graph checks never mix two renders:

- `chart`: `helm template` of charts/sampledb-operator with its default values and with every
  `ci/*-values.yaml`;
- `operand`: what the operator's pure builders produce for every SampleDB in config/samples (parsed
  as the reconciler parses the v1 object; a v1beta1 sample is converted first): the ConfigMap,
  Services, StatefulSet, PodDisruptionBudget, backup volume and CronJob (the reconciler's CHILDREN),
  the credentials Secret, and every Job it can run for that instance (init, init with restore,
  backup for each SampleDBBackup sample, final snapshot, the five upgrade steps, migration,
  configuration check).

Every failed check must match an entry of the exceptions file (check id, source, `Kind/name` glob,
and a required reason); the script exits 1 on a finding without one, and on an exception that no
longer matches anything (stale). Exit 2: a tool is missing or a run could not be evaluated.
checkov and helm are the pinned builds of hack/build-tools.sh (`make test-tools`).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sampledb_localcluster.tools import MissingToolError, require_tools
from sampledb_operator.api import GROUP
from sampledb_operator.api.common import UpgradeMethod
from sampledb_operator.conversion.convert import convert
from sampledb_operator.jobs import upgrade
from sampledb_operator.jobs.backup import backup_job
from sampledb_operator.jobs.config_check import config_check_job
from sampledb_operator.jobs.initialize import init_job
from sampledb_operator.jobs.migrate import migration_job
from sampledb_operator.jobs.snapshot import snapshot_job, snapshot_pvc
from sampledb_operator.reconcile import children, config_check
from sampledb_operator.resources import secret
from sampledb_operator.resources.instance import Instance
from sampledb_operator.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "charts" / "sampledb-operator"
SAMPLES = REPO / "config" / "samples"
DEFAULT_EXCEPTIONS = REPO / "hack" / "manifest-lint-exceptions.yaml"
RELEASE, NAMESPACE = "sampledb-operator", "sampledb-system"
OPERAND_NAMESPACE = "sampledb-demo"
SOURCES = ("chart", "operand")
V1 = f"{GROUP}/v1"


@dataclass(frozen=True)
class Render:
    """One set of manifests checked together: `chart:<values>` or `operand:<sample>`."""

    source: str
    name: str
    manifests: tuple[dict[str, Any], ...]

    @property
    def label(self) -> str:  # noqa: D102
        return f"{self.source}:{self.name}"


@dataclass(frozen=True)
class Finding:
    """A failed check on one resource of one render."""

    check: str
    title: str
    source: str
    kind: str
    name: str
    render: str

    @property
    def resource(self) -> str:  # noqa: D102
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class Exception_:
    """An accepted finding: check id, source, a `Kind/name` glob, and why."""

    check: str
    source: str
    resource: str
    reason: str

    def matches(self, finding: Finding) -> bool:  # noqa: D102
        return (
            self.check == finding.check
            and self.source == finding.source
            and fnmatch.fnmatchcase(finding.resource, self.resource)
        )


def log(message: str) -> None:
    """Progress, on stderr."""
    print(f"[manifest-lint] {message}", file=sys.stderr, flush=True)


# -- the chart -------------------------------------------------------------------------------------


def chart_values_files() -> list[Path | None]:
    """None (the chart's defaults), then every ci/*-values.yaml."""
    return [None, *sorted((CHART / "ci").glob("*-values.yaml"))]


def helm_template(helm: Path, values: Path | None) -> list[dict[str, Any]]:
    """The chart rendered as `helm install` would, test hooks included."""
    argv = [str(helm), "template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    if values is not None:
        argv += ["--values", str(values)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def chart_renders(helm: Path) -> list[Render]:
    """One render per values file."""
    renders = []
    for values in chart_values_files():
        name = "values.yaml" if values is None else f"ci/{values.name}"
        renders.append(Render("chart", name, tuple(helm_template(helm, values))))
    return renders


# -- the operands ----------------------------------------------------------------------------------


def load_samples() -> list[dict[str, Any]]:
    """Every object of config/samples, in file order."""
    return [doc for path in sorted(SAMPLES.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def as_stored(sample: dict[str, Any]) -> dict[str, Any]:
    """The sample as the reconciler receives it: v1, with the metadata the API server adds."""
    obj = sample if sample["apiVersion"] == V1 else convert(sample, V1)
    meta = {**obj["metadata"], "namespace": OPERAND_NAMESPACE, "uid": f"uid-{obj['metadata']['name']}"}
    return {**obj, "metadata": {**meta, "generation": 1}}


def child_manifests(instance: Instance) -> list[dict[str, Any]]:
    """What the reconciler keeps in place: its CHILDREN, and the generated credentials Secret."""
    built = [child.build(instance) for child in children.CHILDREN]
    placeholder = "not-a-real-password"  # the linter never sees real credentials
    built.append(secret.credentials_secret(instance, password=placeholder, superuser_password=placeholder))
    return [manifest for manifest in built if manifest is not None]


def upgrade_jobs(instance: Instance) -> list[dict[str, Any]]:
    """The five steps of an upgrade from the previous major to the sample's, by each method."""
    to_version = instance.spec.postgres.version
    from_version = to_version - 1
    images = (instance.settings.images.get(from_version, instance.image), instance.image)
    return [
        upgrade.upgrade_job(
            instance, step, from_version=from_version, to_version=to_version, attempt=1, images=images, method=method
        )
        for method in (UpgradeMethod.LOGICAL, UpgradeMethod.COPY)
        for step in upgrade.Step
    ]


def job_manifests(instance: Instance, backups: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every Job the operator can create for this instance."""
    jobs = [
        init_job(instance),
        init_job(instance, (f"{instance.name}-source-backups", "source/backup.dump")),
        snapshot_pvc(instance),
        snapshot_job(instance),
        migration_job(instance, name=f"{instance.name}-migrate-0123456789", config_map=f"{instance.name}-migrations"),
        config_check_job(instance, config_check.job_name(instance)),
        *upgrade_jobs(instance),
    ]
    for backup in backups:
        name = backup["metadata"]["name"]
        jobs.append(backup_job(instance, name=name, label=name, verify=bool(backup["spec"].get("verify"))))
    return jobs


def operand_renders(settings: Settings) -> list[Render]:
    """One render per SampleDB sample."""
    samples = load_samples()
    backups = [s for s in samples if s["kind"] == "SampleDBBackup"]
    renders = []
    for sample in samples:
        if sample["kind"] != "SampleDB":
            continue
        instance = Instance.from_object(as_stored(sample), settings)
        own_backups = [b for b in backups if b["spec"]["instance"] == instance.name]
        manifests = child_manifests(instance) + job_manifests(instance, own_backups)
        renders.append(Render("operand", instance.name, tuple(manifests)))
    return renders


# -- checkov ---------------------------------------------------------------------------------------


def write_render(render: Render, root: Path) -> Path:
    """Each manifest of the render in its own file, in a folder of its own."""
    folder = root / render.source / render.name
    folder.mkdir(parents=True)
    for index, manifest in enumerate(render.manifests):
        name = f"{index:02d}-{manifest['kind']}-{manifest['metadata']['name']}.yaml"
        (folder / name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def split_resource(resource: str) -> tuple[str, str]:
    """(kind, name) of checkov's `Kind.namespace.name`; graph checks append `.label-value` pairs."""
    kind, _, rest = resource.partition(".")
    _, _, name = rest.partition(".")
    if "/" in name:  # `<name>.app.kubernetes.io/name-<value>...`: object names here have no dots
        name = name.split(".", 1)[0]
    return kind, name or rest


def run_checkov(checkov: Path, render: Render, folder: Path) -> list[Finding]:
    """The failed checks of one render."""
    argv = [str(checkov), "--framework", "kubernetes", "-d", str(folder), "-o", "json", "--compact", "--quiet"]
    argv.append("--skip-download")  # no Prisma Cloud: there is no network, and nothing to fetch
    env = {**os.environ, "LOG_LEVEL": "ERROR"}
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if result.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed on {render.label} (exit {result.returncode}): {result.stderr[-2000:]}")
    reports = json.loads(result.stdout or "[]")
    reports = reports if isinstance(reports, list) else [reports]
    findings = []
    for report in reports:
        if report.get("summary", {}).get("parsing_errors"):
            raise RuntimeError(f"checkov could not parse every manifest of {render.label}")
        for failed in report.get("results", {}).get("failed_checks", []):
            kind, name = split_resource(failed["resource"])
            findings.append(Finding(failed["check_id"], failed["check_name"], render.source, kind, name, render.label))
    return findings


def lint(checkov: Path, renders: list[Render]) -> list[Finding]:
    """Every render checked, in parallel (checkov takes seconds per folder)."""
    with tempfile.TemporaryDirectory(prefix="manifest-lint-") as tmp:
        folders = [write_render(render, Path(tmp)) for render in renders]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = pool.map(lambda pair: run_checkov(checkov, *pair), zip(renders, folders, strict=True))
            return [finding for findings in results for finding in findings]


# -- exceptions and the verdict --------------------------------------------------------------------


def load_exceptions(path: Path) -> list[Exception_]:
    """The exceptions file; every entry must name check, source, resource and a reason."""
    entries = (yaml.safe_load(path.read_text()) or {}).get("exceptions") or []
    loaded = []
    for index, entry in enumerate(entries):
        missing = [key for key in ("check", "source", "resource", "reason") if not str(entry.get(key) or "").strip()]
        if missing:
            raise ValueError(f"{path}: exception #{index + 1} ({entry.get('check')}) lacks {', '.join(missing)}")
        if entry["source"] not in SOURCES:
            raise ValueError(f"{path}: exception #{index + 1}: source must be one of {SOURCES}")
        loaded.append(Exception_(entry["check"], entry["source"], entry["resource"], " ".join(entry["reason"].split())))
    return loaded


def grouped(findings: Iterable[Finding]) -> Iterator[tuple[Finding, list[str]]]:
    """One row per (check, source, resource), with the renders it was found in."""
    rows: dict[tuple[str, str, str], tuple[Finding, list[str]]] = {}
    for finding in findings:
        key = (finding.check, finding.source, finding.resource)
        renders = rows.setdefault(key, (finding, []))[1]
        if finding.render.partition(":")[2] not in renders:
            renders.append(finding.render.partition(":")[2])
    yield from (rows[key] for key in sorted(rows))


def table(rows: list[tuple[str, ...]]) -> str:
    """Plain aligned columns, the first row being the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) for row in rows)


def report(findings: list[Finding], exceptions: list[Exception_]) -> int:
    """Print the verdict; 0 when every finding is excepted and every exception is used."""
    unexcepted = [f for f in findings if not any(e.matches(f) for e in exceptions)]
    stale = [e for e in exceptions if not any(e.matches(f) for f in findings)]
    excepted = len(findings) - len(unexcepted)
    print(f"{len(findings)} failed checks, {excepted} covered by {len(exceptions) - len(stale)} exceptions:")
    used = [(e.check, e.source, e.resource, str(sum(e.matches(f) for f in findings))) for e in exceptions]
    print(table([("CHECK", "SOURCE", "RESOURCE", "FINDINGS"), *used]))
    if unexcepted:
        rows: list[tuple[str, ...]] = [("CHECK", "SOURCE", "RESOURCE", "RENDERS", "TITLE")]
        rows += [(f.check, f.source, f.resource, ",".join(r), f.title) for f, r in grouped(unexcepted)]
        print(f"\nFAIL: {len(unexcepted)} findings without an exception (fix them, or add an exception with a reason):")
        print(table(rows))
    if stale:
        rows = [("CHECK", "SOURCE", "RESOURCE", "REASON")]
        rows += [(e.check, e.source, e.resource, e.reason[:60]) for e in stale]
        print(f"\nFAIL: {len(stale)} stale exceptions match nothing any more (remove them):")
        print(table(rows))
    if not (unexcepted or stale):
        print("OK: every finding has an exception, and every exception is used")
    return 1 if unexcepted or stale else 0


def main(argv: list[str] | None = None) -> int:
    """Render, lint, compare with the exceptions."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exceptions", type=Path, default=DEFAULT_EXCEPTIONS, help="the exceptions file")
    args = parser.parse_args(argv)
    try:
        tools = require_tools(["helm", "checkov"])
    except MissingToolError as err:
        print(f"{err}\nInstall checkov with: hack/build-tools.sh checkov", file=sys.stderr)
        return 2
    try:
        exceptions = load_exceptions(args.exceptions)
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log("rendering the chart with its defaults and every ci/*-values.yaml")
    renders = chart_renders(tools["helm"])
    log("building the operand manifests of every SampleDB in config/samples")
    renders += operand_renders(Settings())
    count = sum(len(r.manifests) for r in renders)
    log(f"checkov on {len(renders)} renders ({count} manifests): {', '.join(r.label for r in renders)}")
    try:
        findings = lint(tools["checkov"], renders)
    except (RuntimeError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return report(findings, exceptions)


if __name__ == "__main__":
    sys.exit(main())

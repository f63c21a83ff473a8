"""hack/manifest_lint.py passes on the repository, and fails when a finding loses its exception.

It needs helm and checkov from `make test-tools`; without them these tests fail (never skip) and
say how to install them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from sampledb_localcluster.tools import MissingToolError, require_tools

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "hack" / "manifest_lint.py"
EXCEPTIONS = REPO / "hack" / "manifest-lint-exceptions.yaml"


@pytest.fixture(scope="module", autouse=True)
def _tools() -> None:
    try:
        require_tools(["helm", "checkov"])
    except MissingToolError as err:
        pytest.fail(f"{err}\nInstall them with: hack/build-tools.sh helm checkov (or `make test-tools`)")


def lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, timeout=600, check=False
    )


def test_every_manifest_passes_or_has_an_exception_with_a_reason() -> None:
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "OK: every finding has an exception" in result.stdout


def test_a_finding_without_exception_and_a_stale_exception_both_fail(tmp_path: Path) -> None:
    entries = yaml.safe_load(EXCEPTIONS.read_text())["exceptions"]
    removed = next(e for e in entries if e["check"] == "CKV_K8S_40")
    bogus = {"check": "CKV_K8S_999", "source": "chart", "resource": "Nothing/here", "reason": "a test"}
    changed = tmp_path / "exceptions.yaml"
    changed.write_text(yaml.safe_dump({"exceptions": [e for e in entries if e is not removed] + [bogus]}))
    result = lint("--exceptions", str(changed))
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    unexcepted, _, stale = result.stdout.partition("stale exceptions")
    assert "findings without an exception" in unexcepted
    assert "CKV_K8S_40" in unexcepted
    assert "StatefulSet/demo" in unexcepted
    assert "CKV_K8S_999" in stale


def test_an_exception_needs_a_reason(tmp_path: Path) -> None:
    entries = yaml.safe_load(EXCEPTIONS.read_text())["exceptions"]
    entries[0]["reason"] = " "
    changed = tmp_path / "exceptions.yaml"
    changed.write_text(yaml.safe_dump({"exceptions": entries}))
    result = lint("--exceptions", str(changed))
    assert result.returncode == 2
    assert "lacks reason" in result.stderr

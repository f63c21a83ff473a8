"""bundle/ passes `operator-sdk bundle validate --select-optional suite=operatorframework`.

operator-sdk cannot be built here, so hack/bundle-validate (built by `hack/build-tools.sh
bundle-validate`) runs the same validators from github.com/operator-framework/api. Warnings fail
too: fix them at their source (config/manifests/, crds/, the chart, hack/bundle.py), never in
bundle/. A missing tool fails the test with the command that builds it instead of skipping, so CI
cannot pass without having run the check.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sampledb_localcluster.tools import MissingToolError, load_versions, require_tools

REPO = Path(__file__).resolve().parents[2]
# What we would pass operator-sdk: the Kubernetes minor the toolchain pins (1.34).
K8S_VERSION = "k8s-version=" + ".".join(load_versions()["KUBERNETES_VERSION"].removeprefix("v").split(".")[:2])


def bundle_validate(bundle: Path) -> subprocess.CompletedProcess[str]:
    try:
        tool = require_tools(["bundle-validate"])["bundle-validate"]
    except MissingToolError as missing:  # its message names `hack/build-tools.sh bundle-validate`
        problem = str(missing)
    else:
        return subprocess.run([str(tool), str(bundle), K8S_VERSION], capture_output=True, text=True, timeout=120)
    pytest.fail(problem, pytrace=False)


def test_bundle_has_no_error_or_warning() -> None:
    result = bundle_validate(REPO / "bundle")
    assert result.returncode == 0, (
        f"bundle-validate bundle {K8S_VERSION} exited {result.returncode}; fix the sources and run "
        f"`make generate`:\n{result.stdout}{result.stderr}"
    )


def _break_csv(tmp_path: Path, change: str) -> Path:
    """A copy of bundle/ whose CSV has one defect: a warning or an error for the checker to find."""
    copy = tmp_path / "bundle"
    shutil.copytree(REPO / "bundle", copy)
    (path,) = (copy / "manifests").glob("*.clusterserviceversion.yaml")
    csv = yaml.safe_load(path.read_text())
    if change == "invalid minKubeVersion":
        csv["spec"]["minKubeVersion"] = "not-a-version"
    else:
        del csv["metadata"]["annotations"]["alm-examples"]
    path.write_text(yaml.safe_dump(csv))
    return copy


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("invalid minKubeVersion", "ERROR sampledb-operator.v"),
        ("no alm-examples", "WARNING sampledb-operator.v"),
    ],
)
def test_the_checker_fails_on_a_broken_csv(tmp_path: Path, change: str, expected: str) -> None:
    result = bundle_validate(_break_csv(tmp_path, change))
    assert result.returncode == 1, result.stdout + result.stderr
    assert expected in result.stdout
    message = "MinKubeVersion has an invalid value: not-a-version" if "minKube" in change else "example annotations"
    assert message in result.stdout

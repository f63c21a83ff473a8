"""Find the pinned Kubernetes binaries that the local cluster runs.

The versions live in one place, ``hack/versions.env``, and ``hack/build-tools.sh`` builds each
binary into ``<tools dir>/<name>-<version>/<name>``. This module mirrors that layout so the harness
always runs exactly the pinned versions, and turns a missing binary into an error that says how to
fix it instead of a bare ``FileNotFoundError`` from deep inside ``subprocess``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The repository root; the package lives in ``<root>/operator/sampledb_localcluster``."""

VERSIONS_FILE = REPO_ROOT / "hack" / "versions.env"

# Which versions.env key pins which binary; must match version_of() in hack/build-tools.sh.
_VERSION_KEYS: Mapping[str, str] = {
    "etcd": "ETCD_VERSION",
    "kube-apiserver": "KUBERNETES_VERSION",
    "kube-controller-manager": "KUBERNETES_VERSION",
    "kube-scheduler": "KUBERNETES_VERSION",
    "kubectl": "KUBERNETES_VERSION",
    "kubelet": "KUBERNETES_VERSION",
    "kube-proxy": "KUBERNETES_VERSION",
    "coredns": "COREDNS_VERSION",
    "kwok": "KWOK_VERSION",
    "helm": "HELM_VERSION",
    "operator-sdk": "OPERATOR_SDK_VERSION",
    "opm": "OPM_VERSION",
    "olm": "OLM_VERSION",
    "catalog": "OLM_VERSION",
    "bundle-validate": "OPERATOR_FRAMEWORK_API_VERSION",
    "checkov": "CHECKOV_VERSION",
    "versitygw": "VERSITYGW_VERSION",
}


class MissingToolError(RuntimeError):
    """A pinned binary is not where ``hack/build-tools.sh`` puts it.

    Attributes:
        tool: Name of the first missing binary.
        path: Where that binary was expected.
        missing: Every missing binary with its expected path, in the order asked for.
    """

    def __init__(self, missing: list[tuple[str, Path]]) -> None:
        self.missing = missing
        self.tool, self.path = missing[0]
        names = " ".join(name for name, _ in missing)
        lines = [f"required tool {name!r} not found at {path}" for name, path in missing]
        lines.append(
            f"Fix: run `make tools` in {REPO_ROOT} (or `hack/build-tools.sh {names}`) to build the pinned "
            "versions; set SAMPLEDB_TOOLS_DIR if they were built elsewhere."
        )
        super().__init__("\n".join(lines))


def load_versions(path: Path = VERSIONS_FILE) -> dict[str, str]:
    """Parse a shell ``KEY=VALUE`` file such as ``hack/versions.env``.

    Only the plain assignments that file uses are supported: comments, blank lines, an optional
    ``export`` prefix and optional surrounding quotes.

    Args:
        path: The file to read.

    Returns:
        The assignments, in file order.
    """
    versions: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        versions[key.strip()] = value.strip().strip("'\"")
    return versions


def tools_dir() -> Path:
    """Return the folder the binaries are cached in, resolved like ``hack/build-tools.sh`` does."""
    override = os.environ.get("SAMPLEDB_TOOLS_DIR")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sampledb-operator" / "tools"


def version_of(tool: str, versions: Mapping[str, str] | None = None) -> str:
    """Return the pinned version of one tool.

    Args:
        tool: A binary name such as ``kube-apiserver``.
        versions: Parsed versions.env; read from the repository when omitted.

    Raises:
        KeyError: The tool is unknown or versions.env does not pin it.
    """
    versions = load_versions() if versions is None else versions
    return versions[_VERSION_KEYS[tool]]


def tool_path(tool: str, directory: Path | None = None, versions: Mapping[str, str] | None = None) -> Path:
    """Return where the pinned build of ``tool`` lives, whether or not it exists yet.

    Args:
        tool: A binary name such as ``kube-apiserver``.
        directory: The tools folder; :func:`tools_dir` when omitted.
        versions: Parsed versions.env; read from the repository when omitted.
    """
    base = tools_dir() if directory is None else directory
    return base / f"{tool}-{version_of(tool, versions)}" / tool


def require_tools(
    tools: Iterable[str],
    directory: Path | None = None,
    overrides: Mapping[str, Path] | None = None,
) -> dict[str, Path]:
    """Resolve several binaries at once and fail if any is missing.

    Checking everything up front means a half-built toolchain is reported before any process
    starts, and the error lists every missing binary rather than only the first.

    Args:
        tools: Binary names.
        directory: The tools folder; :func:`tools_dir` when omitted.
        overrides: Explicit paths that replace the pinned builds (used by tests).

    Returns:
        The path of every binary, by name.

    Raises:
        MissingToolError: At least one binary does not exist or is not executable.
    """
    versions = load_versions()
    overrides = overrides or {}
    paths = {name: overrides.get(name) or tool_path(name, directory, versions) for name in tools}
    missing = [(name, path) for name, path in paths.items() if not os.access(path, os.X_OK)]
    if missing:
        raise MissingToolError(missing)
    return paths

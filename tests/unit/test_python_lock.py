"""operator/constraints.txt (the lock of every Python distribution) agrees with pyproject.toml and the venv.

The venv, CI and the image are installed with `-c operator/constraints.txt`; a pin changed in
pyproject.toml without `make lock` would make that install fail or drift, so it fails here first.
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical

OPERATOR = Path(__file__).resolve().parents[2] / "operator"
FIX = "run `make lock` (after changing pyproject.toml) or `make venv` (after pulling a new lock)"


def locked() -> dict[str, str]:
    """The lock as {canonical name: version}."""
    pins: dict[str, str] = {}
    for line in (OPERATOR / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonical(name)] = version.strip()
    return pins


def declared() -> list[Requirement]:
    """The requirements of pyproject.toml: runtime and the dev extra."""
    project = tomllib.loads((OPERATOR / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def installed_closure() -> dict[str, str]:
    """Every distribution the venv holds because sampledb-operator[dev] needs it: {name: version}."""
    found: dict[str, str] = {}
    seen: set[tuple[str, str, frozenset[str]]] = set()
    pending = [(requirement, "") for requirement in declared()]
    while pending:
        requirement, extra = pending.pop()
        name = canonical(requirement.name)
        key = (name, extra, frozenset(requirement.extras))
        if key in seen or (requirement.marker and not requirement.marker.evaluate({"extra": extra})):
            continue
        seen.add(key)
        found[name] = metadata.version(requirement.name)
        for text in metadata.requires(requirement.name) or []:
            dependency = Requirement(text)
            pending += [(dependency, wanted) for wanted in ("", *requirement.extras)]
    return found


def test_every_pin_of_pyproject_is_the_locked_version() -> None:
    pins = locked()
    for requirement in declared():
        pinned = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        assert pinned, f"{requirement} in operator/pyproject.toml is not pinned with =="
        assert pins.get(canonical(requirement.name)) == pinned[0], f"{requirement.name}: {FIX}"


def test_the_lock_holds_every_installed_dependency_at_its_installed_version() -> None:
    pins = locked()
    installed = installed_closure()
    drift = {name: (version, pins.get(name)) for name, version in installed.items() if pins.get(name) != version}
    assert not drift, f"installed vs locked {drift}: {FIX}"


def test_the_lock_names_nothing_the_project_does_not_install() -> None:
    unused = set(locked()) - set(installed_closure())
    assert not unused, f"locked but not needed: {sorted(unused)}: {FIX}"

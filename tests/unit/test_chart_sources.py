"""The Helm chart's copies of generated sources are current, and its values are documented.

The chart never hand-copies what has a single source elsewhere: `make chart-sync` copies `crds/*.yaml`
to `charts/sampledb-operator/crds/` and the `rules:` of `config/rbac/role.yaml` to
`charts/sampledb-operator/files/rbac-rules.yaml`. These tests fail as soon as a copy is stale, so a
change to the models or the RBAC cannot ship a chart with the old CRDs or permissions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "sampledb-operator"
SYNC_HINT = "run `make chart-sync` (it copies crds/ and the rules of config/rbac/role.yaml into the chart)"


def test_chart_crds_are_the_generated_crds() -> None:
    source = {path.name: path.read_bytes() for path in sorted((REPO / "crds").glob("*.yaml"))}
    copy = {path.name: path.read_bytes() for path in sorted((CHART / "crds").glob("*.yaml"))}
    assert source, "crds/ holds no CRD: run `make generate` first"
    missing = sorted(set(source) - set(copy))
    extra = sorted(set(copy) - set(source))
    stale = sorted(name for name in set(source) & set(copy) if source[name] != copy[name])
    assert not (missing or extra or stale), (
        f"charts/sampledb-operator/crds/ differs from crds/ (missing {missing}, extra {extra}, "
        f"stale {stale}): {SYNC_HINT}"
    )


def test_chart_rbac_rules_are_the_rules_of_config_rbac() -> None:
    role = yaml.safe_load((REPO / "config" / "rbac" / "role.yaml").read_text())
    copy_path = CHART / "files" / "rbac-rules.yaml"
    assert copy_path.is_file(), f"{copy_path.relative_to(REPO)} is missing: {SYNC_HINT}"
    copy = yaml.safe_load(copy_path.read_text())
    assert copy == {"rules": role["rules"]}, (
        f"charts/sampledb-operator/files/rbac-rules.yaml differs from the rules of config/rbac/role.yaml: {SYNC_HINT}"
    )


# -- values.yaml documentation ---------------------------------------------------------------------

KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):(?P<rest>.*)$")


def documented_values(text: str) -> tuple[set[str], set[str]]:
    """(every key path of values.yaml, the key paths with a helm-docs `# --` comment right above).

    A `# --` comment may continue on further `#` lines; it documents the key that follows it.
    """
    paths: set[str] = set()
    documented: set[str] = set()
    stack: list[tuple[int, str]] = []
    comment_open = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment_open = True
            continue
        if stripped.startswith("#"):
            continue  # continuation of a `# --` comment, or a plain comment
        if not stripped:
            comment_open = False
            continue
        match = KEY_LINE.match(line)
        if match is None:
            comment_open = False  # a list item or a continuation of a value
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([name for _, name in stack] + [match["key"]])
        paths.add(path)
        if comment_open:
            documented.add(path)
        comment_open = False
        stack.append((indent, match["key"]))
    return paths, documented


def leaves(paths: set[str]) -> set[str]:
    return {path for path in paths if not any(other.startswith(path + ".") for other in paths)}


def covered(path: str, documented: set[str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:end]) in documented for end in range(1, len(parts) + 1))


@pytest.fixture(scope="module")
def values_doc() -> tuple[set[str], set[str]]:
    return documented_values((CHART / "values.yaml").read_text())


def test_every_value_has_a_helm_docs_comment(values_doc: tuple[set[str], set[str]]) -> None:
    paths, documented = values_doc
    undocumented = sorted(path for path in leaves(paths) if not covered(path, documented))
    assert not undocumented, f"values.yaml: add a `# --` comment above {undocumented}"


def test_the_values_parser_sees_every_value(values_doc: tuple[set[str], set[str]]) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def flatten(node: Any, prefix: str = "") -> set[str]:
        out = {prefix} if prefix else set()
        if isinstance(node, dict):
            for key, value in node.items():
                out |= flatten(value, f"{prefix}.{key}" if prefix else key)
        return out

    assert values_doc[0] == flatten(values)


def test_readme_values_table_lists_every_documented_value(values_doc: tuple[set[str], set[str]]) -> None:
    readme = (CHART / "README.md").read_text()
    missing = sorted(path for path in values_doc[1] if f"| {path} |" not in readme)
    assert not missing, (
        f"charts/sampledb-operator/README.md lacks {missing}: regenerate it with helm-docs "
        "(`go run github.com/norwoodj/helm-docs/cmd/helm-docs@v1.14.2 --chart-search-root charts`)"
    )


def test_schema_describes_every_value(values_doc: tuple[set[str], set[str]]) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def lookup(path: str) -> dict[str, Any] | None:
        node: dict[str, Any] | None = schema
        for part in path.split("."):
            properties = (node or {}).get("properties") or {}
            if part not in properties:
                # free-form maps (annotations, labels, resources...) are described as a whole
                return node if (node or {}).get("type") == "object" and "properties" not in (node or {}) else None
            node = properties[part]
        return node

    missing = sorted(path for path in values_doc[0] if lookup(path) is None)
    assert not missing, f"values.schema.json does not describe {missing}"
    undescribed = sorted(
        path for path in values_doc[0] if (node := lookup(path)) is not None and not node.get("description")
    )
    assert not undescribed, f"values.schema.json: add a description to {undescribed}"

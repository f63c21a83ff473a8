"""Fixtures for the pure unit tests: an Instance built from a plain dict, no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from sampledb_operator.resources.instance import Instance
from sampledb_operator.settings import Settings


def make_instance(spec: dict[str, Any] | None = None, **settings: Any) -> Instance:
    obj = {"metadata": {"name": "db1", "namespace": "team-a", "uid": "uid-1", "generation": 3}, "spec": spec or {}}
    return Instance.from_object(obj, Settings(**settings))


@pytest.fixture
def instance() -> Instance:
    return make_instance()

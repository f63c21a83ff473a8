"""Fixtures for the unit tests: an Instance built from a plain dict, no cluster; the webhook as a process."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sampledb_operator.resources.instance import Instance
from sampledb_operator.settings import Settings
from tests.webhook_process import WebhookReplicas, start_webhook


def wait_until(check: Callable[[], Any], timeout: float = 2.0, what: str = "condition") -> Any:
    """Poll `check` (briefly: unit tests drive threads) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.002)


def make_instance(spec: dict[str, Any] | None = None, **settings: Any) -> Instance:
    obj = {"metadata": {"name": "db1", "namespace": "team-a", "uid": "uid-1", "generation": 3}, "spec": spec or {}}
    return Instance.from_object(obj, Settings(**settings))


@pytest.fixture
def instance() -> Instance:
    return make_instance()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebhookReplicas]:
    """One webhook process on a loopback port, with a fresh CA; certificates re-read every 0.5 s."""
    hooks = start_webhook(tmp_path_factory.mktemp("webhook"), reload_seconds=0.5)
    yield hooks
    hooks.stop()

"""The watch cache against a real API server: paged LIST, WATCH, label selector, write-through.

After every change made through `KubeApi`, the cache must equal what a LIST of the server returns
(projected the same way), and `on_change` must have reported the change. A short watch timeout
makes the server end the stream during the test, so resuming from a resourceVersion (no relist)
is exercised too.
"""

from __future__ import annotations

import threading
from typing import Any

from sampledb_operator.k8s.api import KubeApi, load_client
from sampledb_operator.observe.informer import Informer, Key, strip_server_fields
from tests.integration.conftest import wait_for

LABEL = {"sampledb.test/informer": "yes"}
WATCH_TIMEOUT = 3
Change = tuple[Key, dict[str, Any] | None, dict[str, Any] | None]


def config_map(namespace: str, name: str, data: dict[str, str], *, labelled: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, **({"labels": LABEL} if labelled else {})}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def server_state(admin: KubeApi, namespace: str) -> dict[Key, dict[str, Any]]:
    """The labelled ConfigMaps as the server lists them, projected as the cache projects them."""
    return {
        (namespace, o["metadata"]["name"]): strip_server_fields({"kind": "ConfigMap", "apiVersion": "v1", **o})
        for o in admin.list_objects("ConfigMap", namespace, labels=LABEL)
    }


def cache_state(informer: Informer) -> dict[Key, dict[str, Any] | None]:
    held = informer.keys()
    return {key: informer.get(*key) for key in held}


def converged(informer: Informer, admin: KubeApi, namespace: str) -> None:
    def equal() -> bool:
        return cache_state(informer) == server_state(admin, namespace)

    wait_for(equal, timeout=15, interval=0.05, what="the cache to equal the server's listing")


def saw(changes: list[Change], name: str, old: dict[str, str] | None, new: dict[str, str] | None) -> None:
    """on_change reported `name` going from data `old` to data `new` (None: absent)."""

    def data(projection: dict[str, Any] | None) -> dict[str, str] | None:
        return None if projection is None else projection.get("data")

    def reported() -> bool:
        return any(key[1] == name and (data(o), data(n)) == (old, new) for key, o, n in list(changes))

    wait_for(reported, timeout=15, interval=0.05, what=f"on_change({name}: {old} -> {new})")


def test_informer_follows_labelled_config_maps(admin: KubeApi, namespace: str, kube_config: str) -> None:
    for i in range(3):
        admin.create(config_map(namespace, f"pre-{i}", {"i": str(i)}))
    admin.create(config_map(namespace, "other", {"k": "v"}, labelled=False))
    transport = KubeApi(load_client(kube_config))  # its own counters
    changes: list[Change] = []
    informer = Informer(
        transport,
        "ConfigMap",
        namespace=namespace,
        labels=LABEL,
        on_change=lambda key, old, new: changes.append((key, old, new)),
        page_size=2,
        watch_timeout=WATCH_TIMEOUT,
    )
    stop = threading.Event()
    thread = informer.start(stop)
    try:
        assert informer.synced.wait(30), "the informer did not sync"
        assert transport.reads["list"] == 2  # three objects in pages of two
        converged(informer, admin, namespace)
        assert len(informer) == 3
        for i in range(3):
            saw(changes, f"pre-{i}", None, {"i": str(i)})

        admin.create(config_map(namespace, "a", {"v": "1"}))
        converged(informer, admin, namespace)
        saw(changes, "a", None, {"v": "1"})

        admin.merge_patch("ConfigMap", namespace, "a", {"data": {"v": "2"}})
        converged(informer, admin, namespace)
        saw(changes, "a", {"v": "1"}, {"v": "2"})

        # Selected by the label from now on: the server reports it ADDED to the watch.
        admin.merge_patch("ConfigMap", namespace, "other", {"metadata": {"labels": LABEL}})
        converged(informer, admin, namespace)
        saw(changes, "other", None, {"k": "v"})

        # Leaves the selector: the server reports it DELETED.
        admin.merge_patch("ConfigMap", namespace, "a", {"metadata": {"labels": {"sampledb.test/informer": None}}})
        converged(informer, admin, namespace)
        saw(changes, "a", {"v": "2"}, None)

        admin.delete("ConfigMap", namespace, "pre-0")
        converged(informer, admin, namespace)
        saw(changes, "pre-0", {"i": "0"}, None)

        # Write-through: our own writes are read back before their events arrive.
        created = admin.create(config_map(namespace, "b", {"v": "mine"}))
        informer.remember(created)
        assert (informer.get(namespace, "b") or {}).get("data") == {"v": "mine"}
        assert admin.delete("ConfigMap", namespace, "pre-1")
        informer.forget_deleted(namespace, "pre-1")
        assert informer.get(namespace, "pre-1") is None
        converged(informer, admin, namespace)
        assert informer.get(namespace, "pre-1") is None

        # The server ends each stream after WATCH_TIMEOUT seconds: the watch resumes, no relist.
        opened = transport.reads["watch"]
        wait_for(lambda: transport.reads["watch"] > opened, timeout=WATCH_TIMEOUT + 10, what="the watch to reopen")
        admin.merge_patch("ConfigMap", namespace, "b", {"data": {"v": "after"}})
        converged(informer, admin, namespace)
        saw(changes, "b", {"v": "mine"}, {"v": "after"})
        assert informer.relists == 0
        assert transport.reads["list"] == 2
        assert transport.reads["get"] == 0
        assert informer.events > 0
    finally:
        stop.set()
        thread.join(timeout=WATCH_TIMEOUT + 10)  # a quiet watch notices `stop` when the server ends it
    assert not thread.is_alive()

"""The watch cache against a scripted transport: LIST paging, WATCH events, relists, write-through.

The fake transport plays the API server: `list_page` answers scripted pages (or raises scripted
errors), each `watch` call opens a stream the test feeds event by event. A stream counts the
events the informer has finished with (it asks for the next one only after applying the last), so
the tests wait on that instead of sleeping.
"""

from __future__ import annotations

import itertools
import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest

from sampledb_operator.k8s.api import ApiError, KubeApi
from sampledb_operator.observe.informer import LAST_APPLIED, Informer, Key, strip_server_fields
from tests.unit.conftest import wait_until

NS = "team-a"
END = object()  # a stream item: the server ends the stream normally
END_AT_TIMEOUT = object()  # a stream item: the server ends the stream once timeoutSeconds have passed


def cm(
    name: str,
    rv: str,
    *,
    uid: str | None = None,
    data: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    namespace: str = NS,
) -> dict[str, Any]:
    """A ConfigMap as listed (no kind: list items carry none)."""
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "resourceVersion": rv, "uid": uid or f"uid-{name}"}
    if labels:
        meta["labels"] = labels
    return {"metadata": meta, "data": data or {}}


def event(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
    """A watch event; its object carries kind and apiVersion, as the server sends them."""
    return {"type": event_type, "object": {"kind": "ConfigMap", "apiVersion": "v1", **obj}}


def bookmark(rv: str) -> dict[str, Any]:
    return {
        "type": "BOOKMARK",
        "object": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"resourceVersion": rv}},
    }


def gone_event() -> dict[str, Any]:
    status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410}
    return {"type": "ERROR", "object": {**status, "message": "too old resource version"}}


def page(items: list[dict[str, Any]], rv: str = "10", cont: str = "") -> dict[str, Any]:
    return {
        "kind": "ConfigMapList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv, **({"continue": cont} if cont else {})},
        "items": items,
    }


class Stream:
    """One watch call: the events the test pushes, in order."""

    def __init__(self, call: dict[str, Any], closed: threading.Event) -> None:
        self.call = call
        self.opened_at = time.monotonic()
        self.items: queue.Queue[Any] = queue.Queue()
        self.consumed = 0  # events the informer has finished with
        self.ended = False
        self._closed = closed

    def events(self) -> Iterator[dict[str, Any]]:
        try:
            while not self._closed.is_set():
                try:
                    item = self.items.get(timeout=0.01)
                except queue.Empty:
                    continue
                if item is END:
                    return
                if item is END_AT_TIMEOUT:
                    remaining = self.opened_at + self.call["timeout_seconds"] - time.monotonic()
                    self._closed.wait(max(remaining, 0))
                    return
                if isinstance(item, BaseException):
                    raise item
                yield self.call["decode"](json.dumps(item).encode())  # the informer's decoding, as a stream is read
                self.consumed += 1
        finally:
            self.ended = True


class FakeApi:
    """The two reads an informer makes, scripted."""

    def __init__(self) -> None:
        self.pages: queue.Queue[Any] = queue.Queue()  # dicts, exceptions, or callables returning either
        self.list_calls: list[dict[str, Any]] = []
        self.streams: list[Stream] = []
        self.closed = threading.Event()

    def script(self, *items: Any) -> None:
        for item in items:
            self.pages.put(item)

    def list_page(self, kind: str, namespace: str | None, **kwargs: Any) -> dict[str, Any]:
        self.list_calls.append({"kind": kind, "namespace": namespace, **kwargs})
        deadline = time.monotonic() + 2
        while True:
            try:
                item = self.pages.get(timeout=0.01)
                break
            except queue.Empty:
                if self.closed.is_set() or time.monotonic() > deadline:
                    raise RuntimeError("no scripted page") from None
        if callable(item):
            item = item()
        if isinstance(item, BaseException):
            raise item
        return cast(dict[str, Any], kwargs["decode"](json.dumps(item).encode()))  # as the page is read

    def watch(self, kind: str, namespace: str | None, **kwargs: Any) -> Iterator[dict[str, Any]]:
        stream = Stream({"kind": kind, "namespace": namespace, **kwargs}, self.closed)
        self.streams.append(stream)
        return stream.events()

    # -- for the tests ---------------------------------------------------------------------------
    def stream(self, number: int) -> Stream:
        """The `number`th watch stream (1-based), once opened."""
        wait_until(lambda: len(self.streams) >= number, what=f"watch #{number} to be opened")
        return self.streams[number - 1]

    def push(self, *items: Any, number: int | None = None) -> None:
        """Feed events to a stream (the latest by default) and wait until the informer has applied them."""
        stream = self.stream(number or max(len(self.streams), 1))
        target = stream.consumed + len(items)
        for item in items:
            stream.items.put(item)
        if all(isinstance(item, dict) and item["type"] != "ERROR" for item in items):
            wait_until(lambda: stream.consumed >= target, what="the events to be applied")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Key, dict[str, Any] | None, dict[str, Any] | None]] = []

    def __call__(self, key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        self.calls.append((key, old, new))

    def take(self) -> list[tuple[Key, Any, Any]]:
        """The calls so far, as (key, old data, new data) (None for an absent side), and forget them."""
        calls = [(key, data_of(old), data_of(new)) for key, old, new in self.calls]
        self.calls.clear()
        return calls


def data_of(projection: dict[str, Any] | None) -> Any:
    return None if projection is None else projection.get("data")


def data(informer: Informer, name: str) -> Any:
    return data_of(informer.get(NS, name))


Started = tuple[Informer, FakeApi, Recorder]


@pytest.fixture
def start() -> Iterator[Callable[..., Started]]:
    """Start an informer over a fresh fake in a thread; stopped (and checked stopped) afterwards."""
    stop = threading.Event()
    running: list[tuple[threading.Thread, FakeApi]] = []

    def starter(*pages: Any, **options: Any) -> Started:
        fake, recorder = FakeApi(), Recorder()
        fake.script(*pages)
        informer = Informer(cast(KubeApi, fake), "ConfigMap", namespace=NS, on_change=recorder, **options)
        running.append((informer.start(stop), fake))
        return informer, fake, recorder

    yield starter
    stop.set()
    for thread, fake in running:
        fake.closed.set()
        thread.join(timeout=2)
        assert not thread.is_alive()


def synced(informer: Informer) -> None:
    assert informer.synced.wait(2), "the informer did not sync"


# -- LIST ------------------------------------------------------------------------------------------


def test_paging_replaces_the_store_and_sets_synced_only_after_the_last_page(start: Callable[..., Started]) -> None:
    second_page = threading.Event()
    informer, fake, recorder = start(
        page([cm("a", "5", data={"k": "1"})], cont="t1"),
        lambda: second_page.wait(2) and page([cm("b", "6")], rv="20"),
        page_size=1,
    )
    wait_until(lambda: len(fake.list_calls) == 2, what="the second page to be asked for")
    # The first page is in, the listing is not complete: nothing is served, nothing is synced.
    assert not informer.synced.is_set()
    assert informer.get(NS, "a") is None
    assert len(informer) == 0
    assert recorder.calls == []
    second_page.set()
    synced(informer)
    assert informer.keys() == [(NS, "a"), (NS, "b")]
    assert [(c["cont"], c["limit"], c["namespace"]) for c in fake.list_calls] == [("", 1, NS), ("t1", 1, NS)]
    assert sorted(key for key, _, _ in recorder.take()) == [(NS, "a"), (NS, "b")]
    # The watch starts where the listing was taken; listed items get the list's kind.
    assert fake.stream(1).call["resource_version"] == "20"
    assert informer.get(NS, "a") == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "a", "namespace": NS, "resourceVersion": "5", "uid": "uid-a"},
        "data": {"k": "1"},
    }


def test_get_returns_a_fresh_copy(start: Callable[..., Started]) -> None:
    informer, _, _ = start(page([cm("a", "5", data={"k": "1"})]))
    synced(informer)
    first = informer.get(NS, "a")
    assert first is not None
    first["data"]["k"] = "changed"
    assert data(informer, "a") == {"k": "1"}


def test_expired_continue_token_restarts_the_listing_from_scratch(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(
        page([cm("stale", "5")], cont="t1"),
        ApiError(410, "GET", "/api/v1/configmaps", "The provided continue parameter is too old"),
        page([cm("a", "7")], rv="30", cont="t2"),
        page([cm("b", "8")], rv="30"),
    )
    synced(informer)
    assert [c["cont"] for c in fake.list_calls] == ["", "t1", "", "t2"]
    assert informer.keys() == [(NS, "a"), (NS, "b")]  # not "stale": from the first, abandoned listing
    assert fake.stream(1).call["resource_version"] == "30"
    assert informer.relists == 0


def test_projection_none_drops_the_object(start: Callable[..., Started]) -> None:
    def keep_labelled(obj: dict[str, Any]) -> dict[str, Any] | None:
        return obj if (obj["metadata"].get("labels") or {}).get("keep") == "yes" else None

    yes = {"keep": "yes"}
    informer, fake, recorder = start(page([cm("a", "5", labels=yes), cm("b", "6")]), project=keep_labelled)
    synced(informer)
    assert informer.keys() == [(NS, "a")]
    recorder.take()
    fake.push(event("ADDED", cm("c", "11")), event("MODIFIED", cm("b", "12", data={"x": "1"})))
    assert informer.keys() == [(NS, "a")]
    assert recorder.calls == []
    # A held object that stops being kept leaves the cache, reported deleted.
    fake.push(event("MODIFIED", cm("a", "13")))
    assert informer.keys() == []
    assert recorder.take() == [((NS, "a"), {}, None)]


def test_index_lookups_follow_changes(start: Callable[..., Started]) -> None:
    def instance(obj: dict[str, Any]) -> str | None:
        return cast(str | None, (obj["metadata"].get("labels") or {}).get("instance"))

    one, two = {"instance": "db1"}, {"instance": "db2"}
    informer, fake, _ = start(
        page([cm("z", "5", labels=one), cm("a", "6", labels=one), cm("m", "7", labels=two), cm("n", "8")]),
        index=instance,
    )
    synced(informer)

    def names(namespace: str, value: str) -> list[str]:
        return [o["metadata"]["name"] for o in informer.indexed(namespace, value)]

    assert names(NS, "db1") == ["a", "z"]
    assert names(NS, "db2") == ["m"]
    assert names("other", "db1") == []
    fake.push(event("ADDED", cm("b", "9", labels=one, namespace="other")))
    assert names("other", "db1") == ["b"]
    assert names(NS, "db1") == ["a", "z"]  # same value, another namespace
    fake.push(event("MODIFIED", cm("z", "10", labels=two)), event("DELETED", cm("a", "11", labels=one)))
    assert names(NS, "db1") == []
    assert names(NS, "db2") == ["m", "z"]
    fake.push(event("MODIFIED", cm("m", "12")))  # the label removed
    assert names(NS, "db2") == ["z"]


# -- WATCH -----------------------------------------------------------------------------------------


def test_on_change_for_add_modify_delete_and_not_for_an_identical_object(start: Callable[..., Started]) -> None:
    informer, fake, recorder = start(page([cm("a", "5", data={"k": "1"})]))
    synced(informer)
    assert recorder.take() == [((NS, "a"), None, {"k": "1"})]
    # The listed object again, as a watch event (with kind and apiVersion, which the list lacked).
    fake.push(event("MODIFIED", cm("a", "5", data={"k": "1"})))
    assert recorder.calls == []
    assert informer.events == 1
    fake.push(event("ADDED", cm("b", "11", data={"k": "b"})))
    fake.push(event("MODIFIED", cm("a", "12", data={"k": "2"})))
    fake.push(event("DELETED", cm("b", "13", data={"k": "b"})))
    assert recorder.take() == [
        ((NS, "b"), None, {"k": "b"}),
        ((NS, "a"), {"k": "1"}, {"k": "2"}),
        ((NS, "b"), {"k": "b"}, None),
    ]
    assert informer.keys() == [(NS, "a")]
    assert informer.events == 4


def test_a_change_the_projection_does_not_keep_is_no_change(start: Callable[..., Started]) -> None:
    def data_only(obj: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": obj["metadata"]["name"]}, "data": obj.get("data")}

    informer, fake, recorder = start(page([cm("a", "5", data={"k": "1"})]), project=data_only)
    synced(informer)
    recorder.take()
    fake.push(event("MODIFIED", {**cm("a", "11", data={"k": "1"}), "status": {"noise": "1"}}))
    assert recorder.calls == []
    fake.push(event("MODIFIED", cm("a", "12", data={"k": "2"})))
    assert recorder.take() == [((NS, "a"), {"k": "1"}, {"k": "2"})]


def test_bookmark_advances_the_resource_version_used_on_reconnect(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(page([cm("a", "5")], rv="10"), backoff=(0.01, 0.01))
    synced(informer)
    fake.push(bookmark("25"))
    assert informer.keys() == [(NS, "a")]
    fake.push(ConnectionResetError("connection reset by peer"))
    assert fake.stream(2).call["resource_version"] == "25"
    assert len(fake.list_calls) == 1


def test_connection_error_reconnects_from_the_last_resource_version(start: Callable[..., Started]) -> None:
    informer, fake, recorder = start(page([cm("a", "5")], rv="10"), backoff=(0.01, 0.01))
    synced(informer)
    fake.push(event("ADDED", cm("b", "11")), event("MODIFIED", cm("a", "12", data={"k": "2"})))
    fake.push(ConnectionResetError("connection reset by peer"))
    second = fake.stream(2)
    assert second.call["resource_version"] == "12"
    assert len(fake.list_calls) == 1  # no relist
    assert informer.keys() == [(NS, "a"), (NS, "b")]
    recorder.take()
    fake.push(event("DELETED", cm("b", "13")))
    assert recorder.take() == [((NS, "b"), {}, None)]
    assert informer.relists == 0


def test_gone_error_event_relists_with_replace_semantics(start: Callable[..., Started]) -> None:
    relisting = threading.Event()
    informer, fake, recorder = start(
        page([cm("a", "5", data={"v": "a"}), cm("b", "6", data={"v": "b"}), cm("c", "7", data={"v": "c"})]),
        lambda: (
            relisting.wait(2)
            and page([cm("a", "5", data={"v": "a"}), cm("b", "20", data={"v": "b2"})], rv="30", cont="r1")
        ),
        page([cm("d", "21", data={"v": "d"})], rv="30"),
    )
    synced(informer)
    recorder.take()
    fake.push(gone_event())
    wait_until(lambda: len(fake.list_calls) == 2, what="the relist")
    # While it relists, the previous content is served and the cache stays synced.
    assert informer.synced.is_set()
    assert data(informer, "c") == {"v": "c"}
    relisting.set()
    wait_until(lambda: informer.relists == 1, what="the relist to complete")
    assert informer.synced.is_set()
    assert informer.keys() == [(NS, "a"), (NS, "b"), (NS, "d")]
    assert sorted(recorder.take(), key=repr) == [
        ((NS, "b"), {"v": "b"}, {"v": "b2"}),
        ((NS, "c"), {"v": "c"}, None),
        ((NS, "d"), None, {"v": "d"}),
    ]
    assert fake.stream(2).call["resource_version"] == "30"


def test_gone_when_opening_the_watch_relists(start: Callable[..., Started]) -> None:
    informer, fake, recorder = start(page([cm("a", "5"), cm("b", "6")], rv="10"), page([cm("a", "5")], rv="40"))
    synced(informer)
    recorder.take()
    fake.push(ApiError(410, "GET", "/api/v1/namespaces/team-a/configmaps", "too old resource version: 10 (35)"))
    wait_until(lambda: informer.relists == 1, what="the relist")
    assert informer.keys() == [(NS, "a")]
    assert recorder.take() == [((NS, "b"), {}, None)]
    assert fake.stream(2).call["resource_version"] == "40"


def test_a_stream_ended_at_its_timeout_reopens_at_once_and_an_early_end_backs_off(
    start: Callable[..., Started],
) -> None:
    informer, fake, _ = start(page([cm("a", "5")], rv="10"), watch_timeout=1, backoff=(0.4, 0.4))
    synced(informer)
    fake.push(END_AT_TIMEOUT)
    first, second = fake.stream(1), fake.stream(2)
    assert first.ended
    assert second.opened_at - first.opened_at < 1.3  # about 1 s: no backoff after the server's timeout
    fake.push(END)  # ended by the server before timeoutSeconds: back off
    third = fake.stream(3)
    assert third.opened_at - second.opened_at >= 0.4
    assert third.call["resource_version"] == "10"
    assert len(fake.list_calls) == 1


def test_backoff_grows_and_an_applied_event_resets_it(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(page([cm("a", "5")], rv="10"), backoff=(0.02, 0.32))
    synced(informer)
    for number in range(1, 7):
        fake.push(OSError("refused"), number=number)
    streams = [fake.stream(n) for n in range(1, 8)]
    gaps = [later.opened_at - earlier.opened_at for earlier, later in itertools.pairwise(streams)]
    expected = [0.02, 0.04, 0.08, 0.16, 0.32, 0.32]  # doubling, capped
    assert all(gap >= least - 0.005 for gap, least in zip(gaps, expected, strict=True)), gaps
    fake.push(event("ADDED", cm("b", "11")), number=7)
    fake.push(OSError("refused"), number=7)
    eighth = fake.stream(8)
    assert eighth.opened_at - streams[-1].opened_at < 0.2  # 0.02 again, not 0.32
    assert eighth.call["resource_version"] == "11"


def test_other_error_event_reconnects_without_relisting(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(page([cm("a", "5")], rv="10"), backoff=(0.01, 0.01))
    synced(informer)
    error = {"type": "ERROR", "object": {"kind": "Status", "code": 500, "reason": "InternalError"}}
    fake.push(error)
    assert fake.stream(2).call["resource_version"] == "10"
    assert len(fake.list_calls) == 1
    assert informer.relists == 0


def test_a_failing_on_change_does_not_stop_the_cache(start: Callable[..., Started]) -> None:
    def failing(key: Key, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        raise RuntimeError("handler bug")

    fake = FakeApi()
    fake.script(page([cm("a", "5")]))
    stop = threading.Event()
    informer = Informer(cast(KubeApi, fake), "ConfigMap", namespace=NS, on_change=failing)
    thread = informer.start(stop)
    try:
        synced(informer)
        fake.push(event("ADDED", cm("b", "11")))
        assert informer.keys() == [(NS, "a"), (NS, "b")]
        assert thread.name == "informer-ConfigMap"
        assert thread.daemon
    finally:
        stop.set()
        fake.closed.set()
        thread.join(2)


# -- write-through ---------------------------------------------------------------------------------


def test_remember_is_read_at_once_and_lagging_events_do_not_undo_it(start: Callable[..., Started]) -> None:
    informer, fake, recorder = start(page([cm("a", "5", data={"v": "old"})], rv="10"))
    synced(informer)
    recorder.take()
    informer.remember({"kind": "ConfigMap", "apiVersion": "v1", **cm("a", "15", data={"v": "mine"})})
    assert data(informer, "a") == {"v": "mine"}
    assert recorder.calls == []  # our own write triggers nothing
    fake.push(event("MODIFIED", cm("a", "12", data={"v": "lagging"})))
    assert data(informer, "a") == {"v": "mine"}
    assert informer.events == 0
    fake.push(event("MODIFIED", cm("a", "15", data={"v": "mine"})))  # our write's own event ends the overlay
    assert data(informer, "a") == {"v": "mine"}
    assert informer.events == 1
    # No overlay any more: the next event applies whatever its resourceVersion.
    fake.push(event("MODIFIED", cm("a", "14", data={"v": "later"})))
    assert data(informer, "a") == {"v": "later"}
    assert recorder.take() == [((NS, "a"), {"v": "mine"}, {"v": "later"})]


def test_remember_a_created_object_hides_a_lagging_delete_of_its_predecessor(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(page([cm("a", "5", uid="u1")], rv="10"))
    synced(informer)
    informer.remember({"kind": "ConfigMap", "apiVersion": "v1", **cm("a", "16", uid="u2")})
    fake.push(event("DELETED", cm("a", "15", uid="u1")))
    assert (informer.get(NS, "a") or {}).get("metadata", {}).get("uid") == "u2"


def test_remember_with_a_non_integer_resource_version_lets_the_event_win(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(page([cm("a", "5", data={"v": "old"})], rv="10"))
    synced(informer)
    informer.remember({"kind": "ConfigMap", "apiVersion": "v1", **cm("a", "opaque", data={"v": "mine"})})
    fake.push(event("MODIFIED", cm("a", "12", data={"v": "server"})))
    assert data(informer, "a") == {"v": "server"}


def test_remember_of_an_object_the_selector_does_not_select_removes_it(start: Callable[..., Started]) -> None:
    mine = {"managed": "yes"}
    informer, _, _ = start(page([cm("a", "5", labels=mine)], rv="10"), labels=mine)
    synced(informer)
    informer.remember({"kind": "ConfigMap", "apiVersion": "v1", **cm("a", "15")})  # the label removed
    assert informer.get(NS, "a") is None
    informer.remember({"kind": "ConfigMap", "apiVersion": "v1", **cm("b", "16", labels=mine)})
    assert informer.keys() == [(NS, "b")]


def test_forget_deleted_lagging_modified_does_not_resurrect_a_recreated_object_is_stored(
    start: Callable[..., Started],
) -> None:
    informer, fake, recorder = start(page([cm("a", "5", uid="u1", data={"v": "1"})], rv="10"))
    synced(informer)
    recorder.take()
    informer.forget_deleted(NS, "a")
    assert informer.get(NS, "a") is None
    assert recorder.calls == []
    terminating = cm("a", "11", uid="u1", data={"v": "1"})
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    fake.push(event("MODIFIED", terminating), event("ADDED", cm("a", "12", uid="u1")))
    assert informer.get(NS, "a") is None
    assert recorder.calls == []
    fake.push(event("ADDED", cm("a", "13", uid="u2", data={"v": "new"})))  # re-created by someone
    assert data(informer, "a") == {"v": "new"}
    assert recorder.take() == [((NS, "a"), None, {"v": "new"})]


def test_forget_deleted_without_a_uid_waits_for_the_deleted_event(start: Callable[..., Started]) -> None:
    def no_uid(obj: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": obj["metadata"]["name"]}, "data": obj.get("data")}

    informer, fake, _ = start(page([cm("a", "5", uid="u1", data={"v": "1"})], rv="10"), project=no_uid)
    synced(informer)
    informer.forget_deleted(NS, "a")
    fake.push(event("MODIFIED", cm("a", "11", uid="u1", data={"v": "1"})))
    assert informer.get(NS, "a") is None
    fake.push(event("DELETED", cm("a", "12", uid="u1")))  # ends the tombstone
    fake.push(event("ADDED", cm("a", "13", uid="u2", data={"v": "new"})))
    assert data(informer, "a") == {"v": "new"}


def test_forget_deleted_of_a_key_not_held_leaves_no_tombstone(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(page([], rv="10"))
    synced(informer)
    informer.forget_deleted(NS, "a")  # its DELETED event already applied, say
    fake.push(event("ADDED", cm("a", "12", uid="u1", data={"v": "1"})))
    assert data(informer, "a") == {"v": "1"}


def test_a_relist_ends_overlays_and_tombstones_set_before_it(start: Callable[..., Started]) -> None:
    informer, fake, _ = start(
        page([cm("a", "5", data={"v": "old"}), cm("b", "6", uid="u1")], rv="10"),
        page([cm("a", "40", data={"v": "listed"}), cm("b", "6", uid="u1")], rv="45"),
    )
    synced(informer)
    informer.remember({"kind": "ConfigMap", "apiVersion": "v1", **cm("a", "50", data={"v": "mine"})})
    informer.forget_deleted(NS, "b")
    fake.push(gone_event())
    wait_until(lambda: informer.relists == 1, what="the relist")
    # The listing began after both writes: it is the truth, and no overlay or tombstone outlives it.
    assert data(informer, "a") == {"v": "listed"}
    assert informer.get(NS, "b") is not None
    fake.push(event("MODIFIED", cm("a", "46", data={"v": "after"})), event("MODIFIED", cm("b", "47", uid="u1")))
    assert data(informer, "a") == {"v": "after"}
    assert (informer.get(NS, "b") or {}).get("metadata", {}).get("resourceVersion") == "47"


def test_writes_made_while_a_relist_runs_survive_an_older_listing(start: Callable[..., Started]) -> None:
    listing = threading.Event()
    informer, fake, _ = start(
        page([cm("a", "5", data={"v": "old"}), cm("b", "6", uid="u1"), cm("c", "7", uid="u3")], rv="10"),
        lambda: (
            listing.wait(2)
            and page([cm("a", "40", data={"v": "listed"}), cm("b", "6", uid="u1"), cm("c", "7", uid="u3")], rv="45")
        ),
    )
    synced(informer)
    fake.push(gone_event())
    wait_until(lambda: len(fake.list_calls) == 2, what="the relist to begin")
    informer.remember({"kind": "ConfigMap", "apiVersion": "v1", **cm("a", "50", data={"v": "mine"})})
    informer.forget_deleted(NS, "b")
    listing.set()
    wait_until(lambda: informer.relists == 1, what="the relist")
    assert data(informer, "a") == {"v": "mine"}  # listed at 45, written at 50
    assert informer.get(NS, "b") is None  # listed before our delete
    assert informer.get(NS, "c") is not None
    fake.push(event("MODIFIED", cm("a", "48", data={"v": "lagging"})), event("MODIFIED", cm("b", "49", uid="u1")))
    assert data(informer, "a") == {"v": "mine"}
    assert informer.get(NS, "b") is None
    fake.push(event("MODIFIED", cm("a", "50", data={"v": "mine"})), event("DELETED", cm("b", "51", uid="u1")))
    assert data(informer, "a") == {"v": "mine"}


# -- projection ------------------------------------------------------------------------------------


def test_strip_server_fields_drops_managed_fields_and_the_last_applied_annotation_only() -> None:
    obj: dict[str, Any] = {
        "kind": "ConfigMap",
        "metadata": {
            "name": "a",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {LAST_APPLIED: "{...}", "keep": "me"},
            "labels": {"x": "y"},
        },
        "data": {"k": "v"},
    }
    assert strip_server_fields(obj) == {
        "kind": "ConfigMap",
        "metadata": {"name": "a", "annotations": {"keep": "me"}, "labels": {"x": "y"}},
        "data": {"k": "v"},
    }
    assert obj["metadata"]["managedFields"] == [{"manager": "kubectl"}]  # the input is left alone

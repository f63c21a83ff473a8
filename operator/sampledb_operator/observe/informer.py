"""`Informer`: a watch cache of one kind (one LIST, then a WATCH resumed from it), of our own.

Why not kopf's watches and indexes: kopf runs its whole per-object pipeline (handler selection,
progress storage, posting) for every event of every watched object, and after its watch expires
it replays the new listing as events without deleting the objects that vanished in the gap, so an
index can keep a deleted object until the operator restarts. Here:

- events and listed objects are decoded only as far as the projection reads (`read`: the rest of
  the JSON is skipped without making Python objects of it);
- each object is kept as its projection (only what some reader reads), encoded as compact JSON
  bytes: thousands of small dicts cost several times the memory of their bytes, equal bytes tell
  an unchanged object without a deep compare, and every read decodes a fresh dict no caller can
  corrupt the cache through;
- a LIST (the first, or after the watch expired) *replaces* the store: what the listing lacks is
  reported deleted, which is what a replayed listing forgets;
- `synced` is set after the first complete LIST and never cleared: a cache that has not listed yet
  must never be taken as "absent" (its reader waits), while a relisting cache keeps serving its
  previous content, which is no staler than a lagging watch;
- our own writes are written through (`remember`, `forget_deleted`), so the pass after a write
  reads what it wrote even before its watch event arrives (read-your-writes: no second create of a
  child whose ADDED event is still on its way).

Write-through rules, which make a lagging watch unable to undo what we know we wrote:

- Overlay: `remember(obj)` stores the projection of our write's response and its resourceVersion.
  Until an event for that key carries a resourceVersion >= the remembered one, events for the key
  are ignored when both resourceVersions are integers and the event's is older (the server's are
  integers; when one is not, ordering is unknown and the event wins). The first event not ignored
  is applied and ends the overlay.
- Tombstone: `forget_deleted(ns, name)` removes the key and, if it was held, remembers the deleted
  object's `metadata.uid` (projections keep it). While the tombstone stands, ADDED and MODIFIED
  events for the key are ignored when their object has that uid (when the projection kept no uid,
  all of them are ignored); an object with another uid is a re-creation: it is stored and ends the
  tombstone, as does any DELETED event for the key. A key not held gets no tombstone: the watch has
  already delivered its DELETED event, after which nothing older can arrive. The key being held
  proves the DELETED event is still to come, so a tombstone always ends.
- A relist ends the overlays and tombstones set before it began (a LIST started after our write
  reflects it). Those set while it ran are kept and applied over the listing: an overlay newer than
  the listing's resourceVersion keeps the remembered state, a tombstone drops the listed object of
  the same uid (and ends if the listing lacks the key or holds another uid).

Stopping: `run` checks its stop event between events; a quiet watch ends at the latest after
`watch_timeout` seconds, when the server closes the stream (bookmarks come about every minute).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Mapping
from typing import Any

import msgspec

from sampledb_operator.k8s.api import ApiError, KubeApi

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace or "", name)
Project = Callable[[dict[str, Any]], dict[str, Any] | None]  # None: the object is not kept
OnChange = Callable[[Key, dict[str, Any] | None, dict[str, Any] | None], None]  # (key, old, new projection)
Index = Callable[[dict[str, Any]], str | None]  # the secondary index value of a projection
Read = Callable[[bytes | msgspec.Raw], dict[str, Any]]  # an object's JSON, decoded as far as the projection reads

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
GONE = 410
_Change = tuple[Key, bytes | None, bytes | None]


def strip_server_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without what only the server and kubectl read, and which can be most of its size."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    annotations = meta.get("annotations")
    if isinstance(annotations, dict) and LAST_APPLIED in annotations:
        meta["annotations"] = {k: v for k, v in annotations.items() if k != LAST_APPLIED}
    return {**obj, "metadata": meta} if "metadata" in obj else dict(obj)


# msgspec: the same JSON as `json` with sorted keys, encoded about 8 times and decoded about twice
# as fast; a pass decodes each object it reads, and every watch event is projected and encoded.
_ENCODER = msgspec.json.Encoder(order="sorted")
_DECODER = msgspec.json.Decoder()
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ITEMS = msgspec.json.Decoder(list[msgspec.Raw])
OBJECT_EVENTS = ("ADDED", "MODIFIED", "DELETED")


def _event_reader(read: Read) -> Callable[[bytes], dict[str, Any]]:
    """A watch event's JSON line with its object decoded by `read` (an ERROR's status, a BOOKMARK: whole)."""

    def decode(line: bytes) -> dict[str, Any]:
        fields = _FIELDS.decode(line)
        event_type = _DECODER.decode(fields["type"]) if "type" in fields else None
        event: dict[str, Any] = {"type": event_type}
        if "object" in fields:
            event["object"] = (read if event_type in OBJECT_EVENTS else _DECODER.decode)(fields["object"])
        return event

    return decode


def _page_reader(read: Read) -> Callable[[bytes], dict[str, Any]]:
    """A LIST page's JSON with each item decoded by `read`."""

    def decode(body: bytes) -> dict[str, Any]:
        fields = _FIELDS.decode(body)
        page: dict[str, Any] = {key: _DECODER.decode(value) for key, value in fields.items() if key != "items"}
        if "items" in fields:
            page["items"] = [read(item) for item in _ITEMS.decode(fields["items"])]
        return page

    return decode


def _encode(projection: dict[str, Any]) -> bytes:
    return _ENCODER.encode(projection)


def _decode(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    decoded: dict[str, Any] = _DECODER.decode(data)
    return decoded


def _key(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "", meta["name"])


def _resource_version(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _not_older(candidate: str, remembered: str) -> bool:
    """Whether `candidate` may replace `remembered`: not older, or not comparable (then it wins).

    resourceVersions are opaque by contract, but the API server's are etcd revisions; when one is
    not an integer, ordering is unknown and the server's side is taken.
    """
    try:
        return int(candidate) >= int(remembered)
    except ValueError:
        return True


def _uid(data: bytes) -> str | None:
    uid = ((_decode(data) or {}).get("metadata") or {}).get("uid")
    return uid if isinstance(uid, str) else None


def _describe(err: Exception) -> str:
    """An error for the log: its kind and message, never an object (messages name, not show)."""
    return str(err) if isinstance(err, ApiError) else f"{type(err).__name__}: {err}"


class _Expired(Exception):
    """The watch's resourceVersion was compacted away (410 Gone): only a new LIST can resume."""


class WatchError(Exception):
    """An ERROR event other than 410 Gone ended the watch."""


class Informer:
    """The cache of one kind (in one namespace, or all): thread-safe reads, one thread writing.

    Attributes:
        synced: set after the first complete LIST, never cleared.
        relists: LISTs completed after the first (the watch expired).
        events: watch events applied to the store (ADDED, MODIFIED, DELETED not ignored by the
            write-through rules, whether or not they changed the stored bytes).
    """

    def __init__(
        self,
        api: KubeApi,
        kind: str,
        *,
        namespace: str | None = None,
        labels: Mapping[str, str] | None = None,
        fields: str | None = None,
        project: Project = strip_server_fields,
        read: Read = _DECODER.decode,
        index: Index | None = None,
        on_change: OnChange | None = None,
        page_size: int = 250,
        watch_timeout: int = 300,
        backoff: tuple[float, float] = (0.1, 30.0),
    ) -> None:
        self.kind = kind
        self._api = api
        self._namespace = namespace
        self._labels = dict(labels) if labels else None
        self._fields = fields
        self._project = project
        self._read_event, self._read_page = _event_reader(read), _page_reader(read)
        self._index = index
        self._on_change = on_change
        self._page_size = page_size
        self._watch_timeout = watch_timeout
        self._backoff = backoff
        self._delay = backoff[0]
        self.synced = threading.Event()
        self.relists = 0
        self.events = 0
        self._resource_version = ""  # where the watch resumes; only the run thread touches it
        self._lock = threading.Lock()  # guards everything below
        self._store: dict[Key, bytes] = {}
        self._index_of: dict[Key, str] = {}
        self._by_index: dict[tuple[str, str], set[str]] = {}  # (namespace, value) -> names
        self._overlays: dict[Key, tuple[str, int]] = {}  # key -> (remembered resourceVersion, write number)
        self._tombstones: dict[Key, tuple[str | None, int]] = {}  # key -> (deleted uid, write number)
        self._writes = 0  # write-throughs so far: tells those made while a LIST ran

    # -- reads -------------------------------------------------------------------------------
    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The object's projection; None when not held (which means absent only once `synced`)."""
        with self._lock:
            data = self._store.get((namespace or "", name))
        return _decode(data)

    def indexed(self, namespace: str, value: str) -> list[dict[str, Any]]:
        """The projections in `namespace` whose index value is `value`, by name."""
        with self._lock:
            names = sorted(self._by_index.get((namespace or "", value), ()))
            blobs = [self._store[(namespace or "", name)] for name in names]
        return [_DECODER.decode(blob) for blob in blobs]

    def keys(self) -> list[Key]:
        """Every key held, sorted."""
        with self._lock:
            return sorted(self._store)

    def __len__(self) -> int:
        with self._lock:
            return len(self._store)

    # -- write-through -----------------------------------------------------------------------
    def remember(self, obj: dict[str, Any]) -> None:
        """Our own write, as the server answered it: read back at once, a lagging event cannot undo it."""
        key = _key(obj)
        if self._namespace and key[0] != self._namespace:
            return
        projected = self._projected(obj) if self._selected(obj) else None
        with self._lock:
            self._writes += 1
            self._overlays[key] = (_resource_version(obj), self._writes)
            self._tombstones.pop(key, None)
            if projected is None:
                self._pop(key)
            else:
                self._put(key, *projected)

    def forget_deleted(self, namespace: str, name: str) -> None:
        """Our own DELETE: gone at once, and a lagging event of the deleted object cannot bring it back."""
        key = (namespace or "", name)
        with self._lock:
            self._overlays.pop(key, None)
            data = self._pop(key)
            if data is not None:
                self._writes += 1
                self._tombstones[key] = (_uid(data), self._writes)

    # -- the loop ----------------------------------------------------------------------------
    def start(self, stop: threading.Event) -> threading.Thread:
        """`run` in a daemon thread."""
        thread = threading.Thread(target=self.run, args=(stop,), name=f"informer-{self.kind}", daemon=True)
        thread.start()
        return thread

    def run(self, stop: threading.Event) -> None:
        """LIST, then WATCH from the listing on, until `stop` is set; never raises."""
        listed = False
        while not stop.is_set():
            try:
                if not listed:
                    if self._list(stop) is None:
                        return
                    listed = True
                    self._delay = self._backoff[0]
                opened = time.monotonic()
                self._watch(stop)
                if stop.is_set():
                    return
                if time.monotonic() - opened >= self._watch_timeout:
                    continue  # the server ended the stream at timeoutSeconds, as asked: resume at once
                reason = "the watch ended early"
            except _Expired:
                logger.warning("informer %s: the watch expired (410 Gone), listing again", self.kind)
                listed = False
                continue
            except Exception as err:
                reason = _describe(err)
            what = "watch" if listed else "list"
            logger.warning("informer %s: %s; %s again in %.1f s", self.kind, reason, what, self._delay)
            stop.wait(self._delay)
            self._delay = min(self._delay * 2, self._backoff[1])

    def _list(self, stop: threading.Event) -> str | None:
        """One complete LIST replacing the store; its resourceVersion, or None when stopped."""
        started = time.monotonic()
        with self._lock:
            mark = self._writes
        fresh: dict[Key, tuple[bytes, str | None]] = {}
        token = ""
        while not stop.is_set():
            try:
                page = self._api.list_page(
                    self.kind,
                    self._namespace,
                    labels=self._labels,
                    fields=self._fields,
                    limit=self._page_size,
                    cont=token,
                    decode=self._read_page,
                )
            except ApiError as err:
                if err.status != GONE or not token:
                    raise
                logger.warning("informer %s: the listing's continue token expired, listing from the start", self.kind)
                fresh, token = {}, ""
                continue
            # Listed items carry no kind: give them the list's, so they project as their events do.
            kind = str(page.get("kind") or "").removesuffix("List")
            api_version = page.get("apiVersion")
            for obj in page.get("items") or []:
                if kind:
                    obj.setdefault("kind", kind)
                if api_version:
                    obj.setdefault("apiVersion", api_version)
                projected = self._projected(obj)
                if projected is not None:
                    fresh[_key(obj)] = projected
            meta = page.get("metadata") or {}
            token = meta.get("continue") or ""
            del page  # only projections outlive their page
            if token:
                continue
            version = str(meta.get("resourceVersion") or "")
            changes = self._replace(fresh, mark, version)
            self._notify(changes)
            self._resource_version = version
            if self.synced.is_set():
                self.relists += 1
                logger.info("informer %s: listed again, %d objects, %d changed", self.kind, len(fresh), len(changes))
            else:
                elapsed = time.monotonic() - started
                logger.info("informer %s: synced, %d objects in %.1f s", self.kind, len(fresh), elapsed)
                self.synced.set()
            return version
        return None

    def _replace(self, fresh: dict[Key, tuple[bytes, str | None]], mark: int, version: str) -> list[_Change]:
        """Make the listing the store (write-throughs made during the LIST kept); the changes."""
        with self._lock:
            for key, (remembered, number) in list(self._overlays.items()):
                if number <= mark or _not_older(version, remembered):
                    del self._overlays[key]  # the listing holds our write, or something newer
                elif key in self._store:
                    fresh[key] = (self._store[key], self._index_of.get(key))
                else:
                    fresh.pop(key, None)
            for key, (uid, number) in list(self._tombstones.items()):
                listed = fresh.get(key)
                if number <= mark or listed is None:
                    del self._tombstones[key]  # the listing already reflects the delete
                elif uid is None or _uid(listed[0]) in (uid, None):
                    del fresh[key]  # listed before our delete
                else:
                    del self._tombstones[key]  # re-created since
            changes: list[_Change] = [(key, data, None) for key, data in self._store.items() if key not in fresh]
            for key, (data, _) in fresh.items():
                old = self._store.get(key)
                if old != data:
                    changes.append((key, old, data))
            self._store = {key: data for key, (data, _) in fresh.items()}
            self._index_of, self._by_index = {}, {}
            for key, (_, value) in fresh.items():
                self._set_index(key, value)
        return changes

    def _watch(self, stop: threading.Event) -> None:
        """Apply the events of one watch stream until it ends or `stop` is set."""
        stream = self._api.watch(
            self.kind,
            self._namespace,
            resource_version=self._resource_version,
            labels=self._labels,
            fields=self._fields,
            timeout_seconds=self._watch_timeout,
            decode=self._read_event,
        )
        try:
            for event in stream:
                self._handle(event)
                if stop.is_set():
                    return
        except ApiError as err:
            if err.status == GONE:
                raise _Expired from err
            raise
        finally:
            if isinstance(stream, Generator):
                stream.close()

    def _handle(self, event: dict[str, Any]) -> None:
        event_type = event.get("type")
        obj: dict[str, Any] = event.get("object") or {}
        if event_type == "ERROR":
            if obj.get("code") == GONE:
                raise _Expired
            raise WatchError(f"ERROR event {obj.get('code')} {obj.get('reason')}")
        if event_type in ("ADDED", "MODIFIED", "DELETED"):
            change = self._apply(event_type, obj)
            if change is not None:
                self._notify([change])
        version = _resource_version(obj)
        if version:  # BOOKMARK events only do this
            self._resource_version = version
        self._delay = self._backoff[0]

    def _apply(self, event_type: str, obj: dict[str, Any]) -> _Change | None:
        key = _key(obj)
        version = _resource_version(obj)
        uid = (obj.get("metadata") or {}).get("uid")
        projected = None if event_type == "DELETED" else self._projected(obj)
        with self._lock:
            overlay = self._overlays.get(key)
            if overlay is not None:
                if not _not_older(version, overlay[0]):
                    return None  # older than our own write
                del self._overlays[key]
            tombstone = self._tombstones.get(key)
            if tombstone is not None:
                if event_type != "DELETED" and (tombstone[0] is None or uid == tombstone[0]):
                    return None  # the object we deleted, before its DELETED event
                del self._tombstones[key]
            self.events += 1
            if projected is None:
                old, new = self._pop(key), None
            else:
                old, new = self._put(key, *projected), projected[0]
        return None if old == new else (key, old, new)

    # -- helpers -----------------------------------------------------------------------------
    def _selected(self, obj: dict[str, Any]) -> bool:
        """Whether the label selector selects the object (for our own writes: the server filters events)."""
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(labels.get(k) == v for k, v in (self._labels or {}).items())

    def _projected(self, obj: dict[str, Any]) -> tuple[bytes, str | None] | None:
        projection = self._project(obj)
        if projection is None:
            return None
        return _encode(projection), self._index(projection) if self._index else None

    def _put(self, key: Key, data: bytes, value: str | None) -> bytes | None:
        old = self._store.get(key)
        self._store[key] = data
        self._set_index(key, value)
        return old

    def _pop(self, key: Key) -> bytes | None:
        self._set_index(key, None)
        return self._store.pop(key, None)

    def _set_index(self, key: Key, value: str | None) -> None:
        namespace, name = key
        previous = self._index_of.get(key)
        if previous == value:
            return
        if previous is not None:
            names = self._by_index[(namespace, previous)]
            names.discard(name)
            if not names:
                del self._by_index[(namespace, previous)]
            del self._index_of[key]
        if value is not None:
            self._index_of[key] = value
            self._by_index.setdefault((namespace, value), set()).add(name)

    def _notify(self, changes: list[_Change]) -> None:
        """Tell `on_change`, outside the lock; its failure is logged, never stops the cache."""
        if self._on_change is None:
            return
        for key, old, new in changes:
            try:
                self._on_change(key, _decode(old), _decode(new))
            except Exception:
                logger.exception("informer %s: on_change failed for %s/%s", self.kind, *key)

"""Observe: watch caches of everything the reconcile reads, and one snapshot per instance from them.

`informer` keeps one kind (LIST, then WATCH; projections as bytes), `projections` says what of
each object is kept, `cache` runs an informer per kind and makes `snapshot.Snapshot`s. A pass
reads nothing from the API server.
"""

"""Act: carry out a plan's writes, status and events through `KubeApi`, with optimistic concurrency.

`executor` makes the writes and reports what the API server refused; `reconciler` is one pass:
observe (a snapshot from the watch caches), decide (`reconcile.decide`), act.
"""

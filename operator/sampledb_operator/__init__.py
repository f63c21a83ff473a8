"""SampleDB operator: runs PostgreSQL on Kubernetes through the `SampleDB` custom resource.

A reconcile pass has three parts, one package each:

- `observe`: watch caches of every kind the operator reads (`observe.cache`, one `observe.informer`
  per kind, holding `observe.projections`), and the `observe.snapshot.Snapshot` of one SampleDB
  taken from them. No API read on the hot path; a cache not yet synced is never "absent".
- `reconcile`: decide. `reconcile.decide.decide(snapshot, now, settings) -> Plan` is pure (no I/O,
  no kopf); every rule of the product is reached from it, and each hard operation (`upgrade`,
  `deletion`, `storage`, `config_check`, `migrations`, `restore`) is a module of pure functions
  with its states in its docstring.
- `act`: `act.executor.Executor` makes a plan's writes in order, with optimistic concurrency, then
  its status and events; `act.reconciler.Reconciler` is one pass: observe, decide, act.

Around them: `api` (the models, the CRDs' single source), `conversion` (the webhook), `resources`
and `jobs` (pure builders), `k8s` (the only code that talks to the API server), `handlers` (kopf:
start-up and the backup flow) and `runtime` (one pass at a time per SampleDB).
"""

__version__ = "0.1.0"

"""Decide: pure functions from what is observed to what to do. No kopf, no I/O here.

`decide.decide` is the entry point: a `Snapshot` in, a `plan.Plan` out (the writes as
`children.Action`s, the status, the events, when to look again). `children` and `status` decide
the children and the status; `upgrade`, `deletion`, `storage`, `config_check`, `migrations` and
`restore` are the state machines of the hard operations; `replicas` labels the servers' roles and
removes the volumes of standbys scaled away. `backup` (the SampleDBBackup flow) and
`crds` (CRD upkeep) still read and write through `KubeApi` themselves.
"""

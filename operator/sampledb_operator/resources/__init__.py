"""Pure builders: from a SampleDB model to Kubernetes manifests (plain dicts), with no I/O.

Each builder takes an `Instance` (the parsed object plus the settings it needs) and returns the
full desired manifest, so it can be unit-tested by comparing dicts and diffed by the reconciler.
"""

"""A local Kubernetes control plane for tests, run as plain processes on loopback.

It runs the pinned etcd, kube-apiserver, controller manager, scheduler and kwok binaries.

See :class:`LocalCluster` for the in-process API and ``python -m sampledb_localcluster --help`` for
the command line (``up``/``down``/``env``/``status``).
"""

from sampledb_localcluster.bootstrap import OPERATOR_USER
from sampledb_localcluster.cluster import DEFAULT_STATE_DIR, LocalCluster
from sampledb_localcluster.errors import ClusterStartError
from sampledb_localcluster.pki import issue_serving_cert
from sampledb_localcluster.tools import MissingToolError, load_versions

__all__ = [
    "DEFAULT_STATE_DIR",
    "OPERATOR_USER",
    "ClusterStartError",
    "LocalCluster",
    "MissingToolError",
    "issue_serving_cert",
    "load_versions",
]

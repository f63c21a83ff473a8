"""Prepare a cluster's files before start-up and its objects right after.

Before the processes start: the PKI, one kubeconfig per identity and the audit policy. After the
API server is up: the fake kwok Nodes that Pods get scheduled to. Kept apart from the process
lifecycle in :mod:`cluster` because none of it depends on how processes are run.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping, Sequence

from sampledb_localcluster import node
from sampledb_localcluster.components import AUDIT_POLICY, ClusterContext, fake_node
from sampledb_localcluster.kubeconfig import write_kubeconfig
from sampledb_localcluster.pki import (
    create_ca,
    create_signing_key_pair,
    issue_client_cert,
    issue_serving_cert,
)
from sampledb_localcluster.probes import client_tls_context, request

OPERATOR_NAMESPACE = "sampledb-system"
OPERATOR_SERVICE_ACCOUNT = "sampledb-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_SERVICE_ACCOUNT}"
"""User name of ``operator.kubeconfig``: the one a token of the operator's ServiceAccount carries,
so RBAC bindings to that ServiceAccount apply to the operator when it runs outside the cluster."""

# Client identities: file stem -> (user name, groups). The API server's x509 authenticator maps
# the certificate's CN to the user and each O to a group.
CLIENT_IDENTITIES: Mapping[str, tuple[str, Sequence[str]]] = {
    "admin": ("admin", ("system:masters",)),
    "operator": (
        OPERATOR_USER,
        ("system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NAMESPACE}", "system:authenticated"),
    ),
    "kube-controller-manager": ("system:kube-controller-manager", ()),
    "kube-scheduler": ("system:kube-scheduler", ()),
}
# The real node's identities: the kubelet as its Node (the Node authorizer and NodeRestriction
# limit it to its own objects), kube-proxy with its bootstrap role (system:node-proxier), and the
# API server's client certificate for calling kubelets (logs, exec).
NODE_IDENTITIES: Mapping[str, tuple[str, Sequence[str]]] = {
    "kubelet": (f"system:node:{node.NODE_NAME}", ("system:nodes",)),
    "kube-proxy": ("system:kube-proxy", ()),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ("system:masters",)),
}

# Which client certificate each component's kubeconfig uses; kwok needs to write Node and Pod
# status for every namespace, which no narrower bootstrap role grants.
COMPONENT_IDENTITIES: Mapping[str, str] = {
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
    "kwok": "admin",
}
NODE_COMPONENT_IDENTITIES: Mapping[str, str] = {
    "kubelet": "kubelet",
    "kube-proxy": "kube-proxy",
    # No bootstrap role lets CoreDNS list Services and EndpointSlices cluster-wide before anything
    # could create one; it is our own process, like kwok.
    "coredns": "admin",
}

APISERVER_DNS_NAMES = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


def write_pki(ctx: ClusterContext) -> None:
    """Create the CA, the API server's serving cert, the ServiceAccount keys and every client cert."""
    layout = ctx.layout
    ca = create_ca(layout.pki)
    # With a real node the API server is also reached at the node's address (the forwarder).
    ips = ["127.0.0.1", ctx.first_service_ip, *([str(ctx.network.node_ip)] if ctx.network else [])]
    issue_serving_cert(
        "kube-apiserver", ips, APISERVER_DNS_NAMES, layout.pki, ca_cert=ca.cert, ca_key=ca.key, name="apiserver"
    )
    create_signing_key_pair(layout.pki, "sa")
    identities = {**CLIENT_IDENTITIES, **(NODE_IDENTITIES if ctx.network else {})}
    for stem, (user, groups) in identities.items():
        issue_client_cert(ca, user, groups, layout.pki, stem)
    if ctx.network is not None:
        issue_serving_cert(
            node.NODE_NAME,
            [str(ctx.network.node_ip)],
            [node.NODE_NAME],
            layout.pki,
            ca_cert=ca.cert,
            ca_key=ca.key,
            name="kubelet-serving",
        )


def write_kubeconfigs(ctx: ClusterContext) -> None:
    """Write the admin, operator and per-component kubeconfigs."""
    layout = ctx.layout
    ca = layout.ca.cert
    write_kubeconfig(layout.kubeconfig, ctx.server, ca, layout.cert("admin"), "admin")
    write_kubeconfig(layout.operator_kubeconfig, ctx.server, ca, layout.cert("operator"), "sampledb-operator")
    components = {**COMPONENT_IDENTITIES, **(NODE_COMPONENT_IDENTITIES if ctx.network else {})}
    for component, identity in components.items():
        path = layout.component_kubeconfig(component)
        write_kubeconfig(path, ctx.server, ca, layout.cert(identity), component)


def write_cluster_files(ctx: ClusterContext) -> None:
    """Write everything the components read at start-up."""
    write_pki(ctx)
    write_kubeconfigs(ctx)
    (ctx.layout.config / "audit-policy.yaml").write_text(AUDIT_POLICY, encoding="utf-8")
    if ctx.network is not None:
        node.write_files(ctx.network, ctx.layout)


class ApiWaitTimeout(TimeoutError):
    """An object did not reach the expected state in time; the message says which and why."""


class AdminApi:
    """Just enough of a Kubernetes client, as ``admin``, to bootstrap the cluster."""

    def __init__(self, ctx: ClusterContext) -> None:
        """Create the client.

        Args:
            ctx: The cluster being started.
        """
        self._server = ctx.server
        self._tls = client_tls_context(ctx.layout.ca, ctx.layout.cert("admin"))

    def call(self, method: str, path: str, body: object = None) -> tuple[int, object]:
        """Send a request and return the status and decoded JSON body (``None`` if not JSON)."""
        status, text = request(method, self._server + path, self._tls, body)
        try:
            return status, json.loads(text)
        except ValueError:
            return status, None

    def wait_for(self, what: str, check: Callable[[], str | None], timeout: float) -> None:
        """Poll ``check`` until it returns ``None`` (done) or ``timeout`` runs out.

        Args:
            what: Description for the error message.
            check: Returns ``None`` when the condition holds, otherwise why not.
            timeout: Seconds.

        Raises:
            ApiWaitTimeout: The condition did not hold in time.
        """
        deadline = time.monotonic() + timeout
        reason = check()
        while reason is not None:
            if time.monotonic() > deadline:
                raise ApiWaitTimeout(f"{what} did not happen in {timeout:.0f} s ({reason})")
            time.sleep(0.1)
            reason = check()


def node_names(count: int) -> list[str]:
    """Return the names of the fake nodes: ``kwok-node-0`` … ``kwok-node-<count-1>``."""
    return [f"kwok-node-{index}" for index in range(count)]


def create_nodes(api: AdminApi, names: Sequence[str]) -> None:
    """Create the fake Node objects (an existing node of the same name is kept).

    Raises:
        RuntimeError: The API server refused a node.
    """
    for name in names:
        status, body = api.call("POST", "/api/v1/nodes", fake_node(name))
        if status not in (201, 409):
            raise RuntimeError(f"creating Node {name} failed with HTTP {status}: {body}")


def _not_ready_reason(api: AdminApi, name: str) -> str | None:
    status, body = api.call("GET", f"/api/v1/nodes/{name}")
    if status != 200 or not isinstance(body, dict):
        return f"GET node {name}: HTTP {status}"
    conditions = body.get("status", {}).get("conditions") or []
    ready = [c for c in conditions if c.get("type") == "Ready"]
    if not ready or ready[0].get("status") != "True":
        return f"node {name} is not Ready yet"
    return None


def wait_nodes_ready(api: AdminApi, names: Sequence[str], timeout: float) -> None:
    """Wait until kwok has initialised every node and marked it Ready."""
    for name in names:
        api.wait_for(f"kwok marking Node {name} Ready", functools.partial(_not_ready_reason, api, name), timeout)


def wait_default_service_account(api: AdminApi, timeout: float) -> None:
    """Wait for the ``default`` ServiceAccount of the ``default`` namespace.

    Pods cannot be created in a namespace before the controller manager has created its
    ``default`` ServiceAccount, so a cluster is only usable once this exists.
    """

    def missing() -> str | None:
        status, _ = api.call("GET", "/api/v1/namespaces/default/serviceaccounts/default")
        return None if status == 200 else f"HTTP {status}"

    api.wait_for("the controller manager creating ServiceAccount default/default", missing, timeout)

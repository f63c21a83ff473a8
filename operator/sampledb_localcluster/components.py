"""The control-plane components as data: command line, ports, health check and start order.

Describing each component as a :class:`ComponentSpec` keeps :mod:`cluster` a generic
"start these, wait until healthy, stop them" loop, so adding a component later (a real kubelet,
a second API server) means adding one function here rather than touching the lifecycle code.

Everything listens on 127.0.0.1 only. Flags follow what kubeadm/envtest use, with a few choices
made for speed and realism in tests, explained next to each flag.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sampledb_localcluster import node
from sampledb_localcluster.layout import StateLayout
from sampledb_localcluster.network import NodeNetwork
from sampledb_localcluster.probes import Probe, client_tls_context, http_probe

SERVICE_CIDR = "10.0.0.0/24"
"""Service ClusterIP range; the ``kubernetes`` Service gets its first address."""
FIRST_SERVICE_IP = "10.0.0.1"
# Fake pod IPs that kwok writes into Pod status. Nothing connects to them; kept apart from the
# service range so that a pod IP never equals a ClusterIP.
POD_CIDR = "10.244.0.1/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"

PORT_NAMES = (
    "etcd",
    "etcd-peer",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "volume-provisioner",
)
"""Keys of the port map: one per listening socket."""

AUDIT_POLICY = """\
# Every request at Metadata level (who, verb, resource, response code; no bodies), so tests and
# benchmarks can count the API calls a client made without the cost of logging payloads.
# One exception: requests in the namespace `sampledb-audit-bodies` (the fault suite's secret-leak
# test) are logged with their request bodies, so that a password the operator wrote into a Job, an
# Event or a status would be in the log. Secrets stay at Metadata there too: their bodies hold the
# passwords by design.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
  - level: Request
    namespaces: ["sampledb-audit-bodies"]
  - level: Metadata
"""


@dataclass(frozen=True)
class ComponentSpec:
    """How to run one component.

    Attributes:
        name: Component and binary name; also names its log and pid file.
        args: Command-line arguments (without the binary).
        probe: Health check, polled until it passes.
        ports: The ports it listens on, by name in :data:`PORT_NAMES`.
        stage: Components start stage by stage; those sharing a stage start together once every
            component of the earlier stages is healthy.
        env: Extra environment variables.
        command: For a component that is not a pinned binary (our own Python helpers), the
            command to run instead of the binary; empty for pinned binaries.
        wrapper: A command that runs the pinned binary, which follows it (the real node's
            processes are started in its namespaces this way).
    """

    name: str
    args: Sequence[str]
    probe: Probe
    ports: Mapping[str, int]
    stage: int
    env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] = ()
    wrapper: Sequence[str] = ()


@dataclass(frozen=True)
class ClusterContext:
    """What the component builders need to know about the cluster being started.

    Attributes:
        layout: The state folder.
        ports: Every port, by name in :data:`PORT_NAMES`.
        network: The real node's network; ``None`` for a cluster of simulated (kwok) nodes.
        bare: Only etcd and the API server (``LocalCluster(node="none")``).
    """

    layout: StateLayout
    ports: Mapping[str, int]
    network: NodeNetwork | None = None
    bare: bool = False

    @property
    def service_cidr(self) -> str:
        """The ClusterIP range: the real node's (routed into its namespace), or a virtual one."""
        return str(self.network.service_cidr) if self.network else SERVICE_CIDR

    @property
    def first_service_ip(self) -> str:
        """The ``kubernetes`` Service's ClusterIP."""
        return str(self.network.first_service_ip) if self.network else FIRST_SERVICE_IP

    @property
    def server(self) -> str:
        """The API server URL."""
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    @property
    def etcd_url(self) -> str:
        """The etcd client URL."""
        return f"http://127.0.0.1:{self.ports['etcd']}"


def _path(path: Path) -> str:
    return str(path)


def etcd(ctx: ClusterContext) -> ComponentSpec:
    """Build the etcd spec: a single-member cluster on loopback."""
    peer = f"http://127.0.0.1:{ctx.ports['etcd-peer']}"
    args = [
        "--name=default",
        f"--data-dir={ctx.layout.data / 'etcd'}",
        f"--listen-client-urls={ctx.etcd_url}",
        f"--advertise-client-urls={ctx.etcd_url}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        # The data is thrown away with the cluster, so durability buys nothing and fsync on a busy
        # CI disk is the main source of slow API writes.
        "--unsafe-no-fsync=true",
    ]
    return ComponentSpec(
        name="etcd",
        args=args,
        probe=http_probe(f"{ctx.etcd_url}/health", expect='"health":"true"'),
        ports={"etcd": ctx.ports["etcd"], "etcd-peer": ctx.ports["etcd-peer"]},
        stage=0,
    )


def kube_apiserver(ctx: ClusterContext) -> ComponentSpec:
    """Build the kube-apiserver spec: RBAC, client-certificate auth, ServiceAccount tokens, audit log."""
    layout = ctx.layout
    serving = layout.cert("apiserver")
    sa = layout.service_account_keys
    port = ctx.ports["kube-apiserver"]
    args = [
        f"--etcd-servers={ctx.etcd_url}",
        f"--cert-dir={layout.pki}",
        f"--tls-cert-file={serving.cert}",
        f"--tls-private-key-file={serving.key}",
        f"--client-ca-file={layout.ca.cert}",
        f"--secure-port={port}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--service-cluster-ip-range={ctx.service_cidr}",
        "--allow-privileged=true",
        "--authorization-mode=Node,RBAC",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={sa.cert}",
        f"--service-account-signing-key-file={sa.key}",
        f"--audit-policy-file={layout.config / 'audit-policy.yaml'}",
        f"--audit-log-path={layout.audit_log}",
        # Blocking mode writes each event before the response is sent, so a test that reads the
        # audit log right after a request sees it.
        "--audit-log-mode=blocking",
        # One file for the whole life of the cluster: readers (the benchmarks, the fault suite) read
        # it by byte offsets, and the default rotation at 100 MB (lumberjack's default when the size
        # is unset) moved a large scale run's events into a file nobody read. 100 GB never rotates.
        "--audit-log-maxsize=102400",
        "--audit-log-maxbackup=0",
        # Reach nodes by InternalIP (127.0.0.1 for kwok nodes), never by a hostname that would
        # have to resolve somewhere.
        "--kubelet-preferred-address-types=InternalIP",
        *_node_facing_args(ctx),
    ]
    tls = client_tls_context(layout.ca, layout.cert("admin"))
    return ComponentSpec(
        name="kube-apiserver",
        args=args,
        probe=http_probe(f"{ctx.server}/readyz", tls),
        ports={"kube-apiserver": port},
        stage=1,
    )


def _node_facing_args(ctx: ClusterContext) -> list[str]:
    """How the API server is reached from, and reaches, the node."""
    if ctx.network is None:
        # The default reconciler tries to publish 127.0.0.1 as the `kubernetes` Service endpoint,
        # which Endpoints validation rejects (loopback), and logs that error every 10 s. Nothing
        # in-cluster can dial it anyway: kwok pods do not run.
        return ["--endpoint-reconciler-type=none"]
    client = ctx.layout.cert("apiserver-kubelet-client")
    return [
        # The `kubernetes` Service points at the forwarder on the node's address, so Pods reach
        # the API server through the namespace like on any cluster.
        f"--advertise-address={ctx.network.node_ip}",
        f"--kubelet-client-certificate={client.cert}",
        f"--kubelet-client-key={client.key}",
        f"--kubelet-certificate-authority={ctx.layout.ca.cert}",
    ]


def _delegated_auth_args(ctx: ClusterContext, component: str) -> list[str]:
    """Flags that let a component authenticate and authorise callers of its own endpoints.

    Client certificates are checked against the cluster CA given directly, and the lookup of
    the API server's front-proxy settings is skipped: this cluster has no front proxy, and the
    lookup would log a "missing content for CA bundle" error several times a second.
    """
    kubeconfig = ctx.layout.component_kubeconfig(component)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--authentication-skip-lookup=true",
        f"--client-ca-file={ctx.layout.ca.cert}",
    ]


def kube_controller_manager(ctx: ClusterContext) -> ComponentSpec:
    """Build the kube-controller-manager spec with every default controller enabled."""
    layout = ctx.layout
    port = ctx.ports["kube-controller-manager"]
    args = [
        *_delegated_auth_args(ctx, "kube-controller-manager"),
        # The default set: includes garbage-collector, statefulset, job, cronjob, deployment,
        # replicaset, namespace, serviceaccount(-token), endpointslice, disruption (PDB), ...
        "--controllers=*",
        # Each controller acts as its own ServiceAccount with the bootstrap RBAC roles, as in
        # kubeadm clusters. With `false` every controller would run as system:kube-controller-manager,
        # whose role cannot create Pods, so StatefulSets and Jobs would never get any.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={layout.service_account_keys.key}",
        f"--root-ca-file={layout.ca.cert}",
        f"--cluster-signing-cert-file={layout.ca.cert}",
        f"--cluster-signing-key-file={layout.ca.key}",
        f"--service-cluster-ip-range={ctx.service_cidr}",
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        # Defaults to /usr/libexec/kubernetes/..., which it would otherwise create on the host.
        f"--flex-volume-plugin-dir={layout.data / 'flexvolume'}",
    ]
    return ComponentSpec(
        name="kube-controller-manager",
        args=args,
        probe=http_probe(f"https://127.0.0.1:{port}/healthz", client_tls_context()),
        ports={"kube-controller-manager": port},
        stage=2,
    )


def kube_scheduler(ctx: ClusterContext) -> ComponentSpec:
    """Build the kube-scheduler spec."""
    port = ctx.ports["kube-scheduler"]
    args = [
        *_delegated_auth_args(ctx, "kube-scheduler"),
        "--leader-elect=false",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
    ]
    return ComponentSpec(
        name="kube-scheduler",
        args=args,
        probe=http_probe(f"https://127.0.0.1:{port}/healthz", client_tls_context()),
        ports={"kube-scheduler": port},
        stage=2,
    )


def kwok(ctx: ClusterContext) -> ComponentSpec:
    """Build the kwok spec: it plays the kubelet for annotated fake Nodes and their Pods.

    kwok v0.7 falls back to its built-in stages when no Stage is configured: nodes are
    initialised and kept alive with a Lease, pods become Running and Ready, pods owned by a Job
    succeed, and deleted pods are removed. So no ``--config`` is needed.
    """
    port = ctx.ports["kwok"]
    args = [
        f"--kubeconfig={ctx.layout.component_kubeconfig('kwok')}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake",
        f"--server-address=127.0.0.1:{port}",
        # Node address and kubelet port point at kwok's own server, so anything following a
        # Node's address (e.g. `kubectl logs`) stays on loopback.
        "--node-ip=127.0.0.1",
        f"--node-port={port}",
        f"--cidr={POD_CIDR}",
        # Without a config file this defaults to 0, and kwok then heartbeats by rewriting Node
        # status every 20-45 s. With a lease it renews a kube-node-lease Lease every 10 s, like a
        # real kubelet, which is what the node lifecycle controller expects.
        "--node-lease-duration-seconds=40",
    ]
    return ComponentSpec(
        name="kwok",
        args=args,
        probe=http_probe(f"http://127.0.0.1:{port}/healthz"),
        ports={"kwok": port},
        stage=2,
        # kwok always merges $KWOK_WORKDIR/kwok.yaml (default ~/.kwok) into its configuration;
        # pointing it into the state folder keeps a user's personal kwok setup out of the tests.
        env={"KWOK_WORKDIR": str(ctx.layout.config / "kwok")},
    )


def volume_provisioner(ctx: ClusterContext) -> ComponentSpec:
    """Build the spec of our stand-in volume provisioner (see :mod:`provisioner`).

    Without a CSI driver a StatefulSet's claims would stay Pending and its Pods unscheduled.
    """
    port = ctx.ports["volume-provisioner"]
    args = [f"--kubeconfig={ctx.layout.kubeconfig}", f"--health-port={port}"]
    if ctx.network is not None:
        args += [f"--volume-root={ctx.layout.data / 'volumes'}", f"--node={node.NODE_NAME}"]
    return _python_helper(
        "volume-provisioner",
        "sampledb_localcluster.provisioner",
        args,
        probe=http_probe(f"http://127.0.0.1:{port}/healthz"),
        ports={"volume-provisioner": port},
        stage=2,
    )


def _python_helper(name: str, module: str, args: Sequence[str], **spec: object) -> ComponentSpec:
    """A component that is one of our own modules, run by this Python with this package importable."""
    package_root = Path(__file__).resolve().parents[1]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(package_root), os.environ.get("PYTHONPATH")]))}
    return ComponentSpec(name=name, command=(sys.executable, "-m", module), args=args, env=env, **spec)  # type: ignore[arg-type]


def apiserver_forwarder(ctx: ClusterContext, network: NodeNetwork) -> ComponentSpec:
    """The relay from inside the node's namespace to the API server (see :mod:`forwarder`)."""
    port = ctx.ports["kube-apiserver"]
    listen = [f"127.0.0.1:{port}", f"{network.node_ip}:{port}"]
    tls = client_tls_context(ctx.layout.ca, ctx.layout.cert("admin"))
    return _python_helper(
        "apiserver-forwarder",
        "sampledb_localcluster.forwarder",
        [
            f"--netns={network.netns_path}",
            *(f"--listen={a}" for a in listen),
            f"--to=127.0.0.1:{port}",
            f"--cluster={ctx.layout.root}/",
        ],
        # Through the link into the namespace and back out to the API server: the whole path.
        probe=http_probe(f"https://{network.node_ip}:{port}/readyz", tls),
        ports={},
        stage=2,
    )


def real_node(ctx: ClusterContext, network: NodeNetwork) -> list[ComponentSpec]:
    """containerd, then the kubelet, kube-proxy and CoreDNS in its namespaces (see :mod:`node`)."""
    paths = node.NodePaths(ctx.layout)
    probes = node.health_probes(network)
    joined = {
        "kubelet": node.kubelet_args(network, paths),
        "kube-proxy": [f"--config={paths.kube_proxy_config}"],
        "coredns": [f"-conf={paths.corefile}"],
    }
    return [
        apiserver_forwarder(ctx, network),
        ComponentSpec(
            name="containerd",
            command=node.containerd_command(network, paths),
            args=[],
            probe=node.unix_socket_probe(paths.containerd_socket),
            ports={},
            stage=2,
        ),
        *(
            ComponentSpec(name=name, wrapper=node.join_node(paths), args=args, probe=probes[name], ports={}, stage=3)
            for name, args in joined.items()
        ),
    ]


BUILDERS: Mapping[str, Callable[[ClusterContext], ComponentSpec]] = {
    "etcd": etcd,
    "kube-apiserver": kube_apiserver,
    "kube-controller-manager": kube_controller_manager,
    "kube-scheduler": kube_scheduler,
    "kwok": kwok,
}
"""The control plane's pinned binaries by name, in start order (kwok only with simulated nodes)."""

NODE_BINARIES = ("kubelet", "kube-proxy", "coredns")
"""The pinned binaries of the real node (containerd and runc come from Debian)."""


def binaries_needed(real: bool) -> list[str]:
    """The pinned binaries a cluster with a real node (or with kwok nodes) runs."""
    control = [name for name in BUILDERS if not (real and name == "kwok")]
    return control + list(NODE_BINARIES) if real else control


HELPERS: Mapping[str, Callable[[ClusterContext], ComponentSpec]] = {"volume-provisioner": volume_provisioner}
"""Components that are our own Python code rather than pinned binaries, started with the rest."""


BARE = ("etcd", "kube-apiserver")
"""What a bare cluster runs: the API alone."""


STOP_LAST = ("kube-apiserver", "etcd")
"""Components everything else depends on, stopped after the rest and in this order: an API server
whose etcd is gone spends seconds retrying before it exits, so etcd goes last."""


def control_plane(ctx: ClusterContext) -> list[ComponentSpec]:
    """Return every component of the local cluster in start order."""
    if ctx.bare:
        return sorted((BUILDERS[name](ctx) for name in BARE), key=lambda spec: spec.stage)
    builders = [build for name, build in BUILDERS.items() if not (ctx.network and name == "kwok")]
    specs = [build(ctx) for build in [*builders, *HELPERS.values()]]
    if ctx.network is not None:
        specs.extend(real_node(ctx, ctx.network))
    return sorted(specs, key=lambda spec: spec.stage)


def fake_node(name: str) -> dict[str, object]:
    """Return a Node object that kwok will manage.

    No conditions are set: kwok's ``node-initialize`` stage only acts on nodes that are not Ready
    yet, and it is what fills in addresses, node info and the Ready condition, so waiting for Ready
    also proves kwok is working.

    Args:
        name: The node name.
    """
    resources = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "node-role.kubernetes.io/agent": "",
            },
        },
        "spec": {},
        "status": {"capacity": resources, "allocatable": resources},
    }

"""The real node: containerd, kubelet, kube-proxy and CoreDNS, so that Pods run real containers.

Each piece is a :class:`~sampledb_localcluster.components.ComponentSpec`, started, health-waited
and stopped by the same loop as the control plane. What makes them a node:

- **One network namespace** (:mod:`network`): every node process is started inside it, so Pods,
  kube-proxy's rules and CoreDNS stay there. The kubelet and friends reach the API server through
  :mod:`forwarder`, which listens inside the namespace.
- **One private mount namespace**, created by containerd's wrapper (``unshare --mount``) and
  joined by the kubelet, kube-proxy and CoreDNS (``nsenter --target <containerd>``): the kubelet
  mounts Secret and emptyDir volumes and containerd mounts root filesystems and ``/dev/shm``
  there, and containerd 1.6 and CNI write to a few fixed host paths (``/run/containerd/s``,
  ``/run/netns``, ``/var/lib/cni``, ``/var/log/containers``). The wrapper mounts fresh tmpfs over
  those folders inside the namespace, so none of it is ever seen on the host, and all of it goes
  away with the namespace's last process.
- **Its own cgroup root** (``/sampledb-<slot>`` in every hierarchy) so that tear-down can find
  and kill every container process, even after the owner was SIGKILLed (:mod:`sweep`).
- Every other path (containerd's root and state, the kubelet's root dir, Pod logs, CNI
  configuration and IPAM state, plugin folders) is set into the cluster's state folder.

No image is ever pulled: containerd's ``sandbox_image`` and every image a Pod uses are imported
beforehand (:mod:`images`), and a pull attempt fails fast as there is no registry configured and
no route out.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
from pathlib import Path

from sampledb_localcluster.layout import StateLayout
from sampledb_localcluster.network import BRIDGE, NodeNetwork
from sampledb_localcluster.probes import Probe, ProbeResult, http_probe

NODE_NAME = "sampledb-node"
PAUSE_IMAGE = "localhost/sampledb-pause:1"
CLUSTER_DOMAIN = "cluster.local"
KUBELET_PORT = 10250
KUBELET_HEALTHZ_PORT = 10248
KUBE_PROXY_HEALTHZ_PORT = 10256
COREDNS_HEALTH_PORT = 8080
COREDNS_READY_PORT = 8181
CNI_BIN_DIR = Path("/usr/lib/cni")
# Folders that containerd 1.6 or CNI write to whatever their configuration says; the node's mount
# namespace gets a tmpfs over each (they must exist on the host to be mounted over).
PRIVATE_HOST_DIRS = ("/run", "/var/log", "/var/lib/cni")
HOST_COMMANDS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
}
"""Programs the real node needs on the host, with the Debian package that has each."""


class NodePaths:
    """Where the real node keeps its files inside the cluster's state folder."""

    def __init__(self, layout: StateLayout) -> None:
        """Name the paths of ``layout``'s node."""
        self.layout = layout
        self.containerd_root = layout.data / "containerd"
        self.containerd_state = layout.data / "containerd-state"
        self.containerd_socket = layout.run / "containerd.sock"
        self.containerd_config = layout.config / "containerd.toml"
        self.cni_config_dir = layout.config / "cni"
        self.cni_ipam_dir = layout.data / "cni-ipam"
        self.kubelet_root = layout.data / "kubelet"
        self.kubelet_config = layout.config / "kubelet.yaml"
        self.pod_logs = layout.logs / "pods"
        self.kube_proxy_config = layout.config / "kube-proxy.yaml"
        self.corefile = layout.config / "Corefile"
        self.resolv_conf = layout.config / "node-resolv.conf"

    @property
    def containerd_pid_file(self) -> Path:
        """The pid file of containerd: the other node processes join its namespaces through it."""
        return self.layout.pid_file("containerd")


# A Unix socket's path holds at most 107 bytes (108 with its NUL); the kubelet names its
# pod-resources socket with up to 10 random digits and exits when the bind fails.
MAX_SOCKET_PATH = 107


def socket_path_problem(paths: NodePaths) -> str | None:
    """Why the kubelet's sockets would not fit under this state folder (seen: a deep pytest tmp dir)."""
    longest = paths.kubelet_root / "pod-resources" / ("9" * 10)
    if len(str(longest)) <= MAX_SOCKET_PATH:
        return None
    return (
        f"the state folder {paths.layout.root} is too deep: the kubelet's socket {longest} would be "
        f"{len(str(longest))} bytes, over the {MAX_SOCKET_PATH} a Unix socket path may hold; use a shorter --state-dir"
    )


def cgroup_root(network: NodeNetwork) -> str:
    """The node's cgroup root in every hierarchy; the kubelet creates ``kubepods`` below it."""
    return f"/sampledb-{network.slot}"


CGROUP_MOUNT = Path("/sys/fs/cgroup")


def cgroup_hierarchies() -> list[Path]:
    """The mounted cgroup v1 hierarchies (the kubelet runs with cgroupfs on cgroup v1 here)."""
    if not CGROUP_MOUNT.is_dir():
        return []
    return sorted(p for p in CGROUP_MOUNT.iterdir() if p.is_dir() and not p.is_symlink() and p.name != "unified")


def create_cgroup_root(network: NodeNetwork) -> None:
    """Create the node's cgroup root in every hierarchy: the kubelet requires it to exist.

    A new cpuset cgroup starts with no CPUs and no memory nodes; it gets its parent's.
    """
    for hierarchy in cgroup_hierarchies():
        folder = hierarchy / cgroup_root(network).lstrip("/")
        folder.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (hierarchy / name).exists():
                (folder / name).write_text((hierarchy / name).read_text())


def cgroup_problem() -> str | None:
    """Why this host's cgroups cannot hold the node (None when they can)."""
    if (CGROUP_MOUNT / "cgroup.controllers").exists():
        return "the host has cgroup v2 only; the local real node is built for cgroup v1 (hybrid) hosts"
    if not cgroup_hierarchies():
        return f"no cgroup v1 hierarchy under {CGROUP_MOUNT}"
    return None


def missing_host_commands() -> list[str]:
    """The programs from :data:`HOST_COMMANDS` (and the CNI plugins) that are not installed."""
    missing = [f"{cmd} (Debian package {pkg})" for cmd, pkg in HOST_COMMANDS.items() if shutil.which(cmd) is None]
    for plugin in ("bridge", "host-local", "loopback"):
        if not (CNI_BIN_DIR / plugin).exists():
            missing.append(f"{CNI_BIN_DIR / plugin} (Debian package containernetworking-plugins)")
    return missing


# -- configuration files --------------------------------------------------------------------------


def containerd_config(paths: NodePaths) -> str:
    """The configuration of containerd: private paths, the local pause image, no OOM score lowering."""
    return f"""\
version = 2
root = "{paths.containerd_root}"
state = "{paths.containerd_state}"
# Snapshotters and tracing this node never uses: nothing to probe at start-up.
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{paths.containerd_socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{paths.containerd_root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # These machines withhold CAP_SYS_RESOURCE: runc cannot lower a sandbox's oom_score_adj to the
  # kubelet's -998, and without this every sandbox fails ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "runc"
        Root = "{paths.containerd_state}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{paths.cni_config_dir}"
    max_conf_num = 1
"""


def cni_config(network: NodeNetwork, paths: NodePaths) -> str:
    """The Pods' network: a bridge inside the namespace, no masquerading, no default route.

    A Pod reaches other Pods, ClusterIPs and the node's address (CoreDNS, the API server
    forwarder), and nothing else: there is no route for any other destination.
    """
    routes = [{"dst": str(network.service_cidr)}, {"dst": f"{network.node_ip}/32"}]
    conf = {
        "cniVersion": "1.0.0",
        "name": network.netns,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(network.pod_cidr), "gateway": str(network.pod_gateway)}]],
                    "routes": routes,
                    "dataDir": str(paths.cni_ipam_dir),
                },
            }
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def kubelet_config(network: NodeNetwork, paths: NodePaths) -> str:
    """The kubelet's configuration (JSON, which is YAML): webhook authn/authz, cgroupfs, cluster DNS."""
    layout = paths.layout
    serving = layout.cert("kubelet-serving")
    disabled = "1%"  # eviction thresholds a shared CI disk never crosses by accident
    conf = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": str(network.node_ip),
        "port": KUBELET_PORT,
        "readOnlyPort": 0,
        "healthzBindAddress": str(network.node_ip),
        "healthzPort": KUBELET_HEALTHZ_PORT,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.ca.cert)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": cgroup_root(network),
        # These hosts have cgroup v1 (hybrid); v1.34 still runs on it when told to.
        "failCgroupV1": False,
        "failSwapOn": False,
        "clusterDNS": [str(network.node_ip)],
        "clusterDomain": CLUSTER_DOMAIN,
        # No host resolv.conf: Pods get the cluster DNS only, never the machine's resolver.
        "resolvConf": "",
        "podLogsDir": str(paths.pod_logs),
        "volumePluginDir": str(layout.data / "kubelet-plugins"),
        "staticPodPath": "",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": disabled, "imagefs.available": disabled},
        # The imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "rotateCertificates": False,
        "syncFrequency": "10s",
    }
    return json.dumps(conf, indent=2) + "\n"


def kube_proxy_config(network: NodeNetwork, layout: StateLayout) -> str:
    """kube-proxy in iptables mode, inside the namespace; it touches no host-wide sysctl."""
    conf = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.component_kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "bindAddress": str(network.node_ip),
        "healthzBindAddress": f"{network.node_ip}:{KUBE_PROXY_HEALTHZ_PORT}",
        "metricsBindAddress": "127.0.0.1:10249",
        "mode": "iptables",
        "clusterCIDR": str(network.pod_cidr),
        # 0 leaves the conntrack table size and timeouts alone (they are not per-namespace).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        "iptables": {"localhostNodePorts": False},
        "nodePortAddresses": [f"{network.node_ip}/32"],
    }
    return json.dumps(conf, indent=2) + "\n"


def corefile(network: NodeNetwork, layout: StateLayout) -> str:
    """CoreDNS answers cluster names only: no ``forward``, so nothing ever goes upstream."""
    ip = network.node_ip
    return f"""\
.:53 {{
    bind {ip}
    errors
    health {ip}:{COREDNS_HEALTH_PORT}
    ready {ip}:{COREDNS_READY_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.component_kubeconfig("coredns")} coredns
        pods insecure
        ttl 5
    }}
    cache 5
}}
"""


def write_files(network: NodeNetwork, layout: StateLayout) -> None:
    """Write every node configuration file and create the folders the node needs."""
    paths = NodePaths(layout)
    paths.cni_config_dir.mkdir(parents=True, exist_ok=True)
    for folder in (paths.containerd_root, paths.containerd_state, paths.kubelet_root, paths.pod_logs):
        folder.mkdir(parents=True, exist_ok=True)
    for host_dir in PRIVATE_HOST_DIRS:
        Path(host_dir).mkdir(parents=True, exist_ok=True)  # only a mount point on the host
    paths.containerd_config.write_text(containerd_config(paths), encoding="utf-8")
    (paths.cni_config_dir / "10-sampledb.conflist").write_text(cni_config(network, paths), encoding="utf-8")
    paths.kubelet_config.write_text(kubelet_config(network, paths), encoding="utf-8")
    paths.kube_proxy_config.write_text(kube_proxy_config(network, layout), encoding="utf-8")
    paths.corefile.write_text(corefile(network, layout), encoding="utf-8")
    paths.resolv_conf.write_text("# The node's processes resolve nothing outside the cluster.\nnameserver 127.0.0.1\n")


# -- command lines ----------------------------------------------------------------------------------


def containerd_command(network: NodeNetwork, paths: NodePaths) -> list[str]:
    """Run containerd in a new private mount namespace, inside the node's network namespace.

    The shell sets up the mount namespace (tmpfs over the fixed host paths) and the namespace's
    forwarding sysctls (routing between the bridge, the link and ClusterIPs; iptables seeing
    bridged traffic, which kube-proxy's ClusterIP rules need), then becomes containerd.
    """
    mounts = " && ".join(f"mount -t tmpfs -o mode=0755 sampledb-node {d}" for d in PRIVATE_HOST_DIRS)
    # The node's own resolv.conf: a pull attempt (there should be none) asks nobody but loopback.
    # /etc/resolv.conf may be a link into /run (systemd-resolved), which the tmpfs has just hidden.
    own = shlex.quote(str(paths.resolv_conf))
    resolv = f'mkdir -p "$(dirname "$resolv")"; [ -e "$resolv" ] || touch "$resolv"; mount --bind {own} "$resolv"'
    script = (
        f"set -e; resolv=$(readlink -f /etc/resolv.conf); {mounts}; {resolv}; "
        "echo 1 >/proc/sys/net/ipv4/ip_forward; echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables; "
        'exec "$@"'
    )
    return [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "nsenter",
        f"--net={network.netns_path}",
        "--",
        "sh",
        "-c",
        script,
        "containerd",
        "containerd",
        f"--config={paths.containerd_config}",
    ]


def join_node(paths: NodePaths) -> list[str]:
    """A prefix that runs a command in containerd's mount and network namespaces (found through its pid file)."""
    script = 'pid=$(cat "$0") && exec nsenter --target "$pid" --mount --net -- "$@"'
    return ["sh", "-c", script, str(paths.containerd_pid_file)]


def unix_socket_probe(path: Path) -> Probe:
    """A probe that passes once something accepts connections on a unix socket."""

    def probe() -> ProbeResult:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(os.fspath(path))
            except OSError as error:
                return ProbeResult(False, f"connect {path}: {error}")
        return ProbeResult(True)

    return probe


def kubelet_args(network: NodeNetwork, paths: NodePaths) -> list[str]:
    """The kubelet's flags (the rest is in its configuration file)."""
    return [
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={paths.layout.component_kubeconfig('kubelet')}",
        f"--root-dir={paths.kubelet_root}",
        f"--cert-dir={paths.layout.pki}",
        f"--hostname-override={NODE_NAME}",
        f"--node-ip={network.node_ip}",
        "--node-labels=sampledb.io/node=real",
    ]


def health_probes(network: NodeNetwork) -> dict[str, Probe]:
    """Health checks of the node processes, reached from the host through the link."""
    ip = network.node_ip
    return {
        "kubelet": http_probe(f"http://{ip}:{KUBELET_HEALTHZ_PORT}/healthz"),
        "kube-proxy": http_probe(f"http://{ip}:{KUBE_PROXY_HEALTHZ_PORT}/healthz"),
        "coredns": http_probe(f"http://{ip}:{COREDNS_READY_PORT}/ready"),
    }

"""The real node's configuration, checked as data (no root, no cluster): what keeps it contained."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from sampledb_localcluster import network as nodenet
from sampledb_localcluster import node as node_module
from sampledb_localcluster.bootstrap import write_pki
from sampledb_localcluster.components import PORT_NAMES, ClusterContext, control_plane
from sampledb_localcluster.layout import StateLayout
from sampledb_localcluster.node import (
    NodePaths,
    cni_config,
    containerd_command,
    containerd_config,
    corefile,
    kubelet_config,
)

NET = nodenet.NodeNetwork(5)


@pytest.fixture
def layout(tmp_path: Path) -> StateLayout:
    return StateLayout(tmp_path)


def test_slots_never_overlap_each_other() -> None:
    ranges = [r for slot in range(nodenet.SLOTS) for r in nodenet.NodeNetwork(slot).ranges]
    assert all(not a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1 :])
    assert len(NET.host_link) <= 15  # IFNAMSIZ


def test_pods_get_no_default_route_and_no_masquerading(layout: StateLayout) -> None:
    bridge = json.loads(cni_config(NET, NodePaths(layout)))["plugins"][0]
    assert bridge["ipMasq"] is False
    routes = [ipaddress.IPv4Network(r["dst"]) for r in bridge["ipam"]["routes"]]
    assert routes == [NET.service_cidr, ipaddress.IPv4Network(f"{NET.node_ip}/32")]
    assert bridge["ipam"]["dataDir"].startswith(str(layout.root))


def test_the_kubelet_never_hands_pods_the_machines_resolver(layout: StateLayout) -> None:
    conf = json.loads(kubelet_config(NET, NodePaths(layout)))
    assert conf["resolvConf"] == ""
    assert conf["clusterDNS"] == [str(NET.node_ip)]
    assert conf["authentication"]["anonymous"]["enabled"] is False
    assert conf["authorization"]["mode"] == "Webhook"
    assert conf["cgroupRoot"] == "/sampledb-5"
    assert "forward" not in corefile(NET, layout)


def test_containerd_keeps_to_the_state_folder_and_its_namespaces(layout: StateLayout) -> None:
    paths = NodePaths(layout)
    conf = containerd_config(paths)
    assert "restrict_oom_score_adj = true" in conf
    assert 'sandbox_image = "localhost/sampledb-pause:1"' in conf
    argv = containerd_command(NET, paths)
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert f"--net={NET.netns_path}" in argv
    assert "mount -t tmpfs -o mode=0755 sampledb-node /run" in argv[argv.index("-c") + 1]


def test_a_real_node_cluster_replaces_kwok_with_the_node_processes(layout: StateLayout) -> None:
    ports = dict.fromkeys(PORT_NAMES, 1)
    layout.reset()
    write_pki(ClusterContext(layout, ports, NET))
    names = [spec.name for spec in control_plane(ClusterContext(layout, ports, NET))]
    assert "kwok" not in names
    assert {"containerd", "kubelet", "kube-proxy", "coredns", "apiserver-forwarder"} <= set(names)
    assert names.index("containerd") < names.index("kubelet")
    kwok_names = [spec.name for spec in control_plane(ClusterContext(layout, ports))]
    assert "kwok" in kwok_names and "kubelet" not in kwok_names


def test_routes_off_the_node_are_found() -> None:
    allowed = [NET.link, NET.pod_cidr]
    inside = [{"dst": str(NET.pod_cidr), "dev": "cni0"}, {"dst": "127.0.0.0/8", "type": "local", "dev": "lo"}]
    assert nodenet.outside(inside, allowed) == []
    assert nodenet.outside([*inside, {"dst": "default", "dev": "eth0"}], allowed) == ["default dev eth0 (table main)"]
    assert nodenet.outside([{"dst": "192.0.2.0/24", "dev": "eth0"}], allowed) == ["192.0.2.0/24 dev eth0 (table main)"]


def test_a_taken_range_moves_the_node_to_the_next_slot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(nodenet, "NETNS_DIR", tmp_path)  # real-node clusters running here take no slot
    taken = {ipaddress.IPv4Network("10.245.1.0/24"): "route via eth9"}
    assert nodenet.choose(taken).slot == 0
    taken[ipaddress.IPv4Network("10.246.0.0/24")] = "address on eth8"
    assert nodenet.choose(taken).slot == 2
    with pytest.raises(nodenet.NetworkError, match=r"10\.246\.0\.0/24 overlaps 10\.246\.0\.0/16 \(resolver"):
        nodenet.choose({ipaddress.IPv4Network("10.246.0.0/16"): "resolver in /etc/resolv.conf"})


def test_a_slot_taken_between_choice_and_claim_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real-node clusters starting at once may choose the same slot: the loser chooses again."""
    taken: set[int] = set()
    created: list[int] = []

    def choose() -> nodenet.NodeNetwork:
        return nodenet.NodeNetwork(min({0, 1, 2} - taken))

    def create(network: nodenet.NodeNetwork) -> None:
        if network.slot == 0 and 0 not in taken:  # the other cluster's `ip netns add` came first
            taken.add(0)
            raise nodenet.SlotTaken("`ip netns add sampledb-0` failed: File exists")
        created.append(network.slot)

    monkeypatch.setattr(nodenet, "choose", choose)
    monkeypatch.setattr(nodenet, "create", create)
    assert nodenet.claim().slot == 1 and created == [1]


def test_a_state_folder_too_deep_for_the_kubelets_sockets_is_refused_by_name(tmp_path: Path) -> None:
    deep = StateLayout(Path("/tmp/" + "d" * 60 + "/cluster"))
    problem = node_module.socket_path_problem(node_module.NodePaths(deep))
    assert problem is not None and "--state-dir" in problem and "107" in problem
    assert node_module.socket_path_problem(node_module.NodePaths(StateLayout(Path("/tmp/sdb-x/cluster")))) is None

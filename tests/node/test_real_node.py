"""The real node itself: containment of its network, and a tear-down that leaves nothing behind.

Containment is checked by reading routes, rules and configuration, never by sending traffic out.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sampledb_localcluster import LocalCluster
from sampledb_localcluster import network as nodenet
from sampledb_localcluster.node import NODE_NAME, PAUSE_IMAGE
from sampledb_localcluster.tools import tool_path
from sampledb_operator.k8s.api import KubeApi
from sampledb_operator.settings import DEFAULT_IMAGES
from tests.node.conftest import restricted_pod, wait_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)  # the first test also starts the session's cluster


def _pod_routes(kubectl: Any, namespace: str, pod: str) -> list[ipaddress.IPv4Network]:
    """The Pod's IPv4 routes, read from /proc/net/route inside it."""
    table = kubectl("exec", "-n", namespace, pod, "--", "cat", "/proc/net/route").splitlines()[1:]
    routes = []
    for line in table:
        fields = line.split()
        dst, mask = (ipaddress.IPv4Address(int(f, 16).to_bytes(4, "little")) for f in (fields[1], fields[7]))
        routes.append(ipaddress.IPv4Network(f"{dst}/{mask}"))
    return routes


def test_the_node_runs_pods_and_nothing_leads_off_the_machine(
    local_cluster: LocalCluster, admin: KubeApi, kubectl: Any, namespace: str
) -> None:
    net = local_cluster.network
    assert net is not None
    addresses = json.loads(kubectl("get", "node", NODE_NAME, "-o", "jsonpath={.status.addresses}"))
    assert {"type": "InternalIP", "address": str(net.node_ip)} in addresses

    # A Pod: routes to Pods, ClusterIPs and the node only, and the cluster DNS as its only resolver.
    admin.create(restricted_pod(namespace, "probe", DEFAULT_IMAGES[17]))
    wait_for(lambda: (admin.get("Pod", namespace, "probe") or {}).get("status", {}).get("phase") == "Running",
             timeout=60, what="the probe Pod to run")  # fmt: skip
    # The namespace (now with the Pods' bridge): no default route, nothing but the link, the bridge, loopback.
    routes = nodenet.node_routes(net)
    assert any(r.get("dst") == str(net.pod_cidr) for r in routes), routes  # the filter below sees real routes
    allowed = [net.link, net.pod_cidr, ipaddress.IPv4Network("127.0.0.0/8")]
    assert nodenet.outside(routes, allowed) == []

    pod_routes = _pod_routes(kubectl, namespace, "probe")
    assert ipaddress.IPv4Network(f"{net.node_ip}/32") in pod_routes
    leaks = [r for r in pod_routes if not any(r.subnet_of(a) for a in (net.pod_cidr, net.service_cidr, net.link))]
    assert leaks == [], f"the Pod can route to {leaks}"
    assert not any(net.host_ip in r for r in pod_routes), "the Pod can reach the host's end of the link"
    resolv = kubectl("exec", "-n", namespace, "probe", "--", "cat", "/etc/resolv.conf")
    assert [line.split()[1] for line in resolv.splitlines() if line.startswith("nameserver")] == [str(net.node_ip)]

    # CoreDNS cannot ask upstream: the plugin is not even compiled in, and the Corefile has none.
    plugins = subprocess.run([tool_path("coredns"), "-plugins"], capture_output=True, text=True, check=True).stdout
    assert "kubernetes" in plugins.split() and "forward" not in plugins.split()
    assert "forward" not in (local_cluster.state_dir / "config" / "Corefile").read_text()

    # kube-proxy's rules live in the namespace, none on the host.
    inside = subprocess.run(["ip", "netns", "exec", net.netns, "iptables-save", "-t", "nat"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "KUBE-SERVICES" in inside
    assert "KUBE-" not in subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout


def test_the_node_range_refuses_what_overlaps_the_machine() -> None:
    taken = {ipaddress.IPv4Network("10.245.255.0/29"): "route via eth9"}
    assert nodenet.choose(taken).slot == 2  # slots 0 and 1 share that /29
    with pytest.raises(nodenet.NetworkError, match=r"10\.245\.255\.0/30 overlaps 10\.244\.0\.0/14"):
        nodenet.choose({ipaddress.IPv4Network("10.244.0.0/14"): "route via eth9"})


_OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from sampledb_localcluster import LocalCluster
    cluster = LocalCluster(Path(sys.argv[1]), node="real", images={{"{pause}": "{pause}"}}, quiet=True)
    cluster.start()
    print(cluster.kubeconfig, flush=True)
    time.sleep(3600)
    """
)


def _run_a_pod(kubeconfig: str) -> None:
    kubectl = [str(tool_path("kubectl")), "--kubeconfig", kubeconfig]
    run = ["run", "sleeper", f"--image={PAUSE_IMAGE}", "--image-pull-policy=IfNotPresent"]
    subprocess.run([*kubectl, *run], check=True)
    subprocess.run([*kubectl, "wait", "--for=condition=Ready", "pod/sleeper", "--timeout=60s"], check=True)


@pytest.fixture
def short_state_dir() -> Iterator[Path]:
    """A state folder near the root: under pytest's tmp dirs (pytest-<n>/<test name>_0/...) the
    kubelet's socket paths can exceed what a Unix socket may hold (seen once pytest-<n> had 3 digits)."""
    folder = Path(tempfile.mkdtemp(prefix="sdb-"))
    yield folder / "cluster"
    shutil.rmtree(folder, ignore_errors=True)


def test_tear_down_leaves_nothing_even_after_the_owner_is_killed(
    local_cluster: LocalCluster, short_state_dir: Path
) -> None:
    """A second real node with a running Pod; its owner SIGKILLed; `down` finds and removes the rest."""
    state = short_state_dir
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    owner = subprocess.Popen([sys.executable, "-c", _OWNER.format(pause=PAUSE_IMAGE), str(state)],
                             stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    second = LocalCluster(state)
    try:
        assert owner.stdout is not None
        kubeconfig = owner.stdout.readline().strip()
        assert kubeconfig, "the second cluster did not start"
        _run_a_pod(kubeconfig)
        net = second.network
        assert net is not None and net.slot != local_cluster.network.slot  # type: ignore[union-attr]
        before = second.leftovers()
        # Everything a node leaves is there while it runs: the filter finds it.
        assert any("containerd-shim" in item for item in before), before
        assert any(item.startswith("cgroup ") for item in before), before
        assert any("network namespace" in item for item in before), before
    except BaseException:
        owner.kill()
        LocalCluster(state).stop()  # never leave the second node behind when the test fails early
        raise
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    time.sleep(1)  # the components die with their owner (PDEATHSIG); shims and containers do not
    assert any("containerd-shim" in item for item in second.leftovers())
    down = subprocess.run([sys.executable, "-m", "sampledb_localcluster", "--state-dir", str(state), "down"],
                          check=False, capture_output=True, text=True, env=env, cwd=REPO / "operator")  # fmt: skip
    assert down.returncode == 0, down.stderr
    assert second.leftovers() == []
    assert "still on the machine" not in down.stderr

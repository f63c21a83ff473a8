"""The real node's network: one network namespace per cluster, and nothing that leads off the machine.

Everything the real node runs (containerd and so every Pod, the kubelet, kube-proxy, CoreDNS, the
API server forwarder) lives in a network namespace the harness creates, ``sampledb-<slot>``. It
is joined to the host by one veth pair and nothing else::

    host (API server on 127.0.0.1)            namespace sampledb-<slot>
    sampledb-<slot>-h  10.245.255.<4k+1>/30 ── eth0  10.245.255.<4k+2>/30  the node's InternalIP
    routes: pods, services -> node IP          cni0  10.245.<k>.1/24       the Pods' bridge
                                               kube-proxy's rules for 10.246.<k>.0/24

Containment, by construction and checked by reading routes (never by sending traffic out):

- the namespace has no default route: its only routes are the link, the Pods' bridge and the
  service range, so a packet for any other address has nowhere to go;
- Pods get no default route either (see :func:`cni_config`): only the Pod range, the service range
  and the node's own address (DNS, the API server forwarder) are reachable from a Pod;
- nothing masquerades Pod traffic towards the host: the host never forwards (its
  ``ip_forward`` is left alone) and the host end of the link only answers the API server's calls
  to the kubelet and, later, to webhooks;
- CoreDNS has no upstream (no ``forward`` plugin is even compiled in).

Ranges come from a slot (0-63), so that several real-node clusters can run side by side; a slot
is free when none of its ranges overlaps an address, a route or a resolver of the machine, and
the harness refuses to start (naming the conflict) when no slot is.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SLOTS = 64
NETNS_DIR = Path("/run/netns")
RESOLV_CONF = Path("/etc/resolv.conf")
NODE_INTERFACE = "eth0"
BRIDGE = "cni0"

IPv4Network = ipaddress.IPv4Network
IPv4Address = ipaddress.IPv4Address


class NetworkError(RuntimeError):
    """The node's network could not be set up; the message names the conflict or failed command."""


@dataclass(frozen=True)
class NodeNetwork:
    """The addresses and names of one real node's network.

    Attributes:
        slot: Which of the :data:`SLOTS` sets of ranges this cluster uses.
    """

    slot: int

    @property
    def netns(self) -> str:
        """The network namespace's name (``ip netns list``)."""
        return f"sampledb-{self.slot}"

    @property
    def netns_path(self) -> Path:
        """The namespace's file, for ``nsenter --net=``."""
        return NETNS_DIR / self.netns

    @property
    def host_link(self) -> str:
        """The host end of the veth pair."""
        return f"sampledb-{self.slot}-h"

    @property
    def link(self) -> IPv4Network:
        """The /30 between the host and the node."""
        return IPv4Network(f"10.245.255.{4 * self.slot}/30")

    @property
    def host_ip(self) -> IPv4Address:
        """The host's address on the link."""
        return self.link.network_address + 1

    @property
    def node_ip(self) -> IPv4Address:
        """The node's InternalIP: the kubelet, CoreDNS and the API server forwarder listen here."""
        return self.link.network_address + 2

    @property
    def pod_cidr(self) -> IPv4Network:
        """Pod addresses, on the bridge inside the namespace."""
        return IPv4Network(f"10.245.{self.slot}.0/24")

    @property
    def pod_gateway(self) -> IPv4Address:
        """The bridge's address: the Pods' next hop."""
        return self.pod_cidr.network_address + 1

    @property
    def service_cidr(self) -> IPv4Network:
        """ClusterIPs (the API server's ``--service-cluster-ip-range``)."""
        return IPv4Network(f"10.246.{self.slot}.0/24")

    @property
    def first_service_ip(self) -> IPv4Address:
        """The ``kubernetes`` Service's ClusterIP."""
        return self.service_cidr.network_address + 1

    @property
    def ranges(self) -> tuple[IPv4Network, ...]:
        """Every range this slot uses."""
        return (self.link, self.pod_cidr, self.service_cidr)


def _ip_json(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
    parsed: list[dict[str, Any]] = json.loads(out or "[]")
    return parsed


def _resolvers(resolv_conf: Path) -> list[IPv4Network]:
    networks = []
    for line in resolv_conf.read_text(encoding="utf-8").splitlines() if resolv_conf.exists() else []:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                networks.append(IPv4Network(parts[1]))
            except ValueError:  # an IPv6 resolver cannot overlap our IPv4 ranges
                continue
    return networks


def host_networks(resolv_conf: Path = RESOLV_CONF) -> dict[IPv4Network, str]:
    """The machine's IPv4 addresses, routes (but the default route) and resolvers, with what each is.

    The default route is left out: it covers every address, and reaching it is exactly what the
    node must never do, which the namespace's own routing guarantees.
    """
    found: dict[IPv4Network, str] = {}
    for link in _ip_json("-4", "addr", "show"):
        for info in link.get("addr_info", []):
            found[IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False)] = f"address on {link['ifname']}"
    for route in _ip_json("-4", "route", "show", "table", "all"):
        dst = route.get("dst", "default")
        if dst != "default" and route.get("type", "unicast") in ("unicast", "local"):
            try:
                found.setdefault(IPv4Network(dst, strict=False), f"route via {route.get('dev', '?')}")
            except ValueError:
                continue
    for resolver in _resolvers(resolv_conf):
        found.setdefault(resolver, "resolver in /etc/resolv.conf")
    return found


def conflicts(network: NodeNetwork, taken: dict[IPv4Network, str]) -> list[str]:
    """Why ``network``'s ranges cannot be used here ([] when they can)."""
    problems = [
        f"{mine} overlaps {theirs} ({what})"
        for mine in network.ranges
        for theirs, what in taken.items()
        if mine.overlaps(theirs)
    ]
    if network.netns_path.exists():
        problems.append(f"network namespace {network.netns} already exists")
    return problems


def choose(taken: dict[IPv4Network, str] | None = None) -> NodeNetwork:
    """The first slot whose ranges overlap nothing of the machine's.

    Raises:
        NetworkError: Every slot conflicts; the message gives slot 0's conflicts.
    """
    taken = host_networks() if taken is None else taken
    for slot in range(SLOTS):
        candidate = NodeNetwork(slot)
        if not conflicts(candidate, taken):
            return candidate
    reasons = "; ".join(conflicts(NodeNetwork(0), taken))
    raise NetworkError(
        f"no free address ranges for the real node among {SLOTS} slots (slot 0: {reasons}); stop other "
        "local clusters (`make cluster-down`) or remove the conflicting routes"
    )


class SlotTaken(NetworkError):
    """Another cluster created the chosen slot's namespace between the choice and the claim."""


def claim(attempts: int = 3) -> NodeNetwork:
    """Choose a free slot and create it; a slot another cluster takes meanwhile is skipped.

    Two real-node clusters starting at the same moment (two test tiers) may choose the same slot:
    `ip netns add` lets only one of them have it, and the other chooses again (the namespace now
    exists, so `choose` passes over that slot).
    """
    for attempt in range(1, attempts + 1):
        network = choose()
        try:
            create(network)
        except SlotTaken:
            if attempt == attempts:
                raise
            continue
        return network
    raise AssertionError("unreachable")


def _run(*argv: str) -> None:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise NetworkError(f"`{' '.join(argv)}` failed: {result.stderr.strip() or result.stdout.strip()}")


def create(network: NodeNetwork) -> None:
    """Create the namespace, the veth pair, the addresses and the host's routes into the namespace.

    Raises:
        NetworkError: A command failed; whatever was created is removed again.
    """
    ns, node_cidr = network.netns, f"{network.node_ip}/{network.link.prefixlen}"
    try:
        _run("ip", "netns", "add", ns)
    except NetworkError as error:  # another cluster took the slot meanwhile: nothing of ours to undo
        raise SlotTaken(str(error)) from error
    try:
        _run("ip", "link", "add", network.host_link, "type", "veth", "peer", "name", NODE_INTERFACE, "netns", ns)
        _run("ip", "addr", "add", f"{network.host_ip}/{network.link.prefixlen}", "dev", network.host_link)
        _run("ip", "link", "set", network.host_link, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "addr", "add", node_cidr, "dev", NODE_INTERFACE)
        _run("ip", "-n", ns, "link", "set", NODE_INTERFACE, "up")
        for cidr in (network.pod_cidr, network.service_cidr):
            _run("ip", "route", "add", str(cidr), "via", str(network.node_ip), "dev", network.host_link)
    except NetworkError:
        destroy(network)
        raise


def destroy(network: NodeNetwork) -> None:
    """Delete the namespace (with it the veth pair, the node's routes and every rule in it); idempotent."""
    subprocess.run(["ip", "link", "delete", network.host_link], check=False, capture_output=True)
    subprocess.run(["ip", "netns", "delete", network.netns], check=False, capture_output=True)


def exists(network: NodeNetwork) -> bool:
    """Tell whether the namespace or the host end of the link is still there."""
    link = subprocess.run(["ip", "link", "show", network.host_link], check=False, capture_output=True)
    return network.netns_path.exists() or link.returncode == 0


def node_routes(network: NodeNetwork) -> list[dict[str, Any]]:
    """The namespace's IPv4 routes in every table, as ``ip -j`` prints them."""
    return _ip_json("-n", network.netns, "-4", "route", "show", "table", "all")


def outside(routes: Iterable[dict[str, Any]], allowed: Sequence[IPv4Network]) -> list[str]:
    """The routes that lead anywhere but ``allowed``: a default route, or any other destination."""
    leaks = []
    for route in routes:
        dst = route.get("dst", "default")
        if route.get("type", "unicast") in ("broadcast", "multicast"):
            continue
        if route.get("type") == "local" and dst.startswith("127."):
            continue
        target = IPv4Network("0.0.0.0/0") if dst == "default" else IPv4Network(dst, strict=False)
        if not any(target.subnet_of(cidr) for cidr in allowed):
            leaks.append(f"{dst} dev {route.get('dev', '?')} (table {route.get('table', 'main')})")
    return leaks

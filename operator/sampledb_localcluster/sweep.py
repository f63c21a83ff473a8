"""Leave nothing of a real node behind: processes, containers, cgroups, namespaces, links.

Stopping the components (SIGTERM, then SIGKILL) is not enough on a real node: containerd's shims
run in sessions of their own and keep the containers alive, and the kubelet's cgroups and the
node's network namespace outlive every process. This sweep finds what is left by what it is, not
by remembering it, so it works the same after a clean stop, after the owner was SIGKILLed, and
from a later ``down`` in another shell:

1. every process in the node's cgroups (the containers), in its network namespace (containerd,
   the kubelet, kube-proxy, CoreDNS) or talking to its containerd (the shims, by the socket on
   their command line) is SIGKILLed, until none is left;
3. the node's cgroups are removed, deepest first, in every hierarchy;
4. the network namespace is deleted, and with it the veth pair, the routes through it and every
   iptables rule kube-proxy wrote (they live in the namespace).

The node's mounts need no step: they live in its private mount namespace, which the kernel
removes with its last process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from sampledb_localcluster import network as net
from sampledb_localcluster import process
from sampledb_localcluster.node import cgroup_hierarchies, cgroup_root


def node_cgroups(network: net.NodeNetwork) -> list[Path]:
    """The node's cgroup folders in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in cgroup_hierarchies():
        root = hierarchy / cgroup_root(network).lstrip("/")
        if root.is_dir():
            found.extend(Path(path) for path, _, _ in os.walk(root))
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def _cgroup_pids(folders: list[Path]) -> set[int]:
    pids: set[int] = set()
    for folder in folders:
        with contextlib.suppress(OSError):
            pids.update(int(line) for line in (folder / "cgroup.procs").read_text().split())
    return pids


def _all_pids() -> Iterator[int]:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            yield int(entry.name)


def _netns_inode(path: Path) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def node_pids(network: net.NodeNetwork, containerd_socket: Path) -> set[int]:
    """The node's processes: in its cgroups, in its network namespace, or shims of its containerd."""
    pids = _cgroup_pids(node_cgroups(network))
    inode, socket = _netns_inode(network.netns_path), str(containerd_socket)
    for pid in _all_pids():
        if pid == os.getpid():
            continue
        same_netns = inode is not None and _netns_inode(Path(f"/proc/{pid}/ns/net")) == inode
        if same_netns or socket in process.command_line(pid):
            pids.add(pid)
    return pids


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_gone(pids: set[int], timeout: float = 10.0) -> set[int]:
    deadline = time.monotonic() + timeout
    alive = {pid for pid in pids if process.is_alive(pid)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {pid for pid in alive if process.is_alive(pid)}
    return alive


def sweep(network: net.NodeNetwork, containerd_socket: Path) -> list[str]:
    """Remove everything the real node left; return what could not be removed (normally [])."""
    problems: list[str] = []
    for _ in range(5):  # again, for anything forked while the previous round was being killed
        victims = node_pids(network, containerd_socket)
        if not victims:
            break
        _kill(victims)
        survivors = _wait_gone(victims)
    else:
        problems.append(f"processes {sorted(survivors)} survived SIGKILL")
    for folder in node_cgroups(network):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError as error:
            problems.append(f"cgroup {folder}: {error.strerror}")
    net.destroy(network)
    if net.exists(network):
        problems.append(f"network namespace {network.netns} or link {network.host_link} is still there")
    return problems


def leftovers(network: net.NodeNetwork, containerd_socket: Path) -> list[str]:
    """What of the node is still on the machine (for tests, and for ``down``)."""
    pids = sorted(node_pids(network, containerd_socket))
    found = [f"process {pid}: {process.command_line(pid)[:120]}" for pid in pids if process.is_alive(pid)]
    found.extend(f"cgroup {folder}" for folder in node_cgroups(network))
    if net.exists(network):
        found.append(f"network namespace {network.netns} / link {network.host_link}")
    mounts = Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines()
    state = str(containerd_socket.parent.parent)
    found.extend(f"mount {line}" for line in mounts if f"{state}/" in line or f"/netns/{network.netns} " in line)
    return found

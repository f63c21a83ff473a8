"""Leave nothing of a real node behind: processes, containers, cgroups, namespaces, links.

Stopping the components (SIGTERM, then SIGKILL) is not enough on a real node: containerd's shims
run in sessions of their own and keep the containers alive, and the kubelet's cgroups and the
node's network namespace outlive every process. This sweep finds what is left by what it is, not
by remembering it, so it works the same after a clean stop, after the owner was SIGKILLed, and
from a later ``down`` in another shell:

1. every process in the node's cgroups (the containers) is SIGKILLed;
2. every other process whose command line names the state folder (the shims, and any
   component whose pid file was lost) is SIGKILLed;
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
from sampledb_localcluster.node import CGROUP_MOUNT, cgroup_root


def node_cgroups(network: net.NodeNetwork) -> list[Path]:
    """The node's cgroup folders in every hierarchy, deepest first."""
    found: list[Path] = []
    for hierarchy in CGROUP_MOUNT.iterdir() if CGROUP_MOUNT.is_dir() else []:
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


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def marked_pids(marker: str) -> set[int]:
    """Processes whose command line contains ``marker``, but this one and its ancestors (``down`` itself)."""
    spared = _ancestors()
    return {pid for pid in _all_pids() if pid not in spared and marker in process.command_line(pid)}


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


def sweep(network: net.NodeNetwork, marker: str) -> list[str]:
    """Remove everything the real node left; return what could not be removed (normally [])."""
    problems: list[str] = []
    cgroups = node_cgroups(network)
    victims = _cgroup_pids(cgroups) | marked_pids(marker)
    _kill(victims)
    survivors = _wait_gone(victims)
    if survivors:
        problems.append(f"processes {sorted(survivors)} survived SIGKILL")
    for folder in node_cgroups(network):
        try:
            folder.rmdir()
        except OSError as error:
            problems.append(f"cgroup {folder}: {error.strerror}")
    net.destroy(network)
    if net.exists(network):
        problems.append(f"network namespace {network.netns} or link {network.host_link} is still there")
    return problems


def leftovers(network: net.NodeNetwork, marker: str) -> list[str]:
    """What of the node is still on the machine (for tests, and for ``status``)."""
    found = [f"process {pid}: {process.command_line(pid)[:120]}" for pid in sorted(marked_pids(marker))]
    found.extend(f"cgroup {folder}" for folder in node_cgroups(network))
    if net.exists(network):
        found.append(f"network namespace {network.netns} / link {network.host_link}")
    found.extend(f"mount {line}" for line in _host_mounts(marker, network))
    return found


def _host_mounts(marker: str, network: net.NodeNetwork) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if marker in line or f"/netns/{network.netns} " in line]

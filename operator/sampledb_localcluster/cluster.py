"""A real Kubernetes control plane run as local processes, envtest-style, with kwok as the kubelet.

Tests of an operator are only as good as the API server they run against: defaulting, schema
validation, RBAC, garbage collection and the built-in controllers are all behaviour to test
against, not to mock. :class:`LocalCluster` starts the pinned etcd, kube-apiserver,
kube-controller-manager, kube-scheduler and kwok binaries on loopback ports in a few seconds, with
no containers and no root, and guarantees they are gone afterwards, whether the run ends
normally, by an exception, by Ctrl-C/SIGTERM, or (in-process) by the parent being killed.

Two modes share the same code: in-process (tests; the cluster dies with this process) and
detached (``python -m sampledb_localcluster up``; a later ``down`` finds the processes again
through their pid files).
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal

from sampledb_localcluster import bootstrap, images, node, pki, process, sweep
from sampledb_localcluster import network as nodenet
from sampledb_localcluster.components import (
    PORT_NAMES,
    STOP_LAST,
    ClusterContext,
    ComponentSpec,
    binaries_needed,
    control_plane,
)
from sampledb_localcluster.errors import ClusterStartError
from sampledb_localcluster.layout import DEFAULT_STATE_DIR, StateLayout
from sampledb_localcluster.tools import require_tools

__all__ = ["DEFAULT_STATE_DIR", "ClusterStartError", "LocalCluster"]

_SignalHandler = Any  # what signal.getsignal() returns: a callable, SIG_DFL, SIG_IGN or None
NodeKind = Literal["kwok", "real", "none"]
# How long a component's port may stay taken before its start fails (see `_spawn`).
PORT_WAIT_SECONDS = 15.0


class LocalCluster:
    """A local Kubernetes control plane: etcd, kube-apiserver, controller manager, scheduler, and nodes.

    The nodes are simulated by kwok (``node="kwok"``: fast, no root, nothing runs in a Pod) or one
    real node (``node="real"``: containerd, kubelet, kube-proxy and CoreDNS in a network namespace
    of its own, see :mod:`node`; needs root). ``node="none"`` starts only etcd and the API server:
    nothing acts on what is created (no controller, scheduler or node), for measuring a client's
    own cost over objects written in the state it wants (a benchmark's thousands of "ready" ones).

    Example:
        with LocalCluster() as cluster:
            subprocess.run(["kubectl", "--kubeconfig", cluster.kubeconfig, "get", "nodes"])
    """

    def __init__(
        self,
        state_dir: Path | None = None,
        nodes: int = 1,
        *,
        timeout: float = 60.0,
        ports: Mapping[str, int] | None = None,
        detached: bool = False,
        tools_dir: Path | None = None,
        binaries: Mapping[str, Path] | None = None,
        extra_args: Mapping[str, Sequence[str]] | None = None,
        quiet: bool = False,
        node: NodeKind = "kwok",
        images: Mapping[str, str] | None = None,
    ) -> None:
        """Describe a cluster; nothing starts before :meth:`start`.

        Args:
            state_dir: Folder for certificates, data, logs, pid files and kubeconfigs; wiped at
                start. Defaults to ``<repo>/.local/cluster``.
            nodes: Number of fake (kwok) Nodes to create.
            timeout: Seconds each component gets to become healthy.
            ports: Fixed ports by name (see ``components.PORT_NAMES``); the rest are picked free.
            detached: Leave the processes running when this Python process exits (``up``).
                In-process clusters (the default) are stopped at exit, on SIGTERM/SIGINT, and
                by the kernel if this process is killed outright.
            tools_dir: Where the pinned binaries are; see :func:`tools.tools_dir`.
            binaries: Replace the binary of a component (tests use it to simulate failures).
            extra_args: Extra command-line flags per component.
            quiet: Do not print progress to stderr.
            node: ``"kwok"`` for ``nodes`` simulated nodes, ``"real"`` for one real node,
                ``"none"`` for the API server and etcd alone.
            images: With a real node, the images to load into it, ``{name in manifests: local
                image}``; :func:`images.node_images` (the operator's defaults) when omitted.
        """
        unknown = set(ports or {}) - set(PORT_NAMES)
        if unknown:
            raise ValueError(f"unknown port names {sorted(unknown)}; known: {', '.join(PORT_NAMES)}")
        self._layout = StateLayout((state_dir or DEFAULT_STATE_DIR).resolve())
        self._nodes = nodes
        self._timeout = timeout
        self._requested_ports = dict(ports or {})
        self._detached = detached
        self._tools_dir = tools_dir
        self._binary_overrides = dict(binaries or {})
        self._extra_args = {name: list(args) for name, args in (extra_args or {}).items()}
        self._quiet = quiet
        self._node = node
        self._real = node == "real"
        self._images = images
        self._ctx: ClusterContext | None = None
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._previous_handlers: dict[int, _SignalHandler] = {}
        self._stopping = threading.RLock()  # re-entrant: a signal may arrive while stop() runs

    # -- paths and endpoints ------------------------------------------------------------------

    @property
    def state_dir(self) -> Path:
        """The state folder."""
        return self._layout.root

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (user ``admin`` in group ``system:masters``)."""
        return self._layout.kubeconfig

    @property
    def operator_kubeconfig(self) -> Path:
        """A kubeconfig authenticating as the operator's ServiceAccount user (``bootstrap.OPERATOR_USER``)."""
        return self._layout.operator_kubeconfig

    @property
    def ca_cert(self) -> Path:
        """The cluster CA certificate; the API server trusts certificates it signs."""
        return self._layout.ca.cert

    @property
    def ca_key(self) -> Path:
        """The cluster CA private key, for signing extra certificates (e.g. a webhook's)."""
        return self._layout.ca.key

    @property
    def audit_log(self) -> Path:
        """The API server's audit log: one JSON event per request, Metadata level."""
        return self._layout.audit_log

    @property
    def log_dir(self) -> Path:
        """The folder with one ``<component>.log`` per component."""
        return self._layout.logs

    @property
    def server(self) -> str:
        """The API server URL, ``https://127.0.0.1:<port>``.

        Raises:
            RuntimeError: The cluster was neither started here nor by ``up`` in this state folder.
        """
        if self._ctx is not None:
            return self._ctx.server
        state = self.read_state()
        if state is None:
            raise RuntimeError(f"no cluster has been started in {self.state_dir}")
        return str(state["server"])

    @property
    def network(self) -> nodenet.NodeNetwork | None:
        """The real node's network (``None`` with kwok nodes, or before start)."""
        if self._ctx is not None:
            return self._ctx.network
        slot = (self.read_state() or {}).get("network_slot")
        return nodenet.NodeNetwork(int(slot)) if slot is not None else None

    @property
    def containerd_socket(self) -> Path:
        """The real node's containerd socket (``ctr --address``)."""
        return node.NodePaths(self._layout).containerd_socket

    def issue_serving_cert(
        self, cn: str, ip_sans: Sequence[str], dns_sans: Sequence[str], out_dir: Path
    ) -> tuple[Path, Path]:
        """Issue a serving certificate signed by this cluster's CA; see :func:`pki.issue_serving_cert`."""
        return pki.issue_serving_cert(cn, ip_sans, dns_sans, out_dir, ca_cert=self.ca_cert, ca_key=self.ca_key)

    # -- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every component and wait until the cluster is usable.

        Raises:
            MissingToolError: A pinned binary is missing (checked before anything starts).
            ClusterStartError: A component exited, was not healthy in time, or a port was taken.
                Everything already started has been stopped again.
        """
        begin = time.monotonic()
        binaries = self._resolve_binaries()
        self._check_state_dir()
        if self._real:
            self._check_real_node_host()
            self.sweep_real_node()  # what a SIGKILLed earlier cluster in this folder left
        ports = self._allocate_ports()
        self._layout.reset()
        self._install_cleanup()
        try:
            host = self._create_node_host() if self._real else None
            self._ctx = ctx = ClusterContext(self._layout, ports, host, bare=self._node == "none")
            self._write_state(ctx)
            bootstrap.write_cluster_files(ctx)
            specs = control_plane(ctx)
            for _, stage in itertools.groupby(specs, key=lambda spec: spec.stage):
                self._start_stage(list(stage), binaries)
            self._prepare_cluster(ctx)
        except BaseException:
            self.stop()
            raise
        if self._detached:
            self._remove_signal_handlers()
        self._say(f"cluster ready in {time.monotonic() - begin:.1f} s; KUBECONFIG={self.kubeconfig}")

    def stop(self) -> None:
        """Stop every process of this cluster; safe to call repeatedly and from another process.

        Processes are found through their pid files, so this also stops a cluster started by
        ``up`` in the same state folder.
        """
        with self._stopping:
            survivors: list[int | str] = []
            for tier in self._stop_tiers():
                survivors.extend(process.terminate(tier))
            for child in self._children.values():
                child.poll()  # records the exit status so Popen does not warn later
            self._children.clear()
            for pid_file in self._pid_files():
                pid_file.unlink(missing_ok=True)
            survivors.extend(self.sweep_real_node())
            self._remove_signal_handlers()
            atexit.unregister(self._stop_at_exit)
        if survivors:
            print(f"warning: left behind even after SIGKILL: {survivors}", file=sys.stderr)

    def sweep_real_node(self) -> list[str]:
        """Remove what a real node left (containers, shims, cgroups, its namespace); see :mod:`sweep`.

        Returns:
            What could not be removed (normally nothing).
        """
        net = self.network
        if net is None:
            return []
        problems = sweep.sweep(net, self.containerd_socket)
        state = self.read_state()
        if not problems:
            # Swept: never sweep this slot again from here, as another cluster may take it next.
            if self._ctx is not None:
                self._ctx = dataclasses.replace(self._ctx, network=None)
            if state is not None:
                self._layout.state_file.write_text(json.dumps({**state, "network_slot": None}, indent=2) + "\n")
        return problems

    def leftovers(self) -> list[str]:
        """What of this cluster's real node is still on the machine; [] after a clean stop."""
        net = self.network
        return sweep.leftovers(net, self.containerd_socket) if net is not None else []

    def stop_component(self, name: str) -> None:
        """Stop one component (SIGTERM, then SIGKILL after a grace period); the others keep running.

        Fault-injection tests use this to take the API server (or etcd, the scheduler...) away
        for a while and check that clients ride out the outage; :meth:`start_component` brings
        the component back on the same ports, with the same certificates and data. Stopping a
        component that is not running does nothing.

        Args:
            name: A component name, e.g. ``"kube-apiserver"`` (see ``components.control_plane``).

        Raises:
            ValueError: ``name`` is not a component of this cluster.
            RuntimeError: The cluster was not started by this object (only its own components'
                command lines are known here).
        """
        self._component_spec(name)
        with self._stopping:
            pid = self._running_pids().get(name)
            survivors = process.terminate([pid]) if pid is not None else []
            child = self._children.pop(name, None)
            if child is not None:
                child.poll()  # records the exit status so Popen does not warn later
            self._layout.pid_file(name).unlink(missing_ok=True)
        if survivors:
            print(f"warning: {name} (pid {pid}) did not exit even after SIGKILL", file=sys.stderr)

    def start_component(self, name: str) -> None:
        """Start one stopped component again and wait until it is healthy.

        The component gets the command line, ports and files it had (its data, e.g. etcd's, is
        kept), so clients find it where it was. Its previous log is kept as ``<name>.log.<n>``:
        the new process starts a fresh ``<name>.log``, and evidence of what happened before the
        restart must not be lost with it.

        Args:
            name: A component name, e.g. ``"kube-apiserver"``.

        Raises:
            ValueError: ``name`` is not a component of this cluster.
            RuntimeError: The cluster was not started by this object, or the component runs.
            ClusterStartError: The component exited or did not become healthy in time.
        """
        spec = self._component_spec(name)
        if name in self._running_pids():
            raise RuntimeError(f"{name} is already running; stop it first with stop_component({name!r})")
        log = self._layout.log(name)
        if log.exists():
            rotated = next(
                candidate
                for candidate in (log.with_name(f"{log.name}.{n}") for n in itertools.count(1))
                if not candidate.exists()
            )
            log.rename(rotated)
        binaries = {} if spec.command else self._resolve_binaries()
        started = self._spawn(spec, binaries.get(name))
        try:
            self._wait_healthy(spec, started)
        except BaseException:
            self.stop_component(name)  # not half-started: the caller sees it stopped, with its log
            raise
        self._say(f"{name} restarted in {time.monotonic() - started:.1f} s")

    def _component_spec(self, name: str) -> ComponentSpec:
        """The spec of one component of the cluster this object started."""
        if self._ctx is None:
            raise RuntimeError(f"the cluster in {self.state_dir} was not started by this LocalCluster object")
        specs = {spec.name: spec for spec in control_plane(self._ctx)}
        if name not in specs:
            raise ValueError(f"unknown component {name!r}; known: {', '.join(specs)}")
        return specs[name]

    def status(self) -> dict[str, int | None]:
        """Return each component with a pid file and its pid, or ``None`` if it is not running."""
        marker = self._marker()
        return {path.stem: process.owned_pid(path, marker) for path in self._pid_files()}

    def read_state(self) -> dict[str, Any] | None:
        """Return the summary written at start (server URL, ports, paths), if any."""
        try:
            state: dict[str, Any] = json.loads(self._layout.state_file.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None
        return state

    # -- start-up steps -----------------------------------------------------------------------

    def _resolve_binaries(self) -> dict[str, Path]:
        return require_tools(binaries_needed(self._real), self._tools_dir, self._binary_overrides)

    def _check_real_node_host(self) -> None:
        if os.geteuid() != 0:
            raise ClusterStartError("real node", "needs root (containerd, network namespaces, mounts); use node='kwok'")
        cgroups = node.cgroup_problem()
        if cgroups:
            raise ClusterStartError("real node", cgroups)
        missing = node.missing_host_commands()
        if missing:
            raise ClusterStartError(
                "real node", f"missing on this machine: {'; '.join(missing)} (`.ci/run` shows how to install them)"
            )
        too_long = node.socket_path_problem(node.NodePaths(self._layout))
        if too_long:
            raise ClusterStartError("real node", too_long)

    def _create_node_host(self) -> nodenet.NodeNetwork:
        """What the real node needs of the machine: its network namespace and its cgroup root."""
        try:
            net = nodenet.claim()
        except nodenet.NetworkError as error:
            raise ClusterStartError("real node network", str(error)) from error
        try:
            node.create_cgroup_root(net)
        except BaseException:
            nodenet.destroy(net)
            raise
        self._say(f"real node network: namespace {net.netns}, node {net.node_ip}, pods {net.pod_cidr}")
        return net

    def _check_state_dir(self) -> None:
        running = {name: pid for name, pid in self.status().items() if pid is not None}
        if running:
            listing = ", ".join(f"{name} (pid {pid})" for name, pid in running.items())
            raise ClusterStartError(
                "local cluster",
                f"a cluster is already running from {self.state_dir}: {listing}; stop it first with "
                "`python -m sampledb_localcluster down` (run in operator/)",
            )
        if not self._layout.is_reusable():
            raise ClusterStartError(
                "local cluster",
                f"refusing to use {self.state_dir}: it is not empty and was not created by this harness",
            )

    def _allocate_ports(self) -> dict[str, int]:
        ports: dict[str, int] = {}
        for name in PORT_NAMES:
            requested = self._requested_ports.get(name)
            if requested is not None:
                self._check_port_free(name, requested)
                ports[name] = requested
        for name in PORT_NAMES:
            while name not in ports:
                candidate = process.find_free_port()
                if candidate not in ports.values():
                    ports[name] = candidate
        return ports

    def _check_port_free(self, name: str, port: int, *, wait: float = 0.0) -> None:
        """Raise unless the port can be bound, within `wait` seconds."""
        deadline = time.monotonic() + wait
        while not process.port_is_free(port):
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            component = name.removesuffix("-peer")
            raise ClusterStartError(
                component,
                f"port in use: 127.0.0.1:{port} (requested for {name!r}) is already taken by another process",
                self._layout.log(component),
                process.log_tail(self._layout.log(component)),
            )

    def _write_state(self, ctx: ClusterContext) -> None:
        state = {
            "server": ctx.server,
            "ports": dict(ctx.ports),
            "kubeconfig": str(self.kubeconfig),
            "operator_kubeconfig": str(self.operator_kubeconfig),
            "nodes": self._nodes,
            "node": self._node,
            "network_slot": ctx.network.slot if ctx.network else None,
            "detached": self._detached,
            "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        self._layout.state_file.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    def _start_stage(self, specs: list[ComponentSpec], binaries: Mapping[str, Path]) -> None:
        names = ", ".join(spec.name for spec in specs)
        single = len(specs) == 1
        self._say(f"starting {names}...", end="" if single else "\n")
        try:
            started = {spec.name: self._spawn(spec, binaries.get(spec.name)) for spec in specs}
            for spec in specs:
                self._wait_healthy(spec, started[spec.name])
                elapsed = time.monotonic() - started[spec.name]
                ready = f"ready in {elapsed:.1f} s"
                self._say(f" {ready}" if single else f"  {spec.name} {ready}")
        except BaseException:
            self._say(" failed")
            raise

    def _spawn(self, spec: ComponentSpec, binary: Path | None) -> float:
        """Start one component; return when it was started (``time.monotonic()``)."""
        for name, port in spec.ports.items():
            # Re-checked right before the spawn: a free port picked earlier may have been taken since,
            # often for a moment only: the ports come from the ephemeral range, so a client's outgoing
            # connection can hold one (seen in CI on 2026-11-28: kwok restarted by the API-outage
            # test found its port taken while the real-node tier ran beside it).
            self._check_port_free(name, port, wait=PORT_WAIT_SECONDS)
        program = list(spec.command) if spec.command else [*spec.wrapper, str(binary)]
        argv = [*program, *spec.args, *self._extra_args.get(spec.name, [])]
        env = {**os.environ, **spec.env}
        self._children[spec.name] = process.spawn(
            argv,
            self._layout.log(spec.name),
            self._layout.pid_file(spec.name),
            die_with_parent=not self._detached,
            env=env,
        )
        return time.monotonic()

    def _wait_healthy(self, spec: ComponentSpec, started: float) -> None:
        child = self._children[spec.name]
        deadline = started + self._timeout
        while True:
            code = child.poll()
            if code is not None:
                raise self._start_error(spec.name, f"exited with code {code}")
            result = spec.probe()
            if result.ok:
                return
            if time.monotonic() > deadline:
                cause = f"did not become healthy in {self._timeout:.0f} s (last check: {result.detail})"
                raise self._start_error(spec.name, cause)
            time.sleep(0.1)

    def _start_error(self, component: str, cause: str) -> ClusterStartError:
        log = self._layout.log(component)
        tail = process.log_tail(log)
        known = process.diagnose(tail)
        return ClusterStartError(component, f"{cause}: {known}" if known else cause, log, tail)

    def _prepare_cluster(self, ctx: ClusterContext) -> None:
        """Create the fake nodes (or load the real node's images) and wait until Pods can run."""
        if ctx.network is not None:
            self._prepare_real_node(ctx)
            return
        if ctx.bare:
            return  # no node, and no controller to make the default ServiceAccounts
        begin = time.monotonic()
        api = bootstrap.AdminApi(ctx)
        names = bootstrap.node_names(self._nodes)
        self._say(f"creating {len(names)} fake node(s)...", end="")
        try:
            bootstrap.create_nodes(api, names)
            bootstrap.wait_nodes_ready(api, names, self._timeout)
        except (bootstrap.ApiWaitTimeout, RuntimeError, OSError) as error:
            raise self._start_error("kwok", str(error)) from error
        self._wait_service_account(api)
        self._say(f" ready in {time.monotonic() - begin:.1f} s")

    def _wait_service_account(self, api: bootstrap.AdminApi) -> None:
        try:
            bootstrap.wait_default_service_account(api, self._timeout)
        except (bootstrap.ApiWaitTimeout, OSError) as error:
            raise self._start_error("kube-controller-manager", str(error)) from error

    def _prepare_real_node(self, ctx: ClusterContext) -> None:
        begin = time.monotonic()
        api = bootstrap.AdminApi(ctx)
        self._say("loading images into the real node...")
        try:
            wanted = images.node_images() if self._images is None else self._images
            images.ContainerdLoader(self.containerd_socket, quiet=self._quiet).load(wanted)
        except images.ImageLoadError as error:
            raise self._start_error("containerd", str(error)) from error
        try:
            bootstrap.wait_nodes_ready(api, [node.NODE_NAME], self._timeout)
        except (bootstrap.ApiWaitTimeout, OSError) as error:
            raise self._start_error("kubelet", str(error)) from error
        self._wait_service_account(api)
        self._say(f"real node {node.NODE_NAME} ready, images loaded, in {time.monotonic() - begin:.1f} s")

    # -- process bookkeeping ------------------------------------------------------------------

    def _marker(self) -> str:
        # Every component's command line contains paths inside the state folder; the trailing
        # slash keeps /x/cluster from matching /x/cluster2.
        return f"{self.state_dir}/"

    def _pid_files(self) -> list[Path]:
        return sorted(self._layout.run.glob("*.pid")) if self._layout.run.is_dir() else []

    def _running_pids(self) -> dict[str, int]:
        pids = {name: pid for name, pid in self.status().items() if pid is not None}
        # A child whose pid file is gone (deleted by hand) is still ours to stop.
        pids.update({name: c.pid for name, c in self._children.items() if name not in pids and c.poll() is None})
        return pids

    def _stop_tiers(self) -> list[list[int]]:
        """Group the running pids into the order they must stop in (see ``components.STOP_LAST``)."""
        running = self._running_pids()
        tiers = [[pid for name, pid in running.items() if name not in STOP_LAST]]
        tiers.extend([running[name]] for name in STOP_LAST if name in running)
        return [tier for tier in tiers if tier]

    # -- cleanup on exit and signals ----------------------------------------------------------

    def _install_cleanup(self) -> None:
        if not self._detached:
            atexit.register(self._stop_at_exit)
        # A detached `up` also needs the handlers while it starts, so Ctrl-C leaves nothing behind.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous_handlers[sig] = signal.getsignal(sig)
                signal.signal(sig, self._on_signal)

    def _remove_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, previous in self._previous_handlers.items():
            if signal.getsignal(sig) == self._on_signal:
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers.clear()

    def _stop_at_exit(self) -> None:
        self.stop()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """Stop the cluster, then let the signal do what it would have done without us."""
        previous = self._previous_handlers.get(signum, signal.SIG_DFL)
        self.stop()
        if callable(previous):
            previous(signum, frame)
        elif previous != signal.SIG_IGN:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    def _say(self, message: str, end: str = "\n") -> None:
        if not self._quiet:
            print(message, end=end, file=sys.stderr, flush=True)

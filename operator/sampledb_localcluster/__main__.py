"""Command line for a long-lived local cluster: ``up``, ``down``, ``env``, ``status``.

Tests start and stop their own cluster; this is for working against one by hand (kubectl, helm,
running the operator from a shell). ``up`` leaves the processes running after it returns, and
``down`` finds them again through the pid files in the state folder, so the two can run from
different shells.

Usage (from ``operator/``)::

    python -m sampledb_localcluster up
    eval "$(python -m sampledb_localcluster env)"
    python -m sampledb_localcluster status
    python -m sampledb_localcluster down
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sampledb_localcluster import pki
from sampledb_localcluster.cluster import DEFAULT_STATE_DIR, LocalCluster, NodeKind
from sampledb_localcluster.errors import ClusterStartError
from sampledb_localcluster.images import BUILT_MAJORS, node_images
from sampledb_localcluster.tools import MissingToolError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sampledb_localcluster", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--state-dir", type=Path, default=DEFAULT_STATE_DIR, help=f"state folder (default {DEFAULT_STATE_DIR})"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a cluster in the background and return")
    up.add_argument("--nodes", type=int, default=1, help="number of fake kwok nodes (default 1)")
    up.add_argument(
        "--node",
        choices=("kwok", "real"),
        default="kwok",
        help="kwok: simulated nodes (default); real: one real node running real containers (root)",
    )
    up.add_argument(
        "--pg-majors",
        default=",".join(map(str, BUILT_MAJORS)),
        help="real node: the PostgreSQL majors whose default images to load (default: every one we build)",
    )
    up.add_argument("--timeout", type=float, default=60.0, help="seconds each component may take (default 60)")
    commands.add_parser("down", help="stop the cluster started by `up` (safe to repeat)")
    commands.add_parser("env", help="print `export KUBECONFIG=...` lines for eval")
    commands.add_parser("status", help="show which components are running, and what a real node left behind")
    cert = commands.add_parser("cert", help="issue a serving certificate for 127.0.0.1 from the cluster's CA")
    cert.add_argument("--out", type=Path, required=True, help="folder for <name>.crt and <name>.key")
    cert.add_argument("--name", default="webhook", help="file name stem (default webhook)")
    return parser


def _up(cluster: LocalCluster, nodes: int, timeout: float, node: NodeKind, majors: str) -> int:
    running = cluster.status()
    if running and all(pid is not None for pid in running.values()):
        print(f"a cluster is already running from {cluster.state_dir}")
        print(f"export KUBECONFIG={cluster.kubeconfig}")
        return 0
    wanted = node_images(int(m) for m in majors.split(",") if m.strip()) if node == "real" else None
    detached = LocalCluster(cluster.state_dir, nodes, timeout=timeout, detached=True, node=node, images=wanted)
    try:
        detached.start()
    except (ClusterStartError, MissingToolError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"cluster is up at {detached.server}; admin kubeconfig: {detached.kubeconfig}")
    print(f"  export KUBECONFIG={detached.kubeconfig}")
    print("  stop it with: python -m sampledb_localcluster down")
    return 0


def _down(cluster: LocalCluster) -> int:
    running = {name: pid for name, pid in cluster.status().items() if pid is not None}
    cluster.stop()
    if running:
        print(f"stopped {', '.join(running)}")
    else:
        print(f"no cluster running from {cluster.state_dir}")
    _down_report(cluster)
    return 0


def _env(cluster: LocalCluster) -> int:
    if cluster.read_state() is None:
        print(f"error: no cluster has been started in {cluster.state_dir}; run `up` first", file=sys.stderr)
        return 1
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    print(f"export SAMPLEDB_OPERATOR_KUBECONFIG={cluster.operator_kubeconfig}")
    return 0


def _cert(cluster: LocalCluster, out: Path, name: str) -> int:
    """A certificate for a loopback server the API server must call (the conversion webhook)."""
    if cluster.read_state() is None:
        print(f"error: no cluster has been started in {cluster.state_dir}; run `up` first", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    cert, key = pki.issue_serving_cert(
        "sampledb-webhook", ["127.0.0.1"], ["localhost"], out, ca_cert=cluster.ca_cert, ca_key=cluster.ca_key, name=name
    )
    print(f"{cert}\n{key}\n{cluster.ca_cert}")
    return 0


def _status(cluster: LocalCluster) -> int:
    components = cluster.status()
    if not components:
        print(f"no cluster running from {cluster.state_dir}")
        return 1
    state = cluster.read_state() or {}
    print(f"cluster in {cluster.state_dir}, server {state.get('server', '?')}")
    for name, pid in components.items():
        print(f"  {name:<24} {'running, pid ' + str(pid) if pid is not None else 'NOT RUNNING'}")
    print(f"  logs: {cluster.log_dir}")
    return 0 if all(pid is not None for pid in components.values()) else 1


def _down_report(cluster: LocalCluster) -> None:
    left = cluster.leftovers()
    for item in left:
        print(f"warning: still on the machine: {item}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when omitted.

    Returns:
        The exit code: 0 on success, 1 when the cluster failed to start, is not (fully) running
        for ``status``, or has never been started for ``env``.
    """
    args = _parser().parse_args(argv)
    cluster = LocalCluster(args.state_dir)
    if args.command == "up":
        return _up(cluster, args.nodes, args.timeout, args.node, args.pg_majors)
    if args.command == "down":
        return _down(cluster)
    if args.command == "env":
        return _env(cluster)
    if args.command == "cert":
        return _cert(cluster, args.out, args.name)
    return _status(cluster)


if __name__ == "__main__":
    sys.exit(main())

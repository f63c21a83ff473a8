"""Entry points: `run` the operator, serve the conversion `webhook`, `generate-crds` from the models.

`python -m sampledb_operator run` (or the `sampledb-operator` console script) is what the
container image and `make run` start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path

from sampledb_operator.health import HealthState, serve_health
from sampledb_operator.k8s.api import KubeApi, load_client
from sampledb_operator.k8s.leader import LeaderElector, hold_leadership
from sampledb_operator.settings import Settings, SettingsError

logger = logging.getLogger("sampledb_operator")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:  # noqa: D102
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(settings: Settings) -> None:
    """Plain text by default, JSON lines with SAMPLEDB_JSON_LOGS=true."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.json_logs:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)


def _lead(settings: Settings, health: HealthState, stop: threading.Event) -> LeaderElector | None:
    """With leader election on, block until this replica holds the Lease."""
    if not settings.leader_election:
        return None
    identity = f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"
    elector = LeaderElector(
        KubeApi(load_client()), name=settings.lease_name, namespace=settings.lease_namespace, identity=identity
    )

    def on_lost() -> None:
        health.failed.set()
        os.kill(os.getpid(), signal.SIGTERM)  # kopf stops gracefully; the Pod restarts as a standby

    hold_leadership(elector, on_lost=on_lost, stop=stop)
    return elector


def run_operator(settings: Settings) -> int:
    """Start kopf with our handlers; blocks until the operator is stopped."""
    import kopf
    from prometheus_client import start_http_server

    import sampledb_operator.handlers  # noqa: F401 - registers the handlers

    configure_logging(settings)
    health = HealthState()
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    if settings.health_port:
        serve_health(health, settings.health_port)
    stop = threading.Event()
    elector = _lead(settings, health, stop)
    scope = f"namespaces {', '.join(settings.namespaces)}" if settings.namespaces else "all namespaces"
    logger.info("starting the SampleDB operator, watching %s", scope)
    health.ready.set()
    try:
        asyncio.run(
            kopf.operator(standalone=True, clusterwide=not settings.namespaces, namespaces=list(settings.namespaces))
        )
    finally:
        stop.set()
        if elector is not None:
            elector.release()
    return 0


def run_webhook(args: argparse.Namespace) -> int:
    """Serve the conversion webhook until SIGTERM."""
    from sampledb_operator.conversion.webhook import WebhookConfig, serve

    logging.basicConfig(
        level=os.environ.get("SAMPLEDB_LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    config = WebhookConfig(
        cert_file=args.cert,
        key_file=args.key,
        host=args.host,
        port=args.port,
        drain_seconds=args.drain_seconds,
        linger_seconds=args.linger_seconds,
        reload_interval=args.reload_seconds,
    )
    for path in (config.cert_file, config.key_file):
        if not path.is_file():
            print(f"sampledb-operator webhook: {path} does not exist (pass --cert and --key)", file=sys.stderr)
            return 2
    asyncio.run(serve(config))
    return 0


def generate_crds(out_dir: Path) -> int:
    """Write crds/*.yaml from the pydantic models."""
    from sampledb_operator.api import crdgen

    for path in crdgen.write_crds(out_dir):
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and dispatch."""
    parser = argparse.ArgumentParser(prog="sampledb-operator", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the operator (settings from SAMPLEDB_* variables)")
    run.add_argument(
        "--namespace", "-n", action="append", default=[], help="watch this namespace (repeatable); default: all"
    )
    gen = commands.add_parser("generate-crds", help="write the CRDs generated from the models")
    gen.add_argument("--out", type=Path, default=Path("crds"), help="output folder (default: crds)")
    hook = commands.add_parser("webhook", help="serve the v1beta1 <-> v1 conversion webhook (TLS)")
    hook.add_argument("--cert", type=Path, default=Path("/tls/tls.crt"), help="serving certificate (PEM)")
    hook.add_argument("--key", type=Path, default=Path("/tls/tls.key"), help="its private key (PEM)")
    hook.add_argument("--host", default="0.0.0.0", help="address to listen on")  # noqa: S104
    hook.add_argument("--port", type=int, default=9443)
    hook.add_argument(
        "--linger-seconds",
        type=float,
        default=5.0,
        help="on SIGTERM, keep accepting this long (behind a Service, until kube-proxy drops the endpoint)",
    )
    hook.add_argument("--drain-seconds", type=float, default=3.0, help="then, time for in-flight requests")
    hook.add_argument("--reload-seconds", type=float, default=5.0, help="how often to check the certificate files")
    args = parser.parse_args(argv)
    if args.command == "generate-crds":
        return generate_crds(args.out)
    if args.command == "webhook":
        return run_webhook(args)
    try:
        settings = Settings.from_env()
    except SettingsError as err:
        print(f"sampledb-operator: {err}", file=sys.stderr)
        return 2
    if args.namespace:
        settings = settings.model_copy(update={"namespaces": tuple(args.namespace)})
    return run_operator(settings)


if __name__ == "__main__":
    sys.exit(main())

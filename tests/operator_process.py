"""Start the operator as the real process (`python -m sampledb_operator run`), the image's entry point.

Shared by the integration tests (one operator for the session), the fault-injection suite (one per
test, killed and restarted) and the scale benchmark, so that all of them run the operator the same
way: the code of this checkout, its settings from the environment, its log in a file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spawn_operator(
    kubeconfig: str,
    log_path: Path,
    *,
    metrics_port: int,
    health_port: int,
    log_level: str = "DEBUG",
    environ: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The operator against `kubeconfig`, stdout and stderr appended to `log_path`.

    `environ` (default: this process's) is the base the operator's settings are read from.
    """
    env = {
        **(os.environ if environ is None else environ),
        "KUBECONFIG": kubeconfig,
        "SAMPLEDB_METRICS_PORT": str(metrics_port),
        "SAMPLEDB_HEALTH_PORT": str(health_port),
        "SAMPLEDB_LOG_LEVEL": log_level,
        # The code under test, whether or not the package is installed in this environment.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "operator"), os.environ.get("PYTHONPATH")])),
    }
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sampledb_operator", "run"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def metrics(metrics_port: int) -> dict[str, float]:
    """The operator's own metrics from /metrics, as {name{labels}: value}."""
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        match = re.match(r"^(sampledb_[^\s]+)\s+([0-9.e+-]+)$", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    return values


def healthy(health_port: int) -> bool:
    """The operator's /healthz answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False

"""Bad input to the local cluster harness fails fast, says why, and leaves no process behind.

These start real (or deliberately broken) binaries with short timeouts; nothing is mocked. The
slowest case starts a real etcd, so the whole file takes a few seconds.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sampledb_localcluster import ClusterStartError, LocalCluster, MissingToolError
from sampledb_localcluster.process import diagnose
from sampledb_localcluster.tools import load_versions, tool_path
from tests.conftest import live_processes_mentioning


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "cluster"
    yield path
    LocalCluster(path, quiet=True).stop()  # belt and braces: a failing test must not leak processes
    assert live_processes_mentioning(path) == []


def require_real_tool(name: str) -> None:
    if not tool_path(name).exists():
        pytest.skip(f"{name} is not built (make tools)")


def test_missing_tool_names_the_tool_the_path_and_the_fix(tmp_path: Path, state_dir: Path) -> None:
    empty_tools = tmp_path / "no-tools"
    with pytest.raises(MissingToolError) as raised:
        LocalCluster(state_dir, tools_dir=empty_tools, quiet=True).start()
    message = str(raised.value)
    etcd = empty_tools / f"etcd-{load_versions()['ETCD_VERSION']}" / "etcd"
    assert raised.value.tool == "etcd"
    assert f"'etcd' not found at {etcd}" in message
    assert "kube-apiserver" in message
    assert "make tools" in message
    assert not state_dir.exists(), "nothing may be created or started before the tools are checked"


def test_port_clash_names_the_port_the_component_and_the_log(state_dir: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        with pytest.raises(ClusterStartError) as raised:
            LocalCluster(state_dir, ports={"kube-apiserver": port}, quiet=True).start()
    error = raised.value
    assert error.component == "kube-apiserver"
    assert f"127.0.0.1:{port}" in str(error)
    assert "port in use" in str(error)
    assert str(state_dir / "logs" / "kube-apiserver.log") in str(error)


def test_unknown_port_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown port names"):
        LocalCluster(ports={"apiserver": 6443})


def test_component_that_exits_at_once_reports_its_exit_code(state_dir: Path) -> None:
    with pytest.raises(ClusterStartError) as raised:
        LocalCluster(state_dir, binaries={"etcd": Path("/bin/false")}, quiet=True).start()
    assert raised.value.component == "etcd"
    assert "exited with code 1" in str(raised.value)
    assert str(state_dir / "logs" / "etcd.log") in str(raised.value)


def test_bad_flag_error_includes_the_log_tail(state_dir: Path) -> None:
    require_real_tool("etcd")
    with pytest.raises(ClusterStartError) as raised:
        LocalCluster(state_dir, extra_args={"etcd": ["--no-such-flag"]}, quiet=True).start()
    assert raised.value.component == "etcd"
    assert "exited with code" in str(raised.value)
    assert "no-such-flag" in raised.value.log_tail, "the log tail shows etcd's own complaint"
    assert "no-such-flag" in str(raised.value)


def test_later_failure_stops_the_components_already_running(state_dir: Path) -> None:
    require_real_tool("etcd")
    require_real_tool("kube-apiserver")
    with pytest.raises(ClusterStartError) as raised:
        LocalCluster(state_dir, extra_args={"kube-apiserver": ["--no-such-flag"]}, quiet=True).start()
    assert raised.value.component == "kube-apiserver"
    assert "unknown flag: --no-such-flag" in str(raised.value)
    assert live_processes_mentioning(state_dir) == [], "etcd was started first and must be stopped"
    assert list((state_dir / "run").glob("*.pid")) == []


def test_component_that_never_becomes_healthy_times_out(tmp_path: Path, state_dir: Path) -> None:
    hanging = tmp_path / "hanging-etcd"
    # Keeps etcd's arguments (which mention the state folder) so the fixture can see it if it survives.
    hanging.write_text("#!/bin/sh\necho 'pretending to start'\nexec python3 -c 'import time; time.sleep(60)' \"$@\"\n")
    hanging.chmod(0o755)
    with pytest.raises(ClusterStartError) as raised:
        LocalCluster(state_dir, binaries={"etcd": hanging}, timeout=1.0, quiet=True).start()
    assert "did not become healthy in 1 s" in str(raised.value)
    assert "pretending to start" in str(raised.value)
    assert live_processes_mentioning(state_dir) == []
    assert list((state_dir / "run").glob("*.pid")) == []


def test_refuses_a_foreign_non_empty_state_dir(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ClusterStartError, match="refusing to use"):
        LocalCluster(precious, binaries={"etcd": Path("/bin/false")}, quiet=True).start()
    assert (precious / "notes.txt").read_text() == "keep me"


def test_diagnose_recognises_a_taken_port() -> None:
    assert diagnose("listen tcp 127.0.0.1:2379: bind: address already in use") == (
        "port in use (another process listens on one of its ports)"
    )
    assert diagnose("everything is fine") is None


def test_a_port_taken_for_a_moment_when_a_component_restarts_is_waited_for(state_dir: Path) -> None:
    """A client's outgoing connection may hold a port of the ephemeral range for a moment (kwok, CI 2026-11-28)."""
    cluster = LocalCluster(state_dir, quiet=True)
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    port = squatter.getsockname()[1]
    with pytest.raises(ClusterStartError, match="port in use"):
        cluster._check_port_free("kwok", port, wait=0.5)
    threading.Timer(0.5, squatter.close).start()
    cluster._check_port_free("kwok", port, wait=10)  # returns once the port is free again

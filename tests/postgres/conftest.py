"""Real PostgreSQL servers for testing the operator's scripts: the StatefulSet's start script,
the initial-configuration Job and the final snapshot, run exactly as the builders emit them.

Servers listen on 127.0.0.1 and a private socket folder, run as the `postgres` user (initdb
refuses root), and are stopped after each test. Every PostgreSQL installed under
/usr/lib/postgresql is used, so a machine with two majors tests both.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sampledb_operator.resources import config, statefulset
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from tests.webhook_process import free_port

PG_ROOT = Path("/usr/lib/postgresql")


def installed_majors() -> list[int]:
    return sorted(int(p.name) for p in PG_ROOT.glob("*") if (p / "bin" / "initdb").exists()) if PG_ROOT.is_dir() else []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg_major" in metafunc.fixturenames:
        majors = installed_majors()
        if not majors:
            pytest.fail("no PostgreSQL under /usr/lib/postgresql: .ci/run installs postgresql-15")
        metafunc.parametrize("pg_major", majors, ids=[f"pg{m}" for m in majors])


@dataclass
class Server:
    """A server started by the StatefulSet's own start script."""

    major: int
    root: Path
    port: int
    superuser_password: str
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def bin_dir(self) -> Path:
        return PG_ROOT / str(self.major) / "bin"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def base_env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(self.root)}

    def run_script(self, script: str, env: dict[str, str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a script as the postgres user with exactly `env` (plus PATH), as a Job container would."""
        full_env = {**self.base_env(), **env}
        return subprocess.run(
            as_postgres(script, full_env),
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def psql(self, sql: str, *, user: str = "postgres", password: str | None = None, database: str = "postgres") -> str:
        env = {**os.environ, "PGPASSWORD": password or self.superuser_password, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                user,
                "-d",
                database,
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        return result.stdout.strip()


def as_postgres(script: str, env: dict[str, str]) -> list[str]:
    """argv running `script` as the postgres user with exactly `env`, as a container would."""
    return [
        "runuser",
        "-u",
        "postgres",
        "--",
        "env",
        "-i",
        *[f"{k}={v}" for k, v in env.items()],
        "/bin/sh",
        "-c",
        script,
    ]


def write_instance_files(instance: Instance, server: Server) -> tuple[Path, Path]:
    """The ConfigMap and Secret contents as the Pod would see them mounted (port and socket moved)."""
    config_dir, credentials_dir = server.root / "config", server.root / "credentials"
    config_dir.mkdir()
    credentials_dir.mkdir()
    conf = config.postgresql_conf(instance)
    conf = conf.replace(f"port = {POSTGRES_PORT}", f"port = {server.port}").replace(
        config.SOCKET_DIR, str(server.socket_dir)
    )
    (config_dir / config.CONFIG_FILE).write_text(conf)
    (config_dir / config.HBA_FILE).write_text(config.pg_hba_conf().replace("0.0.0.0/0", "127.0.0.1/32"))
    (credentials_dir / "superuser-password").write_text(server.superuser_password)
    return config_dir, credentials_dir


def chown_to_postgres(path: Path) -> None:
    entry = pwd.getpwnam("postgres")
    for item in [path, *path.rglob("*")]:
        os.chown(item, entry.pw_uid, entry.pw_gid)


def start_server(instance: Instance, major: int, root: Path, password: str) -> Server:
    server = Server(major, root, free_port(), password)
    server.socket_dir.mkdir(parents=True)
    config_dir, credentials_dir = write_instance_files(instance, server)
    chown_to_postgres(root)
    script = statefulset.start_script(config_dir=str(config_dir), credentials_dir=str(credentials_dir))
    env = {**server.base_env(), "PGDATA": str(root / "data" / "pgdata")}
    log = (root / "server.log").open("wb")
    server.process = subprocess.Popen(
        as_postgres(script, env),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    # The Pod's own readiness probe, pointed at this server's binary, socket and port.
    swaps = {"pg_isready": str(server.bin_dir / "pg_isready"), str(POSTGRES_PORT): str(server.port)}
    probe = [swaps.get(arg, arg) for arg in statefulset.probe_command(str(server.socket_dir))]
    deadline = time.monotonic() + 60
    while subprocess.run(probe, check=False).returncode != 0:
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL {major} did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return server


def stop_server(server: Server) -> None:
    if server.process and server.process.poll() is None:
        server.process.terminate()  # SIGTERM: PostgreSQL's smart shutdown
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()


@pytest.fixture
def pg_workdir() -> Iterator[Path]:
    """A folder the `postgres` user can reach (pytest's tmp_path sits under a root-only folder)."""
    path = Path(tempfile.mkdtemp(prefix="sampledb-pg-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_server(pg_workdir: Path) -> Iterator[Any]:
    """Start servers with the StatefulSet's start script; all are stopped after the test."""
    servers: list[Server] = []

    def make(instance: Instance, major: int, *, password: str = "superuser-secret-Pw1", name: str = "srv") -> Server:
        root = pg_workdir / name
        root.mkdir()
        server = start_server(instance, major, root, password)
        servers.append(server)
        return server

    yield make
    for server in servers:
        stop_server(server)

"""Real PostgreSQL servers for testing the operator's scripts: the StatefulSet's start script,
the initial-configuration Job and the final snapshot, run exactly as the builders emit them.

Servers listen on 127.0.0.1 and a private socket folder, run as the `postgres` user (initdb
refuses root), and are stopped after each test. Each test runs on every PostgreSQL at hand: the
majors installed under /usr/lib/postgresql, and the images `localhost/sampledb-postgres:<major>`
(built by `make base-images`) for the other majors, run with podman on the host network exactly
as a Job's container would run the script. SAMPLEDB_REQUIRE_PG_MAJORS (e.g. "15,17", set by
`make test`) turns a missing major into a failure instead of a smaller matrix.
"""

from __future__ import annotations

import functools
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sampledb_operator.resources import archive, config, paths, recovery, statefulset
from sampledb_operator.resources.instance import POSTGRES_PORT, Instance
from tests.objectstore import ObjectStore, start_object_store
from tests.webhook_process import free_port

PG_ROOT = Path("/usr/lib/postgresql")
IMAGE = "localhost/sampledb-postgres:{major}"
PODMAN_RUN = ["podman", "run", "--rm", "--runtime", "runc", "--network", "host",
              "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4000:4000"]  # fmt: skip


def installed_majors() -> list[int]:
    return sorted(int(p.name) for p in PG_ROOT.glob("*") if (p / "bin" / "initdb").exists()) if PG_ROOT.is_dir() else []


def image_majors(candidates: tuple[int, ...] = (15, 16, 17, 18)) -> list[int]:
    if shutil.which("podman") is None:
        return []
    exists = lambda m: subprocess.run(["podman", "image", "exists", IMAGE.format(major=m)], check=False).returncode == 0  # noqa: E731
    return [m for m in candidates if exists(m)]


@dataclass(frozen=True)
class Runtime:
    """Where a PostgreSQL major comes from: this machine's packages, or a container image."""

    major: int
    image: str | None = None

    @property
    def id(self) -> str:
        return f"pg{self.major}" + ("-container" if self.image else "")

    @functools.cached_property
    def owner(self) -> tuple[int, int]:
        """uid and gid of `postgres` where the scripts run (the image's may differ from the host's)."""
        if self.image is None:
            entry = pwd.getpwnam("postgres")
            return entry.pw_uid, entry.pw_gid
        out = subprocess.run(
            [*PODMAN_RUN, self.image, "sh", "-c", "id -u postgres; id -g postgres"],
            check=True,
            capture_output=True,
            text=True,
        )
        uid, gid = out.stdout.split()
        return int(uid), int(gid)

    def base_env(self, home: Path) -> dict[str, str]:
        env = {"LC_ALL": "C.UTF-8", "HOME": str(home)}
        if self.image is None:
            env["PATH"] = f"{PG_ROOT / str(self.major) / 'bin'}:/usr/bin:/bin"
        return env

    def command(self, script: str, env: dict[str, str], *, share: Path) -> list[str]:
        """argv running `script` as postgres with exactly `env` (plus the runtime's PATH); `share` is visible."""
        if self.image is None:
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
        uid, gid = self.owner
        env_args = [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]
        return [
            *PODMAN_RUN,
            "--user",
            f"{uid}:{gid}",
            "-v",
            f"{share}:{share}",
            *env_args,
            self.image,
            "/bin/sh",
            "-c",
            script,
        ]


def runtimes() -> list[Runtime]:
    local = installed_majors()
    found = [Runtime(m) for m in local] + [Runtime(m, IMAGE.format(major=m)) for m in image_majors() if m not in local]
    required = {int(m) for m in os.environ.get("SAMPLEDB_REQUIRE_PG_MAJORS", "").split(",") if m.strip()}
    missing = required - {r.major for r in found}
    if missing or not found:
        pytest.fail(
            f"PostgreSQL {sorted(missing) or 'any'} not available: .ci/run installs postgresql-15 and "
            "`make base-images` builds localhost/sampledb-postgres:17 and :18"
        )
    return found


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "pg" in metafunc.fixturenames:
        found = runtimes()
        metafunc.parametrize("pg", found, ids=[r.id for r in found])
    if "pg_upgrade_pair" in metafunc.fixturenames:
        found = runtimes()
        pairs = [(old, new) for old in found for new in found if old.major < new.major]
        metafunc.parametrize("pg_upgrade_pair", pairs, ids=[f"{o.id}-to-{n.id}" for o, n in pairs])


def client_bin() -> Path:
    """A local PostgreSQL client (psql, pg_isready) for the tests' own checks, of any major."""
    majors = installed_majors()
    if not majors:
        pytest.fail("the tests need a local PostgreSQL client: .ci/run installs postgresql-client-15")
    return PG_ROOT / str(majors[-1]) / "bin"


@dataclass
class Server:
    """A server started by the StatefulSet's own start script."""

    runtime: Runtime
    root: Path
    port: int
    superuser_password: str
    share: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    def base_env(self) -> dict[str, str]:
        return self.runtime.base_env(self.root)

    def command(self, script: str, env: dict[str, str]) -> list[str]:
        return self.runtime.command(script, {**self.base_env(), **env}, share=self.share)

    def run_script(self, script: str, env: dict[str, str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a script as the postgres user with exactly `env` (plus PATH), as a Job container would."""
        return subprocess.run(self.command(script, env), capture_output=True, text=True, check=check, timeout=180)

    def psql(self, sql: str, *, user: str = "postgres", password: str | None = None, database: str = "postgres") -> str:
        """The tests' own check, over TCP with a local client."""
        env = {**os.environ, "PGPASSWORD": password or self.superuser_password, "PGCONNECT_TIMEOUT": "5"}
        argv = [str(client_bin() / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", database]
        result = subprocess.run(
            [*argv, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True, text=True, env=env, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(result.stderr)
        return result.stdout.strip()

    def superuser_env(self) -> dict[str, str]:
        """libpq variables for a client script talking to this server as the superuser over TCP."""
        return {
            "PGHOST": "127.0.0.1",
            "PGPORT": str(self.port),
            "PGUSER": "postgres",
            "PGPASSWORD": self.superuser_password,
        }

    def chown(self, path: Path) -> None:
        """Make `path` (recursively) the postgres user's, as the runtime numbers it."""
        uid, gid = self.runtime.owner
        for item in [path, *path.rglob("*")]:
            os.chown(item, uid, gid)


def write_instance_files(
    instance: Instance, server: Server, upstream: Server | None = None, store: ObjectStore | None = None
) -> tuple[Path, Path]:
    """The ConfigMap and Secret contents as the Pod would see them mounted (ports, socket and primary moved)."""
    config_dir, credentials_dir = server.root / "config", server.root / "credentials"
    config_dir.mkdir()
    credentials_dir.mkdir()
    conf = config.postgresql_conf(instance)
    conf = conf.replace(f"port = {POSTGRES_PORT}", f"port = {server.port}").replace(
        config.SOCKET_DIR, str(server.socket_dir)
    )
    primary_port = upstream.port if upstream else server.port
    conf = conf.replace(f"host={instance.primary_host} port={POSTGRES_PORT}", f"host=127.0.0.1 port={primary_port}")
    (config_dir / config.CONFIG_FILE).write_text(conf)
    (config_dir / config.HBA_FILE).write_text(config.pg_hba_conf().replace("0.0.0.0/0", "127.0.0.1/32"))
    (config_dir / config.PRIMARY_FILE).write_text(instance.primary)
    (credentials_dir / "superuser-password").write_text(server.superuser_password)
    if store is not None:
        write_archive_files(instance, server, store)
    return config_dir, credentials_dir


def write_archive_files(instance: Instance, server: Server, store: ObjectStore) -> None:
    """The pgBackRest files of the ConfigMap, and the object store's keys and CA as the Pod mounts them."""
    root = server.root
    keys_dir, ca_dir = root / "object-store", root / "object-store-ca"
    keys_dir.mkdir()
    ca_dir.mkdir()
    moved = {  # CA_DIR before KEYS_DIR, its prefix
        paths.CONFIG_DIR: str(root / "config"),
        archive.CA_DIR: str(ca_dir),
        archive.KEYS_DIR: str(keys_dir),
        paths.PGDATA: str(root / "data" / "pgdata"),
        paths.SOCKET_DIR: str(server.socket_dir),
        f"pg1-port={POSTGRES_PORT}": f"pg1-port={server.port}",
        "lock-path=/tmp/": f"lock-path={root}/",
    }
    for name, text in {**archive.config_files(instance), **recovery.config_files(instance)}.items():
        for old, new in moved.items():
            text = text.replace(old, new)
        (root / "config" / name).write_text(text)
    conf = root / "config" / config.CONFIG_FILE
    conf.write_text(conf.read_text().replace(paths.CONFIG_DIR, str(root / "config")))
    (keys_dir / archive.ACCESS_KEY_FILE).write_text(store.access_key)
    (keys_dir / archive.SECRET_KEY_FILE).write_text(
        store.secret_key + "\n"
    )  # as a file from `kubectl create secret` may be
    shutil.copy(store.ca, ca_dir / archive.CA_FILE)


def _ready(server: Server) -> bool:
    """The Pod's own readiness probe, at this server's socket and port (run with a local client).

    Like the Pod's, it fails while the start script restores or recovers: the recovering server
    accepts connections on its socket once consistent, long before it may refuse its target.
    """
    swaps = {"pg_isready": str(client_bin() / "pg_isready"), str(POSTGRES_PORT): str(server.port)}
    probe = [swaps.get(arg, arg) for arg in statefulset.probe_command(str(server.socket_dir))]
    restoring = server.socket_dir / recovery.RESTORING_FILE
    return subprocess.run(probe, check=False).returncode == 0 and not restoring.exists()


def start_server(
    instance: Instance,
    runtime: Runtime,
    root: Path,
    password: str,
    share: Path,
    upstream: Server | None = None,
    hostname: str | None = None,
    store: ObjectStore | None = None,
) -> Server:
    """A server as the Pod runs it: the primary, or (with `upstream`) a standby of `upstream` named `<sts>-1`.

    `hostname` names the Pod otherwise: the primary's Pod 0 after a failover to `<sts>-1`, say.
    """
    server = Server(runtime, root, free_port(), password, share)
    server.socket_dir.mkdir(parents=True, exist_ok=True)
    if not (root / "config").exists():
        write_instance_files(instance, server, upstream, store)
    config_dir, credentials_dir = root / "config", root / "credentials"
    server.chown(root)
    script = statefulset.start_script(
        "127.0.0.1",
        primary_port=upstream.port if upstream else server.port,
        config_dir=str(config_dir),
        credentials_dir=str(credentials_dir),
        archive_run_dir=str(server.socket_dir / "pgbackrest"),
        socket_dir=str(server.socket_dir),
        port=server.port,
        termination_log=str(root / "termination-log"),
    )
    env = {
        "PGDATA": str(root / "data" / "pgdata"),
        "HOSTNAME": hostname or (instance.pod(1) if upstream else instance.primary),
        "PASSWORD_FILE": str(credentials_dir / "superuser-password"),
        "PGPASSFILE": str(server.socket_dir / config.PASSFILE),
    }
    with (root / "server.log").open("wb") as log:
        server.process = subprocess.Popen(server.command(script, env), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 90
    while not _ready(server):
        if server.process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"PostgreSQL {runtime.id} did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.2)
    return server


def stop_server(server: Server) -> None:
    if server.process and server.process.poll() is None:
        server.process.terminate()  # SIGTERM (podman forwards it): PostgreSQL's smart shutdown
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
def store(pg_workdir: Path) -> Iterator[ObjectStore]:
    """A real S3 store (versitygw, TLS) on loopback, for the archiving and base-backup tests."""
    started = start_object_store(pg_workdir / "object-store")
    yield started
    started.stop()


@pytest.fixture
def make_server(pg_workdir: Path) -> Iterator[Any]:
    """Start servers with the StatefulSet's start script; all are stopped after the test."""
    servers: list[Server] = []

    def make(
        instance: Instance,
        runtime: Runtime,
        *,
        password: str = "superuser-secret-Pw1",
        name: str = "srv",
        upstream: Server | None = None,
        store: ObjectStore | None = None,
    ) -> Server:
        root = pg_workdir / name
        root.mkdir()
        server = start_server(instance, runtime, root, password, pg_workdir, upstream, store=store)
        servers.append(server)
        return server

    yield make
    for server in servers:
        stop_server(server)

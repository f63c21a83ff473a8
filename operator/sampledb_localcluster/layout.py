"""Where a local cluster keeps its files.

Every file a cluster writes (certificates, etcd data, logs, pid files, kubeconfigs) lives under one
state folder. Naming those paths in one place lets the in-process harness, the detached ``up`` and
a later ``down``/``status`` run from another process agree on them without sharing any memory.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sampledb_localcluster.tools import REPO_ROOT

DEFAULT_STATE_DIR = REPO_ROOT / ".local" / "cluster"
"""Default state folder; ``.local/`` is git-ignored."""

_MARKER = ".sampledb-localcluster"
# The entries reset() may delete; anything else in the folder is left alone.
_OWNED = ("pki", "data", "logs", "run", "config", "kubeconfig", "operator.kubeconfig", "cluster.json")


@dataclass(frozen=True)
class CertKeyPair:
    """Paths of a PEM certificate (or public key) and its PEM private key."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class StateLayout:
    """The paths inside one cluster's state folder.

    Attributes:
        root: The state folder.
    """

    root: Path

    @property
    def pki(self) -> Path:
        """Folder of certificates and keys."""
        return self.root / "pki"

    @property
    def data(self) -> Path:
        """Folder of component data (etcd)."""
        return self.root / "data"

    @property
    def logs(self) -> Path:
        """Folder of one log file per component plus the audit log."""
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """Folder of pid files."""
        return self.root / "run"

    @property
    def config(self) -> Path:
        """Folder of component configuration: per-component kubeconfigs, audit policy, kwok config."""
        return self.root / "config"

    @property
    def kubeconfig(self) -> Path:
        """The admin (``system:masters``) kubeconfig."""
        return self.root / "kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        """The kubeconfig that authenticates as the operator's ServiceAccount user."""
        return self.root / "operator.kubeconfig"

    @property
    def ca(self) -> CertKeyPair:
        """The cluster CA."""
        return CertKeyPair(self.pki / "ca.crt", self.pki / "ca.key")

    @property
    def service_account_keys(self) -> CertKeyPair:
        """The ServiceAccount token signing keys; ``cert`` is the PEM public key ``sa.pub``."""
        return CertKeyPair(self.pki / "sa.pub", self.pki / "sa.key")

    @property
    def audit_log(self) -> Path:
        """The API server's audit log (JSON lines, Metadata level)."""
        return self.logs / "audit.log"

    @property
    def state_file(self) -> Path:
        """JSON summary of a running cluster (server URL, ports), read by ``status``/``env``."""
        return self.root / "cluster.json"

    def log(self, component: str) -> Path:
        """Return the log file of one component."""
        return self.logs / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        """Return the pid file of one component."""
        return self.run / f"{component}.pid"

    def component_kubeconfig(self, component: str) -> Path:
        """Return the kubeconfig one component uses to reach the API server."""
        return self.config / f"{component}.kubeconfig"

    def cert(self, name: str) -> CertKeyPair:
        """Return the paths of a certificate and key pair in the PKI folder."""
        return CertKeyPair(self.pki / f"{name}.crt", self.pki / f"{name}.key")

    def is_reusable(self) -> bool:
        """Tell whether the folder is absent, empty or was created by this harness.

        Used to refuse wiping a folder someone pointed us at by mistake.
        """
        if not self.root.exists():
            return True
        return (self.root / _MARKER).exists() or not any(self.root.iterdir())

    def reset(self) -> None:
        """Delete the previous cluster's files and create the empty folders.

        Only entries this harness owns are deleted, so a mistaken ``state_dir`` cannot wipe
        unrelated files; callers check :meth:`is_reusable` first.
        """
        for entry in _OWNED:
            path = self.root / entry
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for folder in (self.pki, self.data, self.logs, self.run, self.config):
            folder.mkdir(parents=True, exist_ok=True)
        (self.root / _MARKER).write_text("created by sampledb_localcluster\n", encoding="utf-8")

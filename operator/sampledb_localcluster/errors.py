"""Errors raised while starting a local cluster.

A control plane that fails to start usually says why only in one component's log. These errors
carry that log's tail and path in their message, so a failing test or ``make cluster-up`` shows
the cause directly instead of a timeout somewhere downstream.
"""

from __future__ import annotations

from pathlib import Path

from sampledb_localcluster.tools import MissingToolError

__all__ = ["ClusterStartError", "MissingToolError"]


class ClusterStartError(RuntimeError):
    """A component did not start: it exited, never became healthy, or its port was taken.

    Attributes:
        component: The component's name, e.g. ``kube-apiserver``.
        cause: One line saying what went wrong.
        log_path: The component's log file, if it has one.
        log_tail: The last lines of that log (may be empty).
    """

    def __init__(self, component: str, cause: str, log_path: Path | None = None, log_tail: str = "") -> None:
        self.component = component
        self.cause = cause
        self.log_path = log_path
        self.log_tail = log_tail
        super().__init__(self._message())

    def _message(self) -> str:
        lines = [f"{self.component} failed to start: {self.cause}"]
        if self.log_path is not None:
            if self.log_tail.strip():
                lines.append(f"last lines of {self.log_path}:")
                lines.extend(f"    {line}" for line in self.log_tail.splitlines())
            else:
                lines.append(f"(nothing in its log {self.log_path})")
        return "\n".join(lines)

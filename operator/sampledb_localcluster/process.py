"""Start, find and stop the control-plane processes.

Each component runs as the leader of its own process group (``start_new_session=True``) with its
pid in a pid file, so that whoever stops the cluster, this process or a later ``down`` from another
shell, can kill the whole group and nothing outlives the cluster. Pids read back from files are
only trusted when the process's command line still mentions the cluster's state folder, which
guards against killing an unrelated process that reused a stale pid.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_POLL_INTERVAL = 0.05


def find_free_port() -> int:
    """Return a loopback TCP port that is free right now (the kernel's pick for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_is_free(port: int) -> bool:
    """Tell whether a loopback TCP port can be bound (nobody listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option Go sets on its listeners, so a port in TIME_WAIT counts as free, as it is for them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def log_tail(path: Path, lines: int = 30) -> str:
    """Return the last ``lines`` lines of a log file ("" when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            # Reading the last 64 KiB is plenty for 30 lines and bounded for huge logs.
            handle.seek(max(0, handle.tell() - 65536))
            text = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def diagnose(log_text: str) -> str | None:
    """Recognise well-known start-up failures in a log tail.

    Args:
        log_text: The end of a component's log.

    Returns:
        A short cause such as ``"port in use"``, or ``None`` when nothing is recognised.
    """
    lowered = log_text.lower()
    if "address already in use" in lowered:
        return "port in use (another process listens on one of its ports)"
    if "permission denied" in lowered:
        return "permission denied"
    return None


def _die_with_parent_hook() -> Callable[[], None]:
    """Build a ``preexec_fn`` that makes the child get SIGKILL when this process dies.

    This covers the one exit no handler can catch: the test runner being SIGKILLed. Note that
    Linux ties the signal to the *thread* that forked the child, so start clusters from a
    long-lived thread (normally the main thread).
    """
    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the forked child must not load libraries
    parent = os.getpid()

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return hook


def spawn(
    argv: Sequence[str],
    log_path: Path,
    pid_file: Path,
    die_with_parent: bool,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start one component in its own session, logging to ``log_path`` and recording its pid.

    Args:
        argv: The command line.
        log_path: Receives stdout and stderr (truncated first).
        pid_file: Receives the pid, which is also the process group id.
        die_with_parent: Kill the child when this process dies (in-process use only; a detached
            ``up`` must outlive its parent).
        env: The child's environment; this process's when omitted.

    Returns:
        The running process.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        log.write(f"# command: {' '.join(argv)}\n".encode())
        log.flush()
        child = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent_hook() if die_with_parent else None,
            close_fds=True,
            env=None if env is None else dict(env),
        )
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.write_text(f"{child.pid}\n", encoding="utf-8")
    return child


def read_pid_file(path: Path) -> int | None:
    """Return the pid in a pid file, or ``None`` if the file is missing or garbled."""
    try:
        return int(path.read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return None


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our own dead child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(pid: int) -> bool:
    """Tell whether a process exists and is not a zombie."""
    _reap(pid)
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X")


def command_line(pid: int) -> str:
    """Return a process's command line joined by spaces ("" if it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def owned_pid(pid_file: Path, marker: str) -> int | None:
    """Return the pid from a pid file if that process is alive and its command line has ``marker``.

    Args:
        pid_file: The pid file.
        marker: Text every component's command line contains (the state folder path).
    """
    pid = read_pid_file(pid_file)
    if pid is None or not is_alive(pid) or marker not in command_line(pid):
        return None
    return pid


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        # Only signal a group this pid leads: start_new_session made every component a leader.
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _wait_all_dead(pids: Sequence[int], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = [pid for pid in pids if is_alive(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL)
        alive = [pid for pid in alive if is_alive(pid)]
    return alive


def terminate(pids: Sequence[int], grace: float = 5.0) -> list[int]:
    """Stop process groups: SIGTERM, then SIGKILL whatever is still alive after ``grace`` seconds.

    Args:
        pids: Process group leaders.
        grace: Seconds to wait for a clean exit before SIGKILL.

    Returns:
        The pids that survived even SIGKILL (normally none).
    """
    for pid in pids:
        _signal_group(pid, signal.SIGTERM)
    survivors = _wait_all_dead(pids, grace)
    for pid in survivors:
        _signal_group(pid, signal.SIGKILL)
    return _wait_all_dead(survivors, 5.0)

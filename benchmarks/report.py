"""What every benchmark script shares: the result table, progress lines, the machine it ran on.

Kept apart so that the three scripts print their tables, progress and machine description the
same way, and a reader comparing `benchmarks/results/*.md` compares like with like.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType


@dataclass(frozen=True)
class Row:
    """One line of a result table."""

    section: str
    figure: str
    value: str
    target: str = ""


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries only the table), stamped with the wall clock."""
    stamp = datetime.datetime.now().strftime("%H:%M:%S")
    print(f"[bench {stamp}] {message}", file=sys.stderr, flush=True)


def markdown_table(rows: Sequence[Row]) -> str:
    """The rows as one markdown table."""
    lines = ["| Section | Figure | Value | Target |", "|---|---|---|---|"]
    lines += [f"| {r.section} | {r.figure} | {r.value} | {r.target} |" for r in rows]
    return "\n".join(lines) + "\n"


def verdict(met: bool, target: str) -> str:
    """The target and whether this run met it (reported, never asserted)."""
    return f"{target}: {'met' if met else 'MISSED'}"


def load_average() -> str:
    """The 1/5/15-minute load averages: how far the wall-clock figures are from a quiet machine."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def proc_field(path: str, key: str) -> str:
    """The first `key: value` of a /proc file, or '?' off Linux."""
    with contextlib.suppress(OSError):
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    return "?"


def machine_rows(*details: tuple[str, str]) -> list[Row]:
    """What the figures were measured on (plus the script's own `details`), and how busy it was."""
    mem_kib = proc_field("/proc/meminfo", "MemTotal").split()[0]
    ram = f"{int(mem_kib) / 1024**2:.1f} GiB" if mem_kib.isdigit() else "?"
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    common = [
        ("CPU model", proc_field("/proc/cpuinfo", "model name")),
        ("cores", str(os.cpu_count())),
        ("RAM", ram),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("OS", f"{platform.system()} {platform.release()}"),
    ]
    rest = [*details, ("date", now), ("load average 1/5/15 min at start", load_average())]
    return [Row("Machine", figure, value) for figure, value in [*common, *rest]]


def wait_until(probe: Callable[[], bool], what: str, timeout: float = 60, interval: float = 0.2) -> None:
    """Poll `probe` until it is true; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler that unwinds like Ctrl-C, so that the scripts' cleanup (clusters, servers) runs."""
    raise SystemExit(128 + signum)

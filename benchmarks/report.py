"""What every benchmark script shares: the result table, the verdict rule, progress lines, the machine.

Kept apart so that the scripts print their tables, progress and machine description the same way,
and a reader comparing `benchmarks/results/*.md` compares like with like.

The verdict rule lives here and only here (issue #14): a figure measured over several runs meets or
misses its target only when its spread over the runs is smaller than its distance to the target;
otherwise the table says "inconclusive" and gives the spread. A single comparison of two medians
on a loaded 2-core machine said "met" for ratios whose runs lay on both sides of the target.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
import statistics
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


# A spread needs at least two runs: one run cannot tell its noise from its value.
MIN_RUNS = 2


@dataclass(frozen=True)
class Target:
    """An upper limit a figure should stay under, e.g. a ratio of 1.5 or a peak of 150 MiB."""

    limit: float
    text: str  # as the table shows it, e.g. "<= 1.5"


@dataclass(frozen=True)
class Judgement:
    """A figure's runs against its target: median, spread and the verdict rule 1 allows."""

    runs: tuple[float, ...]
    target: Target

    @property
    def median(self) -> float:  # noqa: D102
        return statistics.median(self.runs)

    @property
    def spread(self) -> float:
        """The largest distance from the median to any run: every run lies within median ± spread."""
        return max(abs(run - self.median) for run in self.runs)

    @property
    def distance(self) -> float:
        """How far the median is from the target's limit."""
        return abs(self.median - self.target.limit)

    @property
    def conclusive(self) -> bool:
        """Rule 1: enough runs, and all of them on the same side of the limit as the median."""
        return len(self.runs) >= MIN_RUNS and self.spread < self.distance

    @property
    def verdict(self) -> str:
        """'meets', 'misses' or 'inconclusive'."""
        if not self.conclusive:
            return "inconclusive"
        return "meets" if self.median <= self.target.limit else "misses"

    def value(self, digits: int = 2, unit: str = "") -> str:
        """The median ± spread and every run, for the Value column."""
        return spread_text(self.runs, digits, unit)

    def cell(self, digits: int = 2) -> str:
        """The target and the verdict, for the Target column; an inconclusive one says why."""
        verdict = self.verdict
        if verdict == "meets":
            return f"{self.target.text}: meets"
        if verdict == "misses":
            return f"{self.target.text}: MISSES"
        if len(self.runs) < MIN_RUNS:
            return f"{self.target.text}: inconclusive ({len(self.runs)} run: no spread)"
        return (
            f"{self.target.text}: inconclusive (spread ± {self.spread:.{digits}f} >= distance "
            f"{self.distance:.{digits}f} to the target)"
        )


def judge(runs: Sequence[float], target: Target) -> Judgement:
    """Rule 1 applied to the runs of one figure (a ratio per run, a peak per run, ...)."""
    if not runs:
        raise ValueError(f"no runs to judge against {target.text}")
    return Judgement(tuple(float(run) for run in runs), target)


def count_verdict(counts: Sequence[int], limit: int, text: str) -> str:
    """Counts (writes, failures) are exact, not estimates: they meet a limit only if every run does."""
    if not counts:
        raise ValueError(f"no counts to judge against {text}")
    return f"{text}: meets" if max(counts) <= limit else f"{text}: MISSES"


def spread_text(runs: Sequence[float], digits: int = 2, unit: str = "") -> str:
    """'median ± spread (n = k: run, run, ...)', the spread as in `Judgement.spread`."""
    median = statistics.median(runs)
    spread = max(abs(run - median) for run in runs)
    each = ", ".join(f"{run:.{digits}f}" for run in runs)
    return f"{median:.{digits}f} ± {spread:.{digits}f}{unit} (n = {len(runs)}: {each})"


def pair_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """One ratio per run of two interleaved series (run i of one over run i of the other)."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} runs against {len(denominators)}: not interleaved pairs")
    return [a / b for a, b in zip(numerators, denominators, strict=True)]


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

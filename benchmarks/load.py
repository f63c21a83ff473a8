"""How busy the machine was during a phase, and with what: the load a figure was measured under.

Why: on 2 cores a build or a test suite running alongside moves every wall-clock figure, and a load
average alone does not say whether the benchmark itself or something else kept the cores busy. A
phase is therefore reported with /proc/loadavg at its start and end, the machine's busy CPU seconds
(/proc/stat), the part spent by processes outside the benchmark (everything but this process and
its descendants), and the top few of those by CPU seconds.

A process that started and ended within the phase is not in either sample: its CPU time shows in
the machine's total (so in "outside the benchmark" when it was not ours) but not in the top list.
The benchmark's own share counts the time of its waited-for children (`cutime`), which is where a
short-lived child of ours (the creator process, kubectl) ends up; the top list of other processes
counts each one's own time only, since a parent's `cutime` jumps by a child's whole lifetime when
it reaps it, and would name a shell that merely waited.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TOP = 3


@dataclass(frozen=True)
class Proc:
    """One process: its name, parent, start time (to tell a reused pid) and CPU seconds so far."""

    name: str
    ppid: int
    started: int  # clock ticks after boot
    own: float  # utime + stime: its own CPU seconds
    cpu: float  # own + cutime + cstime: with its waited-for children's


@dataclass(frozen=True)
class Sample:
    """The machine at one moment: busy CPU seconds since boot, the load line and every process."""

    busy: float
    loadavg: str
    processes: Mapping[int, Proc]


def parse_stat(text: str, ticks: float) -> tuple[int, Proc]:
    """A /proc/PID/stat line as (pid, Proc); the name may hold spaces and parentheses."""
    head, _, rest = text.rpartition(")")
    pid, _, name = head.partition(" (")
    fields = rest.split()
    own = (int(fields[11]) + int(fields[12])) / ticks  # utime stime
    children = (int(fields[13]) + int(fields[14])) / ticks  # cutime cstime
    return int(pid), Proc(name, int(fields[1]), int(fields[19]), own, own + children)


def busy_seconds(stat_text: str, ticks: float) -> float:
    """Busy CPU seconds of all cores from /proc/stat's first line (everything but idle and iowait)."""
    values = [int(value) for value in stat_text.splitlines()[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / ticks


def sample(proc: Path = PROC) -> Sample:
    """Read the machine now (a few hundred small files: milliseconds)."""
    ticks = float(os.sysconf("SC_CLK_TCK"))
    processes: dict[int, Proc] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            pid, info = parse_stat((entry / "stat").read_text(encoding="utf-8", errors="replace"), ticks)
        except (OSError, ValueError, IndexError):  # gone meanwhile, or a line we cannot read
            continue
        processes[pid] = info
    loadavg = " ".join((proc / "loadavg").read_text(encoding="utf-8").split()[:4])
    return Sample(busy_seconds((proc / "stat").read_text(encoding="utf-8"), ticks), loadavg, processes)


def descendants(root: int, processes: Mapping[int, Proc]) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for pid, info in processes.items():
        children.setdefault(info.ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def cpu_used(before: Sample, after: Sample, pids: Iterable[int], *, children: bool) -> dict[int, float]:
    """CPU seconds each process of `pids` (alive at the end) used between the samples (with its reaped children's)."""
    used = {}
    for pid in pids:
        now = after.processes.get(pid)
        if now is None:
            continue
        then = before.processes.get(pid)
        same = then is not None and then.started == now.started
        if children:
            used[pid] = max(0.0, now.cpu - (then.cpu if then is not None and same else 0.0))
        else:
            used[pid] = max(0.0, now.own - (then.own if then is not None and same else 0.0))
    return used


@dataclass(frozen=True)
class PhaseLoad:
    """What the machine did during one phase."""

    seconds: float
    cores: int
    loadavg_before: str
    loadavg_after: str
    busy: float  # CPU seconds, all processes
    ours: float  # CPU seconds of this process and its descendants
    top_others: tuple[tuple[str, int, float], ...]  # (name, pid, CPU seconds), largest first

    @property
    def others(self) -> float:
        """CPU seconds outside the benchmark's processes."""
        return max(0.0, self.busy - self.ours)

    def text(self) -> str:
        """One table cell: load before -> after, busy share, and what else ran."""
        capacity = self.seconds * self.cores
        share = f"{100 * self.busy / capacity:.0f} %" if capacity > 0 else "?"
        top = ", ".join(f"{name} ({pid}) {cpu:.1f} s" for name, pid, cpu in self.top_others) or "none"
        return (
            f"loadavg {self.loadavg_before} -> {self.loadavg_after}; CPU busy {self.busy:.0f} s of "
            f"{capacity:.0f} s ({share}); outside the benchmark {self.others:.1f} s (top: {top})"
        )


def phase_load(before: Sample, after: Sample, seconds: float, root: int | None = None) -> PhaseLoad:
    """The load between two samples; `root` (this process by default) and its descendants are ours."""
    root = os.getpid() if root is None else root
    ours = descendants(root, before.processes) | descendants(root, after.processes)
    others = set(after.processes) - ours
    used_ours = sum(cpu_used(before, after, ours, children=True).values())
    used_others = cpu_used(before, after, others, children=False)
    top = sorted(used_others.items(), key=lambda item: item[1], reverse=True)[:TOP]
    return PhaseLoad(
        seconds=seconds,
        cores=os.cpu_count() or 1,
        loadavg_before=before.loadavg,
        loadavg_after=after.loadavg,
        busy=max(0.0, after.busy - before.busy),
        ours=used_ours,
        top_others=tuple((after.processes[pid].name, pid, cpu) for pid, cpu in top if cpu >= 0.05),
    )

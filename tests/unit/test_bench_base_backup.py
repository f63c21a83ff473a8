"""The base-backup benchmark's measurement: the CPU of a command counts what it ran, and a failure stops the run."""

from __future__ import annotations

import pytest

from benchmarks.bench_base_backup import measure

BUSY = "i=0; while [ $i -lt 300000 ]; do i=$((i + 1)); done"


def test_the_cpu_of_a_command_includes_the_processes_it_ran_and_not_its_sleep() -> None:
    direct = measure(["sh", "-c", BUSY], settle=False)
    nested = measure(["sh", "-c", f"sh -c '{BUSY}'; sleep 0.3"], settle=False)
    assert direct.cpu > 0.05 and nested.cpu > 0.5 * direct.cpu, (direct, nested)
    assert nested.wall >= 0.3 + 0.5 * direct.cpu and nested.cpu < nested.wall - 0.2, nested


def test_a_command_that_fails_stops_the_run_with_its_output() -> None:
    with pytest.raises(RuntimeError, match="said why"):
        measure(["sh", "-c", "echo said why >&2; exit 3"], settle=False)

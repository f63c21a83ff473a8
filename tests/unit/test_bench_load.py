"""The load a benchmark phase ran under: /proc read right, our processes told from the others."""

from __future__ import annotations

from benchmarks.load import Proc, Sample, busy_seconds, descendants, parse_stat, phase_load

STAT = "4242 (kube (api) server) S 1 4242 4242 0 -1 4194560 5 0 0 0 150 50 20 10 20 0 12 0 7777 0 0\n"


def test_a_stat_line_with_spaces_and_parentheses_in_the_name() -> None:
    pid, proc = parse_stat(STAT, 100.0)
    assert (pid, proc.name, proc.ppid, proc.started) == (4242, "kube (api) server", 1, 7777)
    assert (proc.own, proc.cpu) == ((150 + 50) / 100, (150 + 50 + 20 + 10) / 100)


def test_busy_seconds_leave_out_idle_and_iowait() -> None:
    assert busy_seconds("cpu  100 10 50 9000 300 5 5 30 0 0\ncpu0 1 2 3\n", 100.0) == 2.0


def sample(busy: float, **cpu: tuple[int, float]) -> Sample:
    """Processes by name: (parent pid, CPU seconds); pids are fixed per name below."""
    pids = {"bench": 10, "apiserver": 11, "kwok": 12, "make": 20, "cc1": 21, "sshd": 30}
    return Sample(busy, "1.00 0.50 0.20 2/100", {pids[n]: Proc(n, ppid, 0, c, c) for n, (ppid, c) in cpu.items()})


def test_a_phase_splits_the_cpu_between_the_benchmark_and_everything_else() -> None:
    before = sample(100.0, bench=(1, 5.0), apiserver=(10, 10.0), make=(1, 1.0), sshd=(1, 0.0))
    after = sample(160.0, bench=(1, 7.0), apiserver=(10, 30.0), kwok=(10, 4.0), make=(1, 3.0), cc1=(20, 25.0),
                   sshd=(1, 0.01))  # fmt: skip
    assert descendants(10, after.processes) == {10, 11, 12}
    load = phase_load(before, after, 30.0, root=10)
    assert load.busy == 60.0
    assert load.ours == 2.0 + 20.0 + 4.0  # a process started during the phase counts from zero
    assert load.others == 34.0
    assert [(name, cpu) for name, _pid, cpu in load.top_others] == [("cc1", 25.0), ("make", 2.0)]
    assert "outside the benchmark 34.0 s (top: cc1 (21) 25.0 s, make (20) 2.0 s)" in load.text()


def test_a_reused_pid_is_a_new_process() -> None:
    before = Sample(0.0, "", {5: Proc("old", 1, 100, 50.0, 50.0)})
    after = Sample(10.0, "", {5: Proc("new", 1, 900, 3.0, 3.0)})
    assert phase_load(before, after, 10.0, root=999).top_others == (("new", 5, 3.0),)


def test_a_shell_that_reaped_a_long_child_is_not_named_for_its_childs_time() -> None:
    before = Sample(0.0, "", {7: Proc("bash", 1, 10, 1.0, 1.0), 10: Proc("bench", 1, 5, 0.0, 0.0)})
    after = Sample(20.0, "", {7: Proc("bash", 1, 10, 1.5, 80.0), 10: Proc("bench", 1, 5, 2.0, 9.0)})
    load = phase_load(before, after, 10.0, root=10)
    assert load.top_others == (("bash", 7, 0.5),)  # its own half second, not the child's 78.5 s
    assert load.ours == 9.0  # our own reaped children (the creator process, kubectl) are ours

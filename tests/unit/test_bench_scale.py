"""The scale table: one operator/floor ratio per repeat of alternating phases, judged by the rule (issue #14)."""

from __future__ import annotations

from benchmarks.audit import ApiCount
from benchmarks.bench_scale import TARGET_N, Convergence, OperatorFigures, SizeRuns, memory_rows, ratio_row


def phase(seconds: float, total: int = TARGET_N) -> Convergence:
    return Convergence(started=0.0, times=[seconds] * total, total=total)


def runs(operator: list[float], floor: list[float], total: int = TARGET_N, peak_mib: float = 100.0) -> SizeRuns:
    figures = [OperatorFigures(phase(s, total), ApiCount(), 0.0, int(peak_mib * 1024), 0, ApiCount()) for s in operator]
    return SizeRuns(total, operators=figures, floors=[phase(s, total) for s in floor])


def test_the_ratio_is_one_per_repeat_not_a_ratio_of_medians() -> None:
    row = ratio_row("s", runs([100, 300, 200], [200, 100, 300]))  # medians 200 / 200 would say 1.00
    assert row.value.startswith("0.67 ± 2.33 (n = 3: 0.50, 3.00, 0.67)")
    assert row.target.endswith("inconclusive (spread ± 2.33 >= distance 0.83 to the target)")


def test_repeats_that_agree_get_a_verdict_at_the_target_size() -> None:
    assert ratio_row("s", runs([120, 130, 125], [100, 100, 100])).target == "<= 1.5: meets"
    assert ratio_row("s", runs([190, 200, 210], [100, 100, 100])).target == "<= 1.5: MISSES"
    assert ratio_row("s", runs([120, 130], [100, 100], total=100)).target == ""  # no target at N = 100


def test_an_unfinished_phase_leaves_its_pair_out() -> None:
    both = runs([120, 130], [100, 100])
    both.floors[1] = Convergence(started=0.0, times=[1.0], total=TARGET_N, ended=3600.0)
    row = ratio_row("s", both)
    assert "1 of 2 pairs done" in row.figure
    assert row.target.endswith("inconclusive (1 run: no spread)")


def test_the_memory_peaks_are_judged_over_the_repeats() -> None:
    (peak, *_) = memory_rows(runs([100, 100, 100], [90, 90, 90], peak_mib=120.0), 30)
    assert peak.value.startswith("120.0 ± 0.0 MiB (n = 3")
    assert peak.target == "< 150 MiB: meets"

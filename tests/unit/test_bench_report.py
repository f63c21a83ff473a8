"""The benchmarks' verdict rule (issue #14): a verdict only when the spread is smaller than the distance."""

from __future__ import annotations

import pytest

from benchmarks.report import MIN_RUNS, Target, count_verdict, judge, pair_ratios, spread_text

AT_MOST_1_5 = Target(1.5, "<= 1.5")


def test_a_median_closer_to_the_target_than_its_spread_is_inconclusive() -> None:
    judged = judge([1.1, 1.4, 1.7], AT_MOST_1_5)  # 1.4 ± 0.3: one run lies beyond 1.5
    assert (judged.median, round(judged.spread, 9), round(judged.distance, 9)) == (1.4, 0.3, 0.1)
    assert judged.verdict == "inconclusive"
    assert judged.cell() == "<= 1.5: inconclusive (spread ± 0.30 >= distance 0.10 to the target)"


def test_a_spread_smaller_than_the_distance_meets_the_target() -> None:
    judged = judge([1.1, 1.2, 1.3], AT_MOST_1_5)  # 1.2 ± 0.1
    assert judged.verdict == "meets"
    assert judged.cell() == "<= 1.5: meets"
    assert judged.value() == "1.20 ± 0.10 (n = 3: 1.10, 1.20, 1.30)"


def test_a_spread_smaller_than_the_distance_above_the_target_misses_it() -> None:
    judged = judge([1.7, 1.8, 1.9], AT_MOST_1_5)
    assert judged.verdict == "misses"
    assert judged.cell() == "<= 1.5: MISSES"


def test_the_median_alone_on_the_right_side_is_not_enough() -> None:
    # The old rule compared the median with the target: 1.45 "met" 1.5 although one run was 1.9.
    assert judge([1.0, 1.45, 1.9], AT_MOST_1_5).verdict == "inconclusive"
    assert judge([1.0, 1.55, 1.6], AT_MOST_1_5).verdict == "inconclusive"


def test_the_spread_is_the_farthest_run_from_the_median_on_either_side() -> None:
    assert judge([1.0, 1.1, 1.15, 1.2, 1.45], AT_MOST_1_5).spread == pytest.approx(0.3)
    assert judge([0.8, 1.1, 1.12], AT_MOST_1_5).spread == pytest.approx(0.3)


def test_equal_spread_and_distance_is_inconclusive() -> None:
    assert judge([1.0, 1.25, 1.5], AT_MOST_1_5).verdict == "inconclusive"  # a run on the limit itself


def test_one_run_has_no_spread_and_gets_no_verdict() -> None:
    assert MIN_RUNS == 2
    judged = judge([0.5], AT_MOST_1_5)
    assert judged.verdict == "inconclusive"
    assert judged.cell() == "<= 1.5: inconclusive (1 run: no spread)"


def test_no_runs_is_an_error_not_a_verdict() -> None:
    with pytest.raises(ValueError, match="no runs"):
        judge([], AT_MOST_1_5)


def test_counts_are_exact_and_meet_a_limit_only_if_every_run_does() -> None:
    assert count_verdict([0, 0, 0], 0, "0 writes") == "0 writes: meets"
    assert count_verdict([0, 2, 0], 0, "0 writes") == "0 writes: MISSES"


def test_ratios_are_taken_per_interleaved_pair() -> None:
    assert pair_ratios([2.0, 3.0], [1.0, 2.0]) == [2.0, 1.5]
    with pytest.raises(ValueError, match="not interleaved pairs"):
        pair_ratios([1.0, 2.0], [1.0])


def test_spread_text_names_every_run() -> None:
    assert spread_text([10.0, 12.5, 11.0], 1, " s") == "11.0 ± 1.5 s (n = 3: 10.0, 12.5, 11.0)"

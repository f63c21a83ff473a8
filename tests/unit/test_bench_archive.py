"""The recovery-point benchmark's arithmetic: how long each commit stayed unarchived."""

from __future__ import annotations

import pytest

from benchmarks.bench_archive import Commit, at_risk

SEG1, SEG2, SEG3 = "000000010000000000000001", "000000010000000000000002", "000000010000000000000003"


def test_a_commit_is_at_risk_until_its_segment_or_a_later_one_is_reported_archived() -> None:
    commits = [Commit(10.0, SEG1), Commit(15.0, SEG1), Commit(42.0, SEG2)]
    polled = [(9.0, ""), (20.0, ""), (40.5, SEG1), (41.0, SEG1), (71.0, SEG3)]
    assert at_risk(commits, polled) == [30.5, 25.5, 29.0]


def test_an_archive_reported_before_the_commit_does_not_count() -> None:
    assert at_risk([Commit(50.0, SEG2)], [(40.0, SEG2), (80.0, SEG2)]) == [30.0]


def test_a_commit_never_reported_archived_stops_the_run() -> None:
    with pytest.raises(RuntimeError, match="never reported archived"):
        at_risk([Commit(10.0, SEG2)], [(20.0, SEG1)])

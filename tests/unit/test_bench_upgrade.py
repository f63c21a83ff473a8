"""The upgrade downtime as the writer saw it: from its last write on the old major to its first on the new."""

from __future__ import annotations

import pytest

from benchmarks.bench_upgrade import Attempt, Case, RunFigures, outage, parse_attempt, slope_rows


def test_writer_lines() -> None:
    assert parse_attempt("100.50 100.60 ok 17|170006\n") == Attempt(100.5, 100.6, 17, 17)
    assert parse_attempt("100.50 102.60 refused\n") == Attempt(100.5, 102.6)
    assert parse_attempt("psql: warning\n") is None


def attempts(*outcomes: int | None, pace: float = 0.5) -> list[Attempt]:
    return [Attempt(i * pace, i * pace + 0.1, i if m else None, m) for i, m in enumerate(outcomes)]


def test_the_downtime_runs_from_the_last_old_write_to_the_first_new_one() -> None:
    seen = outage(attempts(15, 15, None, None, None, 17, 17), 15, 17)
    assert (seen.last_old.row, seen.first_new.row, seen.refused) == (1, 5, 3)
    assert seen.seconds == pytest.approx(2.0)
    assert seen.pace == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("outcomes", "message"),
    [
        ((15, None, None), "never had a write accepted by PostgreSQL 17"),
        ((None, None, 17), "no write accepted by PostgreSQL 15 before"),
        ((15, None, 17, 15), "PostgreSQL 15 accepted a write after PostgreSQL 17"),
        ((15, 16, 17), "unexpected majors"),
    ],
)
def test_writes_that_make_no_sense_stop_the_run(outcomes: tuple[int | None, ...], message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        outage(attempts(*outcomes), 15, 17)


def figures(downtime: float, mib: float) -> RunFigures:
    seen = outage(attempts(15, None, 17, pace=downtime / 2), 15, 17)
    return RunFigures(seen, 1.0, 1.0, mib)


def test_the_slope_per_gib_comes_from_the_medians_at_the_smallest_and_largest_size() -> None:
    small, large, logical = Case("Copy", 100_000), Case("Copy", 14_000_000), Case("Logical", 100_000)
    runs = {
        small: [figures(4.0, 10.0), figures(6.0, 10.0), figures(5.0, 10.0)],
        large: [figures(25.0, 1034.0), figures(27.0, 1034.0), figures(26.0, 1034.0)],
        logical: [figures(20.0, 10.0)],  # one size only: no slope
    }
    (row,) = slope_rows(runs)
    assert row.figure.startswith("Copy") and row.value == "21.0 s"  # (26 - 5) s over 1 GiB

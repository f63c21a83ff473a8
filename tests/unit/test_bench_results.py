"""One results file per benchmark run, named with its date and commit (issue #14)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from benchmarks import result_files

DAY = datetime.date(2026, 11, 27)


def test_a_run_gets_a_new_file_named_with_its_date_and_commit(tmp_path: Path) -> None:
    first = result_files.new_file("scale", tmp_path, day=DAY, label="abc1234-dirty")
    assert first.name == "scale-2026-11-27-abc1234-dirty.md"
    first.write_text("run 1")
    second = result_files.new_file("scale", tmp_path, day=DAY, label="abc1234-dirty")
    assert second.name == "scale-2026-11-27-abc1234-dirty-2.md"  # never over an earlier run
    assert first.read_text() == "run 1"
    assert result_files.NAME.match(first.name) and result_files.NAME.match(second.name)


def test_a_benchmark_name_cannot_fake_a_date(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lower-case letters"):
        result_files.new_file("scale-2026", tmp_path, day=DAY, label="abc1234")


def test_the_commit_label_is_a_short_hash_dirty_when_tracked_files_changed() -> None:
    label = result_files.commit_label()
    assert label == "nogit" or result_files.NAME.match(f"x-2026-01-01-{label}.md"), label


def test_the_header_names_the_run_and_its_commit(tmp_path: Path) -> None:
    path = tmp_path / "node-2026-11-27-abc1234-dirty.md"
    text = result_files.header("The real node", path, "make bench-node")
    assert "Run `node-2026-11-27-abc1234-dirty`: commit abc1234 with uncommitted changes" in text


def dated(path: Path, stamp: str) -> Path:
    path.write_text(f"| Section | Figure | Value | Target |\n|---|---|---|---|\n| Machine | date | {stamp} UTC |  |\n")
    return path


def test_the_latest_run_is_found_by_the_date_inside_each_file(tmp_path: Path) -> None:
    dated(tmp_path / "scale.md", "2026-11-22 11:21")  # the old naming: no date in the name
    dated(tmp_path / "scale-n1000-idle-hour.md", "2026-11-22 09:56")
    newest = dated(tmp_path / "scale-2026-11-27-abc1234.md", "2026-11-27 08:00")
    dated(tmp_path / "scalex-2026-11-28-abc1234.md", "2026-11-28 08:00")  # another benchmark
    (tmp_path / "scale-undated.md").write_text("no table")
    assert result_files.latest("scale", tmp_path) == newest
    assert result_files.run_date(newest) == "2026-11-27 08:00"
    assert result_files.latest("conversion", tmp_path) is None

"""No benchmark figure in a README without the results file it comes from (issue #14).

Every table of the README's "Benchmarks" section is introduced by a line naming one file of
`benchmarks/results/` and the run's date; the file must exist, be the latest run of its benchmark
(by the date recorded inside it), carry that date, and hold every number of the table's Value column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks import result_files

REPO = Path(__file__).resolve().parents[2]
SOURCE = re.compile(r"`benchmarks/results/([^`/]+\.md)`")
DAY = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


@dataclass(frozen=True)
class Table:
    """A markdown table and the prose line just above it."""

    caption: str
    rows: list[list[str]]  # the cells of each body row


def section(text: str, title: str) -> str:
    """The text of a `## title` section, up to the next `## ` heading."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL)
    assert match, f"no '## {title}' section"
    return match.group(1)


def tables(text: str) -> list[Table]:
    """Every table of `text`, with the paragraph just before it as its caption."""
    found: list[Table] = []
    paragraph: list[str] = []
    last: list[str] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith("|"):
            if line.strip():
                paragraph.append(line)
            elif paragraph:
                last, paragraph = paragraph, []
            index += 1
            continue
        body = []
        while index < len(lines) and lines[index].startswith("|"):
            body.append([cell.strip() for cell in lines[index].strip("|").split("|")])
            index += 1
        found.append(Table(" ".join(paragraph or last), body[2:]))  # header and separator rows dropped
        paragraph, last = [], []
    return found


def readme_tables() -> list[Table]:
    return tables(section((REPO / "README.md").read_text(encoding="utf-8"), "Benchmarks"))


def test_the_readme_has_benchmark_tables() -> None:
    assert len(readme_tables()) >= 4  # conversion, scale, lifecycle, the real node


@pytest.mark.parametrize("table", readme_tables(), ids=lambda t: t.caption[:40])
def test_each_table_names_the_latest_results_file_its_date_and_holds_its_figures(table: Table) -> None:
    named = SOURCE.findall(table.caption)
    assert len(named) == 1, f"a table must name exactly one results file above it: {table.caption!r}"
    path = result_files.RESULTS / named[0]
    assert path.is_file(), f"{named[0]} does not exist"
    bench = result_files.bench_of(path)
    assert result_files.latest(bench) == path, f"{named[0]} is not the latest {bench} run: {result_files.latest(bench)}"
    day = DAY.search(table.caption)
    assert day and day.group(1) == result_files.run_date(path)[:10], f"the caption's date is not the run's: {day}"
    text = path.read_text(encoding="utf-8")
    for row in table.rows:
        for number in NUMBER.findall(row[1]):
            assert number in text, f"{number} ({row[0]}) is not in {named[0]}"


def test_the_check_finds_a_table_without_a_source_and_a_figure_not_in_its_file() -> None:
    text = "## Benchmarks\n\nFrom nowhere:\n\n| F | V |\n|---|---|\n| x | 1.23 |\n"
    (orphan,) = tables(section(text, "Benchmarks"))
    assert SOURCE.findall(orphan.caption) == []
    conversion = (result_files.RESULTS / "conversion.md").read_text(encoding="utf-8")
    assert "2.597 ms" in conversion and "2.598 ms" not in conversion


@pytest.mark.parametrize("readme", ["README.md", "benchmarks/README.md"])
def test_every_results_file_a_readme_names_exists(readme: str) -> None:
    text = (REPO / readme).read_text(encoding="utf-8")
    named = set(re.findall(r"results/([\w.-]+\.md)", text))
    assert named, f"{readme} names no results file"
    missing = sorted(name for name in named if not (result_files.RESULTS / name).is_file())
    assert not missing, f"{readme} names results files that do not exist: {missing}"

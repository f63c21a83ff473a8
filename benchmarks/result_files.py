"""Where a benchmark run keeps its table: one new file per run, named with its date and commit.

Why: every run used to overwrite `results/<benchmark>.md`, so a figure quoted in a README could not
be traced to the run, the code or the machine it came from, and a smoke run replaced a real one.
Now each run writes `results/<benchmark>-<YYYY-MM-DD>-<commit>[-dirty][-<n>].md` (`-dirty` when
tracked files differ from the commit, `-<n>` for a second run of the same day and commit), and the
files written before this naming stay as history. `latest` finds the newest run of a benchmark by
the date recorded inside each file, which older files have too; the README test uses it.
"""

from __future__ import annotations

import argparse
import datetime
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
NAME = re.compile(
    r"^(?P<bench>[a-z]+)-(?P<day>\d{4}-\d{2}-\d{2})-(?P<commit>[0-9a-f]{4,40}|nogit)(?:-dirty)?(?:-\d+)?\.md$"
)
DATE_ROW = re.compile(r"^\| Machine \| date \| (?P<date>\d{4}-\d{2}-\d{2} \d{2}:\d{2}) UTC \|", re.MULTILINE)


def add_results_dir(parser: argparse.ArgumentParser) -> None:
    """`--results-dir`, the same in every benchmark: smoke runs write elsewhere than results/."""
    parser.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="where the run's file goes (smoke runs: elsewhere)"
    )


def commit_label(repo: Path = REPO) -> str:
    """The short commit hash, with `-dirty` when tracked files have changes ('nogit' outside a checkout)."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changes = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "nogit"
    return commit + ("-dirty" if changes else "")


def file_name(bench: str, day: datetime.date, label: str, number: int = 1) -> str:
    """`<bench>-<day>-<label>.md`, with `-<number>` from the second run of a day and commit on."""
    if not re.fullmatch(r"[a-z]+", bench):
        raise ValueError(f"a benchmark name is lower-case letters only, not {bench!r}")
    suffix = f"-{number}" if number > 1 else ""
    return f"{bench}-{day.isoformat()}-{label}{suffix}.md"


def new_file(bench: str, folder: Path = RESULTS, *, day: datetime.date | None = None, label: str | None = None) -> Path:
    """A results file for this run that no earlier run wrote (the folder is created if needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    day = day or datetime.datetime.now(datetime.UTC).date()
    label = label or commit_label()
    number = 1
    while (folder / file_name(bench, day, label, number)).exists():
        number += 1
    return folder / file_name(bench, day, label, number)


def header(title: str, path: Path, command: str) -> str:
    """The first lines of a results file: what ran, from which commit, and where to read what it means."""
    match = NAME.match(path.name)
    commit = match.group("commit") if match else "?"
    dirty = " with uncommitted changes" if "-dirty" in path.name else ""
    return (
        f"# {title}\n\n"
        f"Run `{path.stem}`: commit {commit}{dirty}. Command: `{command}`.\n"
        "What each figure means: `benchmarks/README.md` and the docstring of the script.\n\n"
    )


def bench_of(path: Path) -> str:
    """The benchmark a results file belongs to: its name up to the first '-' (`scale-n1000-....md` is scale)."""
    return path.name.removesuffix(".md").split("-")[0]


def run_date(path: Path) -> str:
    """The run's date as its first table records it ('2026-11-22 05:50'); '' when it has none."""
    match = DATE_ROW.search(path.read_text(encoding="utf-8"))
    return match.group("date") if match else ""


def latest(bench: str, folder: Path = RESULTS) -> Path | None:
    """The newest results file of `bench`, by the date inside each file (older files have no date in their name)."""
    dated = [(run_date(path), path.name, path) for path in folder.glob("*.md") if bench_of(path) == bench]
    dated = [entry for entry in dated if entry[0]]
    return max(dated)[2] if dated else None

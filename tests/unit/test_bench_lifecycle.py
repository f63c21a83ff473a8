"""Our scripts against the plain tools: interleaved runs, judged by CPU seconds (issue #14)."""

from __future__ import annotations

import pytest

from benchmarks import bench_lifecycle
from benchmarks.bench_lifecycle import Timing, Variant, compared_rows, interleaved


def timings(*runs: tuple[float, float, float]) -> list[Timing]:
    return [Timing(wall, client, server, "") for wall, client, server in runs]


def test_runs_alternate_ours_plain_ours_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_lifecycle, "settle", lambda server: None)
    order: list[str] = []

    def run(name: str) -> Timing:
        order.append(name)
        return Timing(1.0, 1.0, 1.0, "")

    ours, plain = Variant("ours", lambda: run("ours")), Variant("plain", lambda: run("plain"))
    interleaved(None, (ours, plain), 3, "backup")  # type: ignore[arg-type]  # settle is replaced, no server needed
    assert order == ["ours", "plain"] * 3


def test_a_script_doing_more_work_is_judged_by_cpu_and_never_reported_faster() -> None:
    # Wall clock says ours is faster (0.8); CPU says it costs 20 % more, run after run.
    ours = Variant("ours (script)", lambda: Timing(0, 0, 0, ""))
    plain = Variant("plain (tool)", lambda: Timing(0, 0, 0, ""))
    ours.timings = timings((8.0, 9.0, 3.0), (8.0, 9.6, 2.4), (8.0, 9.0, 3.0), (8.0, 9.0, 3.0), (8.0, 9.0, 3.0))
    plain.timings = timings((10.0, 8.0, 2.0), (10.0, 8.0, 2.0), (10.0, 8.0, 2.0), (10.0, 8.0, 2.0), (10.0, 8.0, 2.0))
    headline, client, wall, *_ = compared_rows("Backup", ours, plain, 1024**3)
    assert "CPU seconds** (script + server" in headline.figure
    assert headline.value.startswith("1.200 ± 0.000 (n = 5")
    assert headline.target == "<= 1.1: MISSES"
    assert wall.value.startswith("0.800")
    assert wall.target == "no verdict: ours does strictly more work"
    assert client.target == ""


def test_the_cpu_ratio_needs_the_servers_share() -> None:
    ours, plain = Variant("ours", lambda: Timing(0, 0, 0, "")), Variant("plain", lambda: Timing(0, 0, 0, ""))
    ours.timings, plain.timings = [Timing(1.0, 1.0, None, "")], [Timing(1.0, 1.0, 1.0, "")]
    with pytest.raises(RuntimeError, match="server CPU"):
        compared_rows("Backup", ours, plain, 1)

"""KeyedRunner: one reconcile at a time per key, bursts coalesced, failures retried."""

from __future__ import annotations

import asyncio
import threading
import time

from sampledb_operator.runtime import Key, KeyedRunner


def test_bursts_coalesce_and_keys_never_overlap() -> None:
    calls: list[Key] = []
    active: set[Key] = set()
    overlap = threading.Event()

    def work(key: Key) -> None:
        if key in active:
            overlap.set()
        active.add(key)
        time.sleep(0.05)
        calls.append(key)
        active.discard(key)

    async def scenario() -> None:
        runner = KeyedRunner(work)
        for _ in range(20):
            runner.trigger(("ns", "a"))
            runner.trigger(("ns", "b"))
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert not overlap.is_set()
    assert 2 <= calls.count(("ns", "a")) <= 4  # the burst collapses into a few passes
    assert calls.count(("ns", "b")) == calls.count(("ns", "a"))


def test_failures_are_retried_with_backoff() -> None:
    attempts: list[float] = []

    def work(key: Key) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise RuntimeError("API server unavailable")

    async def scenario() -> None:
        KeyedRunner(work, base_delay=0.05).trigger(("ns", "a"))
        await asyncio.sleep(0.6)

    asyncio.run(scenario())
    assert len(attempts) == 3
    assert attempts[2] - attempts[1] > attempts[1] - attempts[0]  # the delay doubles


def test_a_returned_delay_reconciles_again_later() -> None:
    calls: list[float] = []

    def work(key: Key) -> float | None:
        calls.append(time.monotonic())
        return 0.05 if len(calls) < 3 else None  # waiting for something twice, then done

    async def scenario() -> None:
        KeyedRunner(work).trigger(("ns", "a"))
        await asyncio.sleep(0.5)

    asyncio.run(scenario())
    assert len(calls) == 3

"""KeyedRunner: one reconcile at a time per key, bursts coalesced, failures retried."""

from __future__ import annotations

import asyncio
import threading
import time

from sampledb_operator.runtime import Key, KeyedRunner, Mailbox


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


def test_triggers_that_may_wait_coalesce_into_one_pass_and_an_immediate_one_does_not_wait() -> None:
    calls: list[tuple[Key, float]] = []

    def work(key: Key) -> None:
        calls.append((key, time.monotonic()))

    async def scenario() -> tuple[float, float]:
        runner = KeyedRunner(work)
        started = time.monotonic()
        for _ in range(10):  # a burst of a child's changes, longer than the wait
            runner.trigger(("ns", "a"), 0.2)
            await asyncio.sleep(0.03)
        b_changed = time.monotonic()
        runner.trigger(("ns", "b"), 0.2)
        runner.trigger(("ns", "b"))  # the SampleDB itself changed: at once, and the timer is dropped
        await asyncio.sleep(0.5)
        return started, b_changed

    started, b_changed = asyncio.run(scenario())
    a = [at - started for key, at in calls if key == ("ns", "a")]
    b = [at - b_changed for key, at in calls if key == ("ns", "b")]
    # The first pass at the first trigger's time, not pushed back while the burst goes on (a change
    # waits at most the delay); the rest of the burst coalesces into one more.
    assert len(a) == 2 and 0.2 <= a[0] < 0.3 and a[1] > 0.4
    assert len(b) == 1 and b[0] < 0.2


def test_posted_calls_run_on_the_loop_in_order_with_one_wake_up_per_batch() -> None:
    ran: list[tuple[int, int]] = []
    on_loop: list[bool] = []
    wakeups = 0

    async def scenario() -> None:
        nonlocal wakeups
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        original = loop.call_soon_threadsafe

        def counted(*args: object) -> asyncio.Handle:
            nonlocal wakeups
            wakeups += 1
            return original(*args)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        mailbox = Mailbox(loop)

        def record(thread: int, number: int) -> None:
            on_loop.append(threading.get_ident() == loop_thread)
            ran.append((thread, number))
            if number == 3:
                raise RuntimeError("a failing call must not stop the others")

        def poster(thread: int) -> None:
            for number in range(500):
                mailbox.post(record, thread, number)

        threads = [threading.Thread(target=poster, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        await asyncio.to_thread(lambda: [t.join() for t in threads])
        await asyncio.sleep(0.05)

    asyncio.run(scenario())
    assert len(ran) == 2000 and all(on_loop)
    for thread in range(4):
        assert [n for t, n in ran if t == thread] == list(range(500))  # each thread's calls in order
    assert 1 <= wakeups < 2000  # posts made while a wake-up was pending rode on it

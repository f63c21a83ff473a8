"""Run reconciles off the event loop: one at a time per SampleDB, bursts coalesced, failures retried.

Many events can arrive for one SampleDB in a short time (its own, its StatefulSet's, its Jobs').
A level-triggered reconcile only needs to run once after the last of them, so a key that is
already being reconciled is just marked dirty and reconciled once more afterwards. A trigger may
also ask to wait a little (`trigger(key, delay)`): the changes of what a SampleDB owns come in
bursts (a Pod scheduled, running, ready; its StatefulSet's status counted up), and one pass a
moment later sees them all, where a pass per event would decide and write a status for each step.
A key has at most one timer, the earliest asked for. A failing reconcile is retried with
exponential backoff; other keys are not held up by it. A reconcile that waits for something
sending no event (a backup another object names) returns a delay and is looked at again then.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)


@dataclass
class _KeyState:
    running: bool = False
    dirty: bool = False
    failures: int = 0
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)  # a trigger to come (delay, retry)


class KeyedRunner:
    """Serialises and coalesces calls of `work(key)` per key, on an executor.

    `work` returns None, or the number of seconds after which the key should be reconciled again.
    """

    def __init__(
        self,
        work: Callable[[Key], float | None],
        executor: Executor | None = None,
        *,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
    ) -> None:
        self._work = work
        self._executor = executor
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._states: dict[Key, _KeyState] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def trigger(self, key: Key, delay: float = 0.0) -> None:
        """Ask for `key` to be reconciled now, or within `delay` seconds; cheap, never blocks."""
        state = self._states.setdefault(key, _KeyState())
        if delay > 0:
            self._schedule(key, state, delay)  # fires into a running pass as "dirty", like any trigger
            return
        self._cancel_timer(state)
        if state.running:
            state.dirty = True
            return
        state.running = True
        task = asyncio.get_running_loop().create_task(self._drain(key, state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _schedule(self, key: Key, state: _KeyState, delay: float) -> None:
        """Trigger `key` after `delay` seconds, unless a timer of the key fires sooner."""
        loop = asyncio.get_running_loop()
        if state.timer is not None and state.timer.when() <= loop.time() + delay:
            return
        self._cancel_timer(state)
        state.timer = loop.call_later(delay, self.trigger, key)

    @staticmethod
    def _cancel_timer(state: _KeyState) -> None:
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None

    def forget(self, key: Key) -> None:
        """Drop the bookkeeping of a key whose object is gone."""
        state = self._states.get(key)
        if state and not state.running:
            self._cancel_timer(state)
            del self._states[key]

    async def _drain(self, key: Key, state: _KeyState) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                state.dirty = False
                started = time.monotonic()
                try:
                    again = await loop.run_in_executor(self._executor, self._work, key)
                    state.failures = 0
                except Exception:
                    state.failures += 1
                    delay = min(self._max_delay, self._base_delay * 2 ** (state.failures - 1))
                    logger.exception(
                        "%s/%s: reconcile failed (attempt %d); retrying in %.0f s", *key, state.failures, delay
                    )
                    self._schedule(key, state, delay)
                    return
                finally:
                    logger.debug("%s/%s: reconciled in %.3f s", *key, time.monotonic() - started)
                if again is not None and not state.dirty:
                    self._schedule(key, state, again)
                if not state.dirty:
                    return
        finally:
            state.running = False
            if state.dirty and state.timer is None:
                self.trigger(key)


class Mailbox:
    """Calls posted from other threads, run on the event loop in order, one wake-up per batch.

    Every watch event that concerns a SampleDB triggers it from an informer's thread. Waking the
    loop for each (`call_soon_threadsafe`: a write to its self-pipe, the loop thread woken and
    given the GIL) was most of the event loop's 13 to 16 % of the operator's CPU in a profile of a
    convergence (issue #15); here a call posted while an earlier one still waits to run rides on
    the same wake-up.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[Callable[..., None], tuple[object, ...]]] = []

    def post(self, call: Callable[..., None], *args: object) -> None:
        """Run `call(*args)` on the loop soon; never blocks, callable from any thread."""
        with self._lock:
            self._pending.append((call, args))
            if len(self._pending) > 1:
                return  # a wake-up is on its way and will run this too
        self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for call, args in pending:
            try:
                call(*args)
            except Exception:
                logger.exception("a call posted to the event loop failed")

"""The request-body deadline: a body not complete ``body_timeout_s`` after its headers gets 408.

Granian bounds the wait for headers but not for a body: a client that sends its headers
and part of a body, then stalls, holds one of the worker's connection slots for as long as
it likes, and a thousand of them deny service to everyone. One sweeper task per worker
looks at the bodies being read a few times per deadline and cancels the pending
``receive()`` of any that is overdue (Granian's receive returns a cancellable future); the
reader turns that into 408 and closes the connection.

Why a sweeper and not a timer per request: ``loop.call_later`` plus ``cancel`` costs about
5 µs on uvloop here, a dict insert and delete about 0.1 µs, and almost every body arrives
in the first message, so the hot path should pay the least.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from core.lifetime_task import LifetimeTask

TICKS: Final = 4
"""Sweeps per deadline: a stalled body is evicted between 1 and 1.25 deadlines in."""


class BodyInProgress:
    """One body being read: the receive in flight, and whether its deadline passed."""

    __slots__ = ("expired", "pending", "tick")

    def __init__(self, tick: int) -> None:
        self.tick = tick
        self.pending: Any = None
        self.expired = False

    def expire(self) -> None:
        self.expired = True
        cancel = getattr(self.pending, "cancel", None)
        if cancel is not None:
            cancel()


class BodyDeadlines:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._interval_s = timeout_s / TICKS
        self._tick = 0
        self._reading: dict[BodyInProgress, None] = {}
        self._background = LifetimeTask()

    def begin(self) -> BodyInProgress:
        reading = BodyInProgress(self._tick)
        self._reading[reading] = None
        return reading

    def end(self, reading: BodyInProgress) -> None:
        self._reading.pop(reading, None)

    def sweep(self) -> int:
        """Expire every body begun more than TICKS sweeps ago; returns how many."""
        self._tick += 1
        overdue = self._tick - TICKS - 1
        expired = [r for r in self._reading if r.tick <= overdue]
        for reading in expired:
            del self._reading[reading]
            reading.expire()
        return len(expired)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            self.sweep()

    def start(self) -> None:
        self._background.run(self._loop())

    async def stop(self) -> None:
        await self._background.stop()

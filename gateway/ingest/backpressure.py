"""Backpressure: refuse new purchases while the unflushed backlog endangers Redis.

A background task measures, a few times a second, the stream's length, the age of the
oldest entry the flusher has not yet acknowledged, and where the flusher is (its
frontier: oldest unacknowledged and last-delivered ids). ``POST /purchase`` answers 503
with Retry-After when

- the stream is longer than ``max_length``: Redis memory, whatever the flusher does; or
- the oldest unflushed entry is older than ``max_age_s`` *and* the frontier has not moved
  for ``stall_s``: nobody is draining, so the backlog only grows.

An old backlog that is draining is not refused: after a restart with hundreds of
thousands of entries left, the flusher drains at full speed and refusing purchases
meanwhile would protect nothing (length still bounds memory). Each refusal lifts by itself
at the next measurement once the stream is short again or the frontier moves. The request
path only reads a field.

A measurement that fails (Redis unreachable, a cluster re-reading its slot map, or a bug)
never ends the loop: a dead loop would freeze this worker's verdict for good. The last
figures and verdict stay, marked stale (``stale_s``): while Redis is away appends fail on
their own, and the first measurement that succeeds judges afresh. /metrics leaves stale
figures out, /readyz says they are stale.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from core.backlog import Backlog, measure_all
from core.lifetime_task import LifetimeTask
from core.logs import Sparse
from core.redis_clients import REDIS_UNAVAILABLE

log = logging.getLogger("gateway.ingest.backpressure")


class BacklogMonitor:
    def __init__(
        self,
        redis: Redis,
        *,
        shards: int = 1,
        max_age_s: float,
        max_length: int,
        stall_s: float = 30.0,
        interval_s: float = 0.25,
    ) -> None:
        self._redis = redis
        self._shards = shards
        self._max_age_s = max_age_s
        self._max_length = max_length
        self._stall_s = stall_s
        self._interval_s = interval_s
        self._progress_at = time.monotonic()
        """When the frontier last moved; a gateway just started gives the flusher the benefit
        of the doubt for ``stall_s``."""
        self._background = LifetimeTask()
        self._failures = Sparse(log, interval_s=10.0)
        self.last: Backlog | None = None
        self.refusal: str | None = None
        """Why purchases are refused right now, or None."""
        self.measured_at: float | None = None
        """When ``last`` was measured (monotonic), or None before the first measurement."""
        self.failing_since: float | None = None
        """When measurements started failing (monotonic); None while they succeed."""

    @property
    def stale(self) -> bool:
        """The last measurement failed: ``last`` and ``refusal`` are older news."""
        return self.failing_since is not None

    def judge(self, backlog: Backlog, stalled_s: float) -> str | None:
        if backlog.stream_length > self._max_length:
            return f"backlog too long: {backlog.stream_length} entries (limit {self._max_length})"
        if backlog.oldest_unflushed_age_s > self._max_age_s and stalled_s > self._stall_s:
            return (
                f"backlog too old: the oldest unflushed purchase is"
                f" {backlog.oldest_unflushed_age_s:.0f}s old (limit {self._max_age_s:.0f}s)"
                f" and no flusher has made progress for {stalled_s:.0f}s"
            )
        return None

    async def check(self) -> None:
        backlog = await measure_all(self._redis, self._shards)
        now = time.monotonic()
        if self.last is None or backlog.frontier != self.last.frontier:
            self._progress_at = now
        refusal = self.judge(backlog, now - self._progress_at)
        if refusal != self.refusal:
            if refusal:
                log.warning("refusing purchases: %s", refusal)
            else:
                log.warning("backlog back under its limits: accepting purchases again")
        if self.failing_since is not None:
            log.warning("backlog measured again after %.1fs of failures", now - self.failing_since)
        self.last, self.refusal = backlog, refusal
        self.measured_at, self.failing_since = now, None

    def _failed(self, exc: BaseException) -> None:
        if self.failing_since is None:
            self.failing_since = time.monotonic()
        unexpected = not isinstance(exc, REDIS_UNAVAILABLE)
        self._failures.warning(
            "backlog check failed, keeping the last verdict (%s): %s: %s",
            "refusing" if self.refusal else "accepting",
            type(exc).__name__,
            exc,
            exc_info=unexpected,  # a bug: its traceback
        )

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except Exception as exc:  # anything: a dead loop freezes the verdict for good
                self._failed(exc)
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._background.run(self._loop())

    async def stop(self) -> None:
        await self._background.stop()

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
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.backlog import Backlog, measure_all
from gateway.background import BackgroundTask

log = logging.getLogger("gateway.backlog")


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
        self._background = BackgroundTask()
        self.last: Backlog | None = None
        self.refusal: str | None = None
        """Why purchases are refused right now, or None."""

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
        self.last, self.refusal = backlog, refusal

    async def _loop(self) -> None:
        while True:
            try:
                await self.check()
            except (RedisError, OSError) as exc:
                log.debug("backlog check failed: %r", exc)  # appends fail loudly on their own
            await asyncio.sleep(self._interval_s)

    def start(self) -> None:
        self._background.run(self._loop())

    async def stop(self) -> None:
        await self._background.stop()

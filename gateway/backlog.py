"""Backpressure: refuse new purchases while the unflushed backlog is past its limits.

A background task measures, a few times a second, the age of the oldest entry the flusher
has not yet acknowledged and the stream's length. Past either limit ``POST /purchase``
answers 503 with Retry-After instead of letting Redis memory grow without bound; once the
flusher catches up the next measurement lifts it. The request path only reads a field.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.backlog import Backlog, measure_all

log = logging.getLogger("gateway.backlog")


class BacklogMonitor:
    def __init__(
        self,
        redis: Redis,
        *,
        shards: int = 1,
        max_age_s: float,
        max_length: int,
        interval_s: float = 0.25,
    ) -> None:
        self._redis = redis
        self._shards = shards
        self._max_age_s = max_age_s
        self._max_length = max_length
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.last: Backlog | None = None
        self.refusal: str | None = None
        """Why purchases are refused right now, or None."""

    def judge(self, backlog: Backlog) -> str | None:
        if backlog.oldest_unflushed_age_s > self._max_age_s:
            return (
                f"backlog too old: the oldest unflushed purchase is"
                f" {backlog.oldest_unflushed_age_s:.0f}s old (limit {self._max_age_s:.0f}s)"
            )
        if backlog.stream_length > self._max_length:
            return f"backlog too long: {backlog.stream_length} entries (limit {self._max_length})"
        return None

    async def check(self) -> None:
        backlog = await measure_all(self._redis, self._shards)
        refusal = self.judge(backlog)
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
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

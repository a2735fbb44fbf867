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
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from core.constants import GROUP, STREAM

log = logging.getLogger("gateway.backlog")


@dataclass(frozen=True, slots=True)
class Backlog:
    oldest_unflushed_age_s: float
    stream_length: int
    pending: int


def _id_ms(entry_id: bytes | str | None) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    return int(text.split("-", 1)[0])


async def measure(redis: Redis, stream: str = STREAM, group: str = GROUP) -> Backlog:
    """Age of the oldest unacknowledged entry (pending or not yet delivered), and length."""
    length = int(await redis.xlen(stream))
    oldest_ms: int | None = None
    pending = 0
    try:
        groups: Any = await redis.xinfo_groups(stream)
        info = next((g for g in groups if g["name"] in (group, group.encode())), None)
    except ResponseError:
        info = None  # no stream yet
    if info is None:
        first = await redis.xrange(stream, count=1)
        oldest_ms = _id_ms(first[0][0]) if first else None
    else:
        summary: Any = await redis.xpending(stream, group)
        pending = int(summary["pending"])
        if pending:
            oldest_ms = _id_ms(summary["min"])
        last = info["last-delivered-id"]
        last = last.decode() if isinstance(last, bytes) else last
        undelivered = await redis.xrange(stream, min=f"({last}", count=1)
        if undelivered:
            first_ms = _id_ms(undelivered[0][0])
            oldest_ms = first_ms if oldest_ms is None else min(oldest_ms, first_ms)
    age = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
    return Backlog(age, length, pending)


class BacklogMonitor:
    def __init__(
        self, redis: Redis, *, max_age_s: float, max_length: int, interval_s: float = 0.25
    ) -> None:
        self._redis = redis
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
        backlog = await measure(self._redis)
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

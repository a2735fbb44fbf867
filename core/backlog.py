"""How far behind the flusher is, and where it is: measured from the stream and its group."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from core.constants import GROUP, STREAM, stream_key
from core.groups import group_info
from core.replies import parse_id, text


@dataclass(frozen=True, slots=True)
class Backlog:
    oldest_unflushed_age_s: float
    stream_length: int
    pending: int
    frontier: tuple[str, ...] = ()
    """Per shard, the oldest unacknowledged entry id and the group's last-delivered id: a
    change between two measurements means a flusher acknowledged or read something."""


def _id_ms(entry_id: bytes | str | None) -> int:
    return parse_id(text(entry_id))[0]


async def measure(redis: Redis, stream: str = STREAM, group: str = GROUP) -> Backlog:
    """Age of the oldest unacknowledged entry (pending or not yet delivered), and length."""
    length = int(await redis.xlen(stream))
    oldest_ms: int | None = None
    oldest_id = last = ""
    pending = 0
    info = await group_info(redis, stream, group)
    if info is None:
        first = await redis.xrange(stream, count=1)
        oldest_ms = _id_ms(first[0][0]) if first else None
        oldest_id = text(first[0][0]) if first else ""
    else:
        summary: Any = await redis.xpending(stream, group)
        pending = int(summary["pending"])
        if pending:
            oldest_ms = _id_ms(summary["min"])
            oldest_id = text(summary["min"])
        last = text(info["last-delivered-id"])
        undelivered = await redis.xrange(stream, min=f"({last}", count=1)
        if undelivered:
            first_ms = _id_ms(undelivered[0][0])
            if oldest_ms is None or first_ms < oldest_ms:
                oldest_ms, oldest_id = first_ms, text(undelivered[0][0])
    age = 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
    return Backlog(age, length, pending, (oldest_id, last))


async def measure_all(redis: Redis, shards: int, group: str = GROUP) -> Backlog:
    """All shards at once: the oldest unflushed age of any shard, lengths and pending summed."""
    parts = [await measure(redis, stream_key(shard), group) for shard in range(shards)]
    return Backlog(
        max(p.oldest_unflushed_age_s for p in parts),
        sum(p.stream_length for p in parts),
        sum(p.pending for p in parts),
        tuple(position for p in parts for position in p.frontier),
    )

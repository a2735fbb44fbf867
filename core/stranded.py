"""Entries stranded in streams above the configured shard count.

Lowering ``MONOKERA_STREAM_SHARDS`` leaves the streams of the shards above it where they
are: no flusher reads them any more, and the backlog measure does not look at them, so
what was not yet flushed there would silently never reach PostgreSQL. The flusher refuses
to start while any such entry exists (``flusher.errors.StrandedEntries``), and reconcile
reports them (``ops.reconcile``): both find them here.

The streams are found by probing the shard numbers from the configured count up to the
largest count the settings allow (one XLEN each, pipelined): cheaper than a SCAN over a
keyspace of millions of idempotency keys, and it reaches every master of a cluster, since
the cluster pipeline sends each key to the node that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from redis.asyncio import Redis

from core.constants import MAX_SHARDS, stream_key
from core.groups import group_info
from core.replies import text

_CHUNK: Final = 1000


@dataclass(frozen=True, slots=True)
class StrandedStream:
    shard: int
    stream: str
    length: int
    unflushed: int
    """Entries not yet acknowledged by the flusher group: pending or never delivered."""


async def streams_beyond(redis: Redis, shards: int) -> list[StrandedStream]:
    """Every non-empty stream of a shard number >= ``shards``, with its unflushed count."""
    numbers = range(shards, MAX_SHARDS)
    if not numbers:
        return []
    pipe = redis.pipeline(transaction=False)
    for shard in numbers:
        pipe.xlen(stream_key(shard))
    lengths = await pipe.execute()
    found: list[StrandedStream] = []
    for shard, length in zip(numbers, lengths, strict=True):
        if int(length):
            stream = stream_key(shard)
            found.append(
                StrandedStream(shard, stream, int(length), await _unflushed(redis, stream))
            )
    return found


async def stranded_streams(redis: Redis, shards: int) -> list[StrandedStream]:
    """The streams above ``shards`` that hold entries not yet flushed."""
    return [s for s in await streams_beyond(redis, shards) if s.unflushed]


async def _unflushed(redis: Redis, stream: str) -> int:
    info = await group_info(redis, stream)
    if info is None:
        return int(await redis.xlen(stream))  # nothing of it was ever delivered
    pending = int(info["pending"])
    cursor = "(" + text(info["last-delivered-id"])
    undelivered = 0
    while chunk := await redis.xrange(stream, min=cursor, count=_CHUNK):
        undelivered += len(chunk)
        cursor = "(" + text(chunk[-1][0])
    return pending + undelivered

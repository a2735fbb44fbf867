"""Entries stranded in streams above the configured shard count.

Lowering ``MONOKERA_STREAM_SHARDS`` leaves the streams of the shards above it where they
are: no flusher reads them any more, and backlog and reconcile do not look at them, so
what was not yet flushed there would silently never reach PostgreSQL. The flusher refuses
to start while any such entry exists (see ``StrandedEntries``), and reconcile reports them.

Refusing rather than draining them: a lower count while entries are still unflushed is
most often a configuration mistake on one machine (its gateways may still write there),
and a flusher that quietly worked other streams than configured would hide it. The
message names the streams and what to set; draining with the old count is one command.

The streams are found by probing the shard numbers from the configured count up to the
largest count the settings allow (one XLEN each, pipelined): cheaper than a SCAN over a
keyspace of millions of idempotency keys, and it reaches every master of a cluster, since
the cluster pipeline sends each key to the node that owns it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from core.constants import GROUP, stream_key
from flusher.errors import FlusherError
from flusher.stream import text

MAX_SHARDS: Final = 1024
"""The upper bound of ``Settings.stream_shards``: no stream above it can exist."""

_CHUNK: Final = 1000


@dataclass(frozen=True, slots=True)
class StrandedStream:
    shard: int
    stream: str
    length: int
    unflushed: int
    """Entries not yet acknowledged by the flusher group: pending or never delivered."""


class StrandedEntries(FlusherError):
    """Unflushed entries in streams above the shard count: refuse to start."""

    def __init__(self, shards: int, stranded: list[StrandedStream]) -> None:
        self.stranded = stranded
        needed = max(s.shard for s in stranded) + 1
        streams = ", ".join(f"{s.stream} ({s.unflushed} unflushed)" for s in stranded)
        super().__init__(
            f"refusing to start: {sum(s.unflushed for s in stranded)} purchases are not yet"
            f" flushed in streams above MONOKERA_STREAM_SHARDS={shards}, where no flusher"
            f" would ever read them: {streams}. Set MONOKERA_STREAM_SHARDS={needed} (the"
            " count they were written with) until they are flushed (python -m flusher"
            " --drain does it and exits), then lower it again."
        )


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
    try:
        groups: Any = await redis.xinfo_groups(stream)
    except ResponseError:
        groups = []
    info = next((g for g in groups if text(g["name"]) == GROUP), None)
    if info is None:
        return int(await redis.xlen(stream))  # nothing of it was ever delivered
    pending = int(info["pending"])
    cursor = "(" + text(info["last-delivered-id"])
    undelivered = 0
    while chunk := await redis.xrange(stream, min=cursor, count=_CHUNK):
        undelivered += len(chunk)
        cursor = "(" + text(chunk[-1][0])
    return pending + undelivered

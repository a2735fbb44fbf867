"""Flusher figures published in Redis, for the gateway's /metrics to expose.

The flusher has no HTTP server of its own; once a second it writes its counters to a hash
(expiring, so a dead flusher disappears) and names itself in a set.
"""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio import Redis

FLUSHERS: Final = b"monokera:flushers"
STATS_PREFIX: Final = b"monokera:flusher:stats:"
STATS_TTL_S: Final = 60

FLUSHER_FIELDS: Final = {
    "batches_total": "Batches committed.",
    "entries_total": "Stream entries processed.",
    "rows_written_total": "Purchases written (a transaction row and two ledger legs each).",
    "duplicates_total": "Entries recorded as duplicates of an earlier transaction_id.",
    "redelivered_total": "Entries delivered again after a crash, written nothing.",
    "dead_letters_total": "Entries stored as dead letters.",
    "batch_seconds_total": "Time spent writing and acknowledging batches.",
    "batch_size_max": "Largest batch so far (a gauge).",
}


async def publish_stats(redis: Redis, consumer: str, values: dict[str, float]) -> None:
    key = STATS_PREFIX + consumer.encode()
    pipe = redis.pipeline(transaction=False)
    pipe.hset(key, mapping={k: str(v) for k, v in values.items()})
    pipe.expire(key, STATS_TTL_S)
    pipe.sadd(FLUSHERS, consumer)
    await pipe.execute()


async def read_published_stats(redis: Redis) -> dict[str, dict[str, str]]:
    names: Any = await redis.smembers(FLUSHERS)
    consumers = sorted(n.decode() if isinstance(n, bytes) else n for n in names)
    if not consumers:
        return {}
    pipe = redis.pipeline(transaction=False)
    for consumer in consumers:
        pipe.hgetall(STATS_PREFIX + consumer.encode())
    found: dict[str, dict[str, str]] = {}
    for consumer, raw in zip(consumers, await pipe.execute(), strict=True):
        if raw:
            found[consumer] = {k.decode(): v.decode() for k, v in raw.items()}
    return found

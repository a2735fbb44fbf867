"""The registry of live processes, and what the console's sampler reads of the flushers."""

from __future__ import annotations

import time
from typing import Any

from redis.asyncio import Redis

from core.flusher_stats import publish_stats, read_published_stats
from core.live import LIVE, LIVE_FOR_S, heartbeat, live_members
from flusher.worker import FlusherStats
from gateway.console.sampler import Sampler
from gateway.ingest.appender import AppendStats
from gateway.telemetry.counters import Metrics
from tests.conftest import both_redis

pytestmark = both_redis


async def test_a_departed_flusher_leaves_the_registry(redis: Redis) -> None:
    pipe = redis.pipeline(transaction=False)
    heartbeat(pipe, "flusher", 1, "gone", now=time.time() - LIVE_FOR_S - 5)
    await pipe.execute()
    assert await read_published_stats(redis) == {}  # readers ignore it at once

    await publish_stats(redis, "alive", FlusherStats(batches=1), shards=2)
    assert [(m.role, m.shards, m.name) for m in await live_members(redis)] == [
        ("flusher", 2, "alive")
    ]
    assert await redis.zcard(LIVE) == 1  # and the next heartbeat pruned it
    assert set(await read_published_stats(redis)) == {"alive"}


async def test_the_sampler_reads_one_hash_however_many_flushers_run(redis: Redis) -> None:
    for i in range(30):
        summed: dict[str, int] = {}
        stats = FlusherStats(batches=2, inserted=10)
        await publish_stats(redis, f"flusher-{i}", stats, summed=summed)
        stats.batches, stats.inserted = 3, 15
        await publish_stats(redis, f"flusher-{i}", stats, summed=summed)  # adds what grew
    sampler = Sampler(Metrics(), AppendStats, redis)
    await redis.config_resetstat()
    await sampler.read_flushers()
    reading = sampler.take()
    assert (reading.flusher_batches, reading.flusher_rows) == (90, 450)
    calls: Any = await redis.info("commandstats")
    reads = {
        name: v["calls"]
        for name, v in calls.items()
        if not name.startswith(("cmdstat_info", "cmdstat_config"))
    }
    assert sum(reads.values()) <= 2, reads  # not one read per flusher

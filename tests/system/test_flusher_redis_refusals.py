"""A Redis out of memory: the flusher keeps committing, invalidating and acknowledging with the
commands Redis still takes, and no read is served a cached page that lacks committed rows
meanwhile. That the memory then comes back under load is in tests/system/test_faults.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import asyncpg
from redis.asyncio import Redis

from core.constants import GROUP, STREAM
from flusher.worker import Flusher
from tests.conftest import both_redis
from tests.helpers import HttpClient, purchase


async def history(client: HttpClient, account: str) -> list[str]:
    reply = await client.get(f"/accounts/{account}/transactions")
    assert reply.status_code == 200, reply.text
    return [e["transaction_id"] for e in reply.json()["entries"]]


@both_redis
async def test_a_batch_is_committed_invalidated_and_acknowledged_while_redis_is_full(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    await client.post("/purchase", json=purchase("full-1", customer="pia", seller="shop"))
    await flusher.drain()
    assert await history(client, "pia") == ["full-1"]  # cached
    await client.post("/purchase", json=purchase("full-2", customer="pia", seller="shop"))
    entries = await flusher.read_batch()
    assert len(entries) == 1

    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)  # every write that may grow memory refused
    try:
        assert await asyncio.wait_for(flusher.process(entries), 30) == 1
        assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
        assert await pg.fetchval(
            "SELECT count(*) FROM transactions WHERE transaction_id = 'full-2'"
        )
        assert await history(client, "pia") == ["full-2", "full-1"]  # not the cached page
        assert flusher.redis_out_of_memory
    finally:
        await redis.config_set("maxmemory", 0)
    await client.post("/purchase", json=purchase("full-3", customer="pia", seller="shop"))
    await flusher.process(await flusher.read_batch())
    assert not flusher.redis_out_of_memory  # the retention applies again
    assert await history(client, "pia") == ["full-3", "full-2", "full-1"]


@both_redis
async def test_a_redis_near_its_memory_limit_gets_every_flushed_entry_trimmed_at_once(
    flusher: Flusher, redis: Redis
) -> None:
    flusher.config = dataclasses.replace(flusher.config, stream_retain_s=3600)
    now_ms = int(time.time() * 1000)
    pipe = redis.pipeline(transaction=False)
    for i in range(25_000):
        pipe.xadd(STREAM, {"p": b"x"}, id=f"{now_ms}-{i + 1}")
    await pipe.execute()
    await redis.xgroup_setid(STREAM, GROUP, "$")  # all delivered and acknowledged

    assert await flusher.trim() == 0  # far from any limit: the retention keeps them
    assert await redis.xlen(STREAM) == 25_000
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", int(used * 1.05))  # at 95% of the limit
    try:
        await flusher.trim()  # one call, past the 10,000 entries an approximate XTRIM takes
        assert await redis.xlen(STREAM) < 100
    finally:
        await redis.config_set("maxmemory", 0)

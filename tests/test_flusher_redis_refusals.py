"""A Redis out of memory: the flusher keeps committing, invalidating, acknowledging and trimming
with the commands Redis still takes, so the memory comes back without anyone raising the
limit, and no read is served a cached page that lacks committed rows meanwhile."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import GROUP, STREAM
from core.settings import Settings
from flusher.worker import Flusher
from tests.conftest import both_redis, env_for
from tests.helpers import FlusherProcess, HttpClient, purchase
from tests.reconcile import assert_exactly_once, assert_reconciles, wait_for_no_pending


async def history(client: HttpClient, account: str) -> list[str]:
    reply = await client.get(f"/accounts/{account}/transactions")
    assert reply.status_code == 200, reply.text
    return [e["transaction_id"] for e in reply.json()["entries"]]


async def fill_redis_to_the_brim(redis: Redis) -> None:
    """Out of memory from here on: the limit below what Redis uses by half of what the
    stream holds, so that only trimming the stream can let a purchase in again."""
    stream_bytes = int(await redis.memory_usage(STREAM, samples=0) or 0)
    assert stream_bytes > 256 * 1024, stream_bytes
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", used - stream_bytes // 2)


@both_redis
async def test_a_full_redis_gets_its_memory_back_by_itself_and_purchases_flow_again(
    client: HttpClient,
    flusher: Flusher,
    redis: Redis,
    pg: asyncpg.Connection,
    settings: Settings,
    tmp_path: Path,
) -> None:
    await client.post("/purchase", json=purchase("full-0", customer="olga", seller="shop"))
    await flusher.drain()
    assert await history(client, "olga") == ["full-0"]  # cached
    backlog = [purchase(f"full-{i}", customer="olga", seller="shop") for i in range(1, 3001)]
    for start in range(0, len(backlog), 500):
        reply = await client.post("/purchases", json=backlog[start : start + 500])
        assert reply.status_code == 200
        assert all("error" not in r for r in reply.json())
    acknowledged = ["full-0", *(p["transaction_id"] for p in backlog)]

    await fill_redis_to_the_brim(redis)
    # Nobody raises the limit again. A flusher that keeps the stream for an hour unless
    # Redis needs the memory: the entries it flushes must give the memory back anyway.
    env = env_for(msgspec.structs.replace(settings, consumer="full-flusher", stream_retain_s=3600))
    process = FlusherProcess(env, tmp_path / "flusher.log")
    try:
        refused = await client.post("/purchase", json=purchase("full-late", customer="olga"))
        assert refused.status_code == 503, refused.text  # Redis is full
        deadline = time.monotonic() + 90
        while True:  # until a purchase is accepted again, with no one's help
            assert process.proc.poll() is None, f"the flusher exited:\n{process.output()}"
            assert time.monotonic() < deadline, (
                f"still refused: {refused.text}; pending"
                f" {(await redis.xpending(STREAM, GROUP))['pending']},"
                f" stream {await redis.xlen(STREAM)}:\n{process.output()}"
            )
            refused = await client.post("/purchase", json=purchase("full-late", customer="olga"))
            if refused.status_code == 200:
                break
            await asyncio.sleep(0.2)
        acknowledged.append("full-late")
        await wait_for_no_pending(redis, timeout=60)
        assert await redis.xlen(STREAM) < 1000  # trimmed despite the hour of retention
        # Never a page without the committed rows, cached or not.
        assert (await history(client, "olga"))[:2] == ["full-late", "full-3000"]
        await assert_exactly_once(pg, acknowledged)
        await assert_reconciles(redis, pg)
    finally:
        await redis.config_set("maxmemory", 0)
        status = process.stop()
    assert status == 0, process.output()


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


def test_redis_refusals_that_pass_are_told_from_the_ones_that_do_not() -> None:
    from redis.exceptions import OutOfMemoryError, ReadOnlyError, ResponseError

    from flusher.errors import is_transient

    for error in (
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        ReadOnlyError("You can't write against a read only replica."),
        ResponseError("BUSY Redis is busy running a script."),
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ResponseError(  # Redis 6.2 wraps an error inside a script
            "Error running script (call to f_0): @user_script:1: @user_script: 1:"
            " -OOM command not allowed when used memory > 'maxmemory'."
        ),
    ):
        assert is_transient(error), error
    for error in (
        ResponseError("BUSYGROUP Consumer Group name already exists"),
        ResponseError("NOGROUP No such key 'x' or consumer group 'y'"),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ):
        assert not is_transient(error), error

"""A Redis that refuses writes for a while (out of memory): the flusher keeps running, commits,
acknowledges nothing whose cache versions it could not replace, and catches up afterwards."""

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


@both_redis
async def test_out_of_memory_redis_neither_stops_the_flusher_nor_gets_entries_acked_unbumped(
    client: HttpClient,
    flusher: Flusher,
    redis: Redis,
    pg: asyncpg.Connection,
    settings: Settings,
    tmp_path: Path,
) -> None:
    await client.post("/purchase", json=purchase("oom-1", customer="olga", seller="shop"))
    await flusher.drain()
    assert await history(client, "olga") == ["oom-1"]  # cached
    accepted = await client.post("/purchase", json=purchase("oom-2", customer="olga"))
    assert accepted.status_code == 200  # not flushed yet: no flusher runs

    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)  # below what is used: every write refused
    env = env_for(msgspec.structs.replace(settings, consumer="oom-flusher"))
    process = FlusherProcess(env, tmp_path / "flusher.log")
    try:
        try:
            # It starts, reads and commits (PostgreSQL is fine), then must wait: the new
            # cache versions are refused, and so must the acknowledgement be.
            deadline = time.monotonic() + 30
            while not await pg.fetchval(
                "SELECT count(*) FROM transactions WHERE transaction_id = 'oom-2'"
            ):
                assert process.proc.poll() is None, process.output()
                assert time.monotonic() < deadline, process.output()
                await asyncio.sleep(0.05)
            watch_until = time.monotonic() + 2.5  # stats publications and ack retries
            while time.monotonic() < watch_until:
                assert process.proc.poll() is None, f"the flusher exited:\n{process.output()}"
                pending = await redis.xpending(STREAM, GROUP)
                assert pending["pending"] == 1, "acknowledged although its bump was refused"
                await asyncio.sleep(0.1)
        finally:
            await redis.config_set("maxmemory", 0)

        await wait_for_no_pending(redis)  # memory is back: bumped, then acknowledged
        assert await history(client, "olga") == ["oom-2", "oom-1"]  # the cache is fresh
        await assert_exactly_once(pg, ["oom-1", "oom-2"])
        await assert_reconciles(redis, pg)
    finally:
        status = process.stop()
    assert status == 0, process.output()


@both_redis
async def test_a_batch_whose_cache_bump_is_refused_is_not_acknowledged_until_it_is_bumped(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    await client.post("/purchase", json=purchase("bump-1", customer="pia", seller="shop"))
    await flusher.drain()
    assert await history(client, "pia") == ["bump-1"]  # cached
    await client.post("/purchase", json=purchase("bump-2", customer="pia", seller="shop"))
    entries = await flusher.read_batch()
    assert len(entries) == 1

    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)
    try:
        task = asyncio.create_task(flusher.process(entries))
        deadline = time.monotonic() + 30
        while not await pg.fetchval(
            "SELECT count(*) FROM transactions WHERE transaction_id = 'bump-2'"
        ):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        watch_until = time.monotonic() + 1
        while time.monotonic() < watch_until:
            pending = await redis.xpending(STREAM, GROUP)
            assert pending["pending"] == 1, "acknowledged although its cache bump was refused"
            if task.done():
                task.result()  # raises what stopped it
                raise AssertionError("process() gave up instead of waiting for Redis")
            await asyncio.sleep(0.05)
    finally:
        await redis.config_set("maxmemory", 0)
    assert await asyncio.wait_for(task, 30) == 1
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    assert await history(client, "pia") == ["bump-2", "bump-1"]


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

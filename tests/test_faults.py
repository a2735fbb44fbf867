"""Crashes with real signals, checked by query afterwards: nothing acknowledged is lost or doubled."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import asyncpg
from redis.asyncio import Redis

from core.constants import GROUP, STREAM
from core.settings import Settings
from devstack.stack import EmbeddedStack
from tests.conftest import env_for
from tests.helpers import FlusherProcess, HttpClient, purchase
from tests.reconcile import assert_exactly_once, wait_for_no_pending, wait_for_rows


async def post_many(client: HttpClient, count: int, prefix: str) -> list[str]:
    """Concurrent purchases; returns the ids that got a 200."""
    responses = await asyncio.gather(
        *(client.post("/purchase", json=purchase(f"{prefix}-{i}")) for i in range(count))
    )
    return [r.json()["transaction_id"] for r in responses if r.status_code == 200]


async def wait_until_blocked_on_lock(pg: asyncpg.Connection, timeout: float = 20) -> None:
    """A flusher statement is waiting on our table lock: it is in the middle of a batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query LIKE '%INSERT INTO transactions%'"
        )
        if waiting:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the flusher never reached the middle of a batch")


async def test_flusher_killed_mid_batch_then_restarted_persists_everything_once(
    client: HttpClient, settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    acknowledged = await post_many(client, 3000, "kill9")
    assert len(acknowledged) == 3000

    blocker = await asyncpg.connect(settings.database_url)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
    flusher = FlusherProcess(env_for(settings), tmp_path / "flusher-1.log")
    await wait_until_blocked_on_lock(pg)
    in_hand = (await redis.xpending(STREAM, GROUP))["pending"]
    assert in_hand > 0  # read from the stream, not committed, not acknowledged

    flusher.kill()
    await lock.rollback()
    await blocker.close()
    assert await pg.fetchval("SELECT count(*) FROM transactions") == 0

    restarted = FlusherProcess(env_for(settings), tmp_path / "flusher-2.log")
    try:
        await wait_for_rows(settings.database_url, 3000)
        await wait_for_no_pending(redis)
    finally:
        assert restarted.stop() == 0
    await assert_exactly_once(pg, acknowledged)


async def test_sigterm_commits_the_batch_in_hand_before_exiting(
    client: HttpClient, settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    acknowledged = await post_many(client, 200, "term")
    blocker = await asyncpg.connect(settings.database_url)
    lock = blocker.transaction()
    await lock.start()
    await blocker.execute("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
    flusher = FlusherProcess(env_for(settings), tmp_path / "flusher.log")
    await wait_until_blocked_on_lock(pg)

    flusher.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.5)
    assert flusher.proc.poll() is None  # still finishing the batch
    await lock.rollback()
    await blocker.close()

    assert flusher.stop(timeout=20) == 0
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    await assert_exactly_once(pg, acknowledged)


async def test_postgres_down_while_purchases_arrive_then_every_one_lands(
    client: HttpClient, settings: Settings, stack: EmbeddedStack, redis: Redis, tmp_path: Path
) -> None:
    flusher = FlusherProcess(env_for(settings), tmp_path / "flusher.log")
    acknowledged = await post_many(client, 100, "pg-before")
    await wait_for_rows(settings.database_url, 100)

    stack.postgres.stop()
    try:
        acknowledged += await post_many(client, 1000, "pg-down")
        assert len(acknowledged) == 1100  # the gateway does not need PostgreSQL to accept
        await asyncio.sleep(1.5)  # the flusher retries meanwhile, acknowledging nothing
        assert (await redis.xpending(STREAM, GROUP))["pending"] > 0
        assert flusher.proc.poll() is None
    finally:
        stack.postgres.start()

    try:
        await wait_for_rows(settings.database_url, 1100)
        await wait_for_no_pending(redis)
    finally:
        assert flusher.stop() == 0
    conn = await asyncpg.connect(settings.database_url)
    try:
        await assert_exactly_once(conn, acknowledged)
    finally:
        await conn.close()

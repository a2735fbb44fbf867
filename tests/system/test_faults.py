"""The fault matrix: real processes, real signals, concurrent load, checked by query afterwards.

Each test keeps purchases flowing while something crashes, then checks the end state the
same way: every purchase that got a 200 is in PostgreSQL exactly once with both legs, and
the product's own reconcile finds nothing wrong. Each prints one row of the matrix.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from core.constants import GROUP, STREAM
from core.flusher_stats import read_flusher_stats
from core.replies import text
from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_server import RedisServer, RedisVersion
from devstack.stack import EmbeddedStack
from tests.conftest import both_redis, env_for
from tests.helpers import FlusherProcess, Gateway, HttpClient, purchase
from tests.reconcile import (
    assert_exactly_once,
    assert_reconciles,
    matrix_row,
    wait_for_no_pending,
    wait_for_rows,
)


class Load:
    """Purchases from ``concurrency`` clients until stopped; remembers every answer."""

    _runs = itertools.count(1)

    def __init__(self, url: str, name: str, concurrency: int = 8, pause_s: float = 0.002):
        self.client = HttpClient(url)
        self.prefix = f"{name}-{next(self._runs)}"
        self.concurrency = concurrency
        self.pause_s = pause_s
        self.acknowledged: set[str] = set()
        self.unanswered: set[str] = set()  # 503s and dropped connections
        self.first_ok_after: float | None = None
        self._mark = 0.0
        self._tasks: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()

    async def _client(self, worker: int) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            tx = f"{self.prefix}-{worker}-{n}"
            sent_at = time.monotonic()
            try:
                reply = await self.client.post("/purchase", json=purchase(tx))
            except (aiohttp.ClientError, OSError):
                self.unanswered.add(tx)
                await asyncio.sleep(0.05)
                continue
            if reply.status_code == 200:
                self.acknowledged.add(tx)
                if self._mark and sent_at >= self._mark and self.first_ok_after is None:
                    self.first_ok_after = time.monotonic() - self._mark
            else:
                assert reply.status_code == 503, reply.text
                self.unanswered.add(tx)
                await asyncio.sleep(0.05)
            await asyncio.sleep(self.pause_s)

    def start(self) -> Load:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(self.concurrency)]
        return self

    def mark_fault(self) -> None:
        """From now on, time how long until a request sent after now gets a 200."""
        self._mark = time.monotonic()
        self.first_ok_after = None

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert time.monotonic() < deadline, f"only {len(self.acknowledged)} acknowledged"
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        await self.client.close()


async def table_lock(dsn: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    """Hold the transactions table so a flusher stops in the middle of a batch."""
    conn = await asyncpg.connect(dsn)
    lock = conn.transaction()
    await lock.start()
    await conn.execute("LOCK TABLE transactions IN ACCESS EXCLUSIVE MODE")
    return conn, lock


async def wait_until_blocked_on_lock(pg: asyncpg.Connection, count: int = 1) -> None:
    """``count`` flusher statements wait on our table lock: they are mid-batch."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        waiting = await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE wait_event_type = 'Lock' AND query ~ '(INSERT INTO|COPY|FROM) \"?transactions\"?'"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("the flusher never reached the middle of a batch")


async def settle(settings: Settings, redis: Redis, load: Load) -> None:
    await wait_for_rows(settings.database_url, len(load.acknowledged), timeout=90)
    await wait_for_no_pending(redis, timeout=60)


@contextlib.contextmanager
def processes() -> Iterator[list[FlusherProcess | Gateway]]:
    """Whatever a test starts is stopped, whichever way the test ends."""
    started: list[FlusherProcess | Gateway] = []
    try:
        yield started
    finally:
        for proc in started:
            if proc.proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
            proc.stop()  # also closes its log file


@pytest.fixture(params=["everysec", "always"])
async def own_redis(
    request: pytest.FixtureRequest, redis_version: RedisVersion, tmp_path: Path
) -> AsyncIterator[RedisServer]:
    """A Redis of the test's own, to kill and wipe without touching the session's, in the
    default mode and in the durable-ack mode (every acknowledgment waits for fsync)."""
    server = RedisServer(
        tmp_path / "own-redis", free_port(), appendfsync=request.param, version=redis_version
    )
    server.start()
    yield server
    server.kill()


def with_redis(settings: Settings, server: RedisServer) -> dict[str, str]:
    return env_for(msgspec.structs.replace(settings, redis_url=server.url, redis_timeout_s=0.5))


async def test_gateway_killed_under_load(
    settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    with processes() as started:
        started.append(FlusherProcess(env_for(settings), tmp_path / "flusher.log"))
        first = Gateway(env_for(settings), tmp_path / "gateway-1.log")
        started.append(first)
        load = Load(first.url, "gw-kill").start()
        await load.wait_for(300)
        first.kill()
        killed_at = time.monotonic()
        await load.stop()

        second = Gateway(env_for(settings), tmp_path / "gateway-2.log")
        started.append(second)
        recovery = time.monotonic() - killed_at
        after = Load(second.url, "gw-after").start()
        await after.wait_for(300)
        await after.stop()
        await settle(settings, redis, after)

    acknowledged = load.acknowledged | after.acknowledged
    await assert_exactly_once(pg, acknowledged, load.unanswered | after.unanswered)
    await assert_reconciles(redis, pg)
    matrix_row("kill -9 gateway", len(acknowledged), len(acknowledged), recovery)


@both_redis
async def test_flusher_killed_mid_batch_twice_in_a_row(
    client: HttpClient,
    gateway: Gateway,
    settings: Settings,
    redis: Redis,
    pg: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    load = Load(gateway.url, "flusher-kill").start()
    await load.wait_for(500)
    blocker, lock = await table_lock(settings.database_url)
    with processes() as started:
        for attempt in (1, 2):
            doomed = FlusherProcess(env_for(settings), tmp_path / f"flusher-{attempt}.log")
            started.append(doomed)
            await wait_until_blocked_on_lock(pg)
            assert (await redis.xpending(STREAM, GROUP))["pending"] > 0  # read, not acked
            doomed.kill()
        await lock.rollback()
        await blocker.close()
        assert await pg.fetchval("SELECT count(*) FROM transactions") == 0

        restarted_at = time.monotonic()
        started.append(FlusherProcess(env_for(settings), tmp_path / "flusher-3.log"))
        await wait_for_rows(settings.database_url, 1)
        recovery = time.monotonic() - restarted_at
        await load.stop()
        await settle(settings, redis, load)

    await assert_exactly_once(pg, load.acknowledged, load.unanswered)
    await assert_reconciles(redis, pg)
    matrix_row(
        "kill -9 flusher mid-batch, twice", len(load.acknowledged), len(load.acknowledged), recovery
    )


async def test_sigterm_commits_the_batch_in_hand_before_exiting(
    client: HttpClient, settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    replies = await asyncio.gather(*(client.post("/purchase", json=purchase()) for _ in range(200)))
    acknowledged = {r.json()["transaction_id"] for r in replies if r.status_code == 200}
    blocker, lock = await table_lock(settings.database_url)
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


@both_redis
async def test_redis_killed_under_load_and_restarted_from_its_aof(
    own_redis: RedisServer, settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    env = with_redis(settings, own_redis)
    with processes() as started:
        started.append(FlusherProcess(env, tmp_path / "flusher.log"))
        gateway = Gateway(env, tmp_path / "gateway.log")
        started.append(gateway)
        load = Load(gateway.url, "redis-kill").start()
        await load.wait_for(500)
        own_redis.kill()
        await asyncio.sleep(1)
        own_redis.start()
        load.mark_fault()
        await load.wait_for(len(load.acknowledged) + 300)
        own = Redis.from_url(own_redis.url)
        recovery = load.first_ok_after
        await load.stop()
        await settle(settings, own, load)
        await assert_reconciles(own, pg)
    await own.aclose()

    await assert_exactly_once(pg, load.acknowledged, load.unanswered)
    assert load.unanswered  # the outage was real: some purchases were refused
    matrix_row(
        f"kill -9 Redis (appendfsync {own_redis.appendfsync}), down 1 s, restart",
        len(load.acknowledged),
        len(load.acknowledged),
        recovery,
    )


async def test_postgres_down_for_30s_under_load(
    gateway: Gateway, settings: Settings, stack: EmbeddedStack, redis: Redis, tmp_path: Path
) -> None:
    outage_s = float(os.environ.get("MONOKERA_TEST_PG_OUTAGE_S", "30"))
    with processes() as started:
        started.append(FlusherProcess(env_for(settings), tmp_path / "flusher.log"))
        load = Load(gateway.url, "pg-down", concurrency=4, pause_s=0.01).start()
        await load.wait_for(200)
        await wait_for_rows(settings.database_url, 100)

        stack.postgres.stop()
        try:
            await asyncio.sleep(0.5)
            pending_at_start = await redis.xpending(STREAM, GROUP)
            accepted_before = len(load.acknowledged)
            await asyncio.sleep(outage_s)
            # The gateway kept accepting; the flusher kept its batch in hand, acking nothing.
            assert len(load.acknowledged) > accepted_before + 100
            assert await redis.xpending(STREAM, GROUP) == pending_at_start
        finally:
            stack.postgres.start()
        back_at = time.monotonic()
        await load.stop()
        await settle(settings, redis, load)
        recovery = time.monotonic() - back_at

    conn = await asyncpg.connect(settings.database_url)
    try:
        await assert_exactly_once(conn, load.acknowledged, load.unanswered)
        await assert_reconciles(redis, conn)
    finally:
        await conn.close()
    matrix_row(
        f"PostgreSQL stopped {outage_s:.0f}s",
        len(load.acknowledged),
        len(load.acknowledged),
        recovery,
    )


async def redelivered_by(redis: Redis, consumer: str, timeout: float = 60) -> dict[str, float]:
    """``consumer``'s published figures, once they count a redelivered entry."""
    deadline = time.monotonic() + timeout
    while True:
        figures = (await read_flusher_stats(redis)).get(consumer, {})
        if figures.get("redelivered_total", 0) >= 1:
            return figures
        assert time.monotonic() < deadline, f"{consumer} counted no redelivery: {figures}"
        await asyncio.sleep(0.1)


@both_redis
async def test_frozen_flusher_is_taken_over_by_a_second_one(
    gateway: Gateway, settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    fast = msgspec.structs.replace(settings, pg_transaction_timeout_s=2.0)
    load = Load(gateway.url, "sigstop").start()
    await load.wait_for(500)
    blocker, lock = await table_lock(settings.database_url)
    with processes() as started:
        frozen = FlusherProcess(
            {**env_for(fast), "MONOKERA_CONSUMER": "flusher-a"}, tmp_path / "flusher-a.log"
        )
        started.append(frozen)
        await wait_until_blocked_on_lock(pg)
        frozen.send_signal(signal.SIGSTOP)
        frozen_at = time.monotonic()
        started.append(
            FlusherProcess(
                {**env_for(fast), "MONOKERA_CONSUMER": "flusher-b"}, tmp_path / "flusher-b.log"
            )
        )
        await lock.rollback()
        await blocker.close()
        await load.stop()
        await settle(settings, redis, load)
        recovery = time.monotonic() - frozen_at
        consumers = (await redis.xpending(STREAM, GROUP))["consumers"]
        assert consumers == []  # flusher-b took over and acknowledged flusher-a's entries

        # It wakes up mid-batch to a dead session (PostgreSQL ended its transaction) and
        # writes the batch again: every entry is already stored, by flusher-b, so it
        # inserts nothing and counts each as redelivered.
        frozen.send_signal(signal.SIGCONT)
        figures = await redelivered_by(redis, "flusher-a")
        assert figures["rows_written_total"] == 0, figures
        assert frozen.stop() == 0

    await assert_exactly_once(pg, load.acknowledged, load.unanswered)
    await assert_reconciles(redis, pg)
    matrix_row(
        "SIGSTOP flusher, second takes over",
        len(load.acknowledged),
        len(load.acknowledged),
        recovery,
    )


async def fill_redis_to_the_brim(redis: Redis) -> str:
    """Out of memory from here on: the limit below what Redis uses by an eighth of what
    the stream holds (MEMORY USAGE overestimates a stream about twice; each purchase let in
    adds an idempotency key that stays), so that only trimming the stream lets purchases
    in again. Returns the stream's oldest entry id."""
    stream_bytes = int(await redis.memory_usage(STREAM, samples=0) or 0)
    assert stream_bytes > 256 * 1024, stream_bytes
    used = int((await redis.info("memory"))["used_memory"])
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", used - stream_bytes // 8)
    return await oldest_entry(redis)


async def oldest_entry(redis: Redis) -> str:
    first: Any = await redis.xrange(STREAM, count=1)
    return text(first[0][0]) if first else ""


@both_redis
async def test_a_full_redis_gets_its_memory_back_by_itself_under_load(
    gateway: Gateway, settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    load = Load(gateway.url, "oom").start()
    await load.wait_for(3000, timeout=90)  # a backlog: no flusher is running
    # Nobody raises the limit again. The flusher keeps the stream an hour unless Redis
    # needs the memory: the entries it flushes must give the memory back anyway.
    keeps_an_hour = msgspec.structs.replace(settings, stream_retain_s=3600)
    try:
        oldest = await fill_redis_to_the_brim(redis)
        refused = len(load.unanswered)
        deadline = time.monotonic() + 30
        while len(load.unanswered) < refused + 20:  # Redis is full: 503s
            assert time.monotonic() < deadline, "Redis is not refusing purchases"
            await asyncio.sleep(0.05)
        with processes() as started:
            load.mark_fault()
            flusher = FlusherProcess(env_for(keeps_an_hour), tmp_path / "flusher.log")
            started.append(flusher)
            deadline = time.monotonic() + 90
            while load.first_ok_after is None:  # accepted again, with no one's help
                assert flusher.proc.poll() is None, flusher.output()
                assert time.monotonic() < deadline, (
                    f"still refused; pending {(await redis.xpending(STREAM, GROUP))['pending']},"
                    f" stream {await redis.xlen(STREAM)}:\n{flusher.output()}"
                )
                await asyncio.sleep(0.05)
            recovery = load.first_ok_after
            await load.wait_for(len(load.acknowledged) + 500, timeout=60)  # and keep flowing
            await load.stop()
            await settle(settings, redis, load)
            assert await oldest_entry(redis) != oldest  # trimmed despite the hour of retention
    finally:
        await redis.config_set("maxmemory", 0)

    await assert_exactly_once(pg, load.acknowledged, load.unanswered)
    await assert_reconciles(redis, pg)
    matrix_row(
        "Redis out of memory, limit never raised (from the flusher's start)",
        len(load.acknowledged),
        len(load.acknowledged),
        recovery,
    )


@both_redis
async def test_a_redis_filled_by_retained_entries_trims_them_and_keeps_accepting(
    gateway: Gateway, settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    """Everything flushed, yet Redis full: the memory is the retention's (acknowledged
    entries kept for tracing). No batch is refused, so only the memory figures can tell."""
    keeps_an_hour = msgspec.structs.replace(settings, stream_retain_s=3600)
    with processes() as started:
        started.append(FlusherProcess(env_for(keeps_an_hour), tmp_path / "flusher.log"))
        load = Load(gateway.url, "retained").start()
        try:
            await load.wait_for(3000, timeout=90)
            oldest = await fill_redis_to_the_brim(redis)
            load.mark_fault()
            await load.wait_for(len(load.acknowledged) + 1000, timeout=90)
            recovery = load.first_ok_after
        finally:
            await load.stop()
            await redis.config_set("maxmemory", 0)
        await settle(settings, redis, load)
        assert await oldest_entry(redis) != oldest  # trimmed despite the hour of retention

    await assert_exactly_once(pg, load.acknowledged, load.unanswered)
    await assert_reconciles(redis, pg)
    matrix_row(
        "Redis full of retained, flushed entries (retention 1 h)",
        len(load.acknowledged),
        len(load.acknowledged),
        recovery,
    )


@both_redis
async def test_redis_restarted_without_its_data_is_an_explicit_incident(
    own_redis: RedisServer, settings: Settings, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    """The one loss we cannot prevent in the default mode, made loud: purchases acknowledged
    but not yet flushed when Redis loses its data are gone, and the flusher records the
    incident with the last entry it committed, then carries on with the new stream."""
    env = with_redis(settings, own_redis)
    own = Redis.from_url(own_redis.url)
    with processes() as started:
        flusher = FlusherProcess(env, tmp_path / "flusher.log")
        started.append(flusher)
        gateway = Gateway(env, tmp_path / "gateway.log")
        started.append(gateway)

        flushed = Load(gateway.url, "wipe-flushed").start()
        await flushed.wait_for(300)
        await flushed.stop()
        await settle(settings, own, flushed)

        flusher.send_signal(signal.SIGSTOP)
        stranded = Load(gateway.url, "wipe-stranded").start()
        await stranded.wait_for(200)
        await stranded.stop()

        own_redis.kill()
        for leftover in own_redis.data_dir.glob("appendonly*"):
            # The AOF is gone, Redis comes back empty: appendonly.aof on Redis 6.2, the
            # appendonlydir/ folder (base, increments, manifest) on Redis 7 and later.
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
        own_redis.start()
        await own.aclose()
        own = Redis.from_url(own_redis.url)
        flusher.send_signal(signal.SIGCONT)

        after = Load(gateway.url, "wipe-after").start()
        await after.wait_for(300)
        await after.stop()
        await settle(settings, own, after)
        await assert_reconciles(own, pg)
    await own.aclose()

    stored = {r[0] for r in await pg.fetch("SELECT transaction_id FROM transactions")}
    assert flushed.acknowledged <= stored
    assert after.acknowledged <= stored
    # Acknowledged, never delivered to the (frozen) flusher, gone with the data. Only those
    # Redis had already handed to its blocked read survive, from the flusher's memory.
    lost = stranded.acknowledged - stored
    assert lost
    assert stored <= flushed.acknowledged | stranded.acknowledged | after.acknowledged
    incidents = await pg.fetch("SELECT * FROM stream_incidents")
    assert len(incidents) == 1
    assert incidents[0]["last_committed_entry_id"] is not None
    matrix_row(
        f"Redis (appendfsync {own_redis.appendfsync}) restarted with its data gone",
        len(flushed.acknowledged | stranded.acknowledged | after.acknowledged),
        len(stored),
        None,
    )
    print(f"      lost with the data, recorded as an incident: {len(lost)}")

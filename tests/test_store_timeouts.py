"""The batch transaction timeout bounds batches only: a migration or partition maintenance
that takes longer (here: waiting for another process's lock) still completes."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import pytest

from core.constants import PG_MIGRATION_LOCK, PG_WRITE_LOCK
from core.settings import Settings
from flusher.errors import DatabaseUnavailable
from flusher.store import PurchaseStore, Undecodable

TIMEOUT_S = 0.2
HELD_S = 0.8  # longer than the transaction timeout, shorter than the maintenance lock_timeout


async def hold(settings: Settings, lock: int, seconds: float) -> None:
    """Another process holds ``lock`` for ``seconds``."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", lock)
            await asyncio.sleep(seconds)
    finally:
        await conn.close()


async def held(settings: Settings, lock: int, seconds: float) -> asyncio.Task[None]:
    task = asyncio.create_task(hold(settings, lock, seconds))
    async with asyncio.timeout(30):
        conn = await asyncpg.connect(settings.database_url)
        try:  # wait until it is really held
            while await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock):
                await conn.execute("SELECT pg_advisory_unlock($1)", lock)
                await asyncio.sleep(0.01)
        finally:
            await conn.close()
    return task


async def test_migrating_outlasts_the_batch_transaction_timeout(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    store = PurchaseStore(settings.database_url, transaction_timeout_s=TIMEOUT_S)
    holder = await held(settings, PG_MIGRATION_LOCK, HELD_S)  # another flusher migrating
    started = time.monotonic()
    try:
        await store.connect()
        assert time.monotonic() - started >= HELD_S - 0.1  # it did wait, and was not killed
    finally:
        await store.close()
        await holder


async def test_partition_maintenance_outlasts_the_batch_transaction_timeout(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    store = PurchaseStore(settings.database_url, transaction_timeout_s=TIMEOUT_S)
    await store.connect()
    holder = await held(settings, PG_WRITE_LOCK, HELD_S)  # a batch committing
    try:
        changes = await store.maintain_partitions(ahead_days=1, retention_days=0)
        assert changes is not None  # done, not killed nor skipped
    finally:
        await store.close()
        await holder


async def test_a_batch_transaction_is_still_bounded(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    store = PurchaseStore(settings.database_url, transaction_timeout_s=TIMEOUT_S)
    await store.connect()
    holder = await held(settings, PG_WRITE_LOCK, 3)  # a flusher frozen holding the lock
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable):
            await store.write([], [Undecodable("1-1", b"x", "test")])
        assert time.monotonic() - started < 2
    finally:
        await store.close()
        await holder
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0

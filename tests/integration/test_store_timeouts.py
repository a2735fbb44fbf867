"""The batch transaction timeout bounds batches only: a migration or partition maintenance
that takes longer (here: waiting for another process's lock) still completes."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final

import asyncpg
import pytest

from core.constants import PG_MIGRATION_LOCK
from core.entries import decode
from core.settings import Settings
from flusher.errors import DatabaseUnavailable
from flusher.ledger_writer import Decoded, LedgerWriter
from tests.helpers import stream_entry

TIMEOUT_S = 0.2
HELD_S = 0.8  # longer than the transaction timeout, shorter than the maintenance lock_timeout

MIGRATING: Final = f"SELECT pg_advisory_xact_lock({PG_MIGRATION_LOCK})"
"""What another flusher migrating holds."""

WRITING: Final = "LOCK TABLE ledger_transfers IN ROW EXCLUSIVE MODE"
"""What a batch holds on the ledger while it commits."""

LOCKING_BUYER: Final = (
    "INSERT INTO account_totals (account) VALUES ('buyer')"
    " ON CONFLICT (account) DO UPDATE SET account = EXCLUDED.account WHERE false"
)
"""What a batch holds on one of its accounts (flusher.queries.LOCK_ACCOUNTS)."""


def as_read(fields: dict[Any, Any]) -> dict[bytes, bytes]:
    """An entry's fields as XREADGROUP hands them to the flusher: bytes."""
    return {as_bytes(k): as_bytes(v) for k, v in fields.items()}


def as_bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def hold(settings: Settings, statement: str, seconds: float, held: asyncio.Event) -> None:
    """Another process runs ``statement`` and keeps its locks ``seconds``."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction():
            await conn.execute(statement)
            held.set()
            await asyncio.sleep(seconds)
    finally:
        await conn.close()


async def held(settings: Settings, statement: str, seconds: float) -> asyncio.Task[None]:
    """Once the locks are really held: the task that releases them."""
    event = asyncio.Event()
    task = asyncio.create_task(hold(settings, statement, seconds, event))
    async with asyncio.timeout(30):
        await event.wait()
    return task


async def test_migrating_outlasts_the_batch_transaction_timeout(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    store = LedgerWriter(settings.database_url, transaction_timeout_s=TIMEOUT_S)
    holder = await held(settings, MIGRATING, HELD_S)  # another flusher migrating
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
    store = LedgerWriter(settings.database_url, transaction_timeout_s=TIMEOUT_S)
    await store.connect()
    holder = await held(settings, WRITING, HELD_S)  # a batch committing
    try:
        changes = await store.maintain_partitions(ahead_days=1, retention_days=0)
        assert changes is not None  # done, not killed nor skipped
    finally:
        await store.close()
        await holder


async def test_a_batch_transaction_is_still_bounded(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    store = LedgerWriter(settings.database_url, transaction_timeout_s=TIMEOUT_S)
    await store.connect()
    # A flusher frozen holding a lock on an account of this batch.
    holder = await held(settings, LOCKING_BUYER, 3)
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailable):
            await store.write([Decoded("1-1", decode(as_read(stream_entry("frozen-1"))))], [])
        assert time.monotonic() - started < 2
    finally:
        await store.close()
        await holder
    assert await pg.fetchval("SELECT count(*) FROM transactions") == 0

"""End-state checks by query: every acknowledged purchase in PostgreSQL exactly once, both legs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import asyncpg
from redis.asyncio import Redis

from core.constants import GROUP, STREAM


async def wait_for_rows(dsn: str, expected: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    count = -1
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(dsn)
            try:
                count = await conn.fetchval("SELECT count(*) FROM transactions")
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            count = -1
        if count >= expected:
            return count
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{count} of {expected} purchases in PostgreSQL after {timeout}s")


async def wait_for_no_pending(redis: Redis, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (await redis.xpending(STREAM, GROUP))["pending"]:
        if time.monotonic() > deadline:
            raise TimeoutError("entries still pending")
        await asyncio.sleep(0.05)


async def assert_exactly_once(conn: asyncpg.Connection, acknowledged: Iterable[str]) -> None:
    """Every acknowledged id has one transaction row, one DEBIT and one CREDIT; nothing else."""
    expected = sorted(acknowledged)
    rows = await conn.fetch("SELECT transaction_id FROM transactions ORDER BY transaction_id")
    stored = [r["transaction_id"] for r in rows]
    assert stored == expected, f"{len(stored)} stored vs {len(expected)} acknowledged"
    legs = await conn.fetch(
        """
        SELECT t.transaction_id,
               count(*) FILTER (WHERE l.direction = 'DEBIT' AND l.account = t.customer_account
                                AND l.amount = t.amount) AS debits,
               count(*) FILTER (WHERE l.direction = 'CREDIT' AND l.account = t.seller_account
                                AND l.amount = t.amount) AS credits,
               count(l.*) AS legs
        FROM transactions t LEFT JOIN ledger_entries l USING (transaction_id)
        GROUP BY t.transaction_id
        HAVING count(l.*) <> 2
            OR count(*) FILTER (WHERE l.direction = 'DEBIT' AND l.account = t.customer_account
                                AND l.amount = t.amount) <> 1
            OR count(*) FILTER (WHERE l.direction = 'CREDIT' AND l.account = t.seller_account
                                AND l.amount = t.amount) <> 1
        """
    )
    assert legs == [], f"transactions without exactly one debit and one credit: {legs[:5]}"
    orphans = await conn.fetchval(
        "SELECT count(*) FROM ledger_entries l"
        " WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.transaction_id = l.transaction_id)"
    )
    assert orphans == 0

"""End-state checks by query: every acknowledged purchase in PostgreSQL exactly once, both legs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import asyncpg
from redis.asyncio import Redis

from core.constants import GROUP, STREAM, stream_key
from ops.reconcile import ACCOUNTS_BROKEN, LEDGER_BROKEN, ORPHAN_ROWS, Report, reconcile, render


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


async def wait_for_consumers(
    redis: Redis, shards: int, names: set[str], timeout: float = 60
) -> None:
    """Until every named flusher has read every shard's group (a flusher slow to start on
    a busy machine has not, yet)."""
    deadline = time.monotonic() + timeout
    while True:
        missing = {}
        for shard in range(shards):
            consumers = await redis.xinfo_consumers(stream_key(shard), GROUP)
            absent = names - {c["name"].decode() for c in consumers}
            if absent:
                missing[shard] = sorted(absent)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"not reading their shards after {timeout}s: {missing}")
        await asyncio.sleep(0.1)


async def assert_exactly_once(
    conn: asyncpg.Connection, acknowledged: Iterable[str], unanswered: Iterable[str] = ()
) -> None:
    """Every acknowledged id is stored once with its ledger row (one DEBIT, one CREDIT), and
    every account's entries are numbered without gaps, with totals that add up.

    Anything else stored must be among ``unanswered``: requests that got no 200 (a 503 or a
    dropped connection) whose append may still have reached Redis before the failure.
    """
    expected = set(acknowledged)
    rows = await conn.fetch("SELECT transaction_id FROM transactions")
    stored = {r["transaction_id"] for r in rows}
    missing = expected - stored
    assert not missing, f"{len(missing)} acknowledged purchases missing, e.g. {sorted(missing)[:3]}"
    extra = stored - expected - set(unanswered)
    assert not extra, f"{len(extra)} stored purchases nobody sent, e.g. {sorted(extra)[:3]}"
    broken = await conn.fetch(LEDGER_BROKEN, None)  # every transaction, retention or not
    assert broken == [], f"transactions without their one ledger row: {broken[:5]}"
    assert await conn.fetchval(ORPHAN_ROWS) == 0
    assert await conn.fetchval("SELECT count(*) FROM ledger_transfers") == len(stored)
    accounts = await conn.fetch(ACCOUNTS_BROKEN)
    assert accounts == [], f"accounts with broken entry numbers or totals: {accounts[:5]}"


async def assert_reconciles(
    redis: Redis, conn: asyncpg.Connection, shards: int = 1, timeout: float = 60
) -> Report:
    """The product's own reconcile finds nothing wrong, once the flushers are done.

    Rows can all be in PostgreSQL while entries are still pending: a flusher killed
    between its COMMIT and its XACK leaves them for another to claim once they idled
    ``claim_idle_ms``. So reconcile is asked again until nothing is pending or undelivered
    (or the deadline passes), then judged."""
    deadline = time.monotonic() + timeout
    while True:
        report = await reconcile(redis, conn, shards)
        settled = report.ok and report.pending == 0 and report.undelivered == 0
        if settled or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert report.ok, render(report)
    assert report.pending == 0 and report.undelivered == 0, render(report)
    return report


def matrix_row(fault: str, acknowledged: int, stored: int, recovery_s: float | None) -> None:
    recovery = "-" if recovery_s is None else f"{recovery_s:.2f}s"
    print(
        f"\nFAULT | {fault} | acknowledged {acknowledged} | in PostgreSQL {stored}"
        f" | duplicates 0 | recovered in {recovery}"
    )

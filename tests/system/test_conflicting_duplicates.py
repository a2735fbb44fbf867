"""A transaction_id accepted again past the idempotency window: a plain repeat of the stored
purchase is told apart from a conflicting one (other accounts or amount), in the flusher's
figures, /metrics, the console and reconcile; and migration 007 on a previous release's
data."""

from __future__ import annotations

import asyncio
import time

import asyncpg
from redis.asyncio import Redis

from core.migrate import migrate, migration_files
from core.settings import Settings
from flusher.worker import Flusher
from tests.conftest import both_redis
from tests.helpers import HttpClient, forget_idempotency, metric_total, purchase
from tests.reconcile import assert_reconciles


@both_redis
async def test_conflicting_duplicates_are_counted_apart_from_plain_repeats(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    tx = "tx-reused"
    first = purchase(tx, amount=100)
    later = [
        first,  # the same purchase, retried past the window: harmless
        purchase(tx, amount=999),  # another amount
        purchase(tx, amount=100, seller="other-seller"),  # another account
    ]
    assert (await client.post("/purchase", json=first)).status_code == 200
    await flusher.drain()
    for body in later:
        await forget_idempotency(redis, tx)  # the window has passed
        assert (await client.post("/purchase", json=body)).status_code == 200
        await flusher.drain()

    assert (flusher.stats.duplicates, flusher.stats.conflicting_duplicates) == (3, 2)
    rows = await pg.fetch(
        "SELECT conflicting, amount, seller_account FROM duplicate_entries ORDER BY accepted_at"
    )
    assert [tuple(r) for r in rows] == [
        (False, 100, "23132131"),
        (True, 999, "23132131"),
        (True, 100, "other-seller"),
    ]
    assert await pg.fetchval("SELECT amount FROM transactions") == 100  # the ledger keeps A

    await flusher.publish_stats()
    text = (await client.get("/metrics")).text
    assert metric_total(text, "monokera_flusher_conflicting_duplicates_total") == 2
    assert metric_total(text, "monokera_flusher_duplicates_total") == 3
    overview = (await client.get("/console/api/overview")).json()
    [figures] = overview["flushers"]
    assert (figures["duplicates_total"], figures["conflicting_duplicates_total"]) == (3, 2)

    report = await assert_reconciles(redis, pg)  # reported, not a discrepancy of the ledger
    assert (report.duplicate_entries, report.conflicting_duplicates) == (3, 2)
    assert report.conflicting_transactions == [tx]


async def test_two_entries_in_one_batch_conflict_when_their_amounts_differ(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    # Both appended before any flush: the second's stored twin is in the same batch.
    for amount in (5, 5, 6):
        await forget_idempotency(redis, "tx-batch")
        assert (
            await client.post("/purchase", json=purchase("tx-batch", amount=amount))
        ).status_code == 200
    assert await flusher.drain() == 3
    rows = await pg.fetch("SELECT amount, conflicting FROM duplicate_entries ORDER BY amount")
    assert [tuple(r) for r in rows] == [(5, False), (6, True)]


async def test_migration_007_marks_a_previous_releases_duplicates_it_can_judge(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    name = f"previous_release_{int(time.time() * 1000)}"
    await pg.execute(f'CREATE DATABASE "{name}"')
    dsn = settings.database_url.rsplit("/", 1)[0] + "/" + name
    old = await asyncpg.connect(dsn)
    try:
        await old.execute(
            "CREATE TABLE schema_migrations (version text PRIMARY KEY,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, sql in migration_files():
            if version < "007":
                await old.execute(sql)
                await old.execute("INSERT INTO schema_migrations (version) VALUES ($1)", version)
        await old.execute(
            """
            INSERT INTO transactions (transaction_id, customer_name, customer_account,
                seller_name, seller_account, amount, request_id, stream_entry_id, accepted_at)
            VALUES ('tx-old', 'a', 'acc-1', 'b', 'acc-2', 100, 'r', '1-0', now());
            INSERT INTO duplicate_entries (stream_entry_id, transaction_id, request_id, amount,
                accepted_at)
            VALUES ('2-0', 'tx-old', 'r2', 100, now()), ('3-0', 'tx-old', 'r3', 7, now());
            """
        )
        assert (await migrate(old))[0] == "007_conflicting_duplicates.sql"
        rows = await old.fetch(
            "SELECT stream_entry_id, conflicting, seller_account FROM duplicate_entries"
            " ORDER BY stream_entry_id"
        )
        # The same amount cannot be judged without the accounts earlier releases dropped.
        assert [tuple(r) for r in rows] == [("2-0", None, None), ("3-0", True, None)]
    finally:
        await old.close()
        await asyncio.wait_for(pg.execute(f'DROP DATABASE "{name}"'), 30)

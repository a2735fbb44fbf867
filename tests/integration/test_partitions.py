"""Ledger partitions by day: made ahead, a catch-all so no row is refused, retention, and
history reads that touch only the newest partitions.

The partitions live as long as the session's database (each test only empties the
tables), so these tests assert what must hold whatever other tests created before them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.settings import Settings
from flusher.ledger_writer import LedgerWriter
from flusher.worker import Flusher
from gateway.reads.history import HistoryReader
from gateway.reads.queries import HISTORY_AFTER, HISTORY_FIRST
from ops.reconcile import reconcile
from tests.helpers import open_flusher

DAY = timedelta(days=1)

TODAY = "SELECT date_trunc('day', clock_timestamp(), 'UTC')"

INSERT_ROWS = """
WITH rows AS (
    INSERT INTO ledger_transfers (
        transaction_id, debit_account, debit_seq, credit_account, credit_seq, amount,
        accepted_at, recorded_at
    )
    SELECT $1 || '-' || n, $2, $5::bigint + n, 'shop', $5::bigint + n, n, $3::timestamptz,
           $3 + n * interval '1 second'
    FROM generate_series(1, $4) AS n
)
INSERT INTO account_totals AS t (account, debit_count, credit_count, last_recorded_at)
VALUES ($2, $4, 0, $3 + $4 * interval '1 second'), ('shop', 0, $4, NULL)
ON CONFLICT (account) DO UPDATE SET
    debit_count = t.debit_count + EXCLUDED.debit_count,
    credit_count = t.credit_count + EXCLUDED.credit_count,
    last_recorded_at = greatest(t.last_recorded_at, EXCLUDED.last_recorded_at)
"""
"""$4 purchases by account $2 from 'shop' on day $3, its entries numbered from $5 + 1, and
its counts in account_totals (the shop's numbers are not kept apart: not read here)."""


def partition_name(day: datetime) -> str:
    return f"ledger_transfers_p{day:%Y%m%d}"


async def partitions(pg: asyncpg.Connection) -> dict[str, tuple[datetime | None, datetime | None]]:
    rows = await pg.fetch("SELECT name, lower_bound, upper_bound FROM ledger_partitions")
    return {r["name"]: (r["lower_bound"], r["upper_bound"]) for r in rows}


async def ensure_day_partition(pg: asyncpg.Connection, day: datetime) -> None:
    """A past day's partition, as an earlier day's maintenance would have left it."""
    if partition_name(day) not in await partitions(pg):
        bounds = f"FROM ('{day.isoformat()}') TO ('{(day + DAY).isoformat()}')"
        await pg.execute(
            f"CREATE TABLE {partition_name(day)} PARTITION OF ledger_transfers FOR VALUES {bounds}"
        )


async def test_partitions_exist_ahead_once_the_flusher_has_started(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    flusher, close = await open_flusher(
        msgspec.structs.replace(settings, ledger_partitions_ahead_days=9)
    )
    try:
        await flusher.prepare()
    finally:
        await close()
    today = await pg.fetchval(TODAY)
    found = await partitions(pg)
    for ahead in range(10):
        day = today + ahead * DAY
        assert found[partition_name(day)] == (day, day + DAY)
    future_from, future_to = found["ledger_transfers_future"]
    assert future_from is not None and future_from >= today + 10 * DAY
    assert future_to is None  # MAXVALUE


async def test_a_row_beyond_the_last_partition_is_kept_and_moved_to_its_day_later(
    settings: Settings, pg: asyncpg.Connection, flusher: Flusher
) -> None:
    await flusher.prepare()
    future_from = (await partitions(pg))["ledger_transfers_future"][0]
    assert future_from is not None
    day = future_from + 2 * DAY  # no partition of its own yet
    await pg.execute(INSERT_ROWS, "late", "lena", day + timedelta(hours=3), 1, 0)
    where = "SELECT tableoid::regclass::text FROM ledger_transfers WHERE debit_account = 'lena'"
    assert await pg.fetchval(where) == "ledger_transfers_future"
    history = HistoryReader(settings.database_url)
    try:
        entries, _ = await history.history("lena", 10, None)
        assert [e.transaction_id for e in entries] == ["late-1"]  # read like any other

        today = await pg.fetchval(TODAY)
        ahead = (day - today) // DAY
        store = LedgerWriter(settings.database_url)
        try:
            changes = await store.maintain_partitions(ahead_days=ahead, retention_days=0)
        finally:
            await store.close()
        assert changes is not None
        assert ("created", partition_name(day)) in [(c.action, c.partition) for c in changes]
        assert await pg.fetchval(where) == partition_name(day)
        assert (await partitions(pg))["ledger_transfers_future"][0] == day + DAY
        moved, _ = await history.history("lena", 10, None)
        assert moved == entries
    finally:
        await history.close()


OLD_PURCHASE = """
WITH t AS (
    INSERT INTO transactions (
        transaction_id, customer_name, customer_account, seller_name, seller_account, amount,
        request_id, stream_entry_id, accepted_at, persisted_at
    ) VALUES ($1, 'Olga', 'olga', 'Shop', 'shop', 5, 'r-1', '1-0', $2, $2)
)
INSERT INTO ledger_transfers (
    transaction_id, debit_account, debit_seq, credit_account, credit_seq, amount, accepted_at,
    recorded_at
) VALUES ($1, 'olga', 1, 'shop', 1, 5, $2, $2)
"""


async def test_retention_drops_old_partitions_and_keeps_recent_ones(
    settings: Settings, pg: asyncpg.Connection, flusher: Flusher, redis: Redis
) -> None:
    await flusher.prepare()
    today = await pg.fetchval(TODAY)
    old_day = today - 40 * DAY
    recent_day = today - 2 * DAY
    await ensure_day_partition(pg, old_day)
    await ensure_day_partition(pg, recent_day)
    await pg.execute(INSERT_ROWS, "old", "olga", old_day, 3, 1)
    await pg.execute(INSERT_ROWS, "recent", "olga", recent_day, 3, 4)
    await pg.execute(OLD_PURCHASE, "old-purchase", old_day + timedelta(hours=1))

    store = LedgerWriter(settings.database_url)
    try:
        changes = await store.maintain_partitions(ahead_days=1, retention_days=30)
        again = await store.maintain_partitions(ahead_days=1, retention_days=30)
    finally:
        await store.close()
    assert changes is not None
    assert ("dropped", partition_name(old_day)) in [(c.action, c.partition) for c in changes]
    assert again == []  # nothing left to do
    found = await partitions(pg)
    assert partition_name(old_day) not in found
    assert {partition_name(recent_day), partition_name(today), "ledger_transfers_future"} <= set(
        found
    )
    assert all(upper is None or upper > today - 30 * DAY for _, upper in found.values())
    left = await pg.fetch(
        "SELECT transaction_id FROM ledger_transfers WHERE debit_account = 'olga'"
    )
    assert sorted(r[0] for r in left) == ["recent-1", "recent-2", "recent-3"]
    # The purchase stays, its ledger row went with its partition: not a discrepancy.
    assert await pg.fetchval("SELECT count(*) FROM transactions") == 1
    await pg.execute("DELETE FROM ledger_transfers")  # the rows without transactions above
    report = await reconcile(redis, pg)
    assert (report.transactions, report.transactions_past_retention) == (1, 1)
    assert report.ok, report


async def spread_history(pg: asyncpg.Connection, account: str, days: int, per_day: int) -> None:
    """``per_day`` entries of ``account`` on each of the last ``days`` days (today included),
    among 20 times as many of other accounts, so that each partition has some weight."""
    today = await pg.fetchval(TODAY)
    for back in range(days):
        day = today - back * DAY
        first = (days - 1 - back) * per_day  # numbered in time order, oldest day first
        await ensure_day_partition(pg, day)
        await pg.execute(INSERT_ROWS, f"{account}-d{back}", account, day, per_day, first)
        for other in range(20):
            await pg.execute(
                INSERT_ROWS, f"other{other}-d{back}", f"other{other}", day, per_day, first
            )
    await pg.execute("VACUUM (ANALYZE) ledger_transfers")  # as autovacuum would, for older days


def scans(plan: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The plan's scans of ledger partitions, by (partition, side: "debit" or "credit").
    Each side is read by an ordered Append: a Merge Append would read every partition."""
    found: dict[tuple[str, str], dict[str, Any]] = {}

    def walk(node: dict[str, Any]) -> None:
        assert node["Node Type"] != "Merge Append", node
        relation = node.get("Relation Name", "")
        if relation.startswith("ledger_transfers"):
            side = "credit" if "credit_account" in json.dumps(node) else "debit"
            found[relation, side] = node
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    return found


async def test_a_first_history_page_reads_only_the_newest_partition_holding_entries(
    pg: asyncpg.Connection,
) -> None:
    await spread_history(pg, "zoe", days=4, per_day=50)
    today = await pg.fetchval(TODAY)
    raw = await pg.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON)" + HISTORY_FIRST, "zoe", 20)
    by_partition = scans(json.loads(raw)[0])

    newest = by_partition[partition_name(today), "debit"]
    assert newest["Node Type"] == "Index Scan"
    assert newest["Index Name"].startswith(partition_name(today))
    assert (newest["Actual Loops"], newest["Actual Rows"]) == (1, 20)
    for back in (1, 2, 3):
        older = by_partition[partition_name(today - back * DAY), "debit"]
        assert older["Actual Loops"] == 0, older  # never executed
    # zoe never sold: the credit side is not read at all.
    credits = [node for (_, side), node in by_partition.items() if side == "credit"]
    assert credits and all(node["Actual Loops"] == 0 for node in credits)


async def test_a_page_with_thirty_daily_partitions_reads_one(pg: asyncpg.Connection) -> None:
    await spread_history(pg, "vera", days=30, per_day=5)
    today = await pg.fetchval(TODAY)
    raw = await pg.fetchval("EXPLAIN (ANALYZE, FORMAT JSON)" + HISTORY_FIRST, "vera", 5)
    by_partition = scans(json.loads(raw)[0])
    executed = {key for key, node in by_partition.items() if node["Actual Loops"]}
    # Not the days made ahead (newer than vera's newest entry), nor the 29 days before.
    assert executed == {(partition_name(today), "debit")}
    assert by_partition[partition_name(today), "debit"]["Actual Rows"] == 5


async def test_a_later_page_skips_newer_partitions_and_leaves_older_ones_unread(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    await spread_history(pg, "yann", days=4, per_day=100)
    today = await pg.fetchval(TODAY)
    history = HistoryReader(settings.database_url)
    try:
        pages: list[list[str]] = []
        entries, last = await history.history("yann", 30, None)
        while entries:
            pages.append([e.transaction_id for e in entries])
            if last is None or len(entries) < 30:
                break
            cursor = last
            entries, last = await history.history("yann", 30, cursor)
    finally:
        await history.close()
    seen = [tx for page in pages for tx in page]
    expected = [f"yann-d{back}-{n}" for back in range(4) for n in range(100, 0, -1)]
    assert seen == expected  # across partition boundaries, nothing skipped or repeated

    # The page after the 60th entry of two days back starts in that day's partition.
    recorded_at, entry_id = await pg.fetchrow(
        "SELECT recorded_at, debit_seq FROM ledger_transfers WHERE transaction_id = 'yann-d2-60'"
    )
    raw = await pg.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON)" + HISTORY_AFTER, "yann", 20, recorded_at, entry_id
    )
    by_partition = scans(json.loads(raw)[0])
    assert (partition_name(today), "debit") not in by_partition  # pruned: newer than the cursor
    current = by_partition[partition_name(today - 2 * DAY), "debit"]
    assert (current["Node Type"], current["Actual Rows"]) == ("Index Scan", 20)
    assert by_partition[partition_name(today - 3 * DAY), "debit"]["Actual Loops"] == 0


async def test_flushers_starting_together_make_each_day_once(
    settings: Settings, pg: asyncpg.Connection
) -> None:
    stores = [LedgerWriter(settings.database_url) for _ in range(3)]
    try:
        ahead = 60 + (await pg.fetchval("SELECT count(*) FROM ledger_partitions"))
        runs = await asyncio.gather(
            *(s.maintain_partitions(ahead_days=ahead, retention_days=0) for s in stores)
        )
    finally:
        for store in stores:
            await store.close()
    made = [c.partition for changes in runs if changes for c in changes]
    assert made and len(made) == len(set(made))  # none twice, and none failed
    today = await pg.fetchval(TODAY)
    assert partition_name(today + ahead * DAY) in await partitions(pg)

"""Upgrades with data: from 943f4b2 with its purchases still in Redis (entries of the old
stream format not yet flushed, their idempotency keys still live), and from 6b597ba's ledger
(three rows a purchase, a global id) to one row a purchase numbered per account.

The old purchases are written the way 943f4b2's gateway wrote them: its append script (a
verbatim copy in tests/upgrade/), its idempotency key and marker, its JSON payload. The
old databases are written by those releases' own flusher statements (tests/upgrade/).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from hashlib import blake2b
from pathlib import Path
from typing import Final

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import PAYLOAD_FIELD, STREAM
from core.events import PurchaseRequest, encoder, request_decoder
from core.settings import Settings
from flusher.worker import Flusher
from gateway.api.schemas import HistoryEntry
from gateway.reads.history import HistoryReader
from ops.trace import trace_transaction
from tests.conftest import both_redis, env_for
from tests.helpers import (
    Gateway,
    HttpClient,
    idempotency_records,
    open_flusher,
    purchase,
    serving,
    stream_entry,
    v1_entry,
)
from tests.reconcile import assert_reconciles
from tests.upgrade.old_flushers import HERE, RELEASE_6B597BA, RELEASE_943F4B2

OLD_APPEND = (HERE / "append_943f4b2.lua").read_text()


def request(tx: str, amount: int = 20000) -> PurchaseRequest:
    return request_decoder.decode(json.dumps(purchase(tx, amount=amount)))


async def old_gateway_append(redis: Redis, tx: str, amount: int = 20000) -> str:
    """One purchase appended by 943f4b2's gateway: the new stream entry's id."""
    req = request(tx, amount)
    reply = await redis.eval(  # type: ignore[misc]
        OLD_APPEND,
        2,
        STREAM,
        b"monokera:{0}:idem:" + tx.encode(),
        "900",
        "0",
        blake2b(encoder.encode(req), digest_size=16).hexdigest().encode(),
        v1_entry(req, f"old-req-{tx}", 1_700_000_000_000_000)[b"p"],
    )
    return bytes(reply[0]).decode()


@both_redis
async def test_old_format_entries_are_read_and_flushed_beside_new_ones(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection, settings: Settings
) -> None:
    old_entry = await old_gateway_append(redis, "up-old", amount=4321)
    assert (await client.post("/purchase", json=purchase("up-new"))).status_code == 200
    [(_, old_fields), (_, new_fields)] = await redis.xrange(STREAM)
    assert list(old_fields) == [b"p"] and new_fields[b"v"] == b"2"

    view = await client.get("/transactions/up-old")
    assert view.status_code == 200, view.text
    body = view.json()
    assert (body["status"], body["stream_entry_id"]) == ("ACCEPTED", old_entry)
    assert body["request_id"] == "old-req-up-old"
    assert body["customer_info"]["debit_ammount"] == 4321
    assert [(leg["account"], leg["direction"]) for leg in body["legs"]] == [
        ("23131342342342321", "DEBIT"),
        ("23132131", "CREDIT"),
    ]
    traced = await trace_transaction(redis, pg, "up-old")
    assert (traced.stage, traced.stream_entry_id) == ("ACCEPTED", old_entry)
    assert traced.request_id == "old-req-up-old"

    assert await flusher.drain() == 2
    assert flusher.stats.dead_letters == 0
    rows = await pg.fetch(
        "SELECT transaction_id, amount, customer_account, seller_account, stream_entry_id"
        " FROM transactions ORDER BY transaction_id"
    )
    assert tuple(rows[0])[:4] == ("up-new", 20000, "23131342342342321", "23132131")
    assert tuple(rows[1]) == ("up-old", 4321, "23131342342342321", "23132131", old_entry)
    assert await pg.fetchval("SELECT count(*) FROM ledger_transfers") == 2
    persisted = (await client.get("/transactions/up-old")).json()
    assert persisted["status"] == "PERSISTED"


@both_redis
async def test_old_idempotency_keys_still_make_retries_replays_or_conflicts(
    settings: Settings, redis: Redis, tmp_path: Path
) -> None:
    """943f4b2's gateways stop with their keys live; this version's gateway starts after."""
    replayed_entry = await old_gateway_append(redis, "up-replay", amount=500)
    clashed_entry = await old_gateway_append(redis, "up-clash", amount=500)
    batch_entry = await old_gateway_append(redis, "up-batch", amount=500)
    async with serving(Gateway(env_for(settings), tmp_path / "gateway.log")) as client:
        replay = await client.post("/purchase", json=purchase("up-replay", amount=500))
        assert replay.status_code == 200, replay.text
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.headers["x-stream-entry-id"] == replayed_entry

        clash = await client.post("/purchase", json=purchase("up-clash", amount=501))
        assert clash.status_code == 409, clash.text
        assert clash.json()["error"] == "idempotency_conflict"

        batch = await client.post(
            "/purchases",
            json=[purchase("up-batch", amount=500), purchase("up-batch", amount=7)],
        )
        assert batch.status_code == 200, batch.text
        first, second = batch.json()
        assert first["transaction_id"] == "up-batch"
        assert second["error"] == "idempotency_conflict"

        assert await redis.xlen(STREAM) == 3  # nothing appended again
        assert clashed_entry != batch_entry
        assert not await idempotency_records(redis, "up-replay")  # the old key still rules


@contextlib.asynccontextmanager
async def fresh_database(settings: Settings) -> AsyncIterator[Settings]:
    """A database of its own, dropped on the way out: the settings pointing at it."""
    name = f"upgrade_{int(time.time() * 1000)}"
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = settings.database_url.rsplit("/", 1)[0] + "/" + name
            yield msgspec.structs.replace(settings, database_url=dsn)
        finally:
            await asyncio.wait_for(admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'), 30)
    finally:
        await admin.close()


async def drain(settings: Settings) -> Flusher:
    worker, close = await open_flusher(settings)
    try:
        await worker.drain()
    finally:
        await close()
    return worker


@both_redis
async def test_a_database_and_stream_943f4b2_wrote_upgrade_with_their_data(
    redis: Redis, settings: Settings
) -> None:
    async with fresh_database(settings) as old:
        conn = await asyncpg.connect(old.database_url)
        try:
            # What 943f4b2 left behind: its schema, purchases its flusher wrote, a duplicate
            # (a retry after its window, other amount), a dead letter, and a backlog still
            # in the stream.
            await RELEASE_943F4B2.create_schema(conn)
            for tx in ("up-1", "up-2", "up-3"):
                await old_gateway_append(redis, tx)
            await redis.delete(b"monokera:{0}:idem:up-1")  # its window passed
            await old_gateway_append(redis, "up-1", amount=7)
            await redis.xadd(STREAM, {PAYLOAD_FIELD: b"not an event"})
            assert await RELEASE_943F4B2.flush(redis, conn) == 3
            for tx in ("up-4", "up-5"):  # acknowledged, not yet flushed at the upgrade
                await old_gateway_append(redis, tx)
            await redis.delete(b"monokera:{0}:idem:up-2")
            await old_gateway_append(redis, "up-2", amount=9)  # conflicts, old format

            upgraded = await drain(old)  # migrates, then flushes the old-format backlog

            versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
            assert [v[0][:3] for v in versions][-2:] == ["007", "008"]
            assert (upgraded.stats.inserted, upgraded.stats.conflicting_duplicates) == (2, 1)
            duplicates = await conn.fetch(
                "SELECT transaction_id, amount, conflicting FROM duplicate_entries"
                " ORDER BY transaction_id"
            )
            # 943f4b2's row judged by its amount; the new one by amount and accounts.
            assert [tuple(r) for r in duplicates] == [("up-1", 7, True), ("up-2", 9, True)]
            assert await conn.fetchval("SELECT count(*) FROM transactions") == 5
            assert await conn.fetchval("SELECT count(*) FROM ledger_transfers") == 5
            assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 1
            totals = await conn.fetchrow(
                "SELECT debit_count, debited_total FROM account_totals"
                " WHERE account = '23131342342342321'"
            )
            assert tuple(totals) == (5, 5 * 20000)
            await assert_reconciles(redis, conn)
        finally:
            await conn.close()


OLD_HISTORY: Final = """
SELECT transaction_id, direction FROM ledger_entries WHERE account = $1
ORDER BY recorded_at DESC, entry_id DESC
"""
"""An account's history as 6b597ba read it, newest first."""

ACCOUNTS: Final = ("alice", "bob", "shop")


async def append(redis: Redis, tx: str, customer: str, seller: str) -> None:
    await redis.xadd(STREAM, stream_entry(tx, customer=customer, seller=seller))


async def move_back(conn: asyncpg.Connection, prefix: str, days: int) -> None:
    """The purchases ``prefix``* as if flushed ``days`` days ago, into that day's partition
    (made as that day's maintenance would have made it)."""
    day = await conn.fetchval(
        "SELECT date_trunc('day', clock_timestamp(), 'UTC') - make_interval(days => $1)", days
    )
    name = f"ledger_entries_p{day:%Y%m%d}"
    await conn.execute(
        f"CREATE TABLE {name} PARTITION OF ledger_entries"
        f" FOR VALUES FROM ('{day.isoformat()}') TO ('{(day + timedelta(days=1)).isoformat()}')"
    )
    shift = "make_interval(days => $2)"
    await conn.execute(
        f"UPDATE ledger_entries SET recorded_at = recorded_at - {shift}"
        " WHERE transaction_id LIKE $1 || '%'",
        prefix,
        days,
    )
    await conn.execute(
        f"UPDATE transactions SET persisted_at = persisted_at - {shift}"
        " WHERE transaction_id LIKE $1 || '%'",
        prefix,
        days,
    )


@both_redis
async def test_a_ledger_and_stream_6b597ba_wrote_move_to_one_row_per_purchase_in_order(
    redis: Redis, settings: Settings
) -> None:
    async with fresh_database(settings) as old:
        conn = await asyncpg.connect(old.database_url)
        try:
            # 6b597ba's ledger: three batches on three days (the oldest past a 30-day
            # retention, dropped by its maintenance), accounts on both sides, a
            # conflicting duplicate, a dead letter; then a backlog it never flushed.
            await RELEASE_6B597BA.create_schema(conn)
            for n in range(3):
                await append(redis, f"a-{n}", "alice", "shop")
            await append(redis, "a-3", "bob", "alice")
            assert await RELEASE_6B597BA.flush(redis, conn) == 4
            await move_back(conn, "a-", 40)
            for n in range(4):
                await append(redis, f"b-{n}", "bob" if n % 2 else "shop", "alice")
            await append(redis, "b-4", "alice", "bob")
            await redis.xadd(STREAM, {PAYLOAD_FIELD: b"not an event"})
            assert await RELEASE_6B597BA.flush(redis, conn) == 5
            await move_back(conn, "b-", 2)
            await append(redis, "c-0", "shop", "bob")
            await redis.xadd(STREAM, stream_entry("b-1", customer="alice", seller="shop"))
            assert await RELEASE_6B597BA.flush(redis, conn) == 1
            changes = await conn.fetch("SELECT * FROM ledger_maintain_partitions(1, 30)")
            assert [r["action"] for r in changes].count("dropped") == 1
            before = {a: await conn.fetch(OLD_HISTORY, a) for a in ACCOUNTS}
            counts = {
                r["account"]: r["n"]
                for r in await conn.fetch(
                    "SELECT account, debit_count + credit_count AS n FROM account_totals"
                )
            }
            for n in range(3):  # acknowledged, not flushed at the upgrade
                await append(redis, f"d-{n}", "alice", "bob")

            upgraded = await drain(old)  # migrates (008), then flushes the backlog

            assert upgraded.stats.inserted == 3
            assert not await conn.fetchval("SELECT to_regclass('ledger_entries') IS NOT NULL")
            assert await conn.fetchval("SELECT count(*) FROM transactions") == 13
            assert await conn.fetchval("SELECT count(*) FROM ledger_transfers") == 9  # 4 dropped
            history = HistoryReader(old.database_url)
            try:
                for account in ACCOUNTS:
                    pages = await all_pages(history, account, limit=2)
                    new = [(e.transaction_id, e.direction) for e in pages]
                    kept = [tuple(r) for r in before[account]]
                    added = 3 if account in ("alice", "bob") else 0
                    # The old order kept, the backlog's purchases on top of it.
                    assert new[added:] == kept, account
                    numbers = [e.entry_id for e in pages]
                    last = counts[account] + added
                    # Numbered without a gap down from the count: the dropped ones keep theirs.
                    assert numbers == list(range(last, last - len(numbers), -1)), account
            finally:
                await history.close()
            await assert_reconciles(redis, conn)
        finally:
            await conn.close()


async def all_pages(history: HistoryReader, account: str, limit: int) -> list[HistoryEntry]:
    entries, last = await history.history(account, limit, None)
    seen = list(entries)
    while len(entries) == limit and last is not None:
        entries, last = await history.history(account, limit, last)
        seen.extend(entries)
    return seen

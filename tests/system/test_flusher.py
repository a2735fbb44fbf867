"""The flusher against real Redis and PostgreSQL: rows, legs, exactly-once, reclaim, trim."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis

from core.constants import GROUP, STREAM
from core.events import request_decoder
from core.migrate import migrate
from core.settings import Settings
from devstack.processes import free_port
from flusher.errors import DatabaseUnavailable
from flusher.ledger_writer import LedgerWriter
from flusher.stream import GroupReader
from flusher.worker import Flusher, decode_entries
from tests.conftest import both_redis
from tests.helpers import HttpClient, entry_fields, forget_idempotency, purchase, stream_entry
from tests.reconcile import wait_for_rows


async def post_all(client: HttpClient, bodies: list[dict[str, object]]) -> list[str]:
    responses = await asyncio.gather(*(client.post("/purchase", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    return [r.json()["transaction_id"] for r in responses]


async def test_purchase_becomes_one_transaction_and_a_debit_and_a_credit(
    client: HttpClient, flusher: Flusher, pg: asyncpg.Connection
) -> None:
    response = await client.post(
        "/purchase", json=purchase("tx-legs", amount=4200, customer="buyer-1", seller="seller-9")
    )
    assert await flusher.drain() == 1

    tx = await pg.fetchrow("SELECT * FROM transactions WHERE transaction_id = 'tx-legs'")
    assert tx is not None
    assert (tx["customer_account"], tx["seller_account"], tx["amount"]) == (
        "buyer-1",
        "seller-9",
        4200,
    )
    assert tx["stream_entry_id"] == response.headers["x-stream-entry-id"]
    assert tx["request_id"] == response.headers["x-request-id"]
    assert tx["persisted_at"] >= tx["accepted_at"]
    ledger = await pg.fetch(
        "SELECT debit_account, debit_seq, credit_account, credit_seq, amount, recorded_at"
        " FROM ledger_transfers WHERE transaction_id = 'tx-legs'"
    )
    # One row: the buyer's DEBIT and the seller's CREDIT, each its account's first entry.
    assert [tuple(r)[:5] for r in ledger] == [("buyer-1", 1, "seller-9", 1, 4200)]
    assert ledger[0]["recorded_at"] == tx["persisted_at"]


async def test_a_batch_that_cannot_be_committed_is_not_acknowledged(
    client: HttpClient, flusher: Flusher, redis: Redis, settings: Settings
) -> None:
    await post_all(client, [purchase() for _ in range(5)])
    await flusher.prepare()
    entries = await flusher.read_batch()
    dead_port = free_port()
    down = Flusher(
        flusher.config,
        flusher.reader,
        LedgerWriter(f"postgresql://postgres@127.0.0.1:{dead_port}/x", timeout_s=1),
    )
    down.stop()  # so the write gives up at once instead of retrying
    with pytest.raises(DatabaseUnavailable):
        await down.process(entries)
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 5


async def test_entries_are_acknowledged_only_after_they_are_committed(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    await post_all(client, [purchase() for _ in range(5)])
    await flusher.prepare()
    entries = await flusher.read_batch()
    assert len(entries) == 5
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 5
    await flusher.write_batch(*decode_entries(entries))
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 5  # committed, not yet acked
    assert await pg.fetchval("SELECT count(*) FROM transactions") == 5
    await flusher.ack(entries)
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_redelivered_entry_is_not_written_twice(
    client: HttpClient, flusher: Flusher, pg: asyncpg.Connection
) -> None:
    ids = await post_all(client, [purchase() for _ in range(20)])
    await flusher.prepare()
    entries = await flusher.read_batch()
    await flusher.write_batch(*decode_entries(entries))  # committed, then "crashed" before XACK

    assert await flusher.drain() == 20  # own pending entries delivered again
    assert flusher.stats.redelivered == 20
    assert flusher.stats.inserted == 0
    assert flusher.stats.duplicates == 0
    assert await pg.fetchval("SELECT count(*) FROM duplicate_entries") == 0
    rows = await pg.fetch(
        "SELECT transaction_id, count(*) AS n FROM ledger_transfers GROUP BY transaction_id"
    )
    assert sorted(r["transaction_id"] for r in rows) == sorted(ids)
    assert {r["n"] for r in rows} == {1}


async def test_transaction_id_seen_past_the_idempotency_window_is_recorded_not_written(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    first = await client.post("/purchase", json=purchase("tx-late-retry", amount=100))
    await flusher.drain()
    await forget_idempotency(redis, "tx-late-retry")  # the window has passed
    late = await client.post("/purchase", json=purchase("tx-late-retry", amount=999))
    assert late.status_code == 200
    assert "idempotent-replayed" not in late.headers
    await flusher.drain()

    rows = await pg.fetch("SELECT amount, stream_entry_id FROM transactions")
    assert [tuple(r) for r in rows] == [(100, first.headers["x-stream-entry-id"])]
    assert await pg.fetchval("SELECT count(*) FROM ledger_transfers") == 1
    dup = await pg.fetchrow("SELECT * FROM duplicate_entries")
    assert dup is not None
    assert (dup["stream_entry_id"], dup["amount"]) == (late.headers["x-stream-entry-id"], 999)
    assert flusher.stats.duplicates == 1


async def test_two_entries_of_one_transaction_in_one_batch_write_the_first(
    flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    requests = [request_decoder.decode(json.dumps(purchase("tx-twice", amount=a))) for a in (5, 6)]
    ids = [(await redis.xadd(STREAM, entry_fields(r, "r", 1))).decode() for r in requests]
    assert await flusher.drain() == 2
    assert await pg.fetchval("SELECT amount FROM transactions") == 5
    assert await pg.fetchval("SELECT stream_entry_id FROM duplicate_entries") == ids[1]


@both_redis
async def test_entries_left_pending_by_a_dead_consumer_are_reclaimed(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    ids = await post_all(client, [purchase() for _ in range(30)])
    dead = GroupReader(redis, "dead-consumer")
    assert len(await dead.read(100, None)) == 30  # delivered to a consumer that then died
    await asyncio.sleep(flusher.config.claim_idle_ms / 1000 + 0.1)

    assert await flusher.drain() == 30
    assert flusher.stats.reclaimed == 30
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0
    stored = await pg.fetch("SELECT transaction_id FROM transactions")
    assert sorted(r["transaction_id"] for r in stored) == sorted(ids)


async def test_entries_pending_on_a_live_consumer_are_left_alone(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    await post_all(client, [purchase() for _ in range(3)])
    busy = GroupReader(redis, "busy-consumer")
    await busy.read(100, None)
    assert await flusher.drain() == 0  # not idle long enough to be taken over
    pending = await redis.xpending(STREAM, GROUP)
    assert pending["pending"] == 3


@both_redis
async def test_trim_never_removes_an_unflushed_entry(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    await post_all(client, [purchase() for _ in range(1000)])
    await flusher.prepare()
    flushed: list[str] = []
    while len(flushed) < 600:
        entries = await flusher.reader.read(100, None)
        await flusher.process(entries)
        flushed += [e for e, _ in entries]
    in_flight = await GroupReader(redis, "other").read(200, None)  # delivered, not acked
    unflushed = {e for e, _ in in_flight} | {
        (e.decode()) for e, _ in await redis.xrange(STREAM, f"({in_flight[-1][0]}", "+")
    }
    assert len(unflushed) == 400

    trimmed = await flusher.trim()

    remaining = {e.decode() for e, _ in await redis.xrange(STREAM)}
    assert unflushed <= remaining
    assert trimmed > 0
    assert await redis.xlen(STREAM) == 1000 - trimmed


async def test_trim_keeps_the_retention_window(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    await post_all(client, [purchase() for _ in range(300)])
    await flusher.drain()
    assert await flusher.reader.trim(retain_s=60) == 0
    assert await redis.xlen(STREAM) == 300


async def test_undecodable_entry_is_dead_lettered_and_does_not_block_the_rest(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    bad_id = (await redis.xadd(STREAM, {"p": b"not an event"})).decode()
    await client.post("/purchase", json=purchase("tx-after-bad"))
    assert await flusher.drain() == 2
    dead = await pg.fetch("SELECT stream_entry_id, payload, error FROM dead_letters")
    assert [(r["stream_entry_id"], r["payload"]) for r in dead] == [(bad_id, b"not an event")]
    assert "undecodable" in dead[0]["error"]
    assert await pg.fetchval("SELECT transaction_id FROM transactions") == "tx-after-bad"
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_entry_with_invalid_utf8_is_dead_lettered(
    flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    await redis.xadd(STREAM, {"p": b'{"transaction_id": "\xff\xfe"}'})
    assert await flusher.drain() == 1
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 1
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_invalid_format_2_entries_are_dead_lettered_by_field_and_the_batch_goes_on(
    flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    """One batch: a whole batch is checked in one call, and checked again entry by entry
    when it holds an invalid one, to tell which."""
    good = [await redis.xadd(STREAM, stream_entry(f"ok-{n}")) for n in range(3)]
    negative = stream_entry("bad-amount") | {b"amount": b"-5"}
    nul = stream_entry("bad-nul") | {b"seller_name": b"Shop\x00Inc"}
    control = stream_entry("bad-name") | {b"customer_name": b"Bell\x07"}
    bad = [await redis.xadd(STREAM, fields) for fields in (negative, nul, control)]
    good.append(await redis.xadd(STREAM, stream_entry("ok-3")))

    assert await flusher.drain() == 7
    stored = await pg.fetch("SELECT stream_entry_id FROM transactions ORDER BY 1")
    assert [r[0] for r in stored] == [i.decode() for i in good]
    dead = await pg.fetch("SELECT stream_entry_id, error FROM dead_letters ORDER BY 1")
    assert [r[0] for r in dead] == [i.decode() for i in bad]
    assert "`$.amount`" in dead[0]["error"]
    assert "NUL" in dead[1]["error"]
    assert "`$.customer_name`" in dead[2]["error"]


@both_redis
async def test_pending_entry_deleted_from_the_stream_is_dead_lettered_not_lost_track_of(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    await post_all(client, [purchase() for _ in range(3)])
    [(gone, _), *_] = await GroupReader(redis, "dead-consumer").read(10, None)
    await redis.xdel(STREAM, gone)
    await asyncio.sleep(flusher.config.claim_idle_ms / 1000 + 0.1)

    assert await flusher.drain() == 3
    assert await pg.fetchval("SELECT count(*) FROM transactions") == 2
    dead = await pg.fetchrow("SELECT stream_entry_id, error FROM dead_letters")
    assert dead is not None
    assert dead["stream_entry_id"] == gone
    assert "deleted" in dead["error"]
    assert (await redis.xpending(STREAM, GROUP))["pending"] == 0


async def test_running_flusher_recreates_a_deleted_stream_group_and_keeps_going(
    client: HttpClient, flusher: Flusher, redis: Redis, settings: Settings, pg: asyncpg.Connection
) -> None:
    running = asyncio.create_task(flusher.run())
    try:
        await client.post("/purchase", json=purchase("before-delete"))
        await wait_for_rows(settings.database_url, 1)
        await redis.delete(STREAM)
        await client.post("/purchase", json=purchase("after-delete"))
        await wait_for_rows(settings.database_url, 2, timeout=10)
    finally:
        flusher.stop()
        await running
    assert flusher.stats.groups_recreated >= 1
    incident = await pg.fetchrow("SELECT * FROM stream_incidents")
    assert incident is not None
    assert incident["consumer"] == settings.consumer
    assert incident["last_committed_entry_id"] is not None


async def test_consumer_group_is_recreated_from_the_start_if_it_vanished(
    client: HttpClient, flusher: Flusher, redis: Redis, pg: asyncpg.Connection
) -> None:
    await redis.delete(STREAM)
    await client.post("/purchase", json=purchase("tx-no-group"))  # stream re-created, no group
    assert await flusher.drain() == 1
    assert await pg.fetchval("SELECT count(*) FROM transactions") == 1


async def test_migrations_apply_once(pg: asyncpg.Connection) -> None:
    assert await migrate(pg) == []
    versions = await pg.fetch("SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [
        "001_purchases.sql",
        "002_duplicate_entries.sql",
        "003_stream_incidents.sql",
        "004_history_reads.sql",
        "005_ledger_partitions.sql",
        "006_stream_shards.sql",
        "007_conflicting_duplicates.sql",
        "008_ledger_transfers.sql",
    ]


async def test_a_small_batch_lingers_for_entries_arriving_just_after_it(
    settings: Settings, redis: Redis
) -> None:
    """Kafka's linger.ms: at moderate load a batch waits a few ms to fill before its commit,
    instead of paying a transaction for every handful of entries."""
    from tests.helpers import open_flusher

    lingering = msgspec.structs.replace(settings, batch_linger_ms=300, batch_size=10)
    worker, close = await open_flusher(lingering)
    try:
        await worker.reader.ensure_group()
        await redis.xadd(STREAM, {"p": b"first"})
        read = asyncio.create_task(worker.read_batch())
        await asyncio.sleep(0.1)
        await redis.xadd(STREAM, {"p": b"second"})
        assert len(await read) == 2
        await redis.xadd(STREAM, {"p": b"only"})
        started = asyncio.get_running_loop().time()
        assert len(await worker.read_batch()) == 1
        assert asyncio.get_running_loop().time() - started < 2  # bounded: one linger
        for i in range(10):
            await redis.xadd(STREAM, {"p": b"full-%d" % i})
        started = asyncio.get_running_loop().time()
        assert len(await worker.read_batch()) == 10
        assert asyncio.get_running_loop().time() - started < 0.25  # a full batch never waits
    finally:
        await close()

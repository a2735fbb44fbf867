"""Reads: a purchase traced end to end, an account's history page by page, its totals,
and a cache that never serves a committed entry's account without it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import CACHE_PATTERN, STREAM
from core.settings import Settings
from flusher.worker import Flusher
from gateway.api.schemas import HistoryPage
from gateway.reads.cache import ReadCache
from gateway.reads.history import HistoryReader
from gateway.redis_io.nodes import Nodes
from tests.helpers import HttpClient, forget_idempotency, purchase, raw_cursor, samples


async def metric(client: HttpClient, name: str) -> float:
    found = samples((await client.get("/metrics")).text, name)
    assert found, name
    return sum(value for _, value in found)


async def buy(client: HttpClient, tx: str, buyer: str, seller: str, amount: int = 100) -> None:
    reply = await client.post(
        "/purchase", json=purchase(tx, customer=buyer, seller=seller, amount=amount)
    )
    assert reply.status_code == 200, reply.text


async def test_a_purchase_is_traceable_the_instant_after_its_200(client: HttpClient) -> None:
    ok = await client.post("/purchase", json=purchase("trace-now", amount=321))
    view = await client.get("/transactions/trace-now")
    assert view.status_code == 200
    body = view.json()
    assert body["status"] == "ACCEPTED"
    assert body["persisted_at"] is None
    assert body["stream_entry_id"] == ok.headers["x-stream-entry-id"]
    assert body["request_id"] == ok.headers["x-request-id"]
    assert body["customer_info"]["debit_ammount"] == 321
    assert [leg["direction"] for leg in body["legs"]] == ["DEBIT", "CREDIT"]


async def test_a_flushed_purchase_is_persisted_and_stays_readable_after_trimming(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    ok = await client.post("/purchase", json=purchase("trace-later"))
    await flusher.drain()
    persisted = (await client.get("/transactions/trace-later")).json()
    assert persisted["status"] == "PERSISTED"
    assert persisted["persisted_at"] >= persisted["accepted_at"]
    assert persisted["stream_entry_id"] == ok.headers["x-stream-entry-id"]

    await redis.xtrim(STREAM, maxlen=0, approximate=False)
    await forget_idempotency(redis, "trace-later")
    await redis.delete(*await redis.keys(CACHE_PATTERN))
    again = await client.get("/transactions/trace-later")
    assert again.json() == persisted


async def test_an_accepted_purchase_read_while_redis_is_down_is_503_not_404(
    settings: Settings, tmp_path: Path
) -> None:
    from devstack.processes import free_port
    from devstack.redis_server import RedisServer
    from tests.conftest import env_for
    from tests.helpers import Gateway

    own = RedisServer(tmp_path / "redis", free_port())
    own.start()
    env = env_for(msgspec.structs.replace(settings, redis_url=own.url, redis_timeout_s=0.5))
    gateway = Gateway(env, tmp_path / "gateway.log")
    client = HttpClient(gateway.url)
    try:
        await client.post("/purchase", json=purchase("read-while-down"))
        own.kill()
        reply = await client.get("/transactions/read-while-down")
        assert reply.status_code == 503
    finally:
        await client.close()
        gateway.stop()
        own.stop()


async def test_unknown_transaction_is_404_in_the_usual_error_body(client: HttpClient) -> None:
    reply = await client.get("/transactions/never-seen")
    assert reply.status_code == 404
    assert reply.json()["error"] == "not_found"


async def test_transaction_ids_with_slashes_are_found_when_encoded(
    client: HttpClient, flusher: Flusher
) -> None:
    await client.post("/purchase", json=purchase("a/b c"))
    assert (await client.get("/transactions/" + quote("a/b c", safe=""))).json()["status"] == (
        "ACCEPTED"
    )


async def test_account_history_pages_newest_first_with_directions(
    client: HttpClient, flusher: Flusher
) -> None:
    for i in range(7):
        await buy(client, f"hist-{i}", "alice", "shop", amount=10 + i)
    await buy(client, "hist-sale", "bob", "alice", amount=99)
    await flusher.drain()

    first = (await client.get("/accounts/alice/transactions?limit=5")).json()
    assert [e["transaction_id"] for e in first["entries"]] == [
        "hist-sale", "hist-6", "hist-5", "hist-4", "hist-3",
    ]  # fmt: skip
    sale = first["entries"][0]
    assert (sale["direction"], sale["amount"], sale["counterparty"]) == ("CREDIT", 99, "bob")
    assert first["entries"][1]["direction"] == "DEBIT"
    second = (
        await client.get(f"/accounts/alice/transactions?limit=5&cursor={first['next_cursor']}")
    ).json()
    assert [e["transaction_id"] for e in second["entries"]] == ["hist-2", "hist-1", "hist-0"]
    assert second["next_cursor"] is None


async def test_bad_history_parameters_are_422_naming_them(client: HttpClient) -> None:
    for query, field in (
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
        (f"cursor={raw_cursor('k1.0')}", "cursor"),
        (f"cursor={raw_cursor('k-1.5')}", "cursor"),
        (f"cursor={raw_cursor('e5')}", "cursor"),  # a cursor from before partitioning
    ):
        reply = await client.get(f"/accounts/alice/transactions?{query}")
        assert reply.status_code == 422, query
        assert reply.json()["details"][0]["path"] == field
    bad_account = await client.get("/accounts/no%20spaces/transactions")
    assert bad_account.status_code == 422


async def test_pagination_with_concurrent_inserts_skips_and_repeats_nothing(
    client: HttpClient, flusher: Flusher
) -> None:
    for i in range(40):
        await buy(client, f"page-{i}", "carol", "shop")
    await flusher.drain()
    existing = {f"page-{i}" for i in range(40)}

    seen: list[str] = []
    cursor = ""
    for page in range(100):
        query = f"limit=7&cursor={cursor}" if cursor else "limit=7"
        body = (await client.get(f"/accounts/carol/transactions?{query}")).json()
        seen += [e["transaction_id"] for e in body["entries"]]
        # Meanwhile more purchases of carol's are committed.
        await buy(client, f"page-new-{page}", "carol", "shop")
        await buy(client, f"page-sold-{page}", "dave", "carol")
        await flusher.drain()
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen))  # nothing repeated
    assert set(seen) == existing  # nothing skipped, nothing newer slipped in behind


async def test_account_summary_keeps_totals_updated_by_the_flusher(
    client: HttpClient, flusher: Flusher, pg: asyncpg.Connection
) -> None:
    await buy(client, "sum-1", "erin", "shop", amount=100)
    await buy(client, "sum-2", "erin", "shop", amount=50)
    await buy(client, "sum-3", "shop", "erin", amount=7)
    await flusher.drain()
    summary = (await client.get("/accounts/erin")).json()
    assert summary["debited_total"] == 150
    assert summary["credited_total"] == 7
    assert (summary["debit_count"], summary["credit_count"]) == (2, 1)
    assert summary["first_activity_at"] <= summary["last_activity_at"]
    # The totals are kept, not computed: they equal a scan of the ledger.
    scanned = await pg.fetchval(
        "SELECT sum(amount) FROM ledger_transfers WHERE debit_account = 'erin'"
    )
    assert scanned == 150

    await flusher.drain()  # a redelivery or an empty batch changes nothing
    assert (await client.get("/accounts/erin")).json() == summary
    empty = (await client.get("/accounts/nobody")).json()
    assert (empty["debit_count"], empty["last_activity_at"]) == (0, None)


async def test_a_cached_page_is_served_without_touching_postgresql(
    client: HttpClient, flusher: Flusher
) -> None:
    await buy(client, "cache-1", "frank", "shop")
    await flusher.drain()
    first = await client.get("/accounts/frank/transactions")
    queries = await metric(client, "monokera_pg_queries_total")
    hits = await metric(client, "monokera_cache_hits_total")

    again = await client.get("/accounts/frank/transactions")
    assert again.body == first.body
    assert await metric(client, "monokera_pg_queries_total") == queries
    assert await metric(client, "monokera_cache_hits_total") == hits + 1


async def test_a_persisted_transaction_is_cached(client: HttpClient, flusher: Flusher) -> None:
    await buy(client, "cache-tx", "gina", "shop")
    await flusher.drain()
    await client.get("/transactions/cache-tx")
    queries = await metric(client, "monokera_pg_queries_total")
    assert (await client.get("/transactions/cache-tx")).json()["status"] == "PERSISTED"
    assert await metric(client, "monokera_pg_queries_total") == queries


async def test_a_flush_makes_the_next_read_fresh(client: HttpClient, flusher: Flusher) -> None:
    await buy(client, "fresh-1", "hank", "shop")
    await flusher.drain()
    before = (await client.get("/accounts/hank/transactions")).json()
    summary_before = (await client.get("/accounts/hank")).json()
    await client.get("/accounts/hank/transactions")  # now cached

    await buy(client, "fresh-2", "shop", "hank", amount=5)
    await flusher.drain()
    after = (await client.get("/accounts/hank/transactions")).json()
    assert [e["transaction_id"] for e in after["entries"]] == [
        "fresh-2",
        *[e["transaction_id"] for e in before["entries"]],
    ]
    assert (await client.get("/accounts/hank")).json()["credit_count"] == (
        summary_before["credit_count"] + 1
    )


async def test_a_read_in_flight_while_the_flusher_commits_cannot_leave_a_stale_page_behind(
    client: HttpClient, flusher: Flusher, settings: Settings
) -> None:
    """The read loads from PostgreSQL, the flusher commits and finishes its batch, then the
    read stores what it loaded: the next read must still see the new entry."""
    await buy(client, "race-1", "iris", "shop")
    await flusher.drain()
    await buy(client, "race-2", "iris", "shop")  # accepted, not yet flushed

    store = HistoryReader(settings.database_url)
    node = Nodes(settings)
    await node.start()
    cache = ReadCache(node, ttl_s=300, immutable_ttl_s=300)
    suffix = b"50:0"

    async def load_then_flush() -> bytes:
        entries, _ = await store.history("iris", 50, None)  # sees race-1 only
        await flusher.drain()  # race-2 committed, versions bumped, acknowledged
        return msgspec.json.encode(HistoryPage("iris", entries, None))

    try:
        stale = await cache.account_read("iris", b"h", suffix, load_then_flush)
    finally:
        await store.close()
        await node.close()
    assert b"race-1" in stale  # what the in-flight read answered, loaded before the commit
    fresh = (await client.get("/accounts/iris/transactions")).json()
    assert [e["transaction_id"] for e in fresh["entries"]] == ["race-2", "race-1"]


async def test_cache_survives_concurrent_reads_during_flushes(
    client: HttpClient, flusher: Flusher
) -> None:
    for i in range(20):
        await buy(client, f"busy-{i}", "jack", "shop")
        readers = [client.get("/accounts/jack/transactions?limit=500") for _ in range(5)]
        _, *pages = await asyncio.gather(flusher.drain(), *readers)
        assert all(p.status_code == 200 for p in pages)
        latest = (await client.get("/accounts/jack/transactions?limit=500")).json()
        assert len(latest["entries"]) == i + 1  # after each flush, the next read has it all

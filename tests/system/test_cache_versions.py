"""Cache versions that can never come back: a lost version key can cost a cache miss, never
a stale page; version keys expire with the cache instead of piling up forever; and a flusher
that dies between its COMMIT and its invalidation leaves no stale page served."""

from __future__ import annotations

from redis.asyncio import Redis

from core.cache_version import HOLD_TTL_FACTOR, BatchHold
from core.constants import account_hold_key, account_version_key
from core.settings import Settings
from flusher.worker import Flusher, decode_entries
from tests.conftest import both_redis
from tests.helpers import HttpClient, purchase

pytestmark = both_redis


async def buy_and_flush(client: HttpClient, flusher: Flusher, tx: str, buyer: str) -> None:
    reply = await client.post("/purchase", json=purchase(tx, customer=buyer, seller="shop"))
    assert reply.status_code == 200, reply.text
    await flusher.drain()


async def history(client: HttpClient, account: str) -> list[str]:
    reply = await client.get(f"/accounts/{account}/transactions")
    assert reply.status_code == 200, reply.text
    return [e["transaction_id"] for e in reply.json()["entries"]]


async def test_a_version_lost_with_redis_data_never_makes_an_old_page_fresh_again(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    await buy_and_flush(client, flusher, "ver-1", "vera")
    await buy_and_flush(client, flusher, "ver-2", "vera")
    assert await history(client, "vera") == ["ver-2", "ver-1"]  # cached now
    # Redis restarted without the version (or a failover lost the last bump); the page
    # cached under it survived (or came back from a replica).
    await redis.delete(account_version_key("vera"))
    # Two more flushes: a counter restarted from zero is back at the old page's version.
    await buy_and_flush(client, flusher, "ver-3", "vera")
    await buy_and_flush(client, flusher, "ver-4", "vera")
    assert await history(client, "vera") == ["ver-4", "ver-3", "ver-2", "ver-1"]


async def test_a_missing_version_is_recreated_and_the_page_cached_under_it(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    await buy_and_flush(client, flusher, "ver-miss-1", "walt")
    await redis.delete(account_version_key("walt"))
    assert await history(client, "walt") == ["ver-miss-1"]
    version = await redis.get(account_version_key("walt"))
    assert version is not None  # created by the read, the page stored under it
    assert await history(client, "walt") == ["ver-miss-1"]
    assert await redis.get(account_version_key("walt")) == version


async def test_versions_are_deleted_by_each_commit_and_created_by_reads_with_the_cache_ttl(
    client: HttpClient, flusher: Flusher, redis: Redis, settings: Settings
) -> None:
    await buy_and_flush(client, flusher, "ver-ttl-1", "xena")
    for account in ("xena", "shop"):  # released by the flusher: no version, no hold
        assert await redis.exists(account_version_key(account), account_hold_key(account)) == 0

    await history(client, "xena")  # creates the version and caches the page under it
    version = await redis.get(account_version_key("xena"))
    assert version is not None
    assert 0 < await redis.ttl(account_version_key("xena")) <= settings.cache_ttl_s

    await buy_and_flush(client, flusher, "ver-ttl-2", "xena")
    assert await redis.get(account_version_key("xena")) is None
    assert await history(client, "xena") == ["ver-ttl-2", "ver-ttl-1"]
    assert await redis.get(account_version_key("xena")) not in (None, version)


async def test_a_flusher_dying_between_commit_and_release_never_leaves_a_stale_page_served(
    client: HttpClient, flusher: Flusher, redis: Redis, settings: Settings
) -> None:
    await buy_and_flush(client, flusher, "die-1", "yuri")
    assert await history(client, "yuri") == ["die-1"]
    assert await history(client, "yuri") == ["die-1"]  # served from the cache now
    await client.post("/purchase", json=purchase("die-2", customer="yuri", seller="shop"))
    entries = await flusher.read_batch()
    good, bad = decode_entries(entries)

    # The flusher's steps up to its COMMIT, then it is killed: nothing released, no XACK.
    batch = BatchHold(leg.account for item in good for leg in item.event.legs)
    await flusher.write_batch(good, bad, batch)

    for _ in range(3):  # neither the old cached page nor a page cached from now on
        assert await history(client, "yuri") == ["die-2", "die-1"]
    hold_ttl = await redis.ttl(account_hold_key("yuri"))
    assert settings.cache_ttl_s < hold_ttl <= HOLD_TTL_FACTOR * settings.cache_ttl_s

    # The entry is delivered again, to this or another flusher: nothing more to insert,
    # the versions deleted again, the dead batch's hold left to expire.
    assert await flusher.process(entries) == 1
    assert await history(client, "yuri") == ["die-2", "die-1"]
    assert await redis.scard(account_hold_key("yuri")) == 1


async def test_reads_cache_again_once_the_holds_are_gone(
    client: HttpClient, flusher: Flusher, redis: Redis
) -> None:
    await buy_and_flush(client, flusher, "hold-1", "zoe")
    await redis.sadd(account_hold_key("zoe"), b"a batch being committed")
    await history(client, "zoe")
    assert await redis.get(account_version_key("zoe")) is None  # nothing cached under a hold
    await redis.delete(account_hold_key("zoe"))
    await history(client, "zoe")
    assert await redis.get(account_version_key("zoe")) is not None

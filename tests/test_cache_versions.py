"""Cache versions that can never come back: a lost version key can cost a cache miss, never
a stale page; and version keys expire with the cache instead of piling up forever."""

from __future__ import annotations

from redis.asyncio import Redis

from core.constants import account_version_key
from core.settings import Settings
from flusher.worker import Flusher
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


async def test_version_keys_expire_with_the_cache(
    client: HttpClient, flusher: Flusher, redis: Redis, settings: Settings
) -> None:
    await buy_and_flush(client, flusher, "ver-ttl-1", "xena")
    for account in ("xena", "shop"):  # bumped by the flusher
        ttl = await redis.ttl(account_version_key(account))
        assert 0 < ttl <= settings.cache_ttl_s, (account, ttl)
    versions = [await redis.get(account_version_key(a)) for a in ("xena", "shop")]
    assert versions[0] == versions[1]  # one new version per batch

    await redis.delete(account_version_key("xena"))
    await history(client, "xena")  # created by a read
    ttl = await redis.ttl(account_version_key("xena"))
    assert 0 < ttl <= settings.cache_ttl_s

    await buy_and_flush(client, flusher, "ver-ttl-2", "xena")
    assert await redis.get(account_version_key("xena")) not in (None, *versions)

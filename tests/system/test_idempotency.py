"""Retries are safe: one transaction_id, one stream entry, whatever the clients do."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from core.constants import STREAM
from tests.conftest import both_redis
from tests.helpers import HttpClient, idempotency_records, purchase

pytestmark = both_redis


async def test_retry_with_the_same_body_replays_the_original_response(
    client: HttpClient, redis: Redis
) -> None:
    first = await client.post("/purchase", json=purchase("idem-1"))
    retry = await client.post("/purchase", json=purchase("idem-1"))

    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.body == first.body
    assert retry.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert retry.headers["x-stream-entry-id"] == first.headers["x-stream-entry-id"]
    assert await redis.xlen(STREAM) == 1


async def test_retry_formatted_differently_is_still_the_same_purchase(
    client: HttpClient, redis: Redis
) -> None:
    body = purchase("idem-format")
    await client.post("/purchase", json=body)
    spaced = json.dumps(body, indent=4).encode()
    retry = await client.post(
        "/purchase", content=spaced, headers={"content-type": "application/json"}
    )
    assert retry.headers["idempotent-replayed"] == "true"
    assert await redis.xlen(STREAM) == 1


async def test_same_transaction_id_with_a_different_body_is_409(
    client: HttpClient, redis: Redis
) -> None:
    await client.post("/purchase", json=purchase("idem-2", amount=100))
    conflict = await client.post("/purchase", json=purchase("idem-2", amount=101))
    assert conflict.status_code == 409
    body = conflict.json()
    assert body["error"] == "idempotency_conflict"
    assert [d["path"] for d in body["details"]] == ["$.transaction_id"]
    assert await redis.xlen(STREAM) == 1


async def test_fifty_concurrent_posts_of_one_id_make_one_entry_and_49_replays(
    client: HttpClient, redis: Redis
) -> None:
    replies = await asyncio.gather(
        *(client.post("/purchase", json=purchase("idem-race")) for _ in range(50))
    )
    assert {r.status_code for r in replies} == {200}
    replayed = [r for r in replies if r.headers.get("idempotent-replayed") == "true"]
    assert len(replayed) == 49
    assert len({r.headers["x-stream-entry-id"] for r in replies}) == 1
    assert await redis.xlen(STREAM) == 1


async def test_idempotency_record_lives_at_least_the_window_and_at_most_a_bucket_more(
    client: HttpClient, redis: Redis
) -> None:
    await client.post("/purchase", json=purchase("idem-ttl"))
    [bucket] = await idempotency_records(redis, "idem-ttl")
    ttl = await redis.ttl(bucket)
    assert 899 <= ttl <= 900 + 450  # MONOKERA_IDEMPOTENCY_TTL_S default, buckets of 450 s

"""POST /purchases: up to 1,000 purchases, one result per item, each atomic on its own."""

from __future__ import annotations

import asyncpg
from redis.asyncio import Redis

from core.constants import STREAM
from flusher.worker import Flusher
from tests.helpers import HttpClient, purchase
from tests.reconcile import assert_exactly_once


async def test_each_item_gets_its_own_result_in_order(
    client: HttpClient, redis: Redis, flusher: Flusher, pg: asyncpg.Connection
) -> None:
    await client.post("/purchase", json=purchase("batch-known", amount=5))
    bad = purchase("batch-bad")
    bad["customer_info"]["ammount"] = "lots"
    items = [
        purchase("batch-1", amount=10),
        bad,
        purchase("batch-2", amount=20),
        purchase("batch-1", amount=11),  # same id, different purchase
        purchase("batch-known", amount=5),  # a retry of an earlier purchase
        [1, 2],
    ]
    reply = await client.post("/purchases", json=items)
    assert reply.status_code == 200
    results = reply.json()
    assert len(results) == len(items)
    assert results[0]["customer_info"]["debit_ammount"] == 10
    assert (results[1]["error"], results[1]["details"][0]["path"]) == (
        "validation_error",
        "$[1].customer_info.ammount",
    )
    assert results[2]["transaction_id"] == "batch-2"
    assert (results[3]["error"], results[3]["details"][0]["path"]) == (
        "idempotency_conflict",
        "$[3].transaction_id",
    )
    assert results[4]["transaction_id"] == "batch-known"  # replayed, not appended again
    assert results[5]["error"] == "validation_error"
    assert await redis.xlen(STREAM) == 3  # batch-known, batch-1, batch-2

    await flusher.drain()
    await assert_exactly_once(pg, ["batch-known", "batch-1", "batch-2"])


async def test_a_thousand_purchases_in_one_request(
    client: HttpClient, redis: Redis, flusher: Flusher, pg: asyncpg.Connection
) -> None:
    items = [purchase(f"bulk-{i}") for i in range(1000)]
    reply = await client.post("/purchases", json=items)
    assert reply.status_code == 200
    assert all("error" not in r for r in reply.json())
    await flusher.drain()
    await assert_exactly_once(pg, [f"bulk-{i}" for i in range(1000)])


async def test_malformed_batches_are_rejected_whole(client: HttpClient) -> None:
    headers = {"content-type": "application/json"}
    cases = [
        (b"[", 400, "malformed_json"),
        (b'{"transaction_id": "x"}', 422, "validation_error"),
        (b"[]", 422, "validation_error"),
        (b"[" + b",".join([b"{}"] * 1001) + b"]", 422, "validation_error"),
    ]
    for body, status, code in cases:
        reply = await client.post("/purchases", content=body, headers=headers)
        assert (reply.status_code, reply.json()["error"]) == (status, code), body[:20]

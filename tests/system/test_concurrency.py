"""2,000 concurrent purchases: all acknowledged, all persisted once, in far fewer round trips."""

from __future__ import annotations

import asyncio

import asyncpg
from redis.asyncio import Redis

from flusher.worker import Flusher
from tests.helpers import HttpClient, metric_total, purchase
from tests.reconcile import assert_exactly_once

CONCURRENT = 2000


async def gateway_round_trips(client: HttpClient) -> int:
    metrics = (await client.get("/metrics")).text
    return int(metric_total(metrics, "monokera_redis_append_round_trips_total"))


async def test_concurrent_purchases_share_round_trips_and_persist_exactly_once(
    client: HttpClient, redis: Redis, flusher: Flusher, pg: asyncpg.Connection
) -> None:
    await client.post("/purchase", json=purchase())  # warm the connection pools
    await asyncio.gather(*(client.get("/healthz") for _ in range(256)))
    trips_before = await gateway_round_trips(client)
    reads_before = (await redis.info("stats"))["total_reads_processed"]

    responses = await asyncio.gather(
        *(client.post("/purchase", json=purchase(f"conc-{i}")) for i in range(CONCURRENT))
    )

    reads = (await redis.info("stats"))["total_reads_processed"] - reads_before - 1
    trips = await gateway_round_trips(client) - trips_before
    assert [r.status_code for r in responses] == [200] * CONCURRENT
    print(f"\n{CONCURRENT} purchases: {trips} append round trips, {reads} Redis read events")
    assert 0 < trips < CONCURRENT / 4
    assert 0 < reads < CONCURRENT / 4  # Redis's own count agrees with the gateway's

    await flusher.drain()
    acknowledged = [r.json()["transaction_id"] for r in responses]
    warmup = await pg.fetchval(
        "SELECT transaction_id FROM transactions WHERE transaction_id NOT LIKE 'conc-%'"
    )
    await assert_exactly_once(pg, [*acknowledged, warmup])

"""Sharded streams on one Redis: several gateway workers, two flusher processes, one dies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import GROUP, shard_of, stream_key
from core.settings import Settings
from tests.conftest import env_for
from tests.helpers import Gateway, flusher_processes, idempotency_record_count, purchase, serving
from tests.reconcile import (
    assert_exactly_once,
    assert_reconciles,
    wait_for_consumers,
    wait_for_rows,
)

SHARDS = 4


async def idempotency_keys_per_shard(redis: Redis) -> list[int]:
    return [await idempotency_record_count(redis, s) for s in range(SHARDS)]


async def test_sharded_purchases_reach_postgres_exactly_once_while_a_flusher_is_killed(
    settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    sharded = msgspec.structs.replace(settings, stream_shards=SHARDS)
    gateway = Gateway(env_for(sharded), tmp_path / "gateway.log", workers=2)
    flushers = flusher_processes(
        lambda name: env_for(msgspec.structs.replace(sharded, consumer=name)),
        tmp_path,
        "shard-flusher",
    )
    async with serving(gateway, *flushers) as client:
        first = [f"sharded-a-{i}" for i in range(600)]
        replies = await asyncio.gather(*(client.post("/purchase", json=purchase(t)) for t in first))
        assert [r.status_code for r in replies] == [200] * len(first)
        await wait_for_rows(sharded.database_url, len(first))
        # Both read every shard before one dies, so that both show in every group below.
        await wait_for_consumers(redis, SHARDS, {"shard-flusher-0", "shard-flusher-1"})

        flushers[0].kill()  # its pending entries, if any, go to the survivor
        second = [f"sharded-b-{i}" for i in range(600)]
        replies = await asyncio.gather(
            *(client.post("/purchase", json=purchase(t)) for t in second)
        )
        assert [r.status_code for r in replies] == [200] * len(second)
        await wait_for_rows(sharded.database_url, len(first) + len(second))

        # Every shard took its share, and both flushers worked every shard's group.
        per_shard = await idempotency_keys_per_shard(redis)
        assert sum(per_shard) == len(first) + len(second)
        assert min(per_shard) > 150, per_shard
        for shard in range(SHARDS):
            consumers = await redis.xinfo_consumers(stream_key(shard), GROUP)
            names = {c["name"].decode() for c in consumers}
            assert {"shard-flusher-0", "shard-flusher-1"} <= names

        await assert_exactly_once(pg, first + second)
        await assert_reconciles(redis, pg, SHARDS)

        # Reads find a purchase in whichever shard it went to.
        for tx in (first[0], second[-1]):
            view = (await client.get(f"/transactions/{tx}")).json()
            assert view["status"] == "PERSISTED" and view["transaction_id"] == tx
        summary = (await client.get("/accounts/23131342342342321")).json()
        assert summary["debit_count"] == len(first) + len(second)


async def test_accepted_purchase_is_traceable_in_its_shard_before_any_flush(
    settings: Settings, tmp_path: Path
) -> None:
    sharded = msgspec.structs.replace(settings, stream_shards=SHARDS)
    gateway = Gateway(env_for(sharded), tmp_path / "gateway.log")
    async with serving(gateway) as client:
        ids = [f"unflushed-{i}" for i in range(8)]
        assert len({shard_of(t, SHARDS) for t in ids}) > 1
        for tx in ids:
            assert (await client.post("/purchase", json=purchase(tx))).status_code == 200
            view = (await client.get(f"/transactions/{tx}")).json()
            assert view["status"] == "ACCEPTED", view

"""Stream entry ids are unique per stream only: every row naming one names its shard too, and
entries left in streams above a lowered shard count are never silently stranded."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import GROUP, PAYLOAD_FIELD, shard_of, stream_key
from core.settings import Settings
from flusher.connections import open_flushers
from ops.reconcile import reconcile, render
from tests.conftest import env_for
from tests.helpers import FlusherProcess, Gateway, purchase, serving, stream_entry


async def flush_shards(settings: Settings, shards: int = 2) -> None:
    flushers, close = await open_flushers(msgspec.structs.replace(settings, stream_shards=shards))
    try:
        for flusher in flushers:
            await flusher.drain()
    finally:
        await close()


async def test_dead_letters_with_the_same_entry_id_in_two_shards_are_both_kept(
    settings: Settings, redis: Redis, pg: asyncpg.Connection
) -> None:
    for shard in (0, 1):
        await redis.xadd(stream_key(shard), {PAYLOAD_FIELD: b"not an event"}, id="5-1")
    await flush_shards(settings)
    assert await pg.fetchval("SELECT count(*) FROM dead_letters WHERE stream_entry_id = '5-1'") == 2


async def test_duplicates_with_the_same_entry_id_in_two_shards_are_both_kept(
    settings: Settings, redis: Redis, pg: asyncpg.Connection
) -> None:
    for shard, tx in ((0, "dup-a"), (1, "dup-b")):
        await redis.xadd(stream_key(shard), stream_entry(tx), id="1-1")
        await redis.xadd(stream_key(shard), stream_entry(tx), id="2-1")  # a retry
    await flush_shards(settings)
    rows = await pg.fetch(
        "SELECT transaction_id FROM duplicate_entries WHERE stream_entry_id = '2-1'"
    )
    assert sorted(r[0] for r in rows) == ["dup-a", "dup-b"]


async def test_reconcile_finds_a_lost_entry_whose_id_another_shard_stored(
    settings: Settings, redis: Redis, pg: asyncpg.Connection
) -> None:
    await redis.xadd(stream_key(0), stream_entry("kept"), id="7-1")
    await flush_shards(settings, shards=1)
    # Shard 1's entry with the same id is acknowledged without ever being written.
    await redis.xadd(stream_key(1), stream_entry("lost"), id="7-1")
    await redis.xgroup_create(stream_key(1), GROUP, id="0")
    await redis.xreadgroup(GROUP, "careless", {stream_key(1): ">"})
    await redis.xack(stream_key(1), GROUP, "7-1")

    report = await reconcile(redis, pg, shards=2)
    assert report.acknowledged_missing_in_postgres == [f"{stream_key(1)} 7-1"], render(report)
    assert not report.ok


async def test_a_flusher_refuses_to_start_below_the_shard_count_with_unflushed_entries(
    settings: Settings, redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    two = msgspec.structs.replace(settings, stream_shards=2)
    gateway = Gateway(env_for(two), tmp_path / "gateway.log")
    ids = [f"strand-{i}" for i in range(12)]
    async with serving(gateway) as client:  # no flusher yet
        replies = await asyncio.gather(*(client.post("/purchase", json=purchase(t)) for t in ids))
        assert [r.status_code for r in replies] == [200] * len(ids)
    in_shard_1 = sum(shard_of(t, 2) == 1 for t in ids)
    assert in_shard_1 > 0

    one = msgspec.structs.replace(settings, stream_shards=1, consumer="one-shard")
    process = FlusherProcess(env_for(one), tmp_path / "flusher.log")
    try:
        status = await asyncio.to_thread(process.proc.wait, 30)
    finally:
        process.stop()
    output = process.output()
    assert status == 2, output
    assert stream_key(1) in output and f"{in_shard_1} unflushed" in output, output
    assert "MONOKERA_STREAM_SHARDS=2" in output, output

    report = await reconcile(redis, pg, shards=1)
    assert report.stranded == {stream_key(1): in_shard_1}, render(report)
    assert not report.ok
    assert "STRANDED" in render(report)

    await flush_shards(settings)  # with the count they were written with
    report = await reconcile(redis, pg, shards=1)
    assert report.stranded == {} and report.ok, render(report)
    assert await pg.fetchval("SELECT count(*) FROM transactions") == len(ids)

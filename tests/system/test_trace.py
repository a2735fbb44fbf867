"""The trace tool, run as a command, at each stage of a purchase's life."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import asyncpg
import msgspec
from redis.asyncio import Redis

from core.constants import STREAM, shard_of, stream_key
from core.groups import ensure_group
from core.settings import Settings
from flusher.stream import GroupReader
from flusher.worker import Flusher
from ops.trace import trace_transaction
from tests.conftest import both_redis, env_for
from tests.helpers import (
    ROOT,
    HttpClient,
    forget_idempotency,
    open_flusher,
    purchase,
    stream_entry,
)


def trace(settings: Settings, *args: str) -> tuple[int, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "ops.trace", *args, "--json"],
        env=env_for(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done.returncode, json.loads(done.stdout)


async def test_trace_follows_a_purchase_through_every_stage(
    client: HttpClient, flusher: Flusher, redis: Redis, settings: Settings
) -> None:
    ok = await client.post("/purchase", json=purchase("traced"))
    entry = ok.headers["x-stream-entry-id"]

    code, accepted = trace(settings, "tx", "traced")
    assert code == 0
    assert (accepted["stage"], accepted["stream_entry_id"], accepted["in_stream"]) == (
        "ACCEPTED",
        entry,
        True,
    )
    assert accepted["request_id"] == ok.headers["x-request-id"]

    await GroupReader(redis, "busy-consumer").read(10, None)
    _, pending = trace(settings, "tx", "traced")
    assert pending["stage"] == "PENDING"
    assert pending["pending_consumer"] == "busy-consumer"
    assert pending["delivery_count"] == 1

    await asyncio.sleep(settings.claim_idle_ms / 1000 + 0.1)
    await flusher.drain()  # takes it over from the idle consumer
    _, persisted = trace(settings, "tx", "traced")
    assert persisted["stage"] == "PERSISTED"
    assert persisted["persisted_entry_id"] == entry

    await redis.xtrim(STREAM, maxlen=0, approximate=False)
    await forget_idempotency(redis, "traced")
    _, trimmed = trace(settings, "tx", "traced")
    assert (trimmed["stage"], trimmed["in_stream"]) == ("PERSISTED", False)
    assert trimmed["stream_entry_id"] == entry

    await client.post("/purchase", json=purchase("traced", amount=1))  # past the window
    await flusher.drain()
    _, duplicate = trace(settings, "tx", "traced")
    assert len(duplicate["rejected_duplicates"]) == 1


async def test_an_entry_dropped_from_the_group_is_reported_orphaned(
    client: HttpClient, redis: Redis, settings: Settings
) -> None:
    await client.post("/purchase", json=purchase("orphan"))
    await GroupReader(redis, "doomed-consumer").read(10, None)
    await redis.xgroup_delconsumer(STREAM, "flusher", "doomed-consumer")  # drops its pending
    _, orphan = trace(settings, "tx", "orphan")
    assert orphan["stage"] == "ORPHANED"


async def test_unknown_transaction_exits_1(settings: Settings, redis: Redis) -> None:
    code, body = trace(settings, "tx", "nobody-sent-this")
    assert (code, body["stage"]) == (1, "UNKNOWN")


async def test_stream_view_reports_length_groups_lag_and_pending(
    client: HttpClient, redis: Redis, settings: Settings
) -> None:
    for _ in range(5):
        await client.post("/purchase", json=purchase())
    await GroupReader(redis, "slow-consumer").read(2, None)
    code, view = trace(settings, "stream")
    assert code == 0
    assert view["length"] == 5
    [group] = view["groups"]
    assert (group["name"], group["pending"], group["lag"]) == ("flusher", 2, 3)
    assert [c["name"] for c in group["consumers"]] == ["slow-consumer"]
    assert isinstance(view["oldest_unacked_age_s"], float)
    assert view["memory_bytes"] > 0


@both_redis
async def test_a_persisted_purchase_is_traced_in_the_shard_it_was_flushed_from(
    settings: Settings, redis: Redis, pg: asyncpg.Connection
) -> None:
    sharded = msgspec.structs.replace(settings, stream_shards=4)
    tx = next(t for t in (f"moved-{i}" for i in range(100)) if shard_of(t, 4) == 3)
    fields = stream_entry(tx, customer="acc-1", seller="acc-2", request_id="req-moved")
    await ensure_group(redis, stream_key(3))
    entry = (await redis.xadd(stream_key(3), fields)).decode()
    worker, close = await open_flusher(sharded, shard=3)
    try:
        assert await worker.drain() == 1
    finally:
        await close()
    # Shard 0 holds an entry of the same id (ids are unique per stream only).
    await pg.execute(
        "INSERT INTO dead_letters (stream_shard, stream_entry_id, payload, error)"
        " VALUES (0, $1, '', 'shard 0''s'), (3, $1, '', 'shard 3''s')",
        entry,
    )
    # The shard count was lowered to 1 since: the row's shard still says where it came from.
    traced = await trace_transaction(redis, pg, tx, 1)
    assert (traced.stage, traced.stream_shard, traced.in_stream) == ("PERSISTED", 3, True)
    assert (traced.stream_entry_id, traced.request_id) == (entry, "req-moved")
    assert traced.dead_letter == "shard 3's"

"""The whole pipeline on a real Redis Cluster: sharded streams, two gateway workers, two
flushers, and a master killed under load in the durable-ack mode (WAIT for a replica)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import asyncpg
import msgspec
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster as ClusterClient

from core.constants import idempotency_key, stream_key
from core.settings import Settings
from devstack.redis_cluster import RedisCluster, command
from gateway.ingest.appender import StreamAppender
from gateway.ingest.legacy_keys import LegacyKeyWatch
from gateway.redis_io.nodes import Nodes
from ops.trace import trace_transaction
from tests.conftest import both_redis, env_for
from tests.helpers import FlusherProcess, Gateway, HttpClient, flusher_processes, purchase, serving
from tests.reconcile import assert_exactly_once, assert_reconciles, wait_for_rows

SHARDS = 6

pytestmark = both_redis


@pytest.fixture
def cluster_settings(settings: Settings, redis_cluster: RedisCluster) -> Iterator[Settings]:
    redis_cluster.wait_settled()
    for master in redis_cluster.masters():
        command(master, "FLUSHALL")
    yield msgspec.structs.replace(
        settings, redis_url=redis_cluster.seed_url, redis_cluster=True, stream_shards=SHARDS
    )


@pytest.fixture
async def cluster_redis(cluster_settings: Settings) -> AsyncIterator[Redis]:
    client = ClusterClient.from_url(cluster_settings.redis_url)
    yield cast(Redis, client)
    await client.aclose()


def start_pipeline(settings: Settings, tmp_path: Path) -> tuple[Gateway, list[FlusherProcess]]:
    gateway = Gateway(env_for(settings), tmp_path / "gateway.log", workers=2)
    flushers = flusher_processes(
        lambda name: env_for(msgspec.structs.replace(settings, consumer=name)),
        tmp_path,
        "cluster-flusher",
    )
    return gateway, flushers


async def test_purchases_spread_over_every_master_and_persist_exactly_once(
    cluster_settings: Settings,
    cluster_redis: Redis,
    redis_cluster: RedisCluster,
    pg: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    gateway, flushers = start_pipeline(cluster_settings, tmp_path)
    async with serving(gateway, *flushers) as client:
        ids = [f"cluster-{i}" for i in range(900)]
        replies = await asyncio.gather(*(client.post("/purchase", json=purchase(t)) for t in ids))
        assert [r.status_code for r in replies] == [200] * len(ids)
        await wait_for_rows(cluster_settings.database_url, len(ids))
        await assert_exactly_once(pg, ids)
        await assert_reconciles(cluster_redis, pg, SHARDS)

        owners = {redis_cluster.master_for_key(stream_key(s)).port for s in range(SHARDS)}
        assert len(owners) == 3, "the shards' streams should live on every master"
        keys_per_master = [int(command(m, "DBSIZE")) for m in redis_cluster.masters()]
        assert all(n > 0 for n in keys_per_master), keys_per_master

        view = (await client.get(f"/transactions/{ids[0]}")).json()
        assert view["status"] == "PERSISTED"
        traced = await trace_transaction(cluster_redis, pg, ids[1], SHARDS)  # make trace
        assert traced.stage == "PERSISTED" and traced.stream_entry_id is not None
        history = (await client.get("/accounts/23132131/transactions?limit=5")).json()
        assert len(history["entries"]) == 5  # cached through the cluster too
        again = (await client.get("/accounts/23132131/transactions?limit=5")).json()
        assert again == history
        assert (await client.get("/accounts/23132131")).json()["credit_count"] == len(ids)


async def test_replays_conflicts_and_accepted_reads_on_every_master(
    cluster_settings: Settings, cluster_redis: Redis, pg: asyncpg.Connection, tmp_path: Path
) -> None:
    """No flusher: every purchase stays ACCEPTED, found through its idempotency record in
    its shard's bucket, on whichever master holds that shard."""
    ids = [f"cluster-idem-{i}" for i in range(60)]
    async with serving(Gateway(env_for(cluster_settings), tmp_path / "gateway.log")) as client:
        first = await asyncio.gather(*(client.post("/purchase", json=purchase(t)) for t in ids))
        assert [r.status_code for r in first] == [200] * len(ids)
        again = await asyncio.gather(*(client.post("/purchase", json=purchase(t)) for t in ids))
        assert all(r.headers.get("idempotent-replayed") == "true" for r in again)
        assert [r.headers["x-stream-entry-id"] for r in again] == [
            r.headers["x-stream-entry-id"] for r in first
        ]
        clash = await client.post("/purchase", json=purchase(ids[0], amount=1))
        assert clash.status_code == 409, clash.text
        batch = await client.post("/purchases", json=[purchase(t) for t in ids[:10]])
        assert all("error" not in item for item in batch.json())
        for tx, reply in zip(ids[:6], first, strict=False):
            view = (await client.get(f"/transactions/{tx}")).json()
            assert (view["status"], view["stream_entry_id"]) == (
                "ACCEPTED",
                reply.headers["x-stream-entry-id"],
            )
        traced = await trace_transaction(cluster_redis, pg, ids[1], SHARDS)
        assert traced.stage == "ACCEPTED" and traced.idempotency_ttl_s
        lengths = [await cluster_redis.xlen(stream_key(s)) for s in range(SHARDS)]
        assert sum(lengths) == len(ids)


async def test_legacy_keys_on_any_master_are_read_until_none_is_left(
    cluster_settings: Settings, cluster_redis: Redis
) -> None:
    """The watch scans every master, not just those the appender has written to yet."""
    nodes = Nodes(cluster_settings)
    await nodes.start()
    appender = StreamAppender(nodes, shards=SHARDS)
    watch = LegacyKeyWatch(nodes, appender)
    try:
        assert len(nodes.masters()) == 3
        for shard in range(SHARDS):
            old = idempotency_key(shard, f"old-{shard}")
            await cluster_redis.set(old, b"0" * 16 + b"|1-1", ex=60)
            assert await watch.check() is False, shard
            await cluster_redis.delete(old)
        assert await watch.check() is True
        assert not appender.legacy_keys
    finally:
        await appender.close()
        await nodes.close()


async def settle_and_count_lost(
    settings: Settings, pg: asyncpg.Connection, acknowledged: list[str], unanswered: list[str]
) -> int:
    """Wait until the flushers have nothing left, then count acknowledged purchases missing;
    check that what is stored was sent and is stored once with both legs."""
    previous, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 3:
        count = await pg.fetchval("SELECT count(*) FROM transactions")
        if count != previous:
            previous, stable_since = count, time.monotonic()
        await asyncio.sleep(0.2)
    stored = {r[0] for r in await pg.fetch("SELECT transaction_id FROM transactions")}
    lost = [tx for tx in acknowledged if tx not in stored]
    await assert_exactly_once(pg, [tx for tx in acknowledged if tx in stored], unanswered)
    return len(lost)


async def post_until_answered(client: HttpClient, tx: str, give_up_at: float) -> bool:
    """True once a 200 came back; 503s (the failover window) are retried, as clients do."""
    while time.monotonic() < give_up_at:
        reply = await client.post("/purchase", json=purchase(tx))
        if reply.status_code == 200:
            return True
        assert reply.status_code == 503, reply.text
        await asyncio.sleep(0.05)
    return False


@pytest.mark.parametrize("ack_replicas", [1, 0], ids=["wait-acks", "default-acks"])
async def test_master_killed_under_load(
    ack_replicas: int,
    cluster_settings: Settings,
    redis_cluster: RedisCluster,
    pg: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """MONOKERA_ACK_REPLICAS=1: a 200 means a replica has the purchase, so the replica that
    takes over has every acknowledged one: none may be lost. Default acks: the replica may
    not have the last acknowledged appends yet; those are lost with the master (counted and
    printed), and still nothing is stored twice or stored that nobody sent."""
    durable = msgspec.structs.replace(
        cluster_settings, ack_replicas=ack_replicas, ack_replicas_timeout_ms=500
    )
    gateway, flushers = start_pipeline(durable, tmp_path)
    client = HttpClient(gateway.url)
    acknowledged: list[str] = []
    unanswered: list[str] = []
    numbers = itertools.count()
    stop_at = time.monotonic() + 8

    async def load() -> None:
        while time.monotonic() < stop_at:
            batch = [f"failover-{next(numbers)}" for _ in range(25)]
            answered = await asyncio.gather(
                *(post_until_answered(client, tx, stop_at + 15) for tx in batch)
            )
            for tx, ok in zip(batch, answered, strict=True):
                (acknowledged if ok else unanswered).append(tx)

    victim = redis_cluster.master_for_key(stream_key(0))
    try:
        loaders = [asyncio.create_task(load()) for _ in range(4)]
        await asyncio.sleep(2)
        redis_cluster.kill(victim)
        promoted = await asyncio.to_thread(redis_cluster.wait_for_failover, victim, 15)
        # The promoted master has no replica to confirm to (503s in this mode) until the
        # old node rejoins as its replica.
        await asyncio.to_thread(redis_cluster.restart, victim)
        await asyncio.gather(*loaders)
        assert promoted.port != victim.port
        assert len(acknowledged) > 500, (len(acknowledged), len(unanswered))
        assert len(unanswered) == 0  # every purchase got its 200 once the cluster healed
        if ack_replicas:
            await wait_for_rows(durable.database_url, len(acknowledged), timeout=60)
            await asyncio.sleep(1)  # anything unanswered but appended lands too
            await assert_exactly_once(pg, acknowledged, unanswered)
            lost = 0
        else:
            lost = await settle_and_count_lost(durable, pg, acknowledged, unanswered)
        print(
            f"\nfailover under load, ack_replicas={ack_replicas}: {len(acknowledged)}"
            f" acknowledged, {len(unanswered)} never answered 200, {lost} acknowledged lost"
        )
    finally:
        await client.close()
        for flusher in flushers:
            flusher.stop()
        gateway.stop()
        if not victim.running:
            redis_cluster.restart(victim)

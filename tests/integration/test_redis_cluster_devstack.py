"""The Redis Cluster the suite starts for sharded streams: real processes, real failover."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient
from redis.exceptions import RedisClusterException, RedisError

from devstack.redis_cluster import SLOTS, RedisCluster, command
from tests.conftest import both_redis

pytestmark = both_redis

APPEND_AND_REMEMBER = """
local id = redis.call('XADD', KEYS[1], '*', 'purchase', ARGV[1])
redis.call('SET', KEYS[2], id)
return id
"""


@pytest.fixture
async def cluster_client(redis_cluster: RedisCluster) -> AsyncIterator[ClusterClient]:
    client = ClusterClient.from_url(redis_cluster.seed_url, decode_responses=True)
    yield client
    await client.aclose()


def test_three_masters_with_a_replica_each_serve_every_slot(redis_cluster: RedisCluster) -> None:
    masters = redis_cluster.masters()
    assert len(masters) == 3
    assert all(len(redis_cluster.replicas_of(master)) == 1 for master in masters)
    assert sum(v.slots for v in redis_cluster.view() if v.is_master) == SLOTS
    for node in redis_cluster.nodes:
        info = command(node, "CLUSTER", "INFO")
        assert "cluster_state:ok" in info
        assert f"cluster_slots_ok:{SLOTS}" in info


async def test_key_written_through_the_cluster_client_reads_back(
    redis_cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    await cluster_client.set("purchase:devstack-1", "20000")
    assert await cluster_client.get("purchase:devstack-1") == "20000"
    owner = redis_cluster.master_for_key("purchase:devstack-1")
    assert command(owner, "GET", "purchase:devstack-1") == "20000"


async def test_script_touches_a_stream_and_a_string_with_one_hash_tag(
    redis_cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    stream, last = "{shard-7}:purchases", "{shard-7}:last-id"
    assert redis_cluster.master_for_key(stream) is redis_cluster.master_for_key(last)
    entry_id = await cluster_client.eval(APPEND_AND_REMEMBER, 2, stream, last, "tx-1")
    assert await cluster_client.get(last) == entry_id
    assert await cluster_client.xlen(stream) == 1
    with pytest.raises(RedisClusterException, match="same key slot"):
        await cluster_client.eval(APPEND_AND_REMEMBER, 2, "purchases", "last-id", "tx-2")


async def test_killed_master_is_replaced_by_its_replica_and_rejoins_as_replica(
    redis_cluster: RedisCluster, cluster_client: ClusterClient
) -> None:
    key = "{failover}:purchases"
    old_master = redis_cluster.master_for_key(key)
    [replica] = redis_cluster.replicas_of(old_master)
    written: list[int] = []

    async def write_forever() -> None:
        for n in itertools.count():
            with contextlib.suppress(RedisError):  # refused while the slot has no master
                await cluster_client.xadd(key, {"n": n})
                written.append(n)
            await asyncio.sleep(0.02)

    writer = asyncio.create_task(write_forever())
    try:
        while len(written) < 5:
            await asyncio.sleep(0.02)
        redis_cluster.kill(old_master)
        started = time.monotonic()
        promoted = await asyncio.to_thread(redis_cluster.wait_for_failover, old_master, 10)
        elapsed = time.monotonic() - started
        assert promoted is replica
        assert elapsed < 8
        before = len(written)
        deadline = time.monotonic() + 10
        while len(written) < before + 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert len(written) >= before + 5, "writes did not resume on the promoted replica"
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    assert redis_cluster.master_for_key(key) is promoted
    assert old_master not in redis_cluster.masters()

    await asyncio.to_thread(redis_cluster.restart, old_master)
    assert redis_cluster.replicas_of(promoted) == [old_master]
    assert len(redis_cluster.masters()) == 3

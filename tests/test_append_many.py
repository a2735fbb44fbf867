"""StreamAppender.append_many against a real Redis: a batch of purchases as one unit per
shard in the script calls, results in order, idempotent like single appends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from core.constants import shard_of, stream_key
from core.settings import Settings
from gateway.appender import StreamAppender
from gateway.errors import Overloaded
from gateway.nodes import SingleNode


@pytest.fixture
async def nodes(settings: Settings, redis: Redis) -> AsyncIterator[SingleNode]:
    node = SingleNode(settings.redis_url, timeout_s=2)
    yield node
    await node.close()


def purchases(prefix: str, n: int) -> list[tuple[str, bytes, bytes]]:
    return [(f"{prefix}-{i}", b"fp-%d" % i, b"payload-%d" % i) for i in range(n)]


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_batch_is_one_script_call_per_shard_with_results_in_order(
    nodes: SingleNode, redis: Redis
) -> None:
    appender = StreamAppender(nodes, shards=4)
    await appender.load_script()
    before = await evalsha_calls(redis)
    batch = purchases("many", 400)
    results = await appender.append_many(batch)
    assert await evalsha_calls(redis) - before == 4  # one per shard, in one round trip
    assert [r.replayed for r in results] == [False] * 400
    lengths = [await redis.xlen(stream_key(shard)) for shard in range(4)]
    assert sum(lengths) == 400 and all(lengths)
    streams = [dict(await redis.xrange(stream_key(shard))) for shard in range(4)]
    for (transaction_id, _, payload), result in zip(batch, results, strict=True):
        entry = streams[shard_of(transaction_id, 4)][result.entry_id]
        assert entry[b"p"] == payload, transaction_id


async def test_batches_and_single_purchases_share_round_trips_and_idempotency(
    nodes: SingleNode, redis: Redis
) -> None:
    appender = StreamAppender(nodes)
    await appender.load_script()
    first = await appender.append_many([("dup", b"fp-a", b"a"), ("dup", b"fp-b", b"b")])
    assert (first[0].replayed, first[1].replayed) == (False, True)
    assert first[1].entry_id == first[0].entry_id and first[1].fingerprint == b"fp-a"
    single, batch = await asyncio.gather(
        appender.append("dup", b"fp-a", b"a"), appender.append_many(purchases("mixed", 3))
    )
    assert single.replayed and single.entry_id == first[0].entry_id
    assert [r.replayed for r in batch] == [False, False, False]
    assert await redis.xlen(stream_key(0)) == 4
    assert appender.stats.round_trips == 2
    assert await appender.append_many([]) == []


async def test_a_batch_that_does_not_fit_in_what_may_wait_is_refused_whole(
    nodes: SingleNode, redis: Redis
) -> None:
    appender = StreamAppender(nodes, max_pending=10)
    await appender.load_script()
    waiting = asyncio.gather(*(appender.append(f"w-{i}", b"f", b"p") for i in range(5)))
    await asyncio.sleep(0)  # the five are queued, not yet sent
    with pytest.raises(Overloaded):
        await appender.append_many(purchases("big", 6))
    await waiting
    assert await redis.xlen(stream_key(0)) == 5
    assert len(await appender.append_many(purchases("alone", 20))) == 20  # nothing waits

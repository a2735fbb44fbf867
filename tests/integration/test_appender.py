"""StreamAppender on its own, against a real Redis: outcomes, coalescing, the script
reloaded after a flush, and the limit on purchases waiting."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from redis.asyncio import Redis

from core.constants import idempotency_key, shard_of, stream_key
from core.entries import FIELDS, VERSION, VERSION_FIELD
from core.idempotency import Outcome
from gateway.api.errors import ErrorResponses
from gateway.ingest.appender import StreamAppender
from gateway.redis_io.nodes import Nodes
from gateway.refusals import Overloaded, StoreUnavailable
from tests.conftest import both_redis

pytestmark = both_redis


async def test_outcomes_are_accepted_then_replayed_then_conflict(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes)
    first = await appender.append("ap-1", fp(b"f1"), entry("ap-1"))
    assert first.outcome is Outcome.ACCEPTED
    replay = await appender.append("ap-1", fp(b"f1"), entry("ap-1"))
    assert replay == (Outcome.REPLAYED, first.entry_id)
    clash = await appender.append("ap-1", fp(b"f2"), entry("ap-1"))
    assert clash == (Outcome.CONFLICT, first.entry_id)
    assert await redis.xlen(stream_key(0)) == 1
    assert (appender.stats.appends, appender.stats.replays) == (1, 2)
    await appender.close()


async def test_appends_of_one_loop_turn_share_one_round_trip(nodes: Nodes, redis: Redis) -> None:
    appender = StreamAppender(nodes, shards=4)
    results = await asyncio.gather(
        *(appender.append(f"co-{i}", fp(b"f"), entry(f"co-{i}")) for i in range(200))
    )
    assert {r.outcome for r in results} == {Outcome.ACCEPTED}
    assert appender.stats.round_trips == 1  # four shards, one node: one round trip
    assert sum([await redis.xlen(stream_key(s)) for s in range(4)]) == 200
    await appender.close()


async def test_a_flushed_script_cache_is_reloaded_and_the_append_runs_once(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes)
    await appender.load_script()
    await redis.script_flush()
    appended = await appender.append("noscript-1", fp(b"f"), entry("noscript-1"))
    assert appended.outcome is Outcome.ACCEPTED
    assert await redis.xlen(stream_key(0)) == 1
    await appender.close()


async def test_purchases_beyond_the_waiting_limit_are_refused(nodes: Nodes) -> None:
    appender = StreamAppender(nodes, max_pending=2)
    waiting = [
        asyncio.ensure_future(appender.append(f"lim-{i}", fp(b"f"), entry(f"lim-{i}")))
        for i in range(2)
    ]
    await asyncio.sleep(0)  # both queued, not yet sent
    with pytest.raises(Overloaded):
        await appender.append("lim-2", fp(b"f"), entry("lim-2"))
    assert {r.outcome for r in await asyncio.gather(*waiting)} == {Outcome.ACCEPTED}
    await appender.close()


def fp(label: bytes) -> bytes:
    """A fingerprint: 8 bytes, as core.idempotency.fingerprint makes them."""
    return label.ljust(8, b".")


def entry(transaction_id: str) -> tuple[bytes, ...]:
    """Entry values (core.entries.FIELDS), transaction_id first as the gateway gives it."""
    return (transaction_id.encode(), b"a1", b"buyer", b"a2", b"seller", b"5", b"req", b"1")


def purchases(prefix: str, n: int) -> list[tuple[str, bytes, tuple[bytes, ...]]]:
    return [(f"{prefix}-{i}", fp(b"fp-%d" % i), entry(f"{prefix}-{i}")) for i in range(n)]


async def command_calls(redis: Redis, *names: str) -> dict[str, int]:
    """How often Redis ran each command so far (INFO commandstats; also counts calls from
    scripts)."""
    stats = await redis.info("commandstats")
    return {name: int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names}


async def evalsha_calls(redis: Redis) -> int:
    return (await command_calls(redis, "evalsha"))["evalsha"]


async def test_a_batch_is_one_script_call_per_shard_with_results_in_order(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes, shards=4)
    await appender.load_script()
    before = await evalsha_calls(redis)
    batch = purchases("many", 400)
    results = await appender.append_many(batch)
    assert await evalsha_calls(redis) - before == 4  # one per shard, in one round trip
    assert [r.outcome for r in results] == [Outcome.ACCEPTED] * 400
    lengths = [await redis.xlen(stream_key(shard)) for shard in range(4)]
    assert sum(lengths) == 400 and all(lengths)
    streams = [dict(await redis.xrange(stream_key(shard))) for shard in range(4)]
    for (transaction_id, _, values), result in zip(batch, results, strict=True):
        entry = streams[shard_of(transaction_id, 4)][result.entry_id]
        expected = dict(zip((VERSION_FIELD, *FIELDS), (VERSION, *values), strict=True))
        assert entry == expected, transaction_id


async def test_batches_and_single_purchases_share_round_trips_and_idempotency(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes)
    await appender.load_script()
    first = await appender.append_many(
        [
            ("dup", fp(b"fp-a"), entry("dup")),
            ("dup", fp(b"fp-b"), entry("dup")),
            ("dup", fp(b"fp-a"), entry("dup")),
        ]
    )
    assert [r.outcome for r in first] == [Outcome.ACCEPTED, Outcome.CONFLICT, Outcome.REPLAYED]
    assert first[1].entry_id == first[2].entry_id == first[0].entry_id
    single, batch = await asyncio.gather(
        appender.append("dup", fp(b"fp-a"), entry("dup")),
        appender.append_many(purchases("mixed", 3)),
    )
    assert single.outcome is Outcome.REPLAYED and single.entry_id == first[0].entry_id
    assert [r.outcome for r in batch] == [Outcome.ACCEPTED] * 3
    assert await redis.xlen(stream_key(0)) == 4
    assert appender.stats.round_trips == 2
    assert await appender.append_many([]) == []


async def test_a_batch_that_does_not_fit_in_what_may_wait_is_refused_whole(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes, max_pending=10)
    await appender.load_script()
    waiting = asyncio.gather(
        *(appender.append(f"w-{i}", fp(b"f"), entry(f"w-{i}")) for i in range(5))
    )
    await asyncio.sleep(0)  # the five are queued, not yet sent
    with pytest.raises(Overloaded):
        await appender.append_many(purchases("big", 6))
    await waiting
    assert await redis.xlen(stream_key(0)) == 5
    assert len(await appender.append_many(purchases("alone", 20))) == 20  # nothing waits


async def test_a_refusal_is_logged_and_answered_with_a_fixed_message(
    nodes: Nodes, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis's own text (an OOM here; a MOVED names a node's address) goes to the log,
    never into the 503 a client reads."""
    appender = StreamAppender(nodes)
    await redis.config_set("maxmemory-policy", "noeviction")
    await redis.config_set("maxmemory", 1)  # below what is used: every write refused
    try:
        with pytest.raises(StoreUnavailable) as refused:
            await appender.append("refused-1", fp(b"f1"), entry("refused-1"))
    finally:
        await redis.config_set("maxmemory", 0)
    answer = ErrorResponses().response(refused.value)
    assert answer.status == 503
    message = msgspec.json.decode(answer.body)["message"]
    assert "OOM" not in message and "maxmemory" not in message, message
    assert "purchase store unavailable" in message
    assert "OOM" in caplog.text
    await appender.close()


async def test_with_legacy_keys_off_records_still_decide_and_legacy_keys_are_ignored(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes, idempotency_legacy_keys=False)
    await redis.set(idempotency_key(0, "legacy-off"), b"0" * 32 + b"|1-1", ex=60)
    first = await appender.append("legacy-off", fp(b"a"), entry("legacy-off"))
    assert first.outcome is Outcome.ACCEPTED  # the old key is not read any more
    [again, clash] = await appender.append_many(
        [
            ("legacy-off", fp(b"a"), entry("legacy-off")),
            ("legacy-off", fp(b"b"), entry("legacy-off")),
        ]
    )
    assert again == (Outcome.REPLAYED, first.entry_id)
    assert clash.outcome is Outcome.CONFLICT
    assert await redis.xlen(stream_key(0)) == 1
    await appender.close()


async def test_a_call_past_the_scripts_chunk_reads_and_writes_records_per_call_not_per_purchase(
    nodes: Nodes, redis: Redis
) -> None:
    """2,500 purchases in one script call (the script reads and writes records in chunks of
    1,000): a replay of a purchase from an earlier call, a repeat inside the call across a
    chunk boundary, and a live legacy key past the first chunk each decide as before."""
    appender = StreamAppender(nodes)
    await appender.load_script()
    [earlier] = await appender.append_many([("chunk-earlier", fp(b"e"), entry("chunk-earlier"))])
    await redis.set(idempotency_key(0, "chunk-legacy"), fp(b"l").hex().encode() + b"|7-7", ex=60)
    batch = purchases("chunk", 2_500)
    batch[1_500] = ("chunk-earlier", fp(b"e"), entry("chunk-earlier"))
    batch[1_800] = ("chunk-legacy", fp(b"l"), entry("chunk-legacy"))
    batch[2_200] = (batch[10][0], fp(b"other"), batch[10][2])  # a repeat with another request
    batch[2_300] = batch[20]  # the same purchase again
    before = await command_calls(redis, "evalsha", "hmget", "hget", "mget", "get", "xadd", "hset")
    results = await appender.append_many(batch)
    after = await command_calls(redis, "evalsha", "hmget", "hget", "mget", "get", "xadd", "hset")
    calls = {name: after[name] - before[name] for name in after}
    assert results[1_500] == (Outcome.REPLAYED, earlier.entry_id)
    assert results[1_800] == (Outcome.REPLAYED, b"7-7")
    assert results[2_200] == (Outcome.CONFLICT, results[10].entry_id)
    assert results[2_300] == (Outcome.REPLAYED, results[20].entry_id)
    assert sum(r.outcome is Outcome.ACCEPTED for r in results) == 2_496
    assert await redis.xlen(stream_key(0)) == 1 + 2_496
    # Per chunk of 1,000 purchases: an HMGET per live bucket (three) and one MGET of legacy
    # keys; per 1,000 new records one HSET.
    assert calls == {
        "evalsha": 1, "hmget": 3 * 3, "hget": 0, "mget": 3, "get": 0, "xadd": 2_496, "hset": 3,
    }  # fmt: skip
    again = await appender.append_many(batch)
    assert [r.entry_id for r in again] == [r.entry_id for r in results]
    assert {r.outcome for r in again} == {Outcome.REPLAYED, Outcome.CONFLICT}
    await appender.close()

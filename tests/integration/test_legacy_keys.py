"""The watch for 943f4b2's idempotency keys: the appender reads them while any is left,
and stops once a whole scan finds none."""

from __future__ import annotations

from redis.asyncio import Redis

from core.constants import idempotency_key, shard_of, stream_key
from core.idempotency import Outcome
from gateway.ingest.appender import StreamAppender
from gateway.ingest.legacy_keys import SCAN_COUNT, LegacyKeyWatch
from gateway.redis_io.nodes import Nodes
from tests.conftest import both_redis
from tests.integration.test_appender import command_calls, entry, fp

pytestmark = both_redis


async def test_legacy_keys_are_read_while_one_is_left_and_not_after(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes, shards=2)
    watch = LegacyKeyWatch(nodes, appender)
    # Other keys past one SCAN step, and one 943f4b2 key among them.
    await redis.mset({f"other:{i}": b"x" for i in range(3 * SCAN_COUNT)})
    old = idempotency_key(shard_of("from-943f4b2", 2), "from-943f4b2")
    await redis.set(old, fp(b"old").hex().encode() + b"|5-5", ex=60)

    assert await watch.check() is False
    assert appender.legacy_keys
    [replay] = await appender.append_many([("from-943f4b2", fp(b"old"), entry("from-943f4b2"))])
    assert replay == (Outcome.REPLAYED, b"5-5")

    await redis.delete(old)
    assert await watch.check() is True
    assert not appender.legacy_keys
    before = await command_calls(redis, "mget")
    [accepted] = await appender.append_many([("from-943f4b2", fp(b"old"), entry("from-943f4b2"))])
    assert accepted.outcome is Outcome.ACCEPTED
    assert await command_calls(redis, "mget") == before  # no key named, none read
    assert sum([await redis.xlen(stream_key(shard)) for shard in range(2)]) == 1
    await appender.close()


async def test_a_gateway_told_not_to_read_legacy_keys_never_scans(
    nodes: Nodes, redis: Redis
) -> None:
    appender = StreamAppender(nodes, idempotency_legacy_keys=False)
    watch = LegacyKeyWatch(nodes, appender)
    before = await command_calls(redis, "scan")
    watch.start()
    await watch.stop()
    assert await command_calls(redis, "scan") == before

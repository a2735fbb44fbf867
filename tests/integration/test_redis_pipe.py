"""RedisPipe on its own, against a real Redis: replies reach their own callers, whatever
happens to a call or to the connection next to them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from devstack.redis_server import RedisServer
from gateway.redis_io.pipe import RedisPipe
from tests.conftest import both_redis

pytestmark = both_redis


@pytest.fixture
async def pipe(redis_server: RedisServer) -> AsyncIterator[RedisPipe]:
    pipe = RedisPipe(redis_server.url, timeout_s=2)
    yield pipe
    await pipe.close()


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_replies_reach_their_own_callers_under_many_concurrent_calls(
    pipe: RedisPipe,
) -> None:
    async def echo(i: int) -> bytes:
        await asyncio.sleep(0)  # interleave the calls over several loop turns
        reply: bytes = await pipe.call(b"ECHO", b"call-%d" % i)
        return reply

    async def pair(i: int) -> list[bytes]:
        return await pipe.call_many([(b"ECHO", b"a-%d" % i), (b"ECHO", b"b-%d" % i)])

    singles, pairs = await asyncio.gather(
        asyncio.gather(*(echo(i) for i in range(2000))),
        asyncio.gather(*(pair(i) for i in range(500))),
    )
    assert singles == [b"call-%d" % i for i in range(2000)]
    assert pairs == [[b"a-%d" % i, b"b-%d" % i] for i in range(500)]


async def test_a_command_that_cannot_be_packed_fails_alone(pipe: RedisPipe) -> None:
    assert await pipe.call(b"ECHO", b"before") == b"before"
    with pytest.raises(TypeError):
        await pipe.call(b"ECHO", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await pipe.call_many([(b"SET", b"pipe:not-sent", b"1"), (b"ECHO", None)])  # type: ignore[list-item]
    replies = await asyncio.gather(*(pipe.call(b"ECHO", b"after-%d" % i) for i in range(50)))
    assert replies == [b"after-%d" % i for i in range(50)]
    assert await pipe.call(b"EXISTS", b"pipe:not-sent") == 0  # nothing of the batch went out


async def test_a_refused_command_fails_alone_and_noscript_is_its_own_error(
    pipe: RedisPipe,
) -> None:
    unknown_sha = b"0" * 40
    with pytest.raises(NoScriptError):
        await pipe.call(b"EVALSHA", unknown_sha, 0)
    replies = await pipe.call_many(
        [(b"ECHO", b"one"), (b"EVALSHA", unknown_sha, 0), (b"ECHO", b"three")],
        return_errors=True,
    )
    assert replies[0] == b"one"
    assert isinstance(replies[1], NoScriptError)
    assert replies[2] == b"three"
    with pytest.raises(ResponseError, match="unknown command"):
        await pipe.call_many([(b"ECHO", b"fine"), (b"NO-SUCH-COMMAND",)])
    assert await pipe.call(b"ECHO", b"next") == b"next"


async def test_no_reply_in_time_drops_the_connection_and_the_next_call_reconnects(
    redis_server: RedisServer,
) -> None:
    pipe = RedisPipe(redis_server.url, timeout_s=0.3)
    try:
        first_id = await pipe.call(b"CLIENT", b"ID")
        blocked = asyncio.ensure_future(pipe.call(b"BLPOP", b"pipe:never", 5))
        behind = asyncio.ensure_future(pipe.call(b"ECHO", b"queued behind"))
        with pytest.raises(RedisTimeoutError):
            await blocked
        with pytest.raises(RedisTimeoutError):
            await behind  # its reply could no longer be told apart
        assert await pipe.call(b"ECHO", b"fresh") == b"fresh"
        assert await pipe.call(b"CLIENT", b"ID") != first_id
    finally:
        await pipe.close()


async def test_connection_killed_mid_pipeline_fails_the_calls_in_flight_then_reconnects(
    pipe: RedisPipe, admin: Redis
) -> None:
    client_id = await pipe.call(b"CLIENT", b"ID")
    in_flight = [
        asyncio.ensure_future(pipe.call(b"BLPOP", b"pipe:never", 5)),
        asyncio.ensure_future(pipe.call(b"ECHO", b"behind the blocked one")),
    ]
    await asyncio.sleep(0.1)  # both written
    assert await admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
    for call in in_flight:
        with pytest.raises(RedisConnectionError, match="connection to Redis lost"):
            await call
    assert await pipe.call(b"ECHO", b"again") == b"again"
    assert await pipe.call(b"CLIENT", b"ID") != client_id

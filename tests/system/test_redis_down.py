"""Redis unreachable: a 503 with Retry-After, nothing acknowledged, and recovery by itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
from redis.asyncio import Redis

from core.constants import STREAM
from core.entries import decode
from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_server import RedisServer, RedisVersion
from tests.conftest import both_redis, env_for
from tests.helpers import Gateway, HttpClient, purchase

pytestmark = both_redis


@contextlib.asynccontextmanager
async def redis_and_gateway(
    settings: Settings, tmp_path: Path, appendfsync: str, version: RedisVersion
) -> AsyncIterator[tuple[RedisServer, Gateway, HttpClient]]:
    """A Redis of the test's own (to kill) and a gateway on it; both stopped afterwards."""
    own = RedisServer(tmp_path / "redis", free_port(), appendfsync=appendfsync, version=version)
    own.start()
    try:
        gateway = Gateway(
            env_for(msgspec.structs.replace(settings, redis_url=own.url, redis_timeout_s=0.5)),
            tmp_path / "gateway.log",
        )
        client = HttpClient(gateway.url)
        try:
            yield own, gateway, client
        finally:
            await client.close()
            gateway.stop()
    finally:
        own.stop()


async def test_redis_down_is_503_with_retry_after_and_the_gateway_recovers(
    settings: Settings, redis_version: RedisVersion, tmp_path: Path
) -> None:
    async with redis_and_gateway(settings, tmp_path, "always", redis_version) as (
        own,
        gateway,
        client,
    ):
        before = await client.post("/purchase", json=purchase("before-crash"))
        assert before.status_code == 200

        own.kill()
        down = await client.post("/purchase", json=purchase("while-down"))
        assert down.status_code == 503
        assert down.headers["retry-after"] == "1"
        assert down.json()["error"] == "store_unavailable"
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert (await client.get("/healthz")).status_code == 200  # alive, just not ready

        own.start()  # same port, same AOF
        # Recovery is by itself, but not necessarily on the very first request: until the
        # gateway has reconnected, a retry (same transaction_id) gets a 503 with Retry-After.
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            after = await client.post("/purchase", json=purchase("after-restart"))
            if after.status_code == 200 or asyncio.get_running_loop().time() > deadline:
                break
            assert after.status_code == 503 and after.headers["retry-after"] == "1", after.text
            await asyncio.sleep(0.1)
        assert after.status_code == 200, after.text
        assert (await client.get("/readyz")).status_code == 200

        check = Redis.from_url(own.url)
        ids = [decode(fields).transaction_id for _, fields in await check.xrange(STREAM)]
        await check.aclose()
        assert ids == ["before-crash", "after-restart"]  # acknowledged survived, refused absent
    assert "Traceback" not in gateway.output()


async def test_redis_killed_under_load_keeps_every_acknowledged_purchase(
    settings: Settings, redis_version: RedisVersion, tmp_path: Path
) -> None:
    """Default mode (appendfsync everysec): Redis writes the AOF before it replies, so a
    crash of the redis-server process loses nothing that was acknowledged."""
    async with redis_and_gateway(settings, tmp_path, "everysec", redis_version) as (own, _, client):
        posts = [
            asyncio.create_task(client.post("/purchase", json=purchase(f"crash-{i}")))
            for i in range(3000)
        ]
        while sum(p.done() for p in posts) < 500:
            await asyncio.sleep(0.005)
        own.kill()
        replies = await asyncio.gather(*posts)
        acknowledged = {r.json()["transaction_id"] for r in replies if r.status_code == 200}
        refused = [r for r in replies if r.status_code != 200]
        assert len(acknowledged) >= 500
        assert {r.status_code for r in refused} <= {503}

        own.start()
        check = Redis.from_url(own.url)
        stored = {decode(fields).transaction_id for _, fields in await check.xrange(STREAM)}
        await check.aclose()
        print(
            f"\nredis SIGKILL: {len(acknowledged)} acknowledged, {len(refused)} refused, {len(acknowledged - stored)} acknowledged-but-lost, {len(stored - acknowledged)} stored-but-refused"
        )
        assert acknowledged <= stored

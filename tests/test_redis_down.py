"""Redis unreachable: a 503 with Retry-After, nothing acknowledged, and recovery by itself."""

from __future__ import annotations

from pathlib import Path

import msgspec
from redis.asyncio import Redis

from core.constants import STREAM
from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_server import RedisServer
from tests.conftest import env_for
from tests.helpers import Gateway, HttpClient, purchase


async def test_redis_down_is_503_with_retry_after_and_the_gateway_recovers(
    settings: Settings, tmp_path: Path
) -> None:
    own = RedisServer(tmp_path / "redis", free_port(), appendfsync="always")
    own.start()
    try:
        gateway = Gateway(
            env_for(msgspec.structs.replace(settings, redis_url=own.url, redis_timeout_s=0.5)),
            tmp_path / "gateway.log",
        )
    except BaseException:
        own.kill()
        raise
    client = HttpClient(gateway.url)
    try:
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
        after = await client.post("/purchase", json=purchase("after-restart"))
        assert after.status_code == 200
        assert (await client.get("/readyz")).status_code == 200

        check = Redis.from_url(own.url)
        ids = [
            fields[b"p"].split(b'"transaction_id":"')[1].split(b'"')[0].decode()
            for _, fields in await check.xrange(STREAM)
        ]
        await check.aclose()
        assert ids == ["before-crash", "after-restart"]  # acknowledged survived, refused absent
    finally:
        await client.close()
        gateway.stop()
        own.stop()
    assert "Traceback" not in gateway.output()

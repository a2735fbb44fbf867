"""Passwords never show: not in logs, error bodies, /metrics or /readyz, even when failing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_server import RedisServer
from tests.conftest import env_for
from tests.helpers import FlusherProcess, Gateway, HttpClient, purchase

REDIS_SECRET = "r3dis-S3CRET-pw"
PG_SECRET = "pg-S3CRET-pw"


async def test_passwords_appear_nowhere_even_in_failures(
    settings: Settings, tmp_path: Path
) -> None:
    guarded = RedisServer(tmp_path / "redis", free_port(), password=REDIS_SECRET)
    guarded.start()
    # The embedded PostgreSQL trusts local connections, so the password is carried, unused.
    dsn = settings.database_url.replace("postgres@", f"postgres:{PG_SECRET}@")
    env = env_for(
        msgspec.structs.replace(
            settings, redis_url=guarded.url, database_url=dsn, redis_timeout_s=0.5
        )
    )
    env["MONOKERA_LOG_LEVEL"] = "DEBUG"
    gateway = Gateway(env, tmp_path / "gateway.log")
    flusher = FlusherProcess(env, tmp_path / "flusher.log")
    client = HttpClient(gateway.url)
    seen: list[str] = []
    try:
        assert (await client.post("/purchase", json=purchase())).status_code == 200
        seen += [(await client.get(path)).text for path in ("/metrics", "/readyz")]
        guarded.kill()  # now everything fails, loudly
        down = await client.post("/purchase", json=purchase())
        assert down.status_code == 503
        seen += [down.text, (await client.get("/readyz")).text]
        await asyncio.sleep(1)  # the flusher logs its retries
    finally:
        await client.close()
        gateway.stop()
        flusher.stop()
    seen += [gateway.output(), flusher.output()]
    assert "retrying" in flusher.output()  # the failure did reach the log
    for text in seen:
        assert REDIS_SECRET not in text
        assert PG_SECRET not in text

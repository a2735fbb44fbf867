"""Durable acknowledgment modes: appendfsync always, and WAIT for replicas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_server import RedisServer
from tests.conftest import env_for
from tests.helpers import Gateway, HttpClient, purchase


async def test_ack_waits_for_a_replica_and_refuses_without_one(
    settings: Settings, tmp_path: Path
) -> None:
    primary = RedisServer(tmp_path / "primary", free_port())
    replica = RedisServer(tmp_path / "replica", free_port(), replica_of=primary.port)
    primary.start()
    replica.start()
    env = env_for(
        msgspec.structs.replace(
            settings, redis_url=primary.url, ack_replicas=1, ack_replicas_timeout_ms=200
        )
    )
    gateway = Gateway(env, tmp_path / "gateway.log")
    client = HttpClient(gateway.url)
    try:
        for _ in range(100):  # the replica needs a moment to sync before it can confirm
            if (await client.post("/purchase", json=purchase("warm-up"))).status_code == 200:
                break
            await asyncio.sleep(0.1)
        ok = await client.post("/purchase", json=purchase("replicated"))
        assert ok.status_code == 200

        replica.kill()
        unconfirmed = await client.post("/purchase", json=purchase("unreplicated"))
        assert unconfirmed.status_code == 503
        assert unconfirmed.json()["error"] == "store_unavailable"
        assert "ReplicationLag" in unconfirmed.json()["message"]

        replica.start()
        for _ in range(100):
            retry = await client.post("/purchase", json=purchase("unreplicated"))
            if retry.status_code == 200:
                break
            await asyncio.sleep(0.1)
        # The append had reached the primary: the retry replays it once a replica confirms.
        assert retry.status_code == 200
        assert retry.headers["idempotent-replayed"] == "true"
    finally:
        await client.close()
        gateway.stop()
        replica.stop()
        primary.stop()

"""Durable acknowledgment modes: appendfsync always, and WAIT for replicas."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import msgspec
from redis.asyncio import Redis

from core.constants import STREAM
from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_server import RedisServer, RedisVersion
from gateway.api.errors import NOT_REPLICATED
from tests.conftest import both_redis, env_for
from tests.helpers import Gateway, HttpClient, HttpReply, idempotency_records, purchase

pytestmark = both_redis


@contextlib.contextmanager
def primary_and_replica(
    tmp_path: Path, version: RedisVersion
) -> Iterator[tuple[RedisServer, RedisServer]]:
    primary = RedisServer(tmp_path / "primary", free_port(), version=version)
    replica = RedisServer(
        tmp_path / "replica", free_port(), replica_of=primary.port, version=version
    )
    primary.start()
    try:
        replica.start()
        yield primary, replica
    finally:
        if replica.running:
            os.kill(replica.pid, signal.SIGCONT)
        replica.stop()
        primary.stop()


def replicas_mode(settings: Settings, primary: RedisServer) -> dict[str, str]:
    return env_for(
        msgspec.structs.replace(
            settings, redis_url=primary.url, ack_replicas=1, ack_replicas_timeout_ms=200
        )
    )


async def post_until(client: HttpClient, body: dict[str, object], status: int) -> HttpReply:
    """Post ``body`` until the reply has ``status`` (a replica needs a moment to sync)."""
    for _ in range(150):
        reply = await client.post("/purchase", json=body)
        if reply.status_code == status:
            return reply
        await asyncio.sleep(0.1)
    return reply


async def test_ack_waits_for_a_replica_and_refuses_without_one(
    settings: Settings, redis_version: RedisVersion, tmp_path: Path
) -> None:
    with primary_and_replica(tmp_path, redis_version) as (primary, replica):
        gateway = Gateway(replicas_mode(settings, primary), tmp_path / "gateway.log")
        client = HttpClient(gateway.url)
        try:
            await post_until(client, purchase("warm-up"), 200)
            ok = await client.post("/purchase", json=purchase("replicated"))
            assert ok.status_code == 200

            replica.kill()
            unconfirmed = await client.post("/purchase", json=purchase("unreplicated"))
            assert unconfirmed.status_code == 503
            assert unconfirmed.json()["error"] == "store_unavailable"
            assert unconfirmed.json()["message"] == NOT_REPLICATED

            replica.start()
            retry = await post_until(client, purchase("unreplicated"), 200)
            # The append had reached the primary: the retry replays it once a replica confirms.
            assert retry.status_code == 200
            assert retry.headers["idempotent-replayed"] == "true"
        finally:
            await client.close()
            gateway.stop()


async def test_replay_is_acknowledged_only_once_a_replica_has_the_original_entry(
    settings: Settings, redis_version: RedisVersion, tmp_path: Path
) -> None:
    """The retry arrives on another connection (another gateway process) than the first
    attempt. Redis 7+ has WAIT wait only for that connection's own last write, and a
    replay writes nothing: without a write of its own the replay was confirmed at once,
    a 200 for an entry no replica had."""
    with primary_and_replica(tmp_path, redis_version) as (primary, replica):
        env = replicas_mode(settings, primary)
        first = Gateway(env, tmp_path / "first-gateway.log")
        first_client = HttpClient(first.url)
        second: Gateway | None = None
        second_client: HttpClient | None = None
        body = purchase("replayed-late")
        try:
            assert (await post_until(first_client, purchase("warm-up"), 200)).status_code == 200

            os.kill(replica.pid, signal.SIGSTOP)
            unconfirmed = await first_client.post("/purchase", json=body)
            assert unconfirmed.status_code == 503
            assert unconfirmed.json()["message"] == NOT_REPLICATED

            second = Gateway(env, tmp_path / "second-gateway.log")
            second_client = HttpClient(second.url)
            for _ in range(3):
                early = await second_client.post("/purchase", json=body)
                assert early.status_code == 503, "replayed before any replica had the entry"
                assert early.json()["message"] == NOT_REPLICATED

            os.kill(replica.pid, signal.SIGCONT)
            retry = await post_until(second_client, body, 200)
            assert retry.status_code == 200
            assert retry.headers["idempotent-replayed"] == "true"
            entry_id = retry.headers["x-stream-entry-id"].encode()
            on_replica = Redis.from_url(replica.url)
            try:
                assert await idempotency_records(on_replica, "replayed-late")
                assert [e for e, _ in await on_replica.xrange(STREAM, entry_id, entry_id)]
            finally:
                await on_replica.aclose()
        finally:
            await first_client.close()
            if second_client is not None:
                await second_client.close()
            first.stop()
            if second is not None:
                second.stop()

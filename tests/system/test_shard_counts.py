"""Gateways and flushers publish the shard count they run with: a gateway writing streams
no live flusher reads is not ready, and a mismatch or an unread stream shows in /readyz,
/metrics and the console."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import msgspec

from core.constants import shard_of
from core.settings import Settings
from tests.conftest import both_redis, env_for
from tests.helpers import Gateway, HttpClient, metric_total, open_flusher, purchase, serving

pytestmark = both_redis


async def flusher_beats(settings: Settings, shards: int) -> None:
    """A flusher running with ``shards`` streams publishes once, as it does every second."""
    worker, close = await open_flusher(msgspec.structs.replace(settings, stream_shards=shards))
    try:
        await worker.publish_stats()
    finally:
        await close()


async def readyz_until(client: HttpClient, shards_status: str) -> tuple[int, Any]:
    deadline = time.monotonic() + 30
    while True:
        reply = await client.get("/readyz")
        body = reply.json()
        if body.get("shards", {}).get("status") == shards_status:
            return reply.status_code, body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(0.1)


async def test_a_gateway_writing_streams_no_flusher_reads_is_not_ready(
    settings: Settings, tmp_path: Path
) -> None:
    four = msgspec.structs.replace(settings, stream_shards=4, shard_check_interval_s=0.2)
    async with serving(Gateway(env_for(four), tmp_path / "gateway.log")) as client:
        await flusher_beats(settings, 2)  # the flushers still run with 2 shards
        status, body = await readyz_until(client, "writes_unread")
        assert status == 503 and body["status"] == "misconfigured", body
        assert (body["shards"]["own"], body["shards"]["flushers_read"]) == (4, 2)

        tx = next(t for t in (f"unread-{i}" for i in range(100)) if shard_of(t, 4) == 3)
        assert (await client.post("/purchase", json=purchase(tx))).status_code == 200
        deadline = time.monotonic() + 30
        while (text := (await client.get("/metrics")).text) and metric_total(
            text, "monokera_unread_stream_entries"
        ) != 1:
            assert time.monotonic() < deadline, text
            await asyncio.sleep(0.1)
        assert metric_total(text, "monokera_stream_shards_mismatch") == 1
        assert metric_total(text, "monokera_stream_shards") == 4
        assert metric_total(text, "monokera_stream_shards_publishers", role="flusher") == 1
        overview = (await client.get("/console/api/overview")).json()
        assert overview["shards"]["status"] == "writes_unread"
        assert overview["shards"]["unread"] == {"monokera:{3}:purchases": 1}


async def test_fewer_gateway_shards_than_the_flushers_read_is_degraded_not_unready(
    settings: Settings, tmp_path: Path
) -> None:
    one = msgspec.structs.replace(settings, shard_check_interval_s=0.2)
    async with serving(Gateway(env_for(one), tmp_path / "gateway.log")) as client:
        await flusher_beats(settings, 1)
        status, body = await readyz_until(client, "ok")
        assert status == 200
        await flusher_beats(settings, 2)  # a flusher already moved to 2 shards
        status, body = await readyz_until(client, "mismatch")
        assert (status, body["status"]) == (200, "ready"), body
        text = (await client.get("/metrics")).text
        assert metric_total(text, "monokera_stream_shards_mismatch") == 1
        assert metric_total(text, "monokera_unread_stream_entries") == 0

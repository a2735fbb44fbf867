"""Every node of the Redis Cluster paused at once (SIGSTOP), then resumed (SIGCONT).

redis-py's cluster client answers the first command after a connection error by reading
the slot map again; with no node answering, that raises ``RedisClusterException``, which
is not a ``RedisError``. The gateway must keep answering (503 for purchases and /readyz,
200 for /metrics) and the gateway, its backlog monitor and the flusher must carry on once
the cluster is back, without an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec
import pytest
import redis

from core.constants import GROUP, stream_key
from core.settings import Settings
from devstack.redis_cluster import RedisCluster, command
from tests.conftest import both_redis, env_for
from tests.helpers import (
    FlusherProcess,
    Gateway,
    HttpClient,
    metric_total,
    purchase,
    samples,
    serving,
)
from tests.reconcile import assert_exactly_once, matrix_row, wait_for_rows

SHARDS = 3
DEADLINE_S = 60.0
"""Generous: six redis-servers, a gateway and a flusher share two busy cores."""

pytestmark = both_redis


@pytest.fixture
def outage_settings(settings: Settings, redis_cluster: RedisCluster) -> Iterator[Settings]:
    """A clean, settled cluster; a short Redis timeout so a paused node fails a call fast;
    nothing trimmed, so the stream's length counts every purchase appended."""
    redis_cluster.wait_settled()
    for master in redis_cluster.masters():
        command(master, "FLUSHALL")
    yield msgspec.structs.replace(
        settings,
        redis_url=redis_cluster.seed_url,
        redis_cluster=True,
        stream_shards=SHARDS,
        redis_timeout_s=0.5,
        stream_retain_s=3600,
    )
    redis_cluster.wait_settled(timeout=DEADLINE_S)  # for the tests after this one


@contextlib.contextmanager
def paused(cluster: RedisCluster) -> Iterator[None]:
    """Every node stopped; resumed on the way out whatever happened, so the session's
    cluster survives a failing test."""
    stopped: list[int] = []
    try:
        for node in cluster.nodes:
            os.kill(node.pid, signal.SIGSTOP)
            stopped.append(node.pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def post_until_accepted(client: HttpClient, tx: str) -> None:
    """Retried while 503, as clients do: the cluster may fail over after the pause."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        reply = await client.post("/purchase", json=purchase(tx))
        if reply.status_code == 200:
            return
        assert reply.status_code == 503, reply.text
        assert time.monotonic() < deadline, f"{tx} still refused: {reply.text}"
        await asyncio.sleep(0.1)


def assert_fixed_store_unavailable(reply_status: int, body: dict[str, object]) -> None:
    """The 503 names the problem, not Redis's raw error (which may carry node addresses)."""
    assert (reply_status, body["error"]) == (503, "store_unavailable"), body
    message = str(body["message"])
    assert "127.0.0.1" not in message and "Error" not in message, message


async def assert_unavailable_while_paused(client: HttpClient, started: float) -> None:
    """/readyz answers 503 with a JSON body and /metrics 200, again and again, for at least
    2 s and at least three rounds (each round may wait out Redis timeouts)."""
    rounds = 0
    while time.monotonic() - started < 2 or rounds < 3:
        assert time.monotonic() - started < DEADLINE_S
        ready = await client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "unavailable", ready.text
        scrape = await client.get("/metrics")
        assert scrape.status_code == 200, scrape.text
        rounds += 1
    refused = await client.post("/purchase", json=purchase("during-the-pause"))
    assert_fixed_store_unavailable(refused.status_code, refused.json())


async def wait_for_stream_length(client: HttpClient, expected: int) -> None:
    """Until the backlog monitor's measurement, as /metrics shows it, reaches ``expected``."""
    deadline = time.monotonic() + DEADLINE_S
    seen: list[tuple[dict[str, str], float]] = []
    while time.monotonic() < deadline:
        scrape = await client.get("/metrics")
        seen = samples(scrape.text, "monokera_stream_length")
        if seen and metric_total(scrape.text, "monokera_stream_length") >= expected:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the backlog figures stopped moving: stream length {seen}")


async def wait_until_ready(client: HttpClient) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while (ready := await client.get("/readyz")).status_code != 200:
        assert time.monotonic() < deadline, ready.text
        await asyncio.sleep(0.2)


async def test_paused_cluster_answers_503_then_gateway_and_flusher_recover(
    outage_settings: Settings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    gateway = Gateway(env_for(outage_settings), tmp_path / "gateway.log")
    flusher = FlusherProcess(env_for(outage_settings), tmp_path / "flusher.log")
    async with serving(gateway, flusher) as client:
        await asyncio.gather(*(post_until_accepted(client, f"before-{i}") for i in range(20)))
        await wait_for_rows(outage_settings.database_url, 20)
        await wait_for_stream_length(client, 20)

        with paused(redis_cluster):
            await assert_unavailable_while_paused(client, time.monotonic())
        resumed_at = time.monotonic()

        await post_until_accepted(client, "after-0")
        recovery = time.monotonic() - resumed_at
        await asyncio.gather(*(post_until_accepted(client, f"after-{i}") for i in range(1, 20)))
        await wait_for_rows(outage_settings.database_url, 40, timeout=DEADLINE_S)
        await wait_for_stream_length(client, 40)
        await wait_until_ready(client)
        assert flusher.proc.poll() is None, flusher.output()
    acknowledged = [f"{when}-{i}" for when in ("before", "after") for i in range(20)]
    conn = await asyncpg.connect(outage_settings.database_url)
    try:
        await assert_exactly_once(conn, acknowledged, ["during-the-pause"])
    finally:
        await conn.close()
    matrix_row("every Redis Cluster node SIGSTOPped, then resumed", 40, 40, recovery)


async def test_gateway_and_flusher_started_while_the_cluster_is_paused_serve_once_it_is_back(
    outage_settings: Settings, redis_cluster: RedisCluster, tmp_path: Path
) -> None:
    """A fresh cluster client reads the slot map at its first command: with every node
    paused, that is a ``RedisClusterException`` at once, at start."""
    with paused(redis_cluster):
        gateway = Gateway(env_for(outage_settings), tmp_path / "gateway.log")
        flusher = FlusherProcess(env_for(outage_settings), tmp_path / "flusher.log")
        client = HttpClient(gateway.url)
        try:
            await assert_unavailable_while_paused(client, time.monotonic())
        except BaseException:
            flusher.stop()
            gateway.stop()
            raise
        finally:
            await client.close()
    async with serving(gateway, flusher) as client:
        await post_until_accepted(client, "after-start")
        await wait_until_ready(client)
        await wait_for_stream_length(client, 1)
        for shard in range(SHARDS):  # the groups the gateway creates at start, created now
            await wait_for_group(redis_cluster, stream_key(shard))
        await wait_for_rows(outage_settings.database_url, 1, timeout=DEADLINE_S)
        assert flusher.proc.poll() is None, flusher.output()


async def wait_for_group(cluster: RedisCluster, stream: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    groups: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.ResponseError):
            groups = command(cluster.master_for_key(stream), "XINFO", "GROUPS", stream)
            if GROUP in str(groups):
                return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no group {GROUP} on {stream}: {groups}")

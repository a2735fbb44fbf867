"""Backpressure: past the backlog limits purchases get a 503, and it lifts by itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from core.settings import Settings
from devstack.processes import free_port
from devstack.redis_server import RedisServer
from flusher.worker import Flusher
from tests.conftest import env_for
from tests.helpers import Gateway, HttpClient, purchase


@pytest.fixture
def strict_gateway(settings: Settings, redis: object, tmp_path: Path) -> Iterator[Gateway]:
    limits = msgspec.structs.replace(
        settings,
        backlog_max_age_s=1.0,
        backlog_stall_s=1.0,
        backlog_max_length=40,
        backlog_check_interval_s=0.05,
    )
    gateway = Gateway(env_for(limits), tmp_path / "gateway.log")
    yield gateway
    gateway.stop()


@pytest.fixture
async def strict(strict_gateway: Gateway) -> AsyncIterator[HttpClient]:
    client = HttpClient(strict_gateway.url)
    yield client
    await client.close()


async def wait_for_status(client: HttpClient, status: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await client.get("/readyz")).status_code == status:
            return
        await asyncio.sleep(0.05)
    raise TimeoutError(f"/readyz never answered {status}")


async def test_an_old_unflushed_backlog_refuses_purchases_until_the_flusher_catches_up(
    strict: HttpClient, flusher: Flusher
) -> None:
    assert (await strict.post("/purchase", json=purchase())).status_code == 200
    await wait_for_status(strict, 503)  # nobody flushes: after 1 s the backlog is too old

    refused = await strict.post("/purchase", json=purchase())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "overloaded"
    assert "too old" in refused.json()["message"]
    ready = (await strict.get("/readyz")).json()
    assert ready["status"] == "overloaded"
    assert ready["backlog"]["oldest_unflushed_age_s"] >= 1

    assert await flusher.drain() == 1
    await wait_for_status(strict, 200)
    assert (await strict.post("/purchase", json=purchase())).status_code == 200


async def test_an_old_backlog_that_is_draining_does_not_refuse_purchases(
    strict: HttpClient, flusher: Flusher
) -> None:
    """After a restart with an old backlog the flusher drains at full speed: refusing every
    purchase meanwhile protects nothing. Here it drains one entry every 0.4 s."""
    for _ in range(15):  # plus 10 more below: under the length limit of 40
        assert (await strict.post("/purchase", json=purchase())).status_code == 200
    await wait_for_status(strict, 503)  # old, and nobody flushing: refused

    await flusher.prepare()
    draining = asyncio.get_running_loop().create_task(drain_slowly(flusher, 0.4))
    answers: list[int] = []
    ages: list[float] = []
    try:
        await wait_for_status(strict, 200)  # the first acknowledgements lift it
        while not draining.done() and len(answers) < 10:
            answers.append((await strict.post("/purchase", json=purchase())).status_code)
            ready = (await strict.get("/readyz")).json()
            ages.append(ready["backlog"]["oldest_unflushed_age_s"])
            await asyncio.sleep(0.05)
    finally:
        draining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await draining
    assert max(ages) > 1  # still past the age limit while draining...
    assert set(answers) == {200}  # ...and purchases accepted all along


async def drain_slowly(flusher: Flusher, pause_s: float) -> None:
    while entries := await flusher.reader.read(1, None):
        await flusher.process(entries)
        await asyncio.sleep(pause_s)


async def test_a_long_stream_refuses_purchases_even_while_draining_until_trimmed(
    strict: HttpClient, flusher: Flusher
) -> None:
    replies = await asyncio.gather(*(strict.post("/purchase", json=purchase()) for _ in range(41)))
    assert {r.status_code for r in replies} == {200}
    await wait_for_status(strict, 503)
    await flusher.prepare()
    await drain_slowly(flusher, 0)  # the frontier moves, but memory is what the length guards
    refused = await strict.post("/purchase", json=purchase())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"] == "overloaded"
    assert "too long" in refused.json()["message"]

    assert await flusher.trim() == 41  # acknowledged entries leave the stream
    await wait_for_status(strict, 200)
    assert (await strict.post("/purchase", json=purchase())).status_code == 200


async def test_gateway_started_before_redis_answers_503_then_serves(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    later = RedisServer(tmp_path / "redis", port)
    env = env_for(msgspec.structs.replace(settings, redis_url=later.url, redis_timeout_s=0.5))
    gateway = Gateway(env, tmp_path / "gateway.log")
    client = HttpClient(gateway.url)
    try:
        down = await client.post("/purchase", json=purchase())
        assert down.status_code == 503
        assert down.json()["error"] == "store_unavailable"
        assert (await client.get("/readyz")).status_code == 503

        later.start()
        await wait_for_status(client, 200)
        assert (await client.post("/purchase", json=purchase())).status_code == 200
    finally:
        await client.close()
        gateway.stop()
        later.stop()

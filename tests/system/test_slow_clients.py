"""Slow and idle clients: more stalled connections than a worker's budget deny nobody for long.

The gateway runs with a budget of 64 connections and 1 s deadlines; each test opens more
stalled connections than that over real TCP, then shows a normal client is served within a
few deadlines and the stalled ones are evicted (408 for a body that never completes).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import msgspec
import pytest

from core.settings import Settings
from tests.conftest import env_for
from tests.helpers import Gateway, HttpClient, purchase

BUDGET = 64
STALLED = BUDGET + 32
DEADLINE_S = 1.0
SERVED_WITHIN_S = 3 * DEADLINE_S + 2  # an eviction round, then a normal request, on a busy machine


@pytest.fixture
def tight_gateway(settings: Settings, redis: object, tmp_path: Path) -> Iterator[Gateway]:
    tight = msgspec.structs.replace(
        settings,
        connections_per_worker=BUDGET,
        header_timeout_s=DEADLINE_S,
        body_timeout_s=DEADLINE_S,
    )
    gateway = Gateway(env_for(tight), tmp_path / "gateway.log")
    yield gateway
    gateway.stop()


class Conn:
    """A raw TCP connection to the gateway, to stall exactly where a test wants."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until_closed(self, timeout: float) -> bytes:
        """Everything the server sends until it closes the connection."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    async def read_response(self, timeout: float) -> bytes:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return head + await asyncio.wait_for(self.reader.readexactly(length), timeout)

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def conns() -> AsyncIterator[list[Conn]]:
    opened: list[Conn] = []
    yield opened
    for conn in opened:
        conn.close()


def post_head(length: int) -> bytes:
    return (
        b"POST /purchase HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(length).encode() + b"\r\n\r\n"
    )


async def served_promptly(url: str) -> float:
    """Seconds a fresh client needs for GET /healthz and a POST /purchase; fails past the limit."""
    client = HttpClient(url)
    started = time.monotonic()
    try:
        async with asyncio.timeout(SERVED_WITHIN_S):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.post("/purchase", json=purchase())).status_code == 200
    finally:
        await client.close()
    return time.monotonic() - started


async def test_body_stalled_connections_past_the_budget_are_evicted_with_408(
    tight_gateway: Gateway, conns: list[Conn]
) -> None:
    body = json.dumps(purchase()).encode()
    for _ in range(STALLED):
        conn = await Conn.open(tight_gateway.port)
        conns.append(conn)
        await conn.send(post_head(len(body)) + body[:20])  # then nothing more

    await served_promptly(tight_gateway.url)

    answers = await asyncio.gather(*(c.read_until_closed(5 * SERVED_WITHIN_S) for c in conns))
    for answer in answers:
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408"), answer
        assert b"connection: close" in head.lower()
        error = json.loads(payload)
        assert error["error"] == "request_timeout"
        assert "1s" in error["message"]


async def test_silent_header_stalled_and_idle_connections_past_the_budget_are_closed(
    tight_gateway: Gateway, conns: list[Conn]
) -> None:
    body = json.dumps(purchase()).encode()
    for _ in range(STALLED // 3):  # idle keep-alive: one normal request each, then quiet
        conn = await Conn.open(tight_gateway.port)
        conns.append(conn)
        await conn.send(post_head(len(body)) + body)
        assert (await conn.read_response(SERVED_WITHIN_S)).startswith(b"HTTP/1.1 200")
    for index in range(STALLED - len(conns)):
        conn = await Conn.open(tight_gateway.port)
        conns.append(conn)
        if index % 2:
            await conn.send(b"POST /purchase HTTP/1.1\r\nHost: gate")  # inside its headers
        # else: connected and silent

    await served_promptly(tight_gateway.url)

    closed = await asyncio.gather(*(c.read_until_closed(5 * SERVED_WITHIN_S) for c in conns))
    assert closed == [b""] * len(conns)  # closed by the server without an answer


async def test_a_body_sent_in_pieces_within_the_deadline_is_accepted(
    tight_gateway: Gateway, conns: list[Conn]
) -> None:
    body = json.dumps(purchase()).encode()
    conn = await Conn.open(tight_gateway.port)
    conns.append(conn)
    await conn.send(post_head(len(body)) + body[:20])
    await asyncio.sleep(DEADLINE_S / 4)
    await conn.send(body[20:40])
    await asyncio.sleep(DEADLINE_S / 4)
    await conn.send(body[40:])
    assert (await conn.read_response(SERVED_WITHIN_S)).startswith(b"HTTP/1.1 200")

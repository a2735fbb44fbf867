"""gateway/http/body.py called directly through the ASGI receive interface: messages in, a body,
a 413, a 408 or a disconnect out."""

from __future__ import annotations

import asyncio

import pytest

from gateway.http.asgi import Message, Receive
from gateway.http.body import declared_length, read_body
from gateway.http.deadlines import TICKS, BodyDeadlines
from gateway.http.errors import ClientDisconnected, MalformedJSON, PayloadTooLarge, RequestTimeout


class Messages:
    """A receive callable over a list of ASGI messages; counts what was taken."""

    def __init__(self, *messages: Message) -> None:
        self.left = list(messages)
        self.taken = 0

    async def __call__(self) -> Message:
        self.taken += 1
        return self.left.pop(0)


def chunk(body: bytes, more: bool = True) -> Message:
    return {"type": "http.request", "body": body, "more_body": more}


async def read(receive: Receive, limit: int = 10, length: int | None = None) -> bytes:
    deadlines = BodyDeadlines(10.0)
    body = await read_body(receive, limit, length, deadlines)
    assert deadlines.sweep() == 0 and all(deadlines.sweep() == 0 for _ in range(TICKS + 1))
    return body


async def test_a_body_in_one_message_or_many_is_returned_whole() -> None:
    assert await read(Messages(chunk(b"abc", more=False))) == b"abc"
    many = Messages(chunk(b"ab"), chunk(b""), chunk(b"cd"), chunk(b"", more=False))
    assert await read(many) == b"abcd"
    assert many.taken == 4
    assert await read(Messages(chunk(b"x" * 10, more=False))) == b"x" * 10  # at the limit


async def test_a_declared_length_over_the_limit_is_413_before_reading() -> None:
    receive = Messages(chunk(b"x", more=False))
    with pytest.raises(PayloadTooLarge):
        await read(receive, limit=10, length=11)
    assert receive.taken == 0


async def test_a_body_growing_past_the_limit_is_413_without_reading_the_rest() -> None:
    receive = Messages(chunk(b"x" * 6), chunk(b"x" * 6), chunk(b"x" * 6), chunk(b"", more=False))
    with pytest.raises(PayloadTooLarge):
        await read(receive)
    assert receive.taken == 2
    with pytest.raises(PayloadTooLarge):
        await read(Messages(chunk(b"x" * 11, more=False)))


async def test_a_disconnect_before_or_inside_the_body_ends_the_request() -> None:
    with pytest.raises(ClientDisconnected):
        await read(Messages({"type": "http.disconnect"}))
    with pytest.raises(ClientDisconnected):
        await read(Messages(chunk(b"ab"), {"type": "http.disconnect"}))


async def test_a_stalled_body_is_408_once_its_deadline_passes() -> None:
    loop = asyncio.get_running_loop()
    stalled: list[asyncio.Future[Message]] = []

    def receive() -> asyncio.Future[Message]:  # as Granian's: a cancellable future
        stalled.append(loop.create_future())
        return stalled[-1]

    deadlines = BodyDeadlines(10.0)
    reading = asyncio.create_task(read_body(receive, 10, None, deadlines))
    while not stalled:
        await asyncio.sleep(0)
    for _ in range(TICKS + 1):
        deadlines.sweep()
    with pytest.raises(RequestTimeout):
        await reading
    assert stalled[0].cancelled()


async def test_a_request_cancelled_for_another_reason_stays_cancelled() -> None:
    loop = asyncio.get_running_loop()
    waiting: asyncio.Future[Message] = loop.create_future()
    reading = asyncio.create_task(read_body(lambda: waiting, 10, None, BodyDeadlines(10.0)))
    await asyncio.sleep(0)
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading


def test_content_length_must_be_a_non_negative_number() -> None:
    assert declared_length(None) is None
    assert declared_length(b"42") == 42
    for bad in (b"forty", b"-1", b""):
        with pytest.raises(MalformedJSON):
            declared_length(bad)


async def test_reading_stops_once_the_declared_length_has_arrived() -> None:
    """Granian sends the body, then an empty final message: waiting for that one is a
    second wake-up per request for nothing."""
    whole = Messages(chunk(b"abc"), chunk(b"", more=False))
    assert await read(whole, length=3) == b"abc"
    assert whole.taken == 1
    split = Messages(chunk(b"ab"), chunk(b"cd"), chunk(b"", more=False))
    assert await read(split, length=4) == b"abcd"
    assert split.taken == 2
    unknown = Messages(chunk(b"abc"), chunk(b"", more=False))  # chunked: no length
    assert await read(unknown) == b"abc"
    assert unknown.taken == 2

"""BodyInProgress a request body under a size limit and a deadline, without buffering more than the limit."""

from __future__ import annotations

import asyncio

from gateway.http.asgi import Message, Receive
from gateway.http.deadlines import BodyDeadlines
from gateway.http.errors import ClientDisconnected, MalformedJSON, PayloadTooLarge, RequestTimeout


def declared_length(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise MalformedJSON("Content-Length is not a number") from None
    if value < 0:
        raise MalformedJSON("Content-Length is negative")
    return value


async def read_body(
    receive: Receive, limit: int, content_length: int | None, deadlines: BodyDeadlines
) -> bytes:
    """The whole body; 413 as soon as the declared or received size passes ``limit``, 408
    if it is not complete within the deadline."""
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"request body is {content_length} bytes; the limit is {limit}")
    reading = deadlines.begin()
    try:
        reading.pending = receive()
        message: Message = await reading.pending
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        body: bytes = message.get("body", b"")
        size = len(body)
        # Granian sends the body, then an empty final message: once the declared length has
        # arrived, waiting for that one would be a second wake-up per request for nothing.
        if (size == content_length or not message.get("more_body", False)) and size <= limit:
            return body  # the common case: one message, no copying
        chunks = [body]
        while message.get("more_body", False) and size != content_length:
            if size > limit:
                break
            if reading.expired:  # expired while this task waited to resume with data
                raise asyncio.CancelledError
            reading.pending = receive()
            message = await reading.pending
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
        return b"".join(chunks)
    except asyncio.CancelledError:
        if not reading.expired:
            raise
        raise RequestTimeout(
            f"the request body did not arrive within {deadlines.timeout_s:g}s"
        ) from None
    finally:
        deadlines.end(reading)

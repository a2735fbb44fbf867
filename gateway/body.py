"""Reading a request body under a size limit, without buffering more than the limit."""

from __future__ import annotations

from gateway.errors import ClientDisconnected, MalformedJSON, PayloadTooLarge
from gateway.types import Receive


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


async def read_body(receive: Receive, limit: int, content_length: int | None) -> bytes:
    """The whole body; 413 as soon as the declared or received size passes ``limit``."""
    if content_length is not None and content_length > limit:
        raise PayloadTooLarge(f"request body is {content_length} bytes; the limit is {limit}")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False) and len(body) <= limit:
        return body  # the common case: one message, no copying
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        if size > limit:
            break
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
    if size > limit:
        raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
    return b"".join(chunks)

"""Sending responses: start messages built once, bodies sent in one message."""

from __future__ import annotations

from typing import Final

from gateway.types import Headers, Send

CONTENT_TYPE_JSON: Final = (b"content-type", b"application/json")
CONTENT_TYPE_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")


async def send_response(
    send: Send,
    status: int,
    body: bytes,
    headers: Headers | None = None,
    content_type: tuple[bytes, bytes] = CONTENT_TYPE_JSON,
) -> None:
    out = [content_type]
    if headers:
        out.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})

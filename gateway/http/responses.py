"""Responses: handlers return one, the app sends it; nothing is sent before a handler is done."""

from __future__ import annotations

from typing import Final, NamedTuple

from gateway.http.asgi import Headers, Send

CONTENT_TYPE_JSON: Final = (b"content-type", b"application/json")
CONTENT_TYPE_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")


class Response(NamedTuple):
    status: int
    body: bytes
    headers: Headers
    """Complete, content-type included."""


def json_response(status: int, body: bytes, *extra: tuple[bytes, bytes]) -> Response:
    return Response(status, body, [CONTENT_TYPE_JSON, *extra])


async def send_response(send: Send, response: Response) -> None:
    await send(
        {"type": "http.response.start", "status": response.status, "headers": response.headers}
    )
    await send({"type": "http.response.body", "body": response.body})

"""The reference: the least a correct ASGI app can do, on the same Granian as the gateway.

    python -m bench.empty_asgi        (port from MONOKERA_PORT, Granian options as the gateway's)

It reads a POST body until ``Content-Length`` bytes have arrived and stops there (Granian
2.8 sends the body, then an empty final message: a correct app need not wait for it),
answers every request with a constant JSON body, and does nothing else. It is served by
``gateway.__main__.server``, so HTTP mode, backpressure, header timeout, loop and workers
are exactly the gateway's.
"""

from __future__ import annotations

import sys
from typing import Any

_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}
_BODY = {"type": "http.response.body", "body": b'{"ok":true}'}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        length = -1
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = int(value)
        received = 0
        while True:
            message = await receive()
            received += len(message.get("body", b""))
            if not message.get("more_body", False) or received == length:
                break
    await send(_START)
    await send(_BODY)


def main() -> int:
    from core.settings import Settings
    from gateway.__main__ import server

    server("bench.empty_asgi:app", Settings.for_command("empty_asgi")).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The page's files, read once from the package and served with their validators.

No build step and no CDN: three files shipped as package data. ``no-cache`` makes the
browser revalidate each time (a 304 costs a header), so a new release is seen at once;
the Content-Security-Policy allows nothing from outside the gateway.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Final

from gateway.http.asgi import Receive, Scope
from gateway.http.responses import Response

_TYPES: Final = {
    "index.html": b"text/html; charset=utf-8",
    "console.css": b"text/css; charset=utf-8",
    "console.js": b"text/javascript; charset=utf-8",
}
_CSP: Final = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    b" connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = [
    (b"content-security-policy", _CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


class Asset:
    def __init__(self, name: str) -> None:
        body = resources.files("gateway.console").joinpath("static", name).read_bytes()
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:20].encode() + b'"'
        headers = [
            (b"content-type", _TYPES[name]),
            (b"cache-control", b"no-cache"),
            (b"etag", self.etag),
            *SECURITY_HEADERS,
        ]
        self.full = Response(200, body, headers)
        self.unchanged = Response(304, b"", headers[1:])

    async def __call__(self, scope: Scope, receive: Receive) -> Response:
        for name, value in scope["headers"]:
            if name == b"if-none-match" and self.etag in value:
                return self.unchanged
        return self.full


def assets() -> dict[str, Asset]:
    """File name -> its handler; the route table (gateway/api/routes.py) names them."""
    return {name: Asset(name) for name in _TYPES}

"""The HTTP errors: each carries its status and wire code, and ``error_response`` turns
one into the JSON body every error answer has.

HTTPError
├── MalformedJSON          400
│   └── NestedTooDeeply         arrays/objects nested past what the decoder can follow
├── NotFound               404
├── MethodNotAllowed       405  (Allow)
├── RequestTimeout         408  body not complete within its deadline (Connection: close)
├── PayloadTooLarge        413
├── UnsupportedMediaType   415
└── Unprocessable          422  well-formed, but not what the route takes

The API's own (a purchase that breaks the schema, an idempotency conflict) derive from
these in ``gateway.api.errors``, which also maps the domain's refusals
(``gateway.refusals``) to 503s: that module is the one place an exception becomes an
answer. ClientDisconnected is not an HTTP error: the client left, nobody is there to answer.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gateway.http.asgi import Headers
from gateway.http.responses import Response, json_response


class ErrorDetail(msgspec.Struct):
    path: str
    message: str


class ErrorBody(msgspec.Struct):
    error: str
    message: str
    details: list[ErrorDetail]


class HTTPError(Exception):
    status = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        details: list[ErrorDetail] | None = None,
        headers: Headers | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.headers = headers or []


class MalformedJSON(HTTPError):
    status = 400
    code = "malformed_json"


class NestedTooDeeply(MalformedJSON):
    """msgspec follows nesting on the C stack and stops with RecursionError at the
    interpreter's recursion limit: valid JSON, but no purchase is nested that deep."""

    code = "nested_too_deeply"

    def __init__(self) -> None:
        super().__init__("the body nests arrays or objects too deeply (a purchase needs 2 levels)")


class NotFound(HTTPError):
    status = 404
    code = "not_found"


class MethodNotAllowed(HTTPError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(
            f"method {method} is not allowed here; use {', '.join(allowed)}",
            headers=[(b"allow", ", ".join(allowed).encode())],
        )


class RequestTimeout(HTTPError):
    status = 408
    code = "request_timeout"

    def __init__(self, message: str) -> None:
        # Close: the rest of a late body may still arrive, and the slot is what we free.
        super().__init__(message, headers=[(b"connection", b"close")])


class PayloadTooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HTTPError):
    status = 415
    code = "unsupported_media_type"


class Unprocessable(HTTPError):
    status = 422
    code = "validation_error"


class ClientDisconnected(Exception):
    """The client went away before the request body was complete."""


_encoder = msgspec.json.Encoder()


def error_body(exc: HTTPError) -> ErrorBody:
    return ErrorBody(exc.code, exc.message, exc.details)


def error_response(exc: HTTPError) -> Response:
    return json_response(exc.status, _encoder.encode(error_body(exc)), *exc.headers)


INTERNAL_ERROR: Final = json_response(
    500, _encoder.encode(ErrorBody("internal_error", "internal server error", []))
)


def details_from_validation(message: str) -> list[ErrorDetail]:
    """msgspec ends a ValidationError with "- at `$.path`"; split that into a detail."""
    text, sep, where = message.rpartition(" - at `")
    if sep:
        return [ErrorDetail(where.rstrip("`"), text)]
    path = message.split(" ", 1)[0]
    return [ErrorDetail(path if path.startswith("$") else "$", message)]

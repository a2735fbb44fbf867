"""The errors a request can end in, mapped to HTTP in one place (``error_response``).

HTTPError
├── MalformedJSON          400
│   └── NestedTooDeeply         arrays/objects nested past what the decoder can follow
├── NotFound               404
├── MethodNotAllowed       405  (Allow)
├── RequestTimeout         408  body not complete within its deadline (Connection: close)
├── IdempotencyConflict    409  same transaction_id, different purchase
├── PayloadTooLarge        413
├── UnsupportedMediaType   415
├── InvalidPurchase        422
│   └── InvalidQuery            a path or query parameter of a read (same code)
└── ServiceUnavailable     503  (Retry-After)
    ├── RedisUnavailable        Redis unreachable or failing: nothing was acknowledged
    │                           (code store_unavailable, as clients know it)
    ├── HistoryUnavailable      PostgreSQL unreachable for a read
    └── Overloaded              backlog past its limits, or too many appends waiting

ClientDisconnected is not an HTTP error: the client left, there is nobody to answer.
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


class IdempotencyConflict(HTTPError):
    status = 409
    code = "idempotency_conflict"


class PayloadTooLarge(HTTPError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(HTTPError):
    status = 415
    code = "unsupported_media_type"


class InvalidPurchase(HTTPError):
    status = 422
    code = "validation_error"


class InvalidQuery(InvalidPurchase):
    """A 422 on a read: same status and code as any other validation error."""


class ServiceUnavailable(HTTPError):
    status = 503
    code = "service_unavailable"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers=[(b"retry-after", str(retry_after_s).encode())])


STORE_UNAVAILABLE: Final = "purchase store unavailable; retry after the Retry-After delay"
NOT_REPLICATED: Final = (
    "purchase store could not confirm the write on enough replicas in time;"
    " retry after the Retry-After delay"
)


class RedisUnavailable(ServiceUnavailable):
    """A fixed message, never Redis's own error text: that can name internal addresses
    (``MOVED 1234 10.0.3.17:6379``). Whoever raises this logs the error it stands for."""

    code = "store_unavailable"  # the wire name, kept

    def __init__(self, retry_after_s: int = 1, message: str = STORE_UNAVAILABLE) -> None:
        super().__init__(message, retry_after_s)


class HistoryUnavailable(ServiceUnavailable):
    code = "history_unavailable"


class Overloaded(ServiceUnavailable):
    code = "overloaded"


class ClientDisconnected(Exception):
    """The client went away before the request body was complete."""


_encoder = msgspec.json.Encoder()


def error_response(exc: HTTPError) -> Response:
    """The one place an error becomes an HTTP response."""
    body = _encoder.encode(ErrorBody(exc.code, exc.message, exc.details))
    return json_response(exc.status, body, *exc.headers)


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

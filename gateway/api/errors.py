"""The one place an exception becomes an answer.

The API's HTTP errors, beside the machinery's own (``gateway.http.errors``):

Unprocessable              422
└── InvalidPurchase             the purchase breaks the schema or a constraint
    └── InvalidQuery            a path or query parameter of a read (same code)
IdempotencyConflict        409  same transaction_id, different purchase

and the domain's refusals (``gateway.refusals``), each a 503 with Retry-After, its code
found by walking the exception's MRO as Starlette's exception handlers do:

StoreUnavailable     store_unavailable     (the wire name clients know)
HistoryUnavailable   history_unavailable
Overloaded           overloaded

Every 503 the gateway sends, a refusal's or /readyz's, gets its Retry-After here
(``ErrorResponses.retry_later``), from the one setting ``MONOKERA_RETRY_AFTER_S``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from gateway.http.errors import ErrorBody, HTTPError, Unprocessable, error_response
from gateway.http.responses import Response, json_response
from gateway.refusals import (
    HistoryUnavailable,
    NotReplicated,
    Overloaded,
    StoreUnavailable,
    Unavailable,
)


class InvalidPurchase(Unprocessable):
    """The purchase does not match the schema; ``details`` name the field."""


class InvalidQuery(InvalidPurchase):
    """A 422 on a read: same status and code as any other validation error."""


class IdempotencyConflict(HTTPError):
    status = 409
    code = "idempotency_conflict"


STORE_UNAVAILABLE: Final = "purchase store unavailable; retry after the Retry-After delay"
NOT_REPLICATED: Final = (
    "purchase store could not confirm the write on enough replicas in time;"
    " retry after the Retry-After delay"
)

REFUSALS: Final[dict[type[Unavailable], tuple[str, str | None]]] = {
    Unavailable: ("service_unavailable", None),
    StoreUnavailable: ("store_unavailable", STORE_UNAVAILABLE),
    NotReplicated: ("store_unavailable", NOT_REPLICATED),
    HistoryUnavailable: ("history_unavailable", None),
    Overloaded: ("overloaded", None),
}
"""Each refusal's wire code, and its fixed text (None: the refusal's own message)."""

_encoder: Final = msgspec.json.Encoder()


class ErrorResponses:
    def __init__(self, retry_after_s: int = 1) -> None:
        self._retry_after = (b"retry-after", str(retry_after_s).encode())

    def response(self, exc: HTTPError | Unavailable) -> Response:
        if isinstance(exc, HTTPError):
            return error_response(exc)
        code, text = next(REFUSALS[kind] for kind in type(exc).__mro__ if kind in REFUSALS)
        body = _encoder.encode(ErrorBody(code, text or exc.message, []))
        return json_response(503, body, self._retry_after)

    def retry_later(self, response: Response) -> Response:
        """A 503 a handler answered itself (/readyz), with the Retry-After every 503 has."""
        if any(name == b"retry-after" for name, _ in response.headers):
            return response
        return Response(503, response.body, [*response.headers, self._retry_after])

"""The service's routes, in one table read by the router and the OpenAPI document.

A route names its handler (``Route.handler``); the services bind those names to the
handlers they built (gateway/services.py), and gateway/api/openapi.py describes the same
rows, so a route cannot be served without being documented, or documented without being
served. Types say the rest: ``params`` is the Struct the handler decodes its path and query
with (gateway/api/params.py), ``body`` the request body, a response's ``body`` what it
answers. The console's routes are its own (gateway/console/routes.py); the table served is
the union (``gateway.services.served_routes``).
"""

from __future__ import annotations

from typing import Final

from core.events import PurchaseRequest
from gateway.api.params import AccountPath, HistoryParams, TransactionPath
from gateway.api.schemas import AccountSummary, HistoryPage, PurchaseResponse, TransactionView
from gateway.http.routing import ResponseSpec, Route

JSON_OBJECT: Final = {"type": "object"}


_UNAVAILABLE: Final = ResponseSpec(
    "Redis unavailable or backlog over its limits; nothing was acknowledged",
    headers=("Retry-After",),
)
_BODY_ERRORS: Final = {
    400: ResponseSpec("Malformed JSON or invalid UTF-8"),
    408: ResponseSpec(
        "Body not complete within its deadline; the connection is closed, nothing was acknowledged"
    ),
    413: ResponseSpec("Body over the size limit"),
    415: ResponseSpec("Content-Type is not JSON"),
    422: ResponseSpec("The purchase violates the schema or a constraint; details name the field"),
    503: _UNAVAILABLE,
}
STORAGE_UNAVAILABLE: Final = ResponseSpec("Storage unavailable", headers=("Retry-After",))
_STATUS: Final = ResponseSpec("Alive", JSON_OBJECT)

_BATCH: Final = (
    "Each item is validated and appended on its own, as if posted to /purchase: an item that"
    " is not a valid purchase (a wrong type, an unknown field, a broken constraint) does not"
    " reject the others, it gets an error object in its place in the 200 answer. The batch"
    " as a whole is refused (4xx) only when it is not a JSON array of 1 to maxItems values,"
    " and answered 503 (nothing acknowledged, safe to retry whole) when the store is"
    " unavailable."
)


_IDEMPOTENCY: Final = (
    "Idempotent on transaction_id for {idempotency_ttl_s} s after its first acceptance (the"
    " idempotency window, MONOKERA_IDEMPOTENCY_TTL_S): the same purchase again is answered"
    " the original 200 with Idempotent-Replayed: true, a different purchase under the same"
    " transaction_id is a 409. Past the window (or after the operator changed the shard"
    " count) the gateway no longer remembers the id: a retry is answered 200 again, and the"
    " ledger keeps the first purchase only; a different purchase under a reused id is then"
    " NOT recorded, though answered 200 (the flusher records it as a conflicting duplicate)."
    " Never reuse a transaction_id for another purchase, and retry within the window."
)

ROUTES: Final = (
    Route(
        "POST",
        "/purchase",
        "purchase",
        "purchase",
        "Record a purchase: a debit of the customer, a credit of the seller",
        {
            200: ResponseSpec(
                "Accepted: appended to the stream, both legs, durable history follows",
                PurchaseResponse,
                ("X-Request-ID", "X-Stream-Entry-ID", "Idempotent-Replayed"),
            ),
            409: ResponseSpec(
                "transaction_id already used for a different purchase within the idempotency window"
            ),
            **_BODY_ERRORS,
        },
        body=PurchaseRequest,
        description=_IDEMPOTENCY,
    ),
    Route(
        "POST",
        "/purchases",
        "purchases",
        "purchases",
        "A batch of purchases; one result per item, in order",
        {
            200: ResponseSpec(
                "One result per item, in order: the seed's response for each accepted (or"
                " replayed) item, the error body (validation_error, idempotency_conflict, ...)"
                " for each refused one",
                {
                    "type": "array",
                    "items": {"oneOf": [{"$ref": "PurchaseResponse"}, {"$ref": "ErrorBody"}]},
                },
                ("X-Request-ID",),
            ),
            **_BODY_ERRORS,
        },
        body=list[PurchaseRequest],
        description=_BATCH,
    ),
    Route(
        "GET",
        "/transactions/{transaction_id}",
        "getTransaction",
        "transaction",
        "A purchase with both legs and its trace (ACCEPTED or PERSISTED)",
        {
            200: ResponseSpec("Found", TransactionView),
            404: ResponseSpec("No such transaction"),
            503: STORAGE_UNAVAILABLE,
        },
        params=TransactionPath,
    ),
    Route(
        "GET",
        "/accounts/{account}",
        "getAccountSummary",
        "summary",
        "Totals debited and credited, counts, first and last activity",
        {
            200: ResponseSpec("Totals", AccountSummary),
            422: ResponseSpec("Malformed account"),
            503: STORAGE_UNAVAILABLE,
        },
        params=AccountPath,
    ),
    Route(
        "GET",
        "/accounts/{account}/transactions",
        "getAccountHistory",
        "history",
        "Ledger entries of one account, newest first, keyset-paginated",
        {
            200: ResponseSpec("A page", HistoryPage),
            422: ResponseSpec("Bad limit, cursor or account"),
            503: STORAGE_UNAVAILABLE,
        },
        params=HistoryParams,
    ),
    Route("GET", "/healthz", "healthz", "healthz", "The process answers", {200: _STATUS}),
    Route(
        "GET",
        "/readyz",
        "readyz",
        "readyz",
        "Redis answers and the backlog is under its limits",
        {
            200: ResponseSpec("Ready", JSON_OBJECT),
            503: ResponseSpec(
                "Redis down or backlog over its limits", JSON_OBJECT, ("Retry-After",)
            ),
        },
    ),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "metrics",
        "Prometheus text: every worker's counters of this gateway (label worker), the backlog,"
        " the flushers' figures",
        {200: ResponseSpec("The metrics", "text/plain")},
    ),
    Route(
        "GET",
        "/openapi.json",
        "openapi",
        "openapi",
        "This document",
        {200: ResponseSpec("The OpenAPI 3.1 document", JSON_OBJECT)},
    ),
)

"""Every route the gateway serves, in one table read by the router and the OpenAPI document.

A route names its handler (``Route.handler``); the app binds those names to the handlers
built from its services (gateway/app.py), and gateway/api/openapi.py describes the same rows,
so a route cannot be served without being documented, or documented without being served.
Types say the rest: ``params`` is the Struct the handler decodes its path and query with
(gateway/api/params.py), ``body`` the request body, a reply's ``body`` what it answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from core.events import PurchaseRequest
from core.settings import Settings
from gateway.api.params import AccountPath, HistoryParams, TraceQuery, TransactionPath
from gateway.api.schemas import AccountSummary, HistoryPage, PurchaseResponse, TransactionView
from gateway.console.schemas import Overview
from gateway.http.errors import ErrorBody
from ops.trace import TxTrace

JSON_OBJECT: Final = {"type": "object"}


class Reply(NamedTuple):
    description: str
    body: Any = ErrorBody
    """A msgspec type (JSON), a media type such as "text/html", a JSON schema dict taken as
    is (components referenced by name), or None for no body."""
    headers: tuple[str, ...] = ()
    """Names from ``openapi.HEADERS``."""


class Route(NamedTuple):
    method: str
    path: str
    operation: str
    """The OpenAPI operationId."""
    handler: str
    """Which handler answers: a key of the mapping the app builds from its services."""
    summary: str
    responses: Mapping[int, Reply]
    params: type | None = None
    body: Any = None
    """The request body's type; a ``list[T]`` is a batch, each item answered on its own."""
    description: str = ""
    console: bool = False
    """Served only with ``MONOKERA_CONSOLE`` on (and documented only then)."""
    documented: bool = True
    """False only for an alias whose path differs by a trailing slash: OpenAPI tools take
    those for the same path."""


_UNAVAILABLE: Final = Reply(
    "Redis unavailable or backlog over its limits; nothing was acknowledged",
    headers=("Retry-After",),
)
_BODY_ERRORS: Final = {
    400: Reply("Malformed JSON or invalid UTF-8"),
    408: Reply(
        "Body not complete within its deadline; the connection is closed, nothing was acknowledged"
    ),
    413: Reply("Body over the size limit"),
    415: Reply("Content-Type is not JSON"),
    422: Reply("The purchase violates the schema or a constraint; details name the field"),
    503: _UNAVAILABLE,
}
_STORAGE_UNAVAILABLE: Final = Reply("Storage unavailable", headers=("Retry-After",))
_STATUS: Final = Reply("Alive", JSON_OBJECT)

_BATCH: Final = (
    "Each item is validated and appended on its own, as if posted to /purchase: an item that"
    " is not a valid purchase (a wrong type, an unknown field, a broken constraint) does not"
    " reject the others, it gets an error object in its place in the 200 answer. The batch"
    " as a whole is refused (4xx) only when it is not a JSON array of 1 to maxItems values,"
    " and answered 503 (nothing acknowledged, safe to retry whole) when the store is"
    " unavailable."
)


def _asset(path: str, file: str, media: str, summary: str, documented: bool = True) -> Route:
    return Route(
        "GET",
        path,
        "console" + file.replace(".", " ").title().replace(" ", ""),  # consoleIndexHtml
        file,
        summary,
        {
            200: Reply("The file", media, ("ETag",)),
            304: Reply("Unchanged since the ETag in If-None-Match", None, ("ETag",)),
        },
        console=True,
        documented=documented,
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
            200: Reply(
                "Accepted: appended to the stream, both legs, durable history follows",
                PurchaseResponse,
                ("X-Request-ID", "X-Stream-Entry-ID", "Idempotent-Replayed"),
            ),
            409: Reply(
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
            200: Reply(
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
            200: Reply("Found", TransactionView),
            404: Reply("No such transaction"),
            503: _STORAGE_UNAVAILABLE,
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
            200: Reply("Totals", AccountSummary),
            422: Reply("Malformed account"),
            503: _STORAGE_UNAVAILABLE,
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
            200: Reply("A page", HistoryPage),
            422: Reply("Bad limit, cursor or account"),
            503: _STORAGE_UNAVAILABLE,
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
            200: Reply("Ready", JSON_OBJECT),
            503: Reply("Redis down or backlog over its limits", JSON_OBJECT, ("Retry-After",)),
        },
    ),
    Route(
        "GET",
        "/metrics",
        "metrics",
        "metrics",
        "Prometheus text exposition of this worker's counters",
        {200: Reply("The metrics", "text/plain")},
    ),
    Route(
        "GET",
        "/openapi.json",
        "openapi",
        "openapi",
        "This document",
        {200: Reply("The OpenAPI 3.1 document", JSON_OBJECT)},
    ),
    _asset("/console", "index.html", "text/html", "The operations page"),
    _asset("/console/", "index.html", "text/html", "The operations page", documented=False),
    _asset("/console/console.css", "console.css", "text/css", "The page's style sheet"),
    _asset("/console/console.js", "console.js", "text/javascript", "The page's script"),
    Route(
        "GET",
        "/console/api/overview",
        "consoleOverview",
        "consoleOverview",
        "The console's live figures: this worker's counters, backlog per shard",
        {200: Reply("Figures and the last minutes, one point a second", Overview)},
        console=True,
    ),
    Route(
        "GET",
        "/console/api/trace",
        "consoleTrace",
        "consoleTrace",
        "One purchase through Redis and PostgreSQL, as `make trace` prints it",
        {
            200: Reply("Found", TxTrace),
            404: Reply("No trace of it anywhere"),
            422: Reply("tx missing"),
            503: _STORAGE_UNAVAILABLE,
        },
        params=TraceQuery,
        console=True,
    ),
)


def served(settings: Settings) -> list[Route]:
    """The routes this configuration serves."""
    return [route for route in ROUTES if settings.console or not route.console]

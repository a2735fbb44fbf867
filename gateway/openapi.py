"""The OpenAPI 3.1 document, generated from the same msgspec types the gateway decodes with.

Nothing here is written by hand that the types already say, so the document cannot drift
from what the server accepts. Built once at import; served as bytes.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from core.events import PurchaseRequest, PurchaseResponse
from gateway.console import openapi as console_openapi
from gateway.errors import ErrorBody
from gateway.reads import CURSOR_PATTERN, DEFAULT_LIMIT, MAX_LIMIT
from gateway.views import AccountSummary, HistoryPage, TransactionView

SEED_EXAMPLE: Final = {
    "transaction_id": "312312312312",
    "customer_info": {
        "customer_name": "User 1",
        "customer_account": "23131342342342321",
        "ammount": 20000,
    },
    "seller_info": {"seller_name": "User 2", "seller_account": "23132131"},
}

_ERRORS: Final = {
    "400": "Malformed JSON or invalid UTF-8",
    "408": "Body not complete within its deadline; the connection is closed, nothing was acknowledged",
    "409": "transaction_id already used for a different purchase",
    "413": "Body over the size limit",
    "415": "Content-Type is not JSON",
    "422": "The purchase violates the schema or a constraint; details name the field",
    "503": "Redis unavailable or backlog over its limits; nothing was acknowledged",
}


_BATCH: Final = (
    "Each item is validated and appended on its own, as if posted to /purchase: an item that"
    " is not a valid purchase (a wrong type, an unknown field, a broken constraint) does not"
    " reject the others, it gets an error object in its place in the 200 answer. The batch"
    " as a whole is refused (4xx) only when it is not a JSON array of 1 to 1,000 values, and"
    " answered 503 (nothing acknowledged, safe to retry whole) when the store is unavailable."
)

_ACCOUNT: Final = {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"}


def _path_param(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def build() -> dict[str, Any]:
    (request, response, error, transaction, page, summary), components = (
        msgspec.json.schema_components(
            [
                PurchaseRequest,
                PurchaseResponse,
                ErrorBody,
                TransactionView,
                HistoryPage,
                AccountSummary,
            ],
            ref_template="#/components/schemas/{name}",
        )
    )
    json_error = {"application/json": {"schema": error}}
    retry_after = {"Retry-After": {"schema": {"type": "integer"}}}
    purchase_responses: dict[str, Any] = {
        "200": {
            "description": "Accepted: appended to the stream, both legs, durable history follows",
            "headers": {
                "X-Request-ID": {"schema": {"type": "string"}},
                "X-Stream-Entry-ID": {"schema": {"type": "string"}},
                "Idempotent-Replayed": {"schema": {"type": "string", "enum": ["true"]}},
            },
            "content": {"application/json": {"schema": response}},
        }
    }
    for status, description in _ERRORS.items():
        purchase_responses[status] = {"description": description, "content": json_error}
    purchase_responses["503"]["headers"] = retry_after
    status_doc = {"application/json": {"schema": {"type": "object"}}}
    storage_unavailable = {
        "description": "Storage unavailable",
        "content": json_error,
        "headers": retry_after,
    }
    console_paths, console_components = console_openapi.paths(json_error)
    components.update(console_components)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Monokera purchase gateway",
            "version": "1",
            "description": "Wire-compatible with the original POST /purchase.",
        },
        "paths": {
            "/purchase": {
                "post": {
                    "operationId": "purchase",
                    "summary": "Record a purchase: a debit of the customer, a credit of the seller",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": request, "example": SEED_EXAMPLE}
                        },
                    },
                    "responses": purchase_responses,
                }
            },
            "/purchases": {
                "post": {
                    "operationId": "purchases",
                    "summary": "Up to 1,000 purchases; one result per item, in order",
                    "description": _BATCH,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {
                                        "description": "Meant to be a PurchaseRequest; any"
                                        " value is taken and answered on its own",
                                        "anyOf": [request, {}],
                                    },
                                    "minItems": 1,
                                    "maxItems": 1000,
                                },
                                "example": [SEED_EXAMPLE],
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "One result per item, in order: the seed's"
                            " response for each accepted (or replayed) item, the error body"
                            " (validation_error, idempotency_conflict, ...) for each refused one",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "array",
                                        "items": {"oneOf": [response, error]},
                                    }
                                }
                            },
                        },
                        **{
                            status: purchase_responses[status]
                            for status in ("400", "408", "413", "415", "422", "503")
                        },
                    },
                }
            },
            "/transactions/{transaction_id}": {
                "get": {
                    "operationId": "getTransaction",
                    "summary": "A purchase with both legs and its trace (ACCEPTED or PERSISTED)",
                    "parameters": [
                        _path_param(
                            "transaction_id", {"type": "string", "minLength": 1, "maxLength": 64}
                        )
                    ],
                    "responses": {
                        "200": {
                            "description": "Found",
                            "content": {"application/json": {"schema": transaction}},
                        },
                        "404": {"description": "No such transaction", "content": json_error},
                        "503": storage_unavailable,
                    },
                }
            },
            "/accounts/{account}": {
                "get": {
                    "operationId": "getAccountSummary",
                    "summary": "Totals debited and credited, counts, first and last activity",
                    "parameters": [_path_param("account", _ACCOUNT)],
                    "responses": {
                        "200": {
                            "description": "Totals",
                            "content": {"application/json": {"schema": summary}},
                        },
                        "422": {"description": "Malformed account", "content": json_error},
                        "503": storage_unavailable,
                    },
                }
            },
            "/accounts/{account}/transactions": {
                "get": {
                    "operationId": "getAccountHistory",
                    "summary": "Ledger entries of one account, newest first, keyset-paginated",
                    "parameters": [
                        _path_param("account", _ACCOUNT),
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIMIT,
                                "default": DEFAULT_LIMIT,
                            },
                        },
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "pattern": CURSOR_PATTERN},
                            "description": "next_cursor of the previous page (opaque); empty or"
                            " absent for the first page",
                        },
                    ],
                    "responses": {
                        "200": {
                            "description": "A page",
                            "content": {"application/json": {"schema": page}},
                        },
                        "422": {
                            "description": "Bad limit, cursor or account",
                            "content": json_error,
                        },
                        "503": storage_unavailable,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "responses": {"200": {"description": "Alive", "content": status_doc}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "responses": {
                        "200": {"description": "Ready", "content": status_doc},
                        "503": {
                            "description": "Redis down or backlog over its limits",
                            "headers": retry_after,
                            "content": status_doc,
                        },
                    },
                }
            },
            **console_paths,
        },
        "components": {"schemas": components},
    }


DOCUMENT: Final = msgspec.json.encode(build())

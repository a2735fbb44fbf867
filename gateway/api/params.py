"""Path and query parameters, typed like the body: msgspec Structs reusing its constraints.

A parameter is declared once here; the handler decodes it with ``decode`` and the OpenAPI
document publishes the same field's schema, so the two cannot disagree. Query values are
text: ``decode`` converts them leniently (``"50"`` is the integer 50), then every
constraint applies as it does to a body.
"""

from __future__ import annotations

import re
from typing import Annotated, Final, TypeVar
from urllib.parse import parse_qs

import msgspec
from msgspec import Meta

from core.events import Account, TransactionId
from gateway.api.errors import InvalidQuery
from gateway.http.asgi import Scope
from gateway.http.errors import ErrorDetail, details_from_validation

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500

CURSOR_PATTERN: Final = r"^(?:c2Vx[A-Za-z0-9_-]{21}[AQgw])?(?!\n)$"
"""Unpadded base64url of "seq" and 16 bytes, or empty (the first page, as if absent): the
last character carries 2 bits, so it is one of 4. "(?!\n)$" as in core.events: Python's "$"
also matches before a final newline."""

Limit = Annotated[int, Meta(ge=1, le=MAX_LIMIT)]
Cursor = Annotated[
    str,
    Meta(
        pattern=CURSOR_PATTERN,
        description="next_cursor of the previous page (opaque); empty or absent for the first page",
    ),
]


class TransactionPath(msgspec.Struct):
    transaction_id: TransactionId


class AccountPath(msgspec.Struct):
    account: Account


class HistoryParams(msgspec.Struct):
    account: Account
    limit: Limit = DEFAULT_LIMIT
    cursor: Cursor = ""


P = TypeVar("P", bound=msgspec.Struct)

_MISSING: Final = re.compile(r"Object missing required field `([^`]+)`")


def decode(kind: type[P], scope: Scope) -> P:
    """The route's path parameters and query string as ``kind``; a 422 naming the parameter.

    A repeated query parameter counts once, by its first value; unknown ones are ignored."""
    values: dict[str, str] = {
        name: found[0]
        for name, found in parse_qs(
            scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True
        ).items()
    }
    values.update(scope.get("path_params", {}))
    try:
        return msgspec.convert(values, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise InvalidQuery(f"invalid parameter: {exc}", _details(str(exc))) from None


def _details(message: str) -> list[ErrorDetail]:
    missing = _MISSING.match(message)
    if missing:
        return [ErrorDetail(missing[1], "missing")]
    details = details_from_validation(message)
    for detail in details:
        detail.path = detail.path.removeprefix("$.")
    return details

"""POST /purchase: decode, append the purchase as one stream entry, answer the seed's body."""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Final

import msgspec

from core.entries import Values
from core.entries import values as entry_values
from core.events import PurchaseRequest, encoder, request_decoder
from core.idempotency import Appended, Outcome, fingerprint
from gateway.api.errors import IdempotencyConflict, InvalidPurchase
from gateway.api.schemas import response_for
from gateway.http.asgi import Receive, Scope
from gateway.http.body import declared_length, read_body
from gateway.http.deadlines import BodyDeadlines
from gateway.http.errors import (
    ErrorDetail,
    HTTPError,
    MalformedJSON,
    NestedTooDeeply,
    UnsupportedMediaType,
    details_from_validation,
    error_body,
)
from gateway.http.request_ids import RequestIds
from gateway.http.responses import CONTENT_TYPE_JSON, Response
from gateway.ingest.appender import StreamAppender
from gateway.ingest.backpressure import BacklogMonitor
from gateway.refusals import Overloaded
from gateway.telemetry.counters import Histogram

REPLAYED: Final = (b"idempotent-replayed", b"true")
ACCEPTED: Final = Outcome.ACCEPTED
CONFLICT: Final = Outcome.CONFLICT
_LOG_LINES: Final = {
    Outcome.ACCEPTED: "purchase accepted",
    Outcome.REPLAYED: "purchase replayed",
    Outcome.CONFLICT: "purchase refused: transaction_id used for a different purchase",
}
log = logging.getLogger("monokera.purchase")


class PurchaseHandler:
    """POST /purchase (one purchase) and POST /purchases (a JSON array of them)."""

    def __init__(
        self,
        appender: StreamAppender,
        backlog: BacklogMonitor,
        request_ids: RequestIds,
        deadlines: BodyDeadlines,
        *,
        max_body_bytes: int,
        ack_latency: Histogram,
        log_purchases: bool = False,
        max_batch_items: int,
        max_batch_body_bytes: int,
    ) -> None:
        self._appender = appender
        self._backlog = backlog
        self._request_ids = request_ids
        self._deadlines = deadlines
        self._limit = max_body_bytes
        self._ack_latency = ack_latency
        self._log_purchases = log_purchases
        self._max_batch_items = max_batch_items
        self._batch_limit = max_batch_body_bytes

    async def __call__(self, scope: Scope, receive: Receive) -> Response:
        started = time.perf_counter()
        content_length, client_request_id = self._admit(scope)
        body = await read_body(
            receive, self._limit, declared_length(content_length), self._deadlines
        )
        request = decode_purchase(body)
        request_id = self._request_ids.accept_or_make(client_request_id)
        appended = await self._append(request, request_id)
        self._ack_latency.observe(time.perf_counter() - started)
        headers = [
            CONTENT_TYPE_JSON,
            (b"x-request-id", request_id.encode()),
            (b"x-stream-entry-id", appended.entry_id),
        ]
        if appended.outcome is not ACCEPTED:
            raise_on_conflict(request, appended)
            headers.append(REPLAYED)
        return Response(200, encoder.encode(response_for(request)), headers)

    async def batch(self, scope: Scope, receive: Receive) -> Response:
        """Each item is atomic on its own: one bad item does not reject the others. The
        answer holds one result per item, in order: the seed's response for each accepted
        (or replayed) purchase, the usual error body for each rejected one."""
        started = time.perf_counter()
        content_length, client_request_id = self._admit(scope)
        body = await read_body(
            receive, self._batch_limit, declared_length(content_length), self._deadlines
        )
        requests = decode_batch(body, self._max_batch_items)
        request_id = self._request_ids.accept_or_make(client_request_id)
        results: list[object] = [None] * len(requests)
        pending: list[tuple[int, PurchaseRequest]] = []
        purchases: list[tuple[str, bytes, Values]] = []
        accepted_at_us = time.time_ns() // 1000
        for index, request in enumerate(requests):
            if isinstance(request, HTTPError):
                results[index] = error_body(request)
                continue
            pending.append((index, request))
            purchases.append(
                (
                    request.transaction_id,
                    fingerprint(encoder.encode(request)),
                    entry_values(request, f"{request_id}:{index}", accepted_at_us),
                )
            )
        # Not acknowledged if this raises (Redis away, overloaded): retrying the whole
        # batch is safe, every item being idempotent.
        outcomes = await self._appender.append_many(purchases)
        for (index, request), appended in zip(pending, outcomes, strict=True):
            if self._log_purchases:
                self._log(request, f"{request_id}:{index}", appended)
            if appended.outcome is CONFLICT:
                results[index] = error_body(conflict(request, f"$[{index}]"))
            else:
                results[index] = response_for(request)
        self._ack_latency.observe(time.perf_counter() - started)
        return Response(
            200,
            encoder.encode(results),
            [CONTENT_TYPE_JSON, (b"x-request-id", request_id.encode())],
        )

    def _admit(self, scope: Scope) -> tuple[bytes | None, bytes | None]:
        """Backpressure and headers, before a byte of the body is read."""
        if self._backlog.refusal is not None:
            raise Overloaded(self._backlog.refusal)
        content_type = content_length = client_request_id = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                content_length = value
            elif name == b"x-request-id":
                client_request_id = value
        if content_type and not is_json(content_type):
            raise UnsupportedMediaType(
                f"Content-Type must be application/json, got {content_type.decode('latin-1')!r}"
            )
        return content_length, client_request_id

    async def _append(self, request: PurchaseRequest, request_id: str) -> Appended:
        appended = await self._appender.append(
            request.transaction_id,
            fingerprint(encoder.encode(request)),
            entry_values(request, request_id, time.time_ns() // 1000),
        )
        if self._log_purchases:
            self._log(request, request_id, appended)
        return appended

    def _log(self, request: PurchaseRequest, request_id: str, appended: Appended) -> None:
        log.info(
            _LOG_LINES[appended.outcome],
            extra={
                "request_id": request_id,
                "transaction_id": request.transaction_id,
                "stream_entry_id": appended.entry_id.decode(),
            },
        )


def decode_purchase(body: bytes, at: str = "$") -> PurchaseRequest:
    try:
        try:
            return request_decoder.decode(body)
        except msgspec.ValidationError as exc:
            exact = with_integral_amount(body) if str(exc).startswith(_FLOAT_FOR_INT) else None
            if exact is None:
                raise
            return request_decoder.decode(exact)
    except msgspec.ValidationError as exc:
        details = details_from_validation(str(exc))
        for detail in details:
            detail.path = at + detail.path[1:]
        raise InvalidPurchase("the purchase does not match the schema", details) from None
    except msgspec.DecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MalformedJSON(
            f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}"
        ) from None
    except RecursionError:
        raise NestedTooDeeply() from None


_FLOAT_FOR_INT: Final = "Expected `int`, got `float`"
_exact_decoder: Final = msgspec.json.Decoder(float_hook=Decimal)
_exact_encoder: Final = msgspec.json.Encoder(decimal_format="number")


def with_integral_amount(body: bytes) -> bytes | None:
    """The body again with an integral ``ammount`` written as an integer, or None.

    JSON has one number type and JSON Schema calls 981.0 and 9.81e2 integers, so the
    published schema allows them; msgspec's strict int does not. Only the error path pays
    for this second decode. The number's text is read as an exact Decimal, never a float, so
    999999999999999.99 is not rounded into an integer, and a 1e400 is not expanded."""
    try:
        value = _exact_decoder.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return None
    info = value.get("customer_info") if isinstance(value, dict) else None
    amount = info.get("ammount") if isinstance(info, dict) else None
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount.adjusted() > 18:
        return None
    if amount != amount.to_integral_value():
        return None
    info["ammount"] = int(amount)  # type: ignore[index]
    return _exact_encoder.encode(value)


_batch_decoder: Final = msgspec.json.Decoder(list[msgspec.Raw])
_whole_batch_decoder: Final = msgspec.json.Decoder(list[PurchaseRequest])


def decode_batch(body: bytes, max_items: int) -> list[PurchaseRequest | HTTPError]:
    """Each item decoded, or the error that item alone gets. A batch whose items are all
    valid is decoded in one call; only a batch with a bad item pays for one per item."""
    try:
        requests: list[PurchaseRequest | HTTPError] = list(_whole_batch_decoder.decode(body))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        pass  # msgspec.ValidationError is a DecodeError
    else:
        if 1 <= len(requests) <= max_items:
            return requests
    items = _raw_items(body, max_items)
    decoded: list[PurchaseRequest | HTTPError] = []
    for index, raw in enumerate(items):
        try:
            decoded.append(decode_purchase(raw, f"$[{index}]"))
        except HTTPError as exc:
            decoded.append(exc)
    return decoded


def _raw_items(body: bytes, max_items: int) -> list[msgspec.Raw]:
    try:
        items = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise InvalidPurchase(
            "the body must be a JSON array of purchases", details_from_validation(str(exc))
        ) from None
    except msgspec.DecodeError as exc:
        raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:
        raise MalformedJSON(f"the body is not valid UTF-8: {exc.reason}") from None
    except RecursionError:
        raise NestedTooDeeply() from None
    if not 1 <= len(items) <= max_items:
        raise InvalidPurchase(
            f"a batch holds 1 to {max_items} purchases, not {len(items)}",
            [ErrorDetail("$", f"expected 1..{max_items} items")],
        )
    return items


def raise_on_conflict(request: PurchaseRequest, appended: Appended, at: str = "$") -> None:
    if appended.outcome is CONFLICT:
        raise conflict(request, at)


def conflict(request: PurchaseRequest, at: str) -> IdempotencyConflict:
    return IdempotencyConflict(
        f"transaction_id {request.transaction_id!r} was already used for a different purchase",
        [ErrorDetail(f"{at}.transaction_id", "already used with a different body")],
    )


def is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )

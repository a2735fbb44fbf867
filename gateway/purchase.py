"""POST /purchase: decode, append both legs as one stream entry, answer the seed's body."""

from __future__ import annotations

import logging
import time
from hashlib import blake2b
from typing import Final

import msgspec

from core.events import encoder, event_from_request, request_decoder, response_for
from gateway.appender import StreamAppender
from gateway.backlog import BacklogMonitor
from gateway.body import declared_length, read_body
from gateway.errors import (
    ErrorDetail,
    IdempotencyConflict,
    InvalidPurchase,
    MalformedJSON,
    Overloaded,
    UnsupportedMediaType,
    details_from_validation,
)
from gateway.metrics import Histogram
from gateway.request_ids import RequestIds
from gateway.responses import CONTENT_TYPE_JSON, Response
from gateway.types import Receive, Scope

REPLAYED: Final = (b"idempotent-replayed", b"true")
log = logging.getLogger("monokera.purchase")


class PurchaseHandler:
    def __init__(
        self,
        appender: StreamAppender,
        backlog: BacklogMonitor,
        request_ids: RequestIds,
        *,
        max_body_bytes: int,
        retry_after_s: int,
        ack_latency: Histogram,
        log_purchases: bool = False,
    ) -> None:
        self._ack_latency = ack_latency
        self._log_purchases = log_purchases
        self._appender = appender
        self._backlog = backlog
        self._retry_after_s = retry_after_s
        self._request_ids = request_ids
        self._limit = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive) -> Response:
        started = time.perf_counter()
        if self._backlog.refusal is not None:
            raise Overloaded(self._backlog.refusal, self._retry_after_s)
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
        body = await read_body(receive, self._limit, declared_length(content_length))
        try:
            request = request_decoder.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidPurchase(
                "the purchase does not match the schema", details_from_validation(str(exc))
            ) from None
        except msgspec.DecodeError as exc:
            raise MalformedJSON(f"the body is not valid JSON: {exc}") from None
        except UnicodeDecodeError as exc:
            raise MalformedJSON(
                f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}"
            ) from None

        request_id = self._request_ids.accept_or_make(client_request_id)
        event = event_from_request(request, request_id, time.time_ns() // 1000)
        fingerprint = blake2b(encoder.encode(request), digest_size=16).hexdigest().encode()
        appended = await self._appender.append(
            request.transaction_id, fingerprint, encoder.encode(event)
        )
        self._ack_latency.observe(time.perf_counter() - started)
        headers = [
            CONTENT_TYPE_JSON,
            (b"x-request-id", request_id.encode()),
            (b"x-stream-entry-id", appended.entry_id),
        ]
        if appended.replayed:
            if appended.fingerprint != fingerprint:
                raise IdempotencyConflict(
                    f"transaction_id {request.transaction_id!r} was already used for a"
                    " different purchase",
                    [ErrorDetail("$.transaction_id", "already used with a different body")],
                )
            headers.append(REPLAYED)
        if self._log_purchases:
            log.info(
                "purchase replayed" if appended.replayed else "purchase accepted",
                extra={
                    "request_id": request_id,
                    "transaction_id": request.transaction_id,
                    "stream_entry_id": appended.entry_id.decode(),
                },
            )
        return Response(200, encoder.encode(response_for(request)), headers)


def is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )

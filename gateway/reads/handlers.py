"""GET /transactions/{id}, GET /accounts/{account}, GET /accounts/{account}/transactions."""

from __future__ import annotations

import base64
import logging
import struct
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from core.constants import transaction_cache_key
from core.entries import Fields, from_reply
from core.idempotency import find_accepted
from core.logs import Sparse
from core.redis_clients import REDIS_UNAVAILABLE
from gateway.api.errors import InvalidQuery
from gateway.api.params import AccountPath, HistoryParams, TransactionPath, decode
from gateway.api.schemas import (
    CustomerReceipt,
    HistoryPage,
    LegView,
    SellerReceipt,
    TransactionView,
)
from gateway.http.asgi import Receive, Scope
from gateway.http.errors import NotFound
from gateway.http.responses import Response, json_response
from gateway.reads.cache import ReadCache
from gateway.reads.history import HistoryKey, HistoryReader
from gateway.redis_io.nodes import Nodes
from gateway.redis_io.pipe import Arg
from gateway.refusals import StoreUnavailable

log = logging.getLogger("gateway.reads.handlers")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_encoder: Final = msgspec.json.Encoder()
_CURSOR_BYTES: Final = struct.Struct(">qq")  # microseconds since the epoch, entry number
_CURSOR_PREFIX: Final = b"seq"  # "c2Vx" in base64: cursors of per-account numbers (008)
_MIN_US: Final = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
_MAX_US: Final = (datetime(9999, 12, 31, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)


def encode_cursor(key: HistoryKey) -> str:
    """Opaque to clients: the (recorded_at, entry number) of the last entry of a page."""
    recorded_at, entry_id = key
    us = (recorded_at - _EPOCH) // timedelta(microseconds=1)
    raw = _CURSOR_PREFIX + _CURSOR_BYTES.pack(us, entry_id)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_cursor(cursor: str) -> HistoryKey:
    """Every string the published pattern allows (``params.Cursor``, checked while decoding
    the query) names a position in the history, so the document and the server agree: a
    position before year 1 or after 9999 is clamped to that end (an empty page, or the
    first one). Cursors of older releases (a global ledger id instead of the account's own
    number, or the text formats before them) do not match the pattern and are refused like
    any other."""
    raw = base64.urlsafe_b64decode(cursor + "==")[len(_CURSOR_PREFIX) :]
    us, entry_id = _CURSOR_BYTES.unpack(raw)
    us = min(max(us, _MIN_US), _MAX_US)
    return _EPOCH + timedelta(microseconds=us), entry_id


class NodeLookups:
    """``core.idempotency.Lookups`` on the connection that serves each key."""

    def __init__(self, nodes: Nodes) -> None:
        self._nodes = nodes

    async def records(self, buckets: list[bytes], field: bytes, legacy: bytes) -> list[Any]:
        commands: list[tuple[Arg, ...]] = [(b"HGET", bucket, field) for bucket in buckets]
        commands.append((b"GET", legacy))
        return await self._nodes.pipe_for(legacy).call_many(commands)

    async def entry(self, stream: bytes, entry_id: bytes) -> Fields | None:
        entries = await self._nodes.pipe_for(stream).call(b"XRANGE", stream, entry_id, entry_id)
        if not entries or not entries[0][1]:
            return None
        return from_reply(entries[0][1])  # [field, value, field, value, ...]


class ReadHandlers:
    def __init__(
        self,
        store: HistoryReader,
        cache: ReadCache,
        nodes: Nodes,
        shards: int,
        *,
        idempotency_window_s: int = 900,
    ) -> None:
        self._window_s = idempotency_window_s
        self._failures = Sparse(log)
        self._store = store
        self._cache = cache
        self._lookups = NodeLookups(nodes)
        self._shards = shards

    async def transaction(self, scope: Scope, receive: Receive) -> Response:
        try:
            transaction_id = decode(TransactionPath, scope).transaction_id
        except InvalidQuery:
            raise NotFound("no such transaction: not a valid transaction_id") from None
        key = transaction_cache_key(transaction_id)
        cached = await self._cache.immutable_get(key)
        if cached is not None:
            return json_response(200, cached)
        persisted = await self._store.transaction(transaction_id)
        if persisted is not None:
            body = _encoder.encode(persisted)
            await self._cache.immutable_set(key, body)
            return json_response(200, body)
        accepted = await self._accepted(transaction_id)
        if accepted is None:
            raise NotFound(f"no transaction {transaction_id!r}")
        return json_response(200, _encoder.encode(accepted))

    async def _accepted(self, transaction_id: str) -> TransactionView | None:
        """In the stream, not yet in PostgreSQL: found through its idempotency record."""
        try:
            found = await find_accepted(self._lookups, transaction_id, self._shards, self._window_s)
        except REDIS_UNAVAILABLE as exc:
            # Not "not found": it may well have been acknowledged a moment ago.
            self._failures.warning(
                "transaction lookup in Redis failed: %s: %s", type(exc).__name__, exc
            )
            raise StoreUnavailable() from exc
        if found is None or found.event is None:
            return None
        event, entry_id = found.event, found.entry_id
        debit, credit = event.legs
        return TransactionView(
            transaction_id=event.transaction_id,
            status="ACCEPTED",
            request_id=event.request_id,
            stream_entry_id=entry_id,
            accepted_at=_EPOCH + timedelta(microseconds=event.accepted_at_us),
            persisted_at=None,
            customer_info=CustomerReceipt(event.customer_name, debit.account, debit.amount),
            seller_info=SellerReceipt(event.seller_name, credit.account, credit.amount),
            legs=[LegView(leg.account, leg.direction, leg.amount) for leg in event.legs],
        )

    async def history(self, scope: Scope, receive: Receive) -> Response:
        params = decode(HistoryParams, scope)
        account, limit = params.account, params.limit
        before = decode_cursor(params.cursor) if params.cursor else None

        async def load() -> bytes:
            entries, last = await self._store.history(account, limit, before)
            next_cursor = encode_cursor(last) if len(entries) == limit and last else None
            return _encoder.encode(HistoryPage(account, entries, next_cursor))

        suffix = (f"{limit}:" + (encode_cursor(before) if before else "")).encode()
        return json_response(200, await self._cache.account_read(account, b"h", suffix, load))

    async def summary(self, scope: Scope, receive: Receive) -> Response:
        account = decode(AccountPath, scope).account

        async def load() -> bytes:
            return _encoder.encode(await self._store.summary(account))

        return json_response(200, await self._cache.account_read(account, b"s", b"", load))

"""PostgreSQL side of the reads: the named queries (gateway/reads/queries.py) run on one pool
per worker, their failures refused once (HistoryUnavailable)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar, cast

import asyncpg

from core.pg_errors import PG_RETRYABLE
from gateway.api.schemas import (
    AccountSummary,
    CustomerReceipt,
    HistoryEntry,
    LegView,
    SellerReceipt,
    TransactionView,
)
from gateway.reads.queries import HISTORY_AFTER, HISTORY_FIRST, SUMMARY, TRANSACTION
from gateway.refusals import HistoryUnavailable

T = TypeVar("T")

HistoryKey = tuple[datetime, int]
"""Where an entry sorts in an account's history: (recorded_at, its number in the account)."""


class HistoryReader:
    def __init__(self, dsn: str, *, max_size: int = 4) -> None:
        self._dsn = dsn
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self.queries = 0

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self._dsn, min_size=0, max_size=self._max_size, command_timeout=5, timeout=2
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def _run(self, call: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        if self._pool is None:
            try:
                await self.open()
            except PG_RETRYABLE as exc:
                raise HistoryUnavailable(
                    f"history store unavailable: {type(exc).__name__}"
                ) from exc
        assert self._pool is not None
        self.queries += 1
        try:
            return await call(self._pool)
        except PG_RETRYABLE as exc:
            raise HistoryUnavailable(f"history store unavailable: {type(exc).__name__}") from exc

    async def with_connection(self, use: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """One pooled connection for a few queries in a row (the console's trace), its
        failures mapped like any read's."""

        async def run(pool: asyncpg.Pool) -> T:
            async with pool.acquire() as conn:
                return await use(cast(asyncpg.Connection, conn))  # a proxy of one

        return await self._run(run)

    async def transaction(self, transaction_id: str) -> TransactionView | None:
        row = await self._run(lambda pool: pool.fetchrow(TRANSACTION, transaction_id))
        return None if row is None else transaction_view(row)

    async def history(
        self, account: str, limit: int, before: HistoryKey | None
    ) -> tuple[list[HistoryEntry], HistoryKey | None]:
        """A page of entries older than ``before``, and the key of its last entry."""
        if before is None:
            rows = await self._run(lambda pool: pool.fetch(HISTORY_FIRST, account, limit))
        else:
            rows = await self._run(lambda pool: pool.fetch(HISTORY_AFTER, account, limit, *before))
        entries = []
        for row in rows:
            values = dict(row)
            del values["recorded_at"]
            entries.append(HistoryEntry(**values))
        last = (rows[-1]["recorded_at"], rows[-1]["entry_id"]) if rows else None
        return entries, last

    async def summary(self, account: str) -> AccountSummary:
        row = await self._run(lambda pool: pool.fetchrow(SUMMARY, account))
        if row is None:
            return AccountSummary(account, 0, 0, 0, 0, None, None)
        values: dict[str, Any] = dict(row)
        values["debited_total"] = int(values["debited_total"])
        values["credited_total"] = int(values["credited_total"])
        return AccountSummary(account=account, **values)


def transaction_view(row: Any) -> TransactionView:
    amount = int(row["amount"])
    return TransactionView(
        transaction_id=row["transaction_id"],
        status="PERSISTED",
        request_id=row["request_id"],
        stream_entry_id=row["stream_entry_id"],
        accepted_at=row["accepted_at"],
        persisted_at=row["persisted_at"],
        customer_info=CustomerReceipt(row["customer_name"], row["customer_account"], amount),
        seller_info=SellerReceipt(row["seller_name"], row["seller_account"], amount),
        legs=[
            LegView(row["customer_account"], "DEBIT", amount),
            LegView(row["seller_account"], "CREDIT", amount),
        ],
    )

"""PostgreSQL side of the reads: named queries, one pool per worker, errors mapped once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final, TypeVar, cast

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
from gateway.http.errors import HistoryUnavailable

TRANSACTION: Final = """
SELECT transaction_id, customer_name, customer_account, seller_name, seller_account, amount,
       request_id, stream_entry_id, accepted_at, persisted_at
FROM transactions WHERE transaction_id = $1
"""

# Newest first in the account's own sequence. One ledger row per purchase, indexed on each
# side; within an account recorded_at (the partition key) follows the sequence, so each
# side is read newest first by (recorded_at, seq): partition after partition, newest first,
# each by an index scan, and the LIMIT stops before older partitions are opened
# (docs/history-partitions.md). The two sides are merged by seq. A side the account has
# never used is not read at all (its count in account_totals is 0); once the debits fill a
# page, credits older than its oldest debit cannot be on it, and their partitions are
# pruned; partitions made ahead for days to come are pruned by the account's newest
# entry's time.
_SIDES: Final = """
WITH used AS (
    SELECT debit_count > 0 AS debits, credit_count > 0 AS credits,
           coalesce(last_recorded_at, 'infinity') AS newest
    FROM account_totals WHERE account = $1
), debits AS (
    SELECT debit_seq AS entry_id, transaction_id, 'DEBIT' AS direction, amount,
           credit_account AS counterparty, accepted_at, recorded_at
    FROM ledger_transfers
    WHERE debit_account = $1 AND {debit_bound} AND (SELECT debits FROM used)
    ORDER BY recorded_at DESC, debit_seq DESC LIMIT $2
), credits AS (
    SELECT credit_seq AS entry_id, transaction_id, 'CREDIT' AS direction, amount,
           debit_account AS counterparty, accepted_at, recorded_at
    FROM ledger_transfers
    WHERE credit_account = $1 AND {credit_bound} AND (SELECT credits FROM used)
      AND recorded_at >= coalesce(
          (SELECT min(recorded_at) FROM debits HAVING count(*) = $2), '-infinity'
      )
    ORDER BY recorded_at DESC, credit_seq DESC LIMIT $2
)
SELECT * FROM debits UNION ALL SELECT * FROM credits
ORDER BY entry_id DESC LIMIT $2
"""

HISTORY_FIRST: Final = _SIDES.format(
    debit_bound="recorded_at <= (SELECT newest FROM used)",
    credit_bound="recorded_at <= (SELECT newest FROM used)",
)

# `recorded_at <= $3` is implied by the row comparison; spelled out, it also prunes the
# partitions newer than the cursor.
HISTORY_AFTER: Final = _SIDES.format(
    debit_bound="recorded_at <= $3 AND (recorded_at, debit_seq) < ($3, $4)",
    credit_bound="recorded_at <= $3 AND (recorded_at, credit_seq) < ($3, $4)",
)

SUMMARY: Final = """
SELECT debited_total, credited_total, debit_count, credit_count,
       first_activity_at, last_activity_at
FROM account_totals WHERE account = $1
"""

T = TypeVar("T")

HistoryKey = tuple[datetime, int]
"""Where an entry sorts in an account's history: (recorded_at, its number in the account)."""


class HistoryStore:
    def __init__(self, dsn: str, *, retry_after_s: int = 1, max_size: int = 4) -> None:
        self._dsn = dsn
        self._retry_after_s = retry_after_s
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
                    f"history store unavailable: {type(exc).__name__}", self._retry_after_s
                ) from exc
        assert self._pool is not None
        self.queries += 1
        try:
            return await call(self._pool)
        except PG_RETRYABLE as exc:
            raise HistoryUnavailable(
                f"history store unavailable: {type(exc).__name__}", self._retry_after_s
            ) from exc

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

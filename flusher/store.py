"""Bulk writes of purchases into PostgreSQL, idempotent on transaction_id.

A batch is COPYed into a temporary table, then one statement inserts the new transactions
(``ON CONFLICT DO NOTHING``) and, from exactly the rows it inserted, both ledger legs. A
redelivered entry therefore writes nothing, and no leg is ever written without its twin.
The transactions' ``persisted_at`` and the legs' ``recorded_at`` (the ledger's partition
key) are one time per batch, from ``ledger_clock``.
One unique violation would abort a plain COPY, hence the staging table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg

from core.constants import PG_WRITE_LOCK
from core.events import PurchaseEvent
from core.migrate import migrate
from flusher.errors import PG_RETRYABLE, DatabaseUnavailable
from flusher.partitions import PartitionChange, maintain_partitions

BeforeCommit = Callable[[], Awaitable[object]] | None
"""Run inside a batch's transaction right before its COMMIT (``PurchaseStore.write``)."""

CREATE_STAGING: Final = """
CREATE TEMP TABLE IF NOT EXISTS incoming (
    seq              int         NOT NULL,
    transaction_id   text        NOT NULL,
    customer_name    text        NOT NULL,
    customer_account text        NOT NULL,
    seller_name      text        NOT NULL,
    seller_account   text        NOT NULL,
    amount           bigint      NOT NULL,
    request_id       text        NOT NULL,
    stream_entry_id  text        NOT NULL,
    accepted_at      timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""

STAGING_COLUMNS: Final = (
    "seq",
    "transaction_id",
    "customer_name",
    "customer_account",
    "seller_name",
    "seller_account",
    "amount",
    "request_id",
    "stream_entry_id",
    "accepted_at",
)

INSERT_FROM_STAGING: Final = """
-- $1: the stream shard of the whole batch (entry ids are unique per stream only).
WITH clock AS (
    -- One time for the whole batch, taken under the write lock and never behind the last
    -- batch's: history is read newest first by (recorded_at, entry_id), partitioned by day
    -- on recorded_at, and both legs land in the same partition.
    UPDATE ledger_clock SET recorded_at = greatest(recorded_at, clock_timestamp())
    RETURNING recorded_at
), fresh AS (
    INSERT INTO transactions (
        transaction_id, customer_name, customer_account, seller_name, seller_account,
        amount, request_id, stream_shard, stream_entry_id, accepted_at, persisted_at
    )
    SELECT DISTINCT ON (transaction_id)
        transaction_id, customer_name, customer_account, seller_name, seller_account,
        amount, request_id, $1::smallint, stream_entry_id, accepted_at, clock.recorded_at
    FROM incoming CROSS JOIN clock
    ORDER BY transaction_id, seq
    ON CONFLICT (transaction_id) DO NOTHING
    RETURNING transaction_id, stream_entry_id, customer_account, seller_account, amount,
              accepted_at, persisted_at
), legs AS (
    INSERT INTO ledger_entries (
        transaction_id, account, direction, amount, counterparty, accepted_at, recorded_at
    )
    SELECT transaction_id, customer_account, 'DEBIT', amount, seller_account, accepted_at,
           persisted_at
    FROM fresh
    UNION ALL
    SELECT transaction_id, seller_account, 'CREDIT', amount, customer_account, accepted_at,
           persisted_at
    FROM fresh
    RETURNING account, direction, amount, accepted_at
), totals AS (
    -- Aggregates move with the legs, in the same transaction: reads never scan history.
    INSERT INTO account_totals AS t (
        account, debited_total, credited_total, debit_count, credit_count,
        first_activity_at, last_activity_at
    )
    SELECT account,
           coalesce(sum(amount) FILTER (WHERE direction = 'DEBIT'), 0),
           coalesce(sum(amount) FILTER (WHERE direction = 'CREDIT'), 0),
           count(*) FILTER (WHERE direction = 'DEBIT'),
           count(*) FILTER (WHERE direction = 'CREDIT'),
           min(accepted_at), max(accepted_at)
    FROM legs
    GROUP BY account
    ON CONFLICT (account) DO UPDATE SET
        debited_total = t.debited_total + EXCLUDED.debited_total,
        credited_total = t.credited_total + EXCLUDED.credited_total,
        debit_count = t.debit_count + EXCLUDED.debit_count,
        credit_count = t.credit_count + EXCLUDED.credit_count,
        first_activity_at = least(t.first_activity_at, EXCLUDED.first_activity_at),
        last_activity_at = greatest(t.last_activity_at, EXCLUDED.last_activity_at)
), stored AS (
    -- What the ledger holds for each transaction_id of the batch: inserted before (the
    -- table, as of this statement's snapshot) or just now (fresh, which the table does
    -- not show yet inside this statement).
    SELECT transaction_id, customer_account, seller_account, amount FROM transactions
    WHERE transaction_id IN (SELECT transaction_id FROM incoming)
    UNION ALL
    SELECT transaction_id, customer_account, seller_account, amount FROM fresh
), duplicates AS (
    -- Not inserted now, and not a redelivery of the entry that was inserted before;
    -- conflicting when it names other accounts or another amount than the stored purchase.
    INSERT INTO duplicate_entries (
        stream_shard, stream_entry_id, transaction_id, request_id, amount, accepted_at,
        customer_account, seller_account, conflicting
    )
    SELECT $1::smallint, i.stream_entry_id, i.transaction_id, i.request_id, i.amount,
           i.accepted_at, i.customer_account, i.seller_account,
           EXISTS (
               SELECT 1 FROM stored s
               WHERE s.transaction_id = i.transaction_id
                 AND (s.customer_account, s.seller_account, s.amount)
                     IS DISTINCT FROM (i.customer_account, i.seller_account, i.amount)
           )
    FROM incoming i
    WHERE NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_entry_id = i.stream_entry_id)
      AND NOT EXISTS (
          SELECT 1 FROM transactions t
          WHERE t.transaction_id = i.transaction_id AND t.stream_entry_id = i.stream_entry_id
            AND t.stream_shard = $1::smallint
      )
    ON CONFLICT (stream_shard, stream_entry_id) DO NOTHING
    RETURNING conflicting
)
SELECT (SELECT count(*) FROM fresh) AS inserted,
       (SELECT count(*) FROM duplicates) AS duplicates,
       (SELECT count(*) FROM duplicates WHERE conflicting) AS conflicting
"""

REFUSED: Final = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)
"""Server errors that retrying the same rows cannot fix."""

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)

SET_TRANSACTION_TIMEOUT: Final = "SELECT set_config('transaction_timeout', $1, true)"

INSERT_INCIDENT: Final = """
INSERT INTO stream_incidents (consumer, reason, last_committed_entry_id) VALUES ($1, $2, $3)
"""

INSERT_DEAD_LETTER: Final = """
INSERT INTO dead_letters (stream_shard, stream_entry_id, payload, error) VALUES ($1, $2, $3, $4)
ON CONFLICT (stream_shard, stream_entry_id) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Decoded:
    entry_id: str
    event: PurchaseEvent


@dataclass(frozen=True, slots=True)
class Undecodable:
    entry_id: str
    payload: bytes
    error: str


@dataclass(slots=True)
class WriteResult:
    inserted: int = 0
    """New purchases: one transaction row and two ledger legs each."""
    duplicates: int = 0
    """Entries for a transaction_id stored from another entry (see duplicate_entries)."""
    conflicting: int = 0
    """Of the duplicates, those naming other accounts or another amount than the stored
    purchase: answered 200 by the gateway, not what the ledger holds."""
    redelivered: int = 0
    """Entries stored before, delivered again (a crash between commit and XACK)."""
    dead_letters: int = 0


def staging_record(seq: int, item: Decoded) -> tuple[object, ...]:
    e = item.event
    return (
        seq,
        e.transaction_id,
        e.customer_name,
        e.debit.account,
        e.seller_name,
        e.credit.account,
        e.amount,
        e.request_id,
        item.entry_id,
        _EPOCH + timedelta(microseconds=e.accepted_at_us),
    )


class PurchaseStore:
    """One shard's writer: one connection, reopened when PostgreSQL comes back. One batch
    at a time. Rows naming a stream entry name ``shard`` with it (migration 006)."""

    def __init__(
        self,
        dsn: str,
        *,
        shard: int = 0,
        timeout_s: float = 10.0,
        command_timeout_s: float = 60.0,
        transaction_timeout_s: float = 30.0,
    ) -> None:
        self._dsn = dsn
        self.shard = shard
        self._timeout_s = timeout_s
        # A flusher frozen mid-transaction (SIGSTOP, a stuck host) holds the write lock and
        # would stall whoever takes its entries over: PostgreSQL ends such a transaction.
        # transaction_timeout (PostgreSQL 17+) also covers a client frozen in the middle of
        # the extended protocol, which idle_in_transaction_session_timeout does not. It is
        # set for each batch transaction only (SET LOCAL): migrations and partition
        # maintenance may rightly take longer, and must not be killed every time.
        self._transaction_timeout_ms = str(int(transaction_timeout_s * 1000))
        self._has_transaction_timeout = False
        # A PostgreSQL that hangs without closing the connection must not hang the flusher:
        # past this a statement fails, the connection is dropped and the batch retried.
        self._command_timeout_s = command_timeout_s
        self._conn: asyncpg.Connection | None = None

    async def connect(self) -> asyncpg.Connection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        try:
            await self._migrate()
            conn = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout_s,
                command_timeout=self._command_timeout_s,
                server_settings={
                    "idle_in_transaction_session_timeout": self._transaction_timeout_ms
                },
            )
        except PG_RETRYABLE as exc:
            raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
        try:
            self._has_transaction_timeout = conn.get_server_version().major >= 17
            await conn.execute(CREATE_STAGING)
        except BaseException as exc:
            conn.terminate()
            if isinstance(exc, PG_RETRYABLE):
                raise DatabaseUnavailable(f"PostgreSQL unavailable: {exc!r}") from exc
            raise
        self._conn = conn
        return conn

    async def _migrate(self) -> None:
        """On a connection of its own, without the batches' timeouts: a migration on a large
        ledger (or waiting for another process's) may take minutes, and one killed at a
        timeout would be killed again at every start."""
        conn = await asyncpg.connect(self._dsn, timeout=self._timeout_s, command_timeout=None)
        try:
            await migrate(conn)
        except BaseException:
            conn.terminate()
            raise
        await conn.close(timeout=2)

    async def write(
        self, good: list[Decoded], bad: list[Undecodable], before_commit: BeforeCommit = None
    ) -> WriteResult:
        """Commit one batch; raises DatabaseUnavailable when it could not (nothing committed).

        ``before_commit`` runs inside the transaction, after its statements, right before
        COMMIT (once per transaction: the one-by-one path runs it for each); what it raises
        rolls the batch back. The flusher guards cached reads there, so that they are held
        for the COMMIT only, not for the whole batch."""
        conn = await self.connect()
        try:
            try:
                return await self._write(conn, good, bad, before_commit)
            except REFUSED:
                return await self._write_one_by_one(conn, good, bad, before_commit)
        except PG_RETRYABLE as exc:
            await self._discard(conn)
            raise DatabaseUnavailable(f"PostgreSQL write failed: {exc!r}") from exc
        except BaseException:
            await self._discard(conn)  # whatever state it is in, the next batch gets a new one
            raise

    async def _write(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        result = WriteResult()
        async with conn.transaction():
            if self._has_transaction_timeout:
                await conn.execute(SET_TRANSACTION_TIMEOUT, self._transaction_timeout_ms)
            # One writer at a time, across flushers: ledger ids are then handed out in commit
            # order (keyset pagination never skips a late commit), the duplicate check sees
            # every earlier commit, and account_totals upserts cannot deadlock.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PG_WRITE_LOCK)
            if good:
                await conn.copy_records_to_table(
                    "incoming",
                    records=[staging_record(i, item) for i, item in enumerate(good)],
                    columns=STAGING_COLUMNS,
                )
                counts = await conn.fetchrow(INSERT_FROM_STAGING, self.shard)
                assert counts is not None  # the statement always returns one row
                result.inserted = counts["inserted"]
                result.duplicates = counts["duplicates"]
                result.conflicting = counts["conflicting"]
                result.redelivered = len(good) - result.inserted - result.duplicates
            if bad:
                await conn.executemany(
                    INSERT_DEAD_LETTER,
                    [(self.shard, b.entry_id, b.payload, b.error) for b in bad],
                )
                result.dead_letters = len(bad)
            if before_commit is not None:
                await before_commit()
        return result

    async def _write_one_by_one(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        """A batch the database refused: store each entry alone, dead-letter the ones it refuses."""
        total = WriteResult()
        for item in good:
            try:
                one = await self._write(conn, [item], [], before_commit)
            except REFUSED as exc:
                payload = repr(item.event).encode()
                reason = f"rejected by PostgreSQL: {exc}".replace("\x00", "\\0")
                bad = [*bad, Undecodable(item.entry_id, payload, reason)]
                continue
            total.inserted += one.inserted
            total.duplicates += one.duplicates
            total.conflicting += one.conflicting
            total.redelivered += one.redelivered
        if bad:
            total.dead_letters = (await self._write(conn, [], bad)).dead_letters
        return total

    async def maintain_partitions(
        self, *, ahead_days: int, retention_days: int
    ) -> list[PartitionChange] | None:
        """None when the locks were not had in time (see flusher.partitions)."""
        conn = await self.connect()
        try:
            return await maintain_partitions(
                conn, ahead_days=ahead_days, retention_days=retention_days
            )
        except asyncpg.exceptions.LockNotAvailableError:
            return None
        except PG_RETRYABLE as exc:
            await self._discard(conn)
            raise DatabaseUnavailable(f"PostgreSQL partition maintenance failed: {exc!r}") from exc

    async def record_incident(
        self, consumer: str, reason: str, last_committed_entry_id: str | None
    ) -> None:
        conn = await self.connect()
        try:
            await conn.execute(INSERT_INCIDENT, consumer, reason, last_committed_entry_id)
        except PG_RETRYABLE as exc:
            await self._discard(conn)
            raise DatabaseUnavailable(f"PostgreSQL write failed: {exc!r}") from exc

    async def _discard(self, conn: asyncpg.Connection) -> None:
        self._conn = None
        conn.terminate()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close(timeout=2)
            self._conn = None

"""Bulk writes of purchases into PostgreSQL, idempotent on transaction_id.

A batch is COPYed into a temporary table; its accounts are locked in one order; then one
statement inserts the new transactions (``ON CONFLICT DO NOTHING``) and, from exactly the
rows it inserted, one ledger row each (the buyer's DEBIT and the seller's CREDIT, numbered
in each account's own sequence), and moves the accounts' totals. A redelivered entry
therefore writes nothing. No global lock: batches that share no account commit side by
side (migration 008 gives the reasons). One unique violation would abort a plain COPY,
hence the staging table.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg

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

LOCK_ACCOUNTS: Final = """
-- Every account of the batch, created when new and locked, in one order (by account):
-- batches that share accounts queue on the first one they share and cannot deadlock over
-- them; batches that share none commit side by side. The rows are locked, not updated
-- (DO UPDATE ... WHERE false): each gets one new version per batch, from INSERT_FROM_STAGING.
INSERT INTO account_totals AS t (account)
SELECT account FROM (
    SELECT customer_account FROM incoming UNION SELECT seller_account FROM incoming
) AS batch (account)
ORDER BY account
ON CONFLICT (account) DO UPDATE SET account = EXCLUDED.account WHERE false
"""

INSERT_FROM_STAGING: Final = """
-- $1: the stream shard of the whole batch (entry ids are unique per stream only).
-- The batch's accounts are locked (LOCK_ACCOUNTS): their totals rows, read here, are
-- current, and the numbers handed out below are the next ones of each account.
WITH clock AS (
    -- One time for the whole batch, never behind the last one of any of its accounts:
    -- within an account, recorded_at (the partition key) follows the entry numbers.
    SELECT greatest(clock_timestamp(), max(t.last_recorded_at)) AS recorded_at
    FROM account_totals t
    WHERE t.account IN (SELECT customer_account FROM incoming
                        UNION SELECT seller_account FROM incoming)
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
              accepted_at
), legs AS (
    -- Both sides of each new purchase, in stream order (incoming.seq).
    SELECT f.transaction_id, f.customer_account AS account, true AS debit, f.amount,
           f.accepted_at, i.seq
    FROM fresh f JOIN incoming i USING (stream_entry_id)
    UNION ALL
    SELECT f.transaction_id, f.seller_account, false, f.amount, f.accepted_at, i.seq
    FROM fresh f JOIN incoming i USING (stream_entry_id)
), numbered AS (
    SELECT l.transaction_id, l.account, l.debit, l.amount, l.accepted_at,
           t.debit_count + t.credit_count
             + row_number() OVER (PARTITION BY l.account ORDER BY l.seq) AS account_seq
    FROM legs l JOIN account_totals t USING (account)
), transfers AS (
    INSERT INTO ledger_transfers (
        transaction_id, debit_account, debit_seq, credit_account, credit_seq, amount,
        accepted_at, recorded_at
    )
    SELECT d.transaction_id, d.account, d.account_seq, c.account, c.account_seq, d.amount,
           d.accepted_at, clock.recorded_at
    FROM numbered d
    JOIN numbered c ON c.transaction_id = d.transaction_id AND NOT c.debit
    CROSS JOIN clock
    WHERE d.debit
), totals AS (
    -- Aggregates and counters move with the entries, in the same transaction: reads never
    -- scan history, and debit_count + credit_count is the account's last entry number.
    UPDATE account_totals AS t SET
        debited_total = t.debited_total + s.debited_total,
        credited_total = t.credited_total + s.credited_total,
        debit_count = t.debit_count + s.debit_count,
        credit_count = t.credit_count + s.credit_count,
        first_activity_at = least(t.first_activity_at, s.first_activity_at),
        last_activity_at = greatest(t.last_activity_at, s.last_activity_at),
        last_recorded_at = clock.recorded_at
    FROM (
        SELECT account,
               coalesce(sum(amount) FILTER (WHERE debit), 0) AS debited_total,
               coalesce(sum(amount) FILTER (WHERE NOT debit), 0) AS credited_total,
               count(*) FILTER (WHERE debit) AS debit_count,
               count(*) FILTER (WHERE NOT debit) AS credit_count,
               min(accepted_at) AS first_activity_at, max(accepted_at) AS last_activity_at
        FROM legs
        GROUP BY account
    ) AS s CROSS JOIN clock
    WHERE t.account = s.account
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
    -- Only looked for when some entry was not inserted (a one-time filter: the usual batch,
    -- all new, probes nothing).
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
    WHERE (SELECT count(*) FROM fresh) < (SELECT count(*) FROM incoming)
      AND NOT EXISTS (SELECT 1 FROM fresh f WHERE f.stream_entry_id = i.stream_entry_id)
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

DEADLOCK_ATTEMPTS: Final = 5
"""Tries of one batch aborted as a deadlock before it is left to the flusher's retry loop."""

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
        self.deadlocks_retried = 0
        """Batches PostgreSQL aborted as deadlocked and this store wrote again."""

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
                return await self._write_retrying_deadlocks(conn, good, bad, before_commit)
            except REFUSED:
                return await self._write_one_by_one(conn, good, bad, before_commit)
        except PG_RETRYABLE as exc:
            await self._discard(conn)
            raise DatabaseUnavailable(f"PostgreSQL write failed: {exc!r}") from exc
        except BaseException:
            await self._discard(conn)  # whatever state it is in, the next batch gets a new one
            raise

    async def _write_retrying_deadlocks(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        """Accounts are locked in one order, but two batches holding the same transaction_id
        (a redelivery racing its first delivery) can still wait on each other's insert:
        PostgreSQL aborts one of them (40P01), which is rolled back whole and tried again
        at once, on the same connection."""
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return await self._write(conn, good, bad, before_commit)
            except asyncpg.exceptions.DeadlockDetectedError:
                self.deadlocks_retried += 1
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

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
            if good:
                await conn.copy_records_to_table(
                    "incoming",
                    records=[staging_record(i, item) for i, item in enumerate(good)],
                    columns=STAGING_COLUMNS,
                )
                await conn.execute(LOCK_ACCOUNTS)
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
                one = await self._write_retrying_deadlocks(conn, [item], [], before_commit)
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

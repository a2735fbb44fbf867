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
from typing import Final, cast

import asyncpg

from core.events import PurchaseEvent
from core.migrate import migrate
from core.pg_errors import PG_RETRYABLE
from flusher.errors import DatabaseUnavailable
from flusher.ledger_rows import (
    LEDGER_COLUMNS,
    MOVE_COLUMNS,
    TRANSACTION_COLUMNS,
    accepted_at,
    account_moves,
    batch_rows,
)
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

_LOCK_ACCOUNTS_OF: Final = """
-- Every account of the batch, created when new and locked, in one order (by account):
-- batches that share accounts queue on the first one they share and cannot deadlock over
-- them; batches that share none commit side by side. The rows are locked, not updated
-- (DO UPDATE ... WHERE false): each gets one new version per batch, from the totals upsert.
INSERT INTO account_totals AS t (account)
SELECT account FROM ({accounts}) AS batch (account)
ORDER BY account
ON CONFLICT (account) DO UPDATE SET account = EXCLUDED.account WHERE false
"""

LOCK_ACCOUNTS: Final = _LOCK_ACCOUNTS_OF.replace(
    "{accounts}", "SELECT customer_account FROM incoming UNION SELECT seller_account FROM incoming"
)
"""The staging path's: the accounts of ``incoming``."""

CREATE_MOVES: Final = """
CREATE TEMP TABLE IF NOT EXISTS batch_moves (
    account           text        NOT NULL,
    debited           bigint      NOT NULL,
    credited          bigint      NOT NULL,
    debits            bigint      NOT NULL,
    credits           bigint      NOT NULL,
    first_activity_at timestamptz NOT NULL,
    last_activity_at  timestamptz NOT NULL
) ON COMMIT DELETE ROWS
"""

LOCK_MOVED_ACCOUNTS: Final = _LOCK_ACCOUNTS_OF.replace(
    "{accounts}", "SELECT account FROM batch_moves"
)
"""The direct path's: the accounts of ``batch_moves``."""

COUNTERS: Final = """
-- The locked accounts' last numbers (current: nobody else can move them now).
SELECT t.account, t.debit_count + t.credit_count
FROM batch_moves m JOIN account_totals t USING (account)
"""

BATCH_TIME: Final = """
-- The batch's recorded_at: never behind the last one of any of its accounts, so that
-- within an account recorded_at (the partition key) follows the entry numbers.
SELECT greatest(clock_timestamp(), max(t.last_recorded_at))
FROM batch_moves m JOIN account_totals t USING (account)
"""

_ADD_TO_TOTALS: Final = """
INSERT INTO account_totals AS t (
    account, debited_total, credited_total, debit_count, credit_count,
    first_activity_at, last_activity_at, last_recorded_at
)
{moves}
ON CONFLICT (account) DO UPDATE SET
    debited_total = t.debited_total + EXCLUDED.debited_total,
    credited_total = t.credited_total + EXCLUDED.credited_total,
    debit_count = t.debit_count + EXCLUDED.debit_count,
    credit_count = t.credit_count + EXCLUDED.credit_count,
    first_activity_at = least(t.first_activity_at, EXCLUDED.first_activity_at),
    last_activity_at = greatest(t.last_activity_at, EXCLUDED.last_activity_at),
    last_recorded_at = EXCLUDED.last_recorded_at
"""
"""What a batch adds to its accounts' totals and counters; ``{moves}``: a SELECT of one row
per account in the column order above. Every row exists and is locked (the batch locked
its accounts first): the upsert always updates, finding each by its key."""

ADD_MOVES: Final = _ADD_TO_TOTALS.replace(
    "{moves}",
    """-- $1: the batch's recorded_at.
SELECT account, debited, credited, debits, credits, first_activity_at, last_activity_at,
       $1::timestamptz
FROM batch_moves""",
)

_INSERT_FROM_STAGING: Final = """
-- $1: the stream shard of the whole batch (entry ids are unique per stream only).
-- The batch's accounts are locked (LOCK_ACCOUNTS): their totals rows, read here, are
-- current, and the numbers handed out below are the next ones of each account. Every
-- access to account_totals goes by its primary key: a batch costs the same however many
-- accounts there are.
WITH accounts AS MATERIALIZED (
    -- The batch's accounts, each found by its primary key (however many accounts exist).
    SELECT t.account, t.debit_count + t.credit_count AS last_seq, t.last_recorded_at
    FROM account_totals t
    WHERE t.account = ANY (ARRAY(SELECT customer_account FROM incoming
                                 UNION SELECT seller_account FROM incoming))
), clock AS (
    -- One time for the whole batch, never behind the last one of any of its accounts:
    -- within an account, recorded_at (the partition key) follows the entry numbers.
    SELECT greatest(clock_timestamp(), max(last_recorded_at)) AS recorded_at FROM accounts
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
           a.last_seq + row_number() OVER (PARTITION BY l.account ORDER BY l.seq) AS account_seq
    FROM legs l JOIN accounts a USING (account)
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
    {add_to_totals}
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

INSERT_FROM_STAGING: Final = _INSERT_FROM_STAGING.replace(
    "{add_to_totals}",
    _ADD_TO_TOTALS.replace(
        "{moves}",
        """SELECT account,
       coalesce(sum(amount) FILTER (WHERE debit), 0),
       coalesce(sum(amount) FILTER (WHERE NOT debit), 0),
       count(*) FILTER (WHERE debit),
       count(*) FILTER (WHERE NOT debit),
       min(accepted_at), max(accepted_at), (SELECT recorded_at FROM clock)
FROM legs
GROUP BY account""",
    ).strip(),
)

REFUSED: Final = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
)
"""Server errors that retrying the same rows cannot fix."""

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
        accepted_at(e),
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
        # A flusher frozen mid-transaction (SIGSTOP, a stuck host) holds its accounts' locks
        # and would stall every batch sharing one, and whoever takes its entries over: PostgreSQL ends such a transaction.
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
        self.staged_after_conflict = 0
        """Batches the direct path found a stored transaction_id in, written again staged."""

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
            await conn.execute(CREATE_MOVES)
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
        if good and len({item.event.transaction_id for item in good}) == len(good):
            try:
                return await self._write_direct(conn, good, bad, before_commit)
            except asyncpg.exceptions.UniqueViolationError:
                self.staged_after_conflict += 1  # rolled back: written the general way
        return await self._write_staged(conn, good, bad, before_commit)

    async def _write_direct(
        self,
        conn: asyncpg.Connection,
        good: list[Decoded],
        bad: list[Undecodable],
        before_commit: BeforeCommit = None,
    ) -> WriteResult:
        """The usual batch, every transaction_id new and once: its rows numbered here and
        COPYed straight into transactions and ledger_transfers. A transaction_id already
        stored aborts the COPY (UniqueViolationError), and the caller writes the batch
        again through the staging table, which sorts out redeliveries and duplicates."""
        purchases = [(item.entry_id, item.event) for item in good]
        times = [accepted_at(item.event) for item in good]
        async with conn.transaction():
            if self._has_transaction_timeout:
                await conn.execute(SET_TRANSACTION_TIMEOUT, self._transaction_timeout_ms)
            await conn.copy_records_to_table(
                "batch_moves", records=account_moves(purchases, times), columns=MOVE_COLUMNS
            )
            await conn.execute(LOCK_MOVED_ACCOUNTS)
            last_seq = dict(cast(list[tuple[str, int]], await conn.fetch(COUNTERS)))
            recorded_at = await conn.fetchval(BATCH_TIME)
            rows = batch_rows(
                purchases, times, shard=self.shard, last_seq=last_seq, recorded_at=recorded_at
            )
            await conn.copy_records_to_table(
                "transactions", records=rows.transactions, columns=TRANSACTION_COLUMNS
            )
            await conn.copy_records_to_table(
                "ledger_transfers", records=rows.ledger, columns=LEDGER_COLUMNS
            )
            await conn.execute(ADD_MOVES, recorded_at)
            await self._dead_letters(conn, bad)
            if before_commit is not None:
                await before_commit()
        return WriteResult(inserted=len(good), dead_letters=len(bad))

    async def _dead_letters(self, conn: asyncpg.Connection, bad: list[Undecodable]) -> None:
        if bad:
            await conn.executemany(
                INSERT_DEAD_LETTER, [(self.shard, b.entry_id, b.payload, b.error) for b in bad]
            )

    async def _write_staged(
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
            await self._dead_letters(conn, bad)
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
